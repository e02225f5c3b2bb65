// Keeps a running HAProxy in step with the catalog through its admin socket: instance changes
// become runtime API commands, and only a structural change (or a backend out of slots, or a
// socket that fails) asks the caller for a render and reload. Before such a reload the servers'
// state is dumped to the server-state file, so that health, drain and maintenance survive it.
import { rm, writeFile } from 'node:fs/promises';
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
  /** Reload; `reason` says why (for the log). */
  | { reload: true; reason: string };

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

  constructor(readonly opts: HaproxyRuntimeOptions) {
    this.admin = new AdminSocket(opts.socket, { timeoutMs: opts.timeoutMs });
  }

  /** The data to render for `data`, planned against what HAProxy runs now; changes nothing. */
  prepare(data: TemplateData): RuntimeStep {
    const plan = planSlots(this.table, data);
    return { plan, data: withSlots(data, plan.table, this.opts.stateFile) };
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
      try {
        await this.admin.runSequences(plan.sequences);
        this.table = plan.table;
        return { reload: false, commands: plan.sequences.reduce((n, s) => n + s.length, 0) };
      } catch (err) {
        // Part of the commands may have run: the reload makes the config the truth again.
        await this.saveState(undefined);
        this.table = plan.table;
        return { reload: true, reason: `runtime API failed, falling back to a reload: ${(err as Error).message}` };
      }
    }
    await this.saveState(plan.table);
    this.table = plan.table;
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
          return;
        }
      } catch {
        // The socket is down: the reload starts from the config alone.
      }
    }
    await rm(this.opts.stateFile, { force: true });
  }
}

/** A rendered file without the slot server lines (`server s<n> …`), which the runtime API sets. */
export function withoutSlotLines(text: string): string {
  return text.replace(/^[ \t]*server s\d+ .*\n?/gm, '');
}
