// One change, applied to every template: render → check the staged file (if it fails, find the
// instances the check rejects and leave them out) → equal bytes stop here (no write, no reload)
// → backup → atomic rename → reload (each distinct command once) → confirm the proxy took it →
// on failure put the files of that reload back and reload again. The live file is only
// replaced by a file that passed its check (in HAProxy runtime mode, or one that differs from
// such a file only in slot server values HAProxy has just taken: see needsCheck).
import { unlink } from 'node:fs/promises';
import type { Logger } from '../log/logger.js';
import { metrics } from '../metrics/metrics.js';
import type { ServiceInstance } from '../model/service-instance.js';
import { runCommand, shellQuote, trimOutput } from './command-runner.js';
import { backupFile, type CurrentFile, readCurrent, replaceFile, restoreFile, stageFile, sweepStaged } from './atomic-file.js';
import { type ReloadVerifier, verifierFor } from './reload-verifier.js';
import { CatalogInput, type InstanceRef } from './render-input.js';
import type { HaproxyRuntime, RuntimeCommit, RuntimeStep } from './haproxy-runtime/runtime.js';
import type { TemplateData } from './template-data.js';
import type { CompiledTemplate } from './template-file.js';
import type { TemplateSpec } from './types.js';

export interface TemplateJob {
  spec: TemplateSpec;
  /** Undefined while the template file does not compile: its destination is left alone. */
  template?: CompiledTemplate;
  /** --haproxy-runtime: the template gets server slots; instance changes skip the reload. */
  runtime?: HaproxyRuntime;
}

export interface RenderOptions {
  timeoutMs: number;
  dry: boolean;
  /** Where --dry prints. */
  out: (s: string) => void;
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  /** False when anything failed: a render, a check, a write, a reload. */
  ok: boolean;
  /** A check, write or reload failed: worth trying again later (a template error is not). */
  retry: boolean;
  written: string[];
  unchanged: string[];
  /** Reload commands run (after deduplication), with their outcome. */
  reloads: Array<{ command: string; ok: boolean; rolledBack: boolean }>;
  /** Runtime API commands applied instead of reloads (runtime mode only). */
  runtime?: number;
  /** Instances left out of a destination because its check rejected them. */
  dropped: Array<{ destination: string; service: string; instance: string; field: string }>;
}

interface Written {
  spec: TemplateSpec;
  /** What the proxy last loaded: restored when the reload fails. */
  previous: CurrentFile;
  /** What the reload is to load. */
  bytes: Buffer;
  /**
   * Runtime mode: the plan these bytes were rendered from, committed once they are written;
   * `done` when it was committed before the write (a change the runtime API takes).
   */
  runtime?: { to: HaproxyRuntime; step: RuntimeStep; done?: RuntimeCommit };
}

/** Checks one search for rejected instances may run before it stops (and goes on at the next try). */
const MAX_SEARCH_CHECKS = 200;
/** Checks confirming suspects and telling their fields: a budget of their own, so that the search keeps its. */
const MAX_CONFIRM_CHECKS = 400;

class OutOfChecks extends Error {
  constructor(kind: string) {
    super(`too many ${kind} checks`);
  }
}

/** Fields to replace with a neutral value, one at a time, to tell which one the check rejects. */
const SUSPECTS: Array<[string, (i: Readonly<ServiceInstance>) => Readonly<ServiceInstance> | undefined]> = [
  ['address', (i) => (i.address === '127.0.0.1' ? undefined : { ...i, address: '127.0.0.1' })],
  ...['http_host', 'http_path', 'weight'].map((k): [string, (i: Readonly<ServiceInstance>) => Readonly<ServiceInstance> | undefined] => [
    `meta.${k}`,
    (i) => (k in i.meta ? { ...i, meta: Object.fromEntries(Object.entries(i.meta).filter(([m]) => m !== k)) } : undefined),
  ]),
  ['tags', (i) => (i.tags.length ? { ...i, tags: [] } : undefined)],
  ['meta', (i) => (Object.keys(i.meta).length ? { ...i, meta: {} } : undefined)],
  ['id', (i) => ({ ...i, id: 'hm-probe' })],
];

const label = (command: string) => (command.length > 80 ? `${command.slice(0, 79)}…` : command);
/** The first line of a check's output that says what is wrong. */
const checkLine = (output: string) => {
  const lines = output.split('\n').map((l) => l.trim()).filter(Boolean);
  return (lines.find((l) => /emerg|alert|error|fail/i.test(l) && !/test failed|fatal errors? found/i.test(l)) ?? lines[0] ?? '').slice(0, 300);
};

export class Renderer {
  /** Per destination: records its check rejected (fingerprint → field), reported once each. */
  private readonly rejected = new Map<string, Map<string, string>>();
  /** Reloads that failed while no proxy was running: their files stay and the reload is retried. */
  private readonly pending = new Map<string, Written[]>();
  /**
   * Per destination with a reload command: the content its proxy confirmed loading. Equal bytes
   * on disk are not enough to skip a reload: a crash between the write and the confirmation, or
   * a rollback that could not write, leaves a file the proxy never loaded. Empty at start, so the
   * first run reloads once even when the file already holds what it renders: one graceful reload
   * per start is cheaper than any way of asking the proxy what it loaded.
   */
  private readonly loaded = new Map<string, Buffer | null>();
  /** Destinations whose folder was swept of staged copies left by a crash. */
  private readonly swept = new Set<string>();

  constructor(
    private readonly opts: RenderOptions,
    private readonly log: Logger,
  ) {}

  async run(jobs: readonly TemplateJob[], data: unknown): Promise<RunResult> {
    const result: RunResult = { ok: true, retry: false, written: [], unchanged: [], reloads: [], dropped: [] };
    const input = data instanceof CatalogInput ? data : undefined;
    const written: Written[] = [];
    for (const job of jobs) {
      const w = await this.renderOne(job, input ? input.data : data, input, result, jobs.length > 1);
      if (w) written.push(w);
    }
    // Identical commands run once per change, in the order of their first template; a reload
    // that could not happen before (no proxy running) is tried again with its files.
    const groups = new Map<string, Written[]>();
    for (const [command, group] of this.pending) groups.set(command, [...group]);
    this.pending.clear();
    for (const w of written) {
      if (w.runtime && !this.opts.dry) {
        const c = w.runtime.done ?? (await this.commitRuntime(w.spec.destination, w.runtime.to, w.runtime.step, w.bytes, result));
        if (!c.reload) continue;
      }
      if (!w.spec.command) continue;
      const g = groups.get(w.spec.command);
      // A destination already waiting keeps the state the proxy last loaded as its rollback target.
      if (g) {
        if (!g.some((x) => x.spec.destination === w.spec.destination)) g.push(w);
      } else groups.set(w.spec.command, [w]);
    }
    for (const [command, group] of groups) result.reloads.push(await this.reload(command, group));
    if (result.reloads.some((r) => !r.ok)) {
      result.ok = false;
      result.retry = true;
    }
    return result;
  }

  /**
   * Runtime mode: apply the plan of `bytes` through HAProxy's runtime API. Not a reload: HAProxy
   * runs those bytes now. A reload: the file must be reloaded (the reason is logged).
   */
  private async commitRuntime(dest: string, runtime: HaproxyRuntime, step: RuntimeStep, bytes: Buffer, result: RunResult): Promise<RuntimeCommit> {
    const c = await runtime.commit(step, bytes.toString('utf8'));
    if (!c.reload) {
      this.loaded.set(dest, bytes);
      result.runtime = (result.runtime ?? 0) + c.commands;
      metrics.runtimeApplied.inc({ template: dest });
      metrics.runtimeCommands.inc({ template: dest }, c.commands);
      this.log.info({ event: 'runtime', destination: dest, commands: c.commands }, `${dest}: applied through the HAProxy runtime API (${c.commands} commands), no reload`);
      return c;
    }
    if (c.fallback) metrics.runtimeFallbacks.inc({ template: dest });
    (c.fallback ? this.log.warn : this.log.info).call(this.log, { event: 'runtime', destination: dest, reload: true, reason: c.reason }, `${dest}: reloading: ${c.reason}`);
    return c;
  }

  /** The data a job renders: in runtime mode with slots (`record`: the plan of the file to be written). */
  private shape(job: TemplateJob, data: unknown, record?: { step?: RuntimeStep }): unknown {
    if (!job.runtime) return data;
    const step = job.runtime.prepare(data as TemplateData);
    if (record) record.step = step;
    return step.data;
  }

  /** Stage `text` next to the destination and run the check on it (unless `check` is false); the staged file is kept only when it passes. */
  private async stageAndCheck(spec: TemplateSpec, bytes: Buffer, previous: CurrentFile, check = true): Promise<{ staged?: string; ok: boolean; output: string; timedOut: boolean; code: number | null }> {
    const staged = await stageFile(spec.destination, bytes, spec.perms ?? previous.mode ?? 0o644, previous);
    if (!spec.check || !check) return { staged, ok: true, output: '', timedOut: false, code: 0 };
    const r = await runCommand(spec.check.replaceAll('{{src}}', shellQuote(staged)), this.opts.timeoutMs, this.opts.env);
    if (r.ok) return { staged, ok: true, output: r.output, timedOut: false, code: 0 };
    await unlink(staged).catch(() => undefined);
    return { ok: false, output: r.output, timedOut: r.timedOut, code: r.code };
  }

  private async renderOne(job: TemplateJob, data: unknown, input: CatalogInput | undefined, result: RunResult, several: boolean): Promise<Written | undefined> {
    const { spec } = job;
    const dest = spec.destination;
    const fail = (event: string, msg: string, fields: Record<string, unknown> = {}) => {
      result.ok = false;
      if (event !== 'template-error') result.retry = true;
      metrics.renders.inc({ template: dest, result: event });
      this.log.error({ event, template: spec.source, destination: dest, ...fields }, msg);
    };
    if (!job.template) {
      fail('template-error', `${spec.source}: template not usable; ${dest} left as it is`);
      return undefined;
    }
    const template = job.template;
    const planned: { step?: RuntimeStep } = {};
    let done: RuntimeCommit | undefined;
    const runtimeOf = () => (job.runtime && planned.step ? { to: job.runtime, step: planned.step, done } : undefined);
    let text: string;
    try {
      text = template.render(this.shape(job, data, planned));
    } catch (err) {
      fail('template-error', `${(err as Error).message}; ${dest} left as it is`);
      return undefined;
    }
    let bytes: Buffer = Buffer.from(text);
    // A change the runtime API takes goes to HAProxy first, and its file follows: the runtime
    // commands are checked by HAProxy itself (a refusal falls back to a reload of a checked
    // file), and the check of the file, a process of its own (~25 ms for haproxy -c), would
    // otherwise hold up every change. The file is still checked unless needsCheck() says
    // that it holds nothing a check has not passed already.
    let check = true;
    const rt = job.runtime;
    if (rt && planned.step && !this.opts.dry && rt.takes(planned.step, text)) {
      done = await this.commitRuntime(dest, rt, planned.step, bytes, result);
      check = done.reload || rt.needsCheck(planned.step, text);
    }
    let previous: CurrentFile;
    try {
      previous = await readCurrent(dest);
    } catch (err) {
      if (done?.reload) rt!.reloadFailed();
      fail('write-failed', `cannot read ${dest}: ${(err as Error).message}`);
      return undefined;
    }
    if (!this.swept.has(dest) && !this.opts.dry) {
      this.swept.add(dest);
      for (const f of await sweepStaged(dest)) this.log.warn({ event: 'render', destination: dest, file: f }, `removed ${f}, a staged copy left by an earlier run`);
    }
    if (previous.content?.equals(bytes)) return this.unchanged(spec, previous, bytes, result, runtimeOf());
    if (this.opts.dry) {
      this.opts.out(several ? `==> ${dest} <==\n${text}${text.endsWith('\n') ? '' : '\n'}` : text);
      metrics.renders.inc({ template: dest, result: 'dry' });
      this.log.info({ event: 'render', result: 'dry', destination: dest, bytes: bytes.length }, `would write ${dest} (${bytes.length} bytes)`);
      return undefined;
    }

    let staged: string;
    try {
      let c = await this.stageAndCheck(spec, bytes, previous, check);
      if (!c.ok && done) {
        // HAProxy already runs what the check refused: the next run reloads from a checked file
        // (leaving out the instances the check rejects); after a failed runtime API the state
        // of its servers is unknown, and none is carried over. A failed reload must not put the
        // refused file back: what HAProxy loaded is no longer known.
        this.loaded.delete(dest);
        if (done.reload) rt!.reloadFailed();
        else rt!.mustReload('the check refused a file already applied through the runtime API');
      } else if (!c.ok && !c.timedOut && input && input.instances.length > 0) {
        // One record the proxy rejects must not freeze the configuration for every other one.
        const reduced = await this.withoutRejected(job, template, input, previous, c.output, result, planned);
        if (reduced) {
          bytes = reduced;
          if (previous.content?.equals(bytes)) return this.unchanged(spec, previous, bytes, result, runtimeOf());
          c = await this.stageAndCheck(spec, bytes, previous);
        }
      } else if (c.ok && check) this.rejected.delete(dest);
      if (!c.ok) {
        const why = c.timedOut ? `timed out after ${this.opts.timeoutMs} ms` : `exit ${c.code}`;
        fail('check-failed', `check failed for ${dest} (${why}): ${trimOutput(c.output)}; live file kept`, { check: spec.check, output: trimOutput(c.output, 4000) });
        return undefined;
      }
      staged = c.staged!;
      if (spec.check && check) rt?.passedCheck(planned.step!, bytes.toString('utf8'));
    } catch (err) {
      if (done?.reload) rt!.reloadFailed();
      fail('write-failed', `cannot stage ${dest}: ${(err as Error).message}`);
      return undefined;
    }
    try {
      if (spec.backup && previous.content !== null) await backupFile(dest, previous);
      const { how, warning } = await replaceFile(staged, dest, previous.content);
      if (warning) this.log.warn({ event: 'render', destination: dest, err: warning }, warning);
      metrics.renders.inc({ template: dest, result: 'written' });
      this.log.info({ event: 'render', result: 'written', destination: dest, bytes: bytes.length, how }, `wrote ${dest} (${bytes.length} bytes${how === 'in-place' ? ', in place' : ''})`);
      result.written.push(dest);
      return { spec, previous: this.loadedState(dest, previous), bytes, runtime: runtimeOf() };
    } catch (err) {
      await unlink(staged).catch(() => undefined);
      // The reload after a failed runtime API will not happen: HAProxy's servers are in an unknown state.
      if (done?.reload) rt!.reloadFailed();
      fail('write-failed', `cannot write ${dest}: ${(err as Error).message}`);
      return undefined;
    }
  }

  /** What a failed reload puts back: what the proxy confirmed loading when known, else the file as it was. */
  private loadedState(dest: string, previous: CurrentFile): CurrentFile {
    const loaded = this.loaded.get(dest);
    if (loaded === undefined || (loaded === null ? previous.content === null : previous.content?.equals(loaded))) return previous;
    return { ...previous, content: loaded };
  }

  /** The file already holds these bytes: nothing to write; a reload only when the proxy has not confirmed them. */
  private unchanged(spec: TemplateSpec, previous: CurrentFile, bytes: Buffer, result: RunResult, runtime?: Written['runtime']): Written | undefined {
    const dest = spec.destination;
    metrics.renders.inc({ template: dest, result: 'unchanged' });
    result.unchanged.push(dest);
    // After a failed runtime API call the running servers may hold part of the change: reload.
    if (this.opts.dry || !spec.command || (this.loaded.get(dest)?.equals(bytes) && !runtime?.done?.reload)) {
      this.log.info({ event: 'render', result: 'unchanged', destination: dest }, `${dest} unchanged`);
      return undefined;
    }
    this.log.info({ event: 'render', result: 'unchanged', destination: dest }, `${dest} unchanged, but its proxy has not confirmed loading it: reloading`);
    return { spec, previous: this.loadedState(dest, previous), bytes, runtime };
  }

  /**
   * The check rejected the full rendering: find instances without which it passes (records
   * confirmed bad before are set aside first, then a bisection: k bad ones among n cost about
   * 2·k·log2(n) checks), confirm each suspect by a failing check of the good set plus that record
   * unchanged (nothing is ever inferred from other checks: a flaky check drops nobody), tell for
   * each new one which field the check objects to, log one line each, and return the rendering
   * without them. When the full rendering passes on a second check, the failure was transient:
   * it is returned whole. Undefined when the check fails without any instance too (the template
   * or the environment is at fault). A search that runs out of checks keeps the records it
   * confirmed, so the retry goes on from there.
   */
  private async withoutRejected(job: TemplateJob, template: CompiledTemplate, input: CatalogInput, previous: CurrentFile, firstOutput: string, result: RunResult, planned: { step?: RuntimeStep }): Promise<Buffer | undefined> {
    const { spec } = job;
    const dest = spec.destination;
    const budget = { search: MAX_SEARCH_CHECKS, confirm: MAX_CONFIRM_CHECKS };
    const outputs = new Map<string, string>();
    const passes = async (kind: keyof typeof budget, drop: ReadonlySet<string>, replace?: ReadonlyMap<string, Readonly<ServiceInstance>>): Promise<{ ok: boolean; output: string }> => {
      if (--budget[kind] < 0) throw new OutOfChecks(kind);
      let text: string;
      try {
        text = template.render(this.shape(job, input.variant(drop, replace)));
      } catch {
        return { ok: false, output: '' };
      }
      const c = await this.stageAndCheck(spec, Buffer.from(text), previous);
      if (c.staged) await unlink(c.staged).catch(() => undefined);
      // A check that timed out says nothing about the instances: never leave one out on it.
      if (c.timedOut) throw new Error(`the check timed out after ${this.opts.timeoutMs} ms`);
      return c;
    };
    const all = input.instances;
    const keysOf = (refs: readonly InstanceRef[]) => new Set(refs.map((r) => r.key));
    const dropAllBut = (keep: readonly InstanceRef[]) => {
      const k = keysOf(keep);
      return new Set(all.filter((r) => !k.has(r.key)).map((r) => r.key));
    };
    const known = this.rejected.get(dest) ?? new Map<string, string>();
    const fields = new Map<string, string>();
    const bad: InstanceRef[] = [];
    try {
      if (!(await passes('search', keysOf(all))).ok) return undefined;
      if ((await passes('search', new Set())).ok) {
        this.log.warn({ event: 'check-flaky', destination: dest, check: spec.check }, `${dest}: the check failed once and then passed on the same rendering; nothing left out`);
        this.rejected.delete(dest);
        return Buffer.from(template.render(this.shape(job, input.data, planned)));
      }
      // Records confirmed bad in an earlier run are set aside, then the rest is searched.
      const prior = all.filter((r) => known.has(r.fingerprint));
      const suspects: InstanceRef[] = [...prior];
      let complete = true;
      /** The largest set of records a check passed with: the good set when the search stops early. */
      let passed: InstanceRef[] = [];
      try {
        const found: InstanceRef[] = [];
        const search = async (base: InstanceRef[], cands: InstanceRef[]): Promise<InstanceRef[]> => {
          if (cands.length === 0) return [];
          const c = await passes('search', dropAllBut([...base, ...cands]));
          if (c.ok) {
            if (base.length + cands.length > passed.length) passed = [...base, ...cands];
            return [];
          }
          if (cands.length === 1) {
            outputs.set(cands[0].key, c.output);
            found.push(cands[0]);
            return cands;
          }
          const half = Math.ceil(cands.length / 2);
          const a = cands.slice(0, half);
          const badA = await search(base, a);
          const goodA = a.filter((r) => !badA.includes(r));
          return [...badA, ...(await search([...base, ...goodA], cands.slice(half)))];
        };
        try {
          await search([], all.filter((r) => !known.has(r.fingerprint)));
        } finally {
          suspects.push(...found);
        }
      } catch (err) {
        if (!(err instanceof OutOfChecks)) throw err;
        complete = false;
      }
      // Each suspect must fail on its own among records that pass together.
      let good = complete ? all.filter((r) => !suspects.includes(r)) : passed;
      if (complete && !(await passes('confirm', dropAllBut(good))).ok) throw new Error('the check fails without the suspected instances too');
      for (const r of suspects) {
        const c = await passes('confirm', dropAllBut([...good, r]));
        if (c.ok) {
          good = [...good, r];
          continue;
        }
        outputs.set(r.key, c.output);
        bad.push(r);
      }
      for (const r of bad) {
        let field = known.get(r.fingerprint);
        if (field === undefined) {
          field = 'the record as a whole';
          for (const [name, neutral] of SUSPECTS) {
            const changed = neutral(r.instance);
            if (!changed) continue;
            if ((await passes('confirm', dropAllBut([...good, r]), new Map([[r.key, changed]]))).ok) {
              field = name;
              break;
            }
          }
          const why = checkLine(outputs.get(r.key) ?? firstOutput);
          this.log.error(
            { event: 'instance-rejected', destination: dest, service: r.instance.name, instance: r.instance.id, field, check: spec.check, output: why },
            `${dest}: service ${r.instance.name} instance ${r.instance.id.slice(0, 120)}: ${field} rejected by the check (${why}); instance left out of ${dest}`,
          );
        }
        fields.set(r.fingerprint, field);
        result.dropped.push({ destination: dest, service: r.instance.name, instance: r.instance.id, field });
      }
      if (!complete) this.log.error({ event: 'check-failed', destination: dest }, `${dest}: could not finish the search for the instances the check rejects within ${MAX_SEARCH_CHECKS} checks (${bad.length} found so far); going on at the next try`);
      if (bad.length === 0) return undefined;
      return Buffer.from(template.render(this.shape(job, input.variant(keysOf(bad)), planned)));
    } catch (err) {
      this.log.error({ event: 'check-failed', destination: dest, err: (err as Error).message }, `${dest}: could not tell which instances the check rejects: ${(err as Error).message}`);
      return undefined;
    } finally {
      // Confirmed records are remembered (and reported once) across runs, also when the search stopped early.
      for (const r of bad) if (!fields.has(r.fingerprint)) fields.set(r.fingerprint, known.get(r.fingerprint) ?? 'the record as a whole');
      if (fields.size > 0) this.rejected.set(dest, fields);
    }
  }

  /** Run a reload command and confirm it with every verifier of its templates. */
  private async reloadOnce(command: string, verifiers: ReloadVerifier[]): Promise<string | undefined> {
    const snapshots = await Promise.all(verifiers.map((v) => v.before()));
    const started = performance.now();
    const r = await runCommand(command, this.opts.timeoutMs, this.opts.env);
    let problem: string | undefined;
    if (!r.ok) {
      problem = `${r.timedOut ? `timed out after ${this.opts.timeoutMs} ms` : `exit ${r.code}`}${r.output.trim() ? `: ${trimOutput(r.output)}` : ''}`;
    } else {
      for (let i = 0; i < verifiers.length && !problem; i++) problem = await verifiers[i].confirm(snapshots[i], this.opts.timeoutMs);
    }
    const seconds = (performance.now() - started) / 1000;
    metrics.reloadDuration.observe(seconds);
    metrics.reloads.inc({ command: label(command), result: problem ? 'failed' : 'ok' });
    const ms = Math.round(seconds * 1000);
    if (problem) this.log.error({ event: 'reload', result: 'failed', command, ms, err: problem }, `reload failed: ${command}: ${problem}`);
    else this.log.info({ event: 'reload', result: 'ok', command, ms }, `reloaded (${ms} ms): ${command}`);
    return problem;
  }

  /**
   * A failed reload puts back what the running proxy last loaded, including "no file" for a
   * destination that did not exist (it may sit in an included folder: a later reload or restart
   * must not pick up what was refused). When the verifiers tell that no proxy is running at all,
   * nothing has loaded any previous state: the checked files stay, so a proxy started later
   * reads them, and the reload is tried again.
   */
  private async reload(command: string, group: Written[]): Promise<RunResult['reloads'][number]> {
    const verifiers = [...new Map(group.map((w) => [JSON.stringify(w.spec.verify), verifierFor(w.spec.verify)])).values()];
    const problem = await this.reloadOnce(command, verifiers);
    if (!problem) {
      for (const w of group) this.loaded.set(w.spec.destination, w.bytes);
      return { command, ok: true, rolledBack: false };
    }
    // HAProxy runs an older file than the runtime plans assumed: its next change reloads.
    for (const w of group) w.runtime?.to.reloadFailed();
    const files = group.map((w) => w.spec.destination);
    const running = await Promise.all(verifiers.map((v) => v.running().catch(() => undefined)));
    if (running.every((r) => r === false)) {
      // A proxy started from now on loads these files: they become what a later failure restores.
      this.pending.set(command, await Promise.all(group.map(async (w) => ({ spec: w.spec, previous: await readCurrent(w.spec.destination).catch(() => w.previous), bytes: w.bytes }))));
      this.log.error({ event: 'rollback', result: 'skipped', files, command, err: problem }, `no proxy is running for ${files.join(', ')}: the checked files stay; the reload is tried again`);
      return { command, ok: false, rolledBack: false };
    }
    const restored = new Set<string>();
    for (const w of group) {
      try {
        await restoreFile(w.spec.destination, w.previous);
        restored.add(w.spec.destination);
      } catch (err) {
        this.log.error({ event: 'rollback', result: 'failed', destination: w.spec.destination, err: (err as Error).message }, `cannot restore ${w.spec.destination}: ${(err as Error).message}`);
      }
    }
    this.log.error({ event: 'rollback', files, command, err: problem }, `rolled back ${files.join(', ')} after the failed reload; reloading the previous configuration`);
    const again = await this.reloadOnce(command, verifiers);
    // The proxy confirmed the previous files (unless one could not be put back: then it is unknown).
    for (const w of group) {
      if (!again && restored.has(w.spec.destination)) this.loaded.set(w.spec.destination, w.previous.content);
      else this.loaded.delete(w.spec.destination);
    }
    if (again) this.log.error({ event: 'rollback', result: 'failed', command, err: again }, `reload of the previous configuration failed too: ${again}`);
    return { command, ok: false, rolledBack: true };
  }
}
