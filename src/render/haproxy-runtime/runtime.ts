// Keeps a running HAProxy in step with the catalog through its admin socket: instance changes
// become runtime API commands, and only a structural change (or a backend out of slots, or a
// socket that fails) asks the caller for a render and reload. Before such a reload the servers'
// state is dumped to the server-state file, so that health, drain and maintenance survive it. The
// file is removed before the next change goes through the runtime API: from then on it would hold
// what the servers were, and a reload or restart that harbormaster does not start (an operator's,
// a system's) would load it over the rendered file; without it, that file is the truth.
import { rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import type { TemplateData } from '../template-data.js';
import { AdminSocket } from './admin-socket.js';
import { keepUnchangedState, planSlots, type RuntimeTemplateData, type SlotPlan, type SlotTable, withSlots } from './slot-planner.js';

/** A planned move to a catalog: the data to render, then commit() once that file is written. */
export interface RuntimeStep {
  readonly plan: SlotPlan;
  readonly data: RuntimeTemplateData;
}

export type RuntimeCommit =
  /** Applied at runtime: the written file is what HAProxy now runs; no reload. */
  | { reload: false; commands: number }
  /** Reload; `reason` says why (for the log); `fallback` when the runtime API failed. */
  | { reload: true; reason: string; fallback?: true };

export type RuntimeOutcome = RuntimeCommit & { data: RuntimeTemplateData };

export interface HaproxyRuntimeOptions {
  /** The admin-level stats socket. */
  socket: string;
  /** Written before every reload; the template names it as `server-state-file`. */
  stateFile: string;
  timeoutMs?: number;
}

export class HaproxyRuntime {
  private readonly admin: AdminSocket;
  /** What the running HAProxy holds; undefined when unknown (then the next change reloads). */
  private table: SlotTable | undefined;
  /** The running file without its slot server lines, when known. */
  private skeleton: string | undefined;
  /** Set when the next change must reload whatever changed; the reason. */
  private forced: string | undefined;
  /** The last file that passed the check: without its slot lines, and the shapes of those lines. */
  private checked: { skeleton: string; shapes: Set<string> } | undefined;
  /** The state file may exist (one left by another process counts). */
  private stateOnDisk = true;

  constructor(readonly opts: HaproxyRuntimeOptions) {
    this.admin = new AdminSocket(opts.socket, { timeoutMs: opts.timeoutMs });
  }

  /** The data to render for `data`, planned against what HAProxy runs now; changes nothing. */
  prepare(data: TemplateData): RuntimeStep {
    const plan = planSlots(this.table, data, this.forced);
    return { plan, data: withSlots(data, plan.table, this.opts.stateFile) };
  }

  /**
   * True when `step`, rendered as `text`, can go to HAProxy before its file is written: it needs
   * only runtime commands, and the file differs from the running one in slot server lines only.
   */
  takes(step: RuntimeStep, text: string): boolean {
    return !step.plan.reload && this.skeleton !== undefined && withoutSlotLines(text) === this.skeleton;
  }

  /**
   * Whether the file `text` of `step` must still go through the check. Not when the last file
   * that passed it had the same lines outside the slots and every slot line of `text` has the
   * shape of a slot line of that file, its instance's address, port and weight aside: those are
   * an IP address (the plan reloads for anything else), a port and a weight validated on the way
   * in, that HAProxy has just taken through its runtime API, and that its parser reads the same
   * way in any slot line of that shape. A custom template that writes other catalog data into a
   * slot line makes new shapes, and is checked.
   */
  needsCheck(step: RuntimeStep, text: string): boolean {
    const c = this.checked;
    if (!c || withoutSlotLines(text) !== c.skeleton) return true;
    return slotLineShapes(text, step.plan.table).some((s) => !c.shapes.has(s));
  }

  /** The file `text` of `step` passed the check: its skeleton and slot line shapes are known good. */
  passedCheck(step: RuntimeStep, text: string): void {
    const skeleton = withoutSlotLines(text);
    if (this.checked?.skeleton !== skeleton) this.checked = { skeleton, shapes: new Set() };
    for (const s of slotLineShapes(text, step.plan.table)) if (this.checked.shapes.size < MAX_SHAPES) this.checked.shapes.add(s);
  }

  /** The next change reloads, whatever it is (`reason` for the log). */
  mustReload(reason: string): void {
    this.forced = reason;
  }

  /**
   * After the file of `step` is written: apply it through the runtime API, or get HAProxy ready
   * for a reload (its servers' state in the state file) and say why one is needed.
   */
  async commit(step: RuntimeStep, rendered?: string): Promise<RuntimeCommit> {
    const { plan } = step;
    const skeleton = rendered === undefined ? undefined : withoutSlotLines(rendered);
    // The plan knows what the shipped template writes; a template may write more from the
    // catalog, and anything that changed outside the server lines needs a reload.
    if (!plan.reload && skeleton !== undefined && this.skeleton !== undefined && skeleton !== this.skeleton) {
      await this.saveState(plan.table);
      this.table = plan.table;
      this.skeleton = skeleton;
      return { reload: true, reason: 'the file changed outside its server lines' };
    }
    this.skeleton = skeleton;
    if (!plan.reload) {
      // The state file matches the file of the last reload, not what these commands make.
      await this.dropState();
      try {
        await this.admin.runSequences(plan.sequences);
        this.table = plan.table;
        return { reload: false, commands: plan.sequences.flat(2).length };
      } catch (err) {
        // Part of the commands may have run: the reload makes the config the truth again.
        await this.saveState(undefined);
        this.table = plan.table;
        return { reload: true, fallback: true, reason: `runtime API failed, falling back to a reload: ${(err as Error).message}` };
      }
    }
    await this.saveState(plan.table);
    this.table = plan.table;
    this.forced = undefined;
    return { reload: true, reason: plan.reason };
  }

  /** prepare() and commit() in one, for a caller that writes the file itself. */
  async apply(data: TemplateData): Promise<RuntimeOutcome> {
    const step = this.prepare(data);
    return { ...(await this.commit(step)), data: step.data };
  }

  /** The reload did not take: HAProxy runs an older config, so the next change reloads too. */
  reloadFailed(): void {
    this.table = undefined;
    this.skeleton = undefined;
  }

  /**
   * Dumps `show servers state` into the state file, keeping only servers that hold the same
   * instance in `next`; with no `next` (or no dump), removes the file so that the config rules.
   */
  private async saveState(next: SlotTable | undefined): Promise<void> {
    const prev = this.table;
    if (prev && next) {
      try {
        const dump = await this.admin.raw('show servers state');
        if (/^\d+\n/.test(dump)) {
          await writeFile(this.opts.stateFile, keepUnchangedState(dump, prev, next));
          this.stateOnDisk = true;
          return;
        }
      } catch {
        // The socket is down: the reload starts from the config alone.
      }
    }
    await this.dropState();
  }

  private async dropState(): Promise<void> {
    if (!this.stateOnDisk) return;
    await rm(this.opts.stateFile, { force: true });
    this.stateOnDisk = false;
  }
}

/** Distinct slot line shapes remembered: a few for any sane template. */
const MAX_SHAPES = 256;

/** A rendered file without the slot server lines (`server s<n> …`), which the runtime API sets. */
export function withoutSlotLines(text: string): string {
  return text.replace(/^[ \t]*server s\d+ .*\n?/gm, '');
}

/**
 * The slot server lines of `text` with the values the runtime API sets (the instance's
 * `address:port` and `weight <n>`, as whole words) replaced by placeholders. The backend of a
 * line is its section's (`backend` or `listen`); a line that holds no instance stays as it is.
 */
export function slotLineShapes(text: string, table: SlotTable): string[] {
  const shapes = new Set<string>();
  let backend: string | undefined;
  for (const line of text.split('\n')) {
    const section = /^[ \t]*(backend|listen|frontend|defaults|global|peers|resolvers|userlist|cache|program|http-errors|ring|mailers)\b[ \t]*(\S*)/.exec(line);
    if (section) {
      backend = section[1] === 'backend' || section[1] === 'listen' ? section[2] : undefined;
      continue;
    }
    const m = /^([ \t]*)server s(\d+) (.*)$/.exec(line);
    if (!m) continue;
    const slot = backend === undefined ? undefined : table.backends.get(backend)?.[Number(m[2])];
    if (!slot) {
      shapes.add(slot === null ? `${m[1]}server s<n> ${m[3]}` : line);
      continue;
    }
    const at = isIP(slot.address) === 6 ? `[${slot.address}]:${slot.port}` : `${slot.address}:${slot.port}`;
    const words = m[3].split(/([ \t]+)/);
    const a = words.indexOf(at);
    if (a >= 0) words[a] = '<address>';
    const w = words.findIndex((x, n) => x === 'weight' && words[n + 2] === String(slot.weight));
    if (w >= 0) words[w + 2] = '<weight>';
    shapes.add(`${m[1]}server s<n> ${words.join('')}`);
  }
  return [...shapes];
}
