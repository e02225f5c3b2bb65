// One change, applied to every template: render → equal bytes stop here (no write, no reload) →
// stage next to the destination → check the staged file → backup → atomic rename → reload
// (each distinct command once) → confirm the proxy took it → on failure put the files of that
// reload back and reload again. The live file is only replaced by a file that passed its check.
import { unlink } from 'node:fs/promises';
import type { Logger } from '../log/logger.js';
import { metrics } from '../metrics/metrics.js';
import { runCommand, shellQuote, trimOutput } from './command-runner.js';
import { backupFile, type CurrentFile, readCurrent, replaceFile, restoreFile, stageFile } from './atomic-file.js';
import { verifierFor } from './reload-verifier.js';
import type { CompiledTemplate } from './template-file.js';
import type { TemplateSpec } from './types.js';

export interface TemplateJob {
  spec: TemplateSpec;
  /** Undefined while the template file does not compile: its destination is left alone. */
  template?: CompiledTemplate;
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
  written: string[];
  unchanged: string[];
  /** Reload commands run (after deduplication), with their outcome. */
  reloads: Array<{ command: string; ok: boolean; rolledBack: boolean }>;
}

interface Written {
  spec: TemplateSpec;
  previous: CurrentFile;
}

const label = (command: string) => (command.length > 80 ? `${command.slice(0, 79)}…` : command);

export class Renderer {
  constructor(
    private readonly opts: RenderOptions,
    private readonly log: Logger,
  ) {}

  async run(jobs: readonly TemplateJob[], data: unknown): Promise<RunResult> {
    const result: RunResult = { ok: true, written: [], unchanged: [], reloads: [] };
    const written: Written[] = [];
    for (const job of jobs) {
      const w = await this.renderOne(job, data, result, jobs.length > 1);
      if (w) written.push(w);
    }
    // Identical commands run once per change, in the order of their first template.
    const groups = new Map<string, Written[]>();
    for (const w of written) {
      if (!w.spec.command) continue;
      const g = groups.get(w.spec.command);
      if (g) g.push(w);
      else groups.set(w.spec.command, [w]);
    }
    for (const [command, group] of groups) result.reloads.push(await this.reload(command, group));
    if (result.reloads.some((r) => !r.ok)) result.ok = false;
    return result;
  }

  private async renderOne(job: TemplateJob, data: unknown, result: RunResult, several: boolean): Promise<Written | undefined> {
    const { spec } = job;
    const dest = spec.destination;
    const fail = (event: string, msg: string, fields: Record<string, unknown> = {}) => {
      result.ok = false;
      metrics.renders.inc({ template: dest, result: event });
      this.log.error({ event, template: spec.source, destination: dest, ...fields }, msg);
    };
    if (!job.template) {
      fail('template-error', `${spec.source}: template not usable; ${dest} left as it is`);
      return undefined;
    }
    let text: string;
    try {
      text = job.template.render(data);
    } catch (err) {
      fail('template-error', `${(err as Error).message}; ${dest} left as it is`);
      return undefined;
    }
    const bytes = Buffer.from(text);
    let previous: CurrentFile;
    try {
      previous = await readCurrent(dest);
    } catch (err) {
      fail('write-failed', `cannot read ${dest}: ${(err as Error).message}`);
      return undefined;
    }
    if (previous.content?.equals(bytes)) {
      metrics.renders.inc({ template: dest, result: 'unchanged' });
      this.log.info({ event: 'render', result: 'unchanged', destination: dest }, `${dest} unchanged`);
      result.unchanged.push(dest);
      return undefined;
    }
    if (this.opts.dry) {
      this.opts.out(several ? `==> ${dest} <==\n${text}${text.endsWith('\n') ? '' : '\n'}` : text);
      metrics.renders.inc({ template: dest, result: 'dry' });
      this.log.info({ event: 'render', result: 'dry', destination: dest, bytes: bytes.length }, `would write ${dest} (${bytes.length} bytes)`);
      return undefined;
    }

    let staged: string;
    try {
      staged = await stageFile(dest, bytes, spec.perms ?? previous.mode ?? 0o644, previous);
    } catch (err) {
      fail('write-failed', `cannot stage ${dest}: ${(err as Error).message}`);
      return undefined;
    }
    if (spec.check) {
      const cmd = spec.check.replaceAll('{{src}}', shellQuote(staged));
      const r = await runCommand(cmd, this.opts.timeoutMs, this.opts.env);
      if (!r.ok) {
        await unlink(staged).catch(() => undefined);
        const why = r.timedOut ? `timed out after ${this.opts.timeoutMs} ms` : `exit ${r.code}`;
        fail('check-failed', `check failed for ${dest} (${why}): ${trimOutput(r.output)}; live file kept`, { check: spec.check, output: trimOutput(r.output, 4000) });
        return undefined;
      }
    }
    try {
      if (spec.backup && previous.content !== null) await backupFile(dest);
      const how = await replaceFile(staged, dest);
      metrics.renders.inc({ template: dest, result: 'written' });
      this.log.info({ event: 'render', result: 'written', destination: dest, bytes: bytes.length, how }, `wrote ${dest} (${bytes.length} bytes${how === 'in-place' ? ', in place' : ''})`);
      result.written.push(dest);
      return { spec, previous };
    } catch (err) {
      await unlink(staged).catch(() => undefined);
      fail('write-failed', `cannot write ${dest}: ${(err as Error).message}`);
      return undefined;
    }
  }

  /** Run a reload command and confirm it with every verifier of its templates. */
  private async reloadOnce(command: string, group: Written[]): Promise<string | undefined> {
    const verifiers = [...new Map(group.map((w) => [JSON.stringify(w.spec.verify), verifierFor(w.spec.verify)])).values()];
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

  private async reload(command: string, group: Written[]): Promise<RunResult['reloads'][number]> {
    const problem = await this.reloadOnce(command, group);
    if (!problem) return { command, ok: true, rolledBack: false };
    // Put back every file this reload depends on, then reload the old configuration.
    const files = group.map((w) => w.spec.destination);
    for (const w of group) {
      try {
        await restoreFile(w.spec.destination, w.previous);
      } catch (err) {
        this.log.error({ event: 'rollback', result: 'failed', destination: w.spec.destination, err: (err as Error).message }, `cannot restore ${w.spec.destination}: ${(err as Error).message}`);
      }
    }
    this.log.error({ event: 'rollback', files, command, err: problem }, `rolled back ${files.join(', ')} after the failed reload; reloading the previous configuration`);
    const again = await this.reloadOnce(command, group);
    if (again) this.log.error({ event: 'rollback', result: 'failed', command, err: again }, `reload of the previous configuration failed too: ${again}`);
    return { command, ok: false, rolledBack: true };
  }
}
