// Containers taken out of rotation on request (a rollout drains the old container before it
// stops it). A withdrawal is keyed by the full container id, so a new container under the same
// name is not withdrawn, and it always ends: at its expiry, when it is lifted, or when the
// container is gone. The source reads this set; the status API changes it.
import { durationMs, printable } from '../../model/validate.js';
import { sleep } from '../../util/time.js';

export const DEFAULT_WITHDRAW_MS = 60_000;
export const MIN_WITHDRAW_MS = 1_000;
export const MAX_WITHDRAW_MS = 3_600_000;
/** How long a withdrawal's answer waits for the registry to confirm the deregistrations. */
export const CONFIRM_WITHIN_MS = 5_000;

/** A request the withdrawal API cannot carry out, with the HTTP status that says why. */
export class WithdrawalError extends Error {
  override name = 'WithdrawalError';
  constructor(
    readonly status: 400 | 404 | 503,
    message: string,
  ) {
    super(message);
  }
}

export interface Withdrawal {
  /** Full container id. */
  id: string;
  name: string;
  /** Instance ids taken out by this withdrawal (and by earlier requests that extended it). */
  instances: string[];
  /** Epoch ms. */
  until: number;
}

export interface ContainerRef {
  id: string;
  name: string;
}

/** `?for=`: a duration like 30s or 2m; default 60 s, at most 1 h. */
export function parseWithdrawFor(raw: string | undefined): number {
  if (raw === undefined) return DEFAULT_WITHDRAW_MS;
  const ms = durationMs(raw);
  if (ms === undefined) throw new WithdrawalError(400, `for "${printable(raw)}": not a duration like 30s or 2m`);
  if (ms < MIN_WITHDRAW_MS || ms > MAX_WITHDRAW_MS) throw new WithdrawalError(400, `for "${printable(raw)}": must be between 1s and 1h`);
  return Math.round(ms);
}

const NAME = /^\/?[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$/;
const PREFIX = /^[0-9a-f]{12,64}$/;

/**
 * The one container `ref` names: its full id, an id prefix of at least 12 hex digits, or its
 * name. A ref that fits two containers (a prefix of two ids, or one's name and another's id
 * prefix) is refused naming both, rather than withdrawing the wrong one.
 */
export function findContainer(ref: string, containers: readonly ContainerRef[]): ContainerRef {
  if (!NAME.test(ref)) throw new WithdrawalError(400, `container "${printable(ref)}": not a container id or name`);
  const r = ref.replace(/^\//, '');
  if (r.length === 64) {
    const exact = containers.find((c) => c.id === r);
    if (exact) return exact;
  }
  const prefix = PREFIX.test(r);
  const matches = containers.filter((c) => c.name === r || (prefix && c.id.startsWith(r)));
  if (matches.length === 1) return matches[0];
  if (matches.length === 0) {
    const hint = /^[0-9a-f]{1,11}$/.test(r) ? ' (an id prefix needs at least 12 hex digits)' : '';
    throw new WithdrawalError(404, `container "${printable(r)}": no such container${hint}`);
  }
  const [a, b] = matches;
  const more = matches.length > 2 ? ` and ${matches.length - 2} more` : '';
  throw new WithdrawalError(400, `container "${printable(r)}": ambiguous, matches ${a.name} (${a.id.slice(0, 12)}) and ${b.name} (${b.id.slice(0, 12)})${more}`);
}

export class Withdrawals {
  private readonly byId = new Map<string, { w: Withdrawal; timer: NodeJS.Timeout }>();

  /** `onExpire` runs once the entry is gone, so the container can be looked at again. */
  constructor(private readonly onExpire: (w: Withdrawal) => void) {}

  /** Withdraw, or move the end of an existing withdrawal (a repeated request extends or shortens it). */
  add(id: string, name: string, instances: readonly string[], forMs: number, now = Date.now()): Withdrawal {
    const before = this.byId.get(id);
    if (before) clearTimeout(before.timer);
    const w: Withdrawal = { id, name, instances: [...new Set([...(before?.w.instances ?? []), ...instances])], until: now + forMs };
    const timer = setTimeout(() => this.expire(id, w), forMs);
    timer.unref();
    this.byId.set(id, { w, timer });
    return w;
  }

  get(id: string): Withdrawal | undefined {
    return this.byId.get(id)?.w;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  /** Lift a withdrawal; returns it, or undefined if there was none. */
  remove(id: string): Withdrawal | undefined {
    const e = this.byId.get(id);
    if (!e) return undefined;
    clearTimeout(e.timer);
    this.byId.delete(id);
    return e.w;
  }

  /** By name, for stable output. */
  list(): Withdrawal[] {
    return [...this.byId.values()].map((e) => e.w).sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  }

  clear(): void {
    for (const e of this.byId.values()) clearTimeout(e.timer);
    this.byId.clear();
  }

  private expire(id: string, w: Withdrawal): void {
    if (this.byId.get(id)?.w !== w) return;
    this.byId.delete(id);
    this.onExpire(w);
  }
}

/** What the registrar tells about a handful of ids (see Registrar.holding). */
export interface ReleaseProbe {
  holding(ids: readonly string[]): string[];
  readonly status: { registryUp: boolean; lastSync?: Date };
}

/**
 * Wait until the registry no longer holds any of `ids` (true), or give up (false): after
 * `timeoutMs`, or sooner once the registry has been down for `downGraceMs` of the wait (the
 * withdrawals are queued then and go out when it answers again). Before the registrar first
 * compared with the registry nothing is confirmed: a previous run's entries may still be there.
 */
export async function awaitRelease(probe: ReleaseProbe, ids: readonly string[], timeoutMs = CONFIRM_WITHIN_MS, stepMs = 20, downGraceMs = 500): Promise<boolean> {
  const start = Date.now();
  for (;;) {
    const s = probe.status;
    if (s.lastSync !== undefined && probe.holding(ids).length === 0) return true;
    const waited = Date.now() - start;
    if (waited >= timeoutMs || (!s.registryUp && waited >= downGraceMs)) return false;
    await sleep(Math.min(stepMs, timeoutMs - waited));
  }
}

export interface WithdrawalView {
  container: string;
  name: string;
  withdrawn: string[];
  until: string;
}

export interface WithdrawAnswer extends WithdrawalView {
  /** The registry confirmed every deregistration before the answer. */
  confirmed: boolean;
}

export interface ReadmitAnswer {
  container: string;
  name: string;
  /** False when it was not withdrawn. */
  readmitted: boolean;
}

/** What the status API drives. */
export interface WithdrawalControl {
  withdraw(container: string, forMs: number): Promise<WithdrawAnswer>;
  readmit(container: string): Promise<ReadmitAnswer>;
  list(): WithdrawalView[];
}

/** The part of the Docker source the API uses. */
export interface WithdrawalTarget {
  withdrawContainer(ref: string, forMs: number): Promise<Withdrawal>;
  readmitContainer(ref: string): Promise<{ container: ContainerRef; readmitted: boolean }>;
  withdrawals(): Withdrawal[];
}

export function viewOf(w: Withdrawal): WithdrawalView {
  return { container: w.id, name: w.name, withdrawn: [...w.instances], until: new Date(w.until).toISOString() };
}

/** Withdraw through the source, answer once the registrar has confirmed (or queued) the deregistrations. */
export function withdrawalControl(source: WithdrawalTarget, registrar: ReleaseProbe, confirmWithinMs = CONFIRM_WITHIN_MS): WithdrawalControl {
  return {
    async withdraw(container, forMs) {
      const w = await source.withdrawContainer(container, forMs);
      const confirmed = await awaitRelease(registrar, w.instances, confirmWithinMs);
      return { ...viewOf(w), confirmed };
    },
    async readmit(container) {
      const r = await source.readmitContainer(container);
      return { container: r.container.id, name: r.container.name, readmitted: r.readmitted };
    },
    list: () => source.withdrawals().map(viewOf),
  };
}
