// Reconciles what the sources want registered with what this host has in the registry, one
// instance id at a time. Each id has a slot: what is wanted, what the registry holds (as far as
// this process knows), and its own retry state. A change costs what it touches; a failure
// retries only what failed; a full comparison with the registry (`listOwn`) runs once the
// source's view is complete, on every source resync, and after the registry was unreachable.
// Heartbeats run on their own timer, whatever the reconcile loop is doing, so a lease or TTL
// check never lapses while the registry answers.
import type { Logger } from '../log/logger.js';
import { metrics, timed } from '../metrics/metrics.js';
import type { ServiceInstance } from '../model/service-instance.js';
import { causeOf } from '../registry/explain.js';
import { type FailureKind, failureKind, type InstanceRef, type OwnRecord, type RegistryBackend } from '../registry/types.js';
import { backoffMs, NoAnswerError, withTimeout } from '../util/time.js';
import { DesiredSet } from './desired-set.js';
import { RetryWheel } from './retry-wheel.js';

export interface RegistrarOptions {
  hostname: string;
  /** Heartbeat period; 0 disables heartbeats. */
  ttlRefreshMs: number;
  /** Remove this host's registrations that no desired instance backs, once the source's view is complete. */
  cleanup: boolean;
  /** Base of the retry backoff. */
  retryIntervalMs: number;
  maxRetryMs?: number;
  /** Registry operations running at most at once (fewer while the registry answers slowly). */
  concurrency?: number;
  /** Timeout of one registry operation: an answer later than this is a slow registry, no answer at all (its ping fails too) an outage. */
  opTimeoutMs?: number;
  log: Logger;
}

/** Where sources put what they want registered. */
export interface DesiredSink {
  /**
   * Replace the instances of one owner; an empty list withdraws them, `reason` goes to the log.
   * `label` names the owner in log lines (a container's name; the owner is its ID).
   */
  set(owner: string, instances: ServiceInstance[], reason?: string, label?: string): void;
  /** `from`'s instances become `to`'s in one step: ids both define are not withdrawn in between. */
  move?(from: string, to: string, instances: ServiceInstance[], reason?: string, label?: string): void;
  /**
   * The source's view is complete (it listed everything): compare with the registry now. With
   * `partial`, some owners could not be read this time: nothing unknown is cleaned up.
   */
  complete(opts?: { partial?: boolean }): void;
}

/** An owner as the log names it: `file db.yaml`, `container web-1`. */
const ownerName = (owner: string, label: string | undefined) => (owner.startsWith('file:') ? `file ${label ?? owner.slice(5)}` : `container ${label ?? owner.slice(0, 12)}`);

export interface RegistrarStatus {
  /** The registry answers and accepts what is sent. */
  registryUp: boolean;
  lastSync?: Date;
  lastError?: string;
  registered: number;
  /** Registrations or withdrawals not confirmed yet. */
  pending: number;
  /** Of those, waiting to be retried after a failure. */
  retrying: number;
  /** Refused by the registry for what they are; retried when they change or at the next resync. */
  rejected: number;
  heartbeatOk: boolean;
  lastHeartbeat?: Date;
  heartbeatError?: string;
  /** The registry answers, but later than the operation timeout (or close to it): fewer writes go at once. */
  slow: boolean;
  /** Writes allowed at once now (the configured concurrency unless the registry is slow). */
  inflightLimit: number;
}

interface Slot {
  id: string;
  want?: { instance: ServiceInstance; digest: string };
  /** What the registry holds, as last confirmed; digest '' = present but to be written again. Heartbeats keep it alive. */
  have?: { name: string; digest: string; instance?: ServiceInstance };
  /** The name of a write whose outcome is unknown (no answer): it may have landed, so it is withdrawn or written again. */
  pending?: string;
  /** Bumped whenever `have` changes, so a heartbeat answer about an older state is ignored. */
  gen: number;
  busy: boolean;
  attempts: number;
  retryAt: number;
  /** Digest of a wanted instance the registry refused for what it is. */
  rejected?: string;
  /** The refusal last logged for this id at error level: the same one again (every resync) goes to debug. */
  rejectedLogged?: string;
  /** Why it is being withdrawn (for the log line). */
  reason?: string;
}

/** An operation without an answer this long means the registry is unreachable (the call itself ends by its own timeout). */
const OP_TIMEOUT_MS = 10_000;
/** stop(false): operations in flight may finish for this long. */
const STOP_WAIT_MS = 4_000;
/** stop(true): everything is withdrawn within this, writes still in flight once they have ended. */
const STOP_DEADLINE_MS = 16_000;

export class Registrar implements DesiredSink {
  private readonly desired = new DesiredSet();
  private readonly slots = new Map<string, Slot>();
  private readonly queue = new Set<string>();
  private readonly wheel: RetryWheel;
  private readonly concurrency: number;
  /**
   * Writes allowed at once, adapted to how fast the registry answers (AIMD): halved when an
   * answer is late (or never comes while the registry still answers pings), raised by one per
   * `limit` timely answers, up to `concurrency`. A Consul agent applies registrations one at a
   * time and each costs more the more it holds: firing more at it only makes every one late.
   */
  private limit: number;
  private lastDecrease = 0;
  /**
   * Set while the registry answers slowly; over once an answer comes in time a timeout after the
   * last late one, or once nothing is owed any more.
   */
  private slow?: { since: number; last: number };
  /** A ping deciding whether a call without an answer means a slow registry or an outage. */
  private liveness?: Promise<void>;
  private readonly opTimeoutMs: number;
  private readonly maxRetryMs: number;
  private busy = 0;
  private stopped = false;

  /** The source listed everything once: before that nothing is compared, withdrawn or cleaned up. */
  private ready = false;
  private resyncWanted = false;
  private resyncRunning = false;
  private resyncFailures = 0;
  /** The registry was unreachable: the next comparison is owed now, slow or not. */
  private afterOutage = false;
  private resyncRetryAt = 0;
  private synced = false;

  /** Set while the registry does not answer: only pings go out until it does. */
  private outage?: { since: number; attempts: number; timer?: NodeJS.Timeout };
  /** Consecutive refusals across ids: a short global pause that grows while everything is refused. */
  private refusals = 0;
  /** Ids refused since the last success: one id refused again and again pauses nobody else. */
  private readonly refusedIds = new Set<string>();
  /**
   * Refusals logged, until the id they were for is accepted: one refusal (a wrong password,
   * a token without its policy) is one line, not one per id or per retry, however often a
   * listing that is still allowed succeeds in between.
   */
  private readonly loggedRefusals = new LoggedRefusals();
  /** A refusal was logged since the registry last accepted something: say when it does. */
  private refusalLogged = false;
  private resyncPartial = false;
  private pauseUntil = 0;
  private pauseTimer?: NodeJS.Timeout;
  private resyncTimer?: NodeJS.Timeout;

  private heartbeatTimer?: NodeJS.Timeout;
  private retryBeatTimer?: NodeJS.Timeout;
  private beating = false;
  /** The backend said entries may be gone while a round ran: another round follows it. */
  private beatAgain = false;
  private beatFailures = 0;
  private beatAbort?: AbortController;

  private readonly idleWaiters: Array<() => void> = [];
  private readonly loggedCollisions = new Set<string>();
  /** Owner → its name for log lines, while it wants something. */
  private readonly labels = new Map<string, string>();
  /** The operation each busy slot runs, so that stop() can follow a write that lands late. */
  private readonly inflight = new Map<string, Promise<void>>();

  /** The parts of the status that are not counted from the slots. */
  private readonly state: Omit<RegistrarStatus, 'registered' | 'pending' | 'retrying' | 'rejected' | 'slow' | 'inflightLimit'> = { registryUp: true, heartbeatOk: true };
  private readonly gaugeTimer: NodeJS.Timeout;

  constructor(
    private readonly backend: RegistryBackend,
    private readonly opts: RegistrarOptions,
  ) {
    this.concurrency = opts.concurrency ?? 8;
    this.limit = this.concurrency;
    this.opTimeoutMs = opts.opTimeoutMs ?? OP_TIMEOUT_MS;
    this.maxRetryMs = opts.maxRetryMs ?? 30_000;
    this.wheel = new RetryWheel((ids) => {
      for (const id of ids) this.queue.add(id);
      this.pump();
    });
    // Counting is O(n): done when asked and every few seconds for the gauges, never per event.
    this.gaugeTimer = setInterval(() => void this.status, 5_000);
    this.gaugeTimer.unref();
    // An expired or revoked lease found by a write: the round that finds what it took runs now, not a period later.
    backend.onLoss?.(() => this.beatSoon());
  }

  /** What this registrar keeps per instance and per owner (memory use; each must shrink back as things go). */
  tracked(): { slots: number; claims: number; labels: number; collisions: number; inflight: number } {
    return { slots: this.slots.size, claims: this.desired.size, labels: this.labels.size, collisions: this.loggedCollisions.size, inflight: this.inflight.size };
  }

  /** Counted on demand (status API, gauges). */
  get status(): RegistrarStatus {
    let registered = 0;
    let pending = 0;
    let retrying = 0;
    let rejected = 0;
    for (const s of this.slots.values()) {
      if (s.have?.digest && (!s.want || s.want.digest === s.have.digest)) registered++;
      if (s.want && s.rejected === s.want.digest) rejected++;
      else if (this.needsWork(s)) pending++;
      if (s.retryAt) retrying++;
    }
    metrics.registered.set(registered);
    metrics.pending.set(pending);
    metrics.retrying.set(retrying);
    metrics.rejected.set(rejected);
    const inflightLimit = Math.max(1, Math.floor(this.limit));
    metrics.slow.set(this.slow ? 1 : 0);
    metrics.inflightLimit.set(inflightLimit);
    return { ...this.state, registered, pending, retrying, rejected, slow: !!this.slow, inflightLimit };
  }

  start(): void {
    if (this.opts.ttlRefreshMs > 0) {
      this.heartbeatTimer = setInterval(() => void this.beat(), this.opts.ttlRefreshMs);
      this.heartbeatTimer.unref();
    }
    this.pump();
  }

  set(owner: string, instances: ServiceInstance[], reason?: string, label?: string): void {
    this.apply(owner, instances, reason, label);
    this.pump();
  }

  /**
   * `from` hands its instances over to `to` in one step (a renamed services file): an id both
   * define changes hands without being withdrawn in between, and what only `from` had goes.
   */
  move(from: string, to: string, instances: ServiceInstance[], reason?: string, label?: string): void {
    this.apply(from, [], reason);
    this.apply(to, instances, reason, label);
    this.pump();
  }

  private apply(owner: string, instances: ServiceInstance[], reason?: string, label?: string): void {
    if (instances.length > 0 && label !== undefined) this.labels.set(owner, label);
    const { changed, collisions } = this.desired.set(owner, instances);
    for (const c of collisions) {
      const key = `${owner}\0${c.id}`;
      if (this.loggedCollisions.has(key)) continue;
      this.loggedCollisions.add(key);
      this.opts.log.error(
        { event: 'error', id: c.id, owner, container: this.labels.get(owner), holder: c.holder },
        `service id ${c.id} of ${ownerName(owner, this.labels.get(owner))} is already claimed by ${ownerName(c.holder, this.labels.get(c.holder))} (${owner.startsWith('file:') ? 'duplicate id' : 'SERVICE_ID collision'}); keeping the first`,
      );
    }
    if (instances.length === 0) {
      this.labels.delete(owner);
      if (this.loggedCollisions.size > 0) for (const key of this.loggedCollisions) if (key.startsWith(`${owner}\0`)) this.loggedCollisions.delete(key);
    }
    for (const id of changed) {
      const claim = this.desired.get(id);
      // An owner that took over an id it collided on holds it now: that collision is over.
      if (claim && this.loggedCollisions.size > 0) this.loggedCollisions.delete(`${claim.owner}\0${id}`);
      const slot = this.slot(id);
      if (claim) {
        const digest = this.backend.digest(claim.instance);
        if (slot.want?.digest === digest) {
          slot.want = { instance: claim.instance, digest };
          continue;
        }
        slot.want = { instance: claim.instance, digest };
        slot.reason = undefined;
      } else {
        if (!slot.want) continue;
        slot.want = undefined;
        slot.reason = reason;
      }
      // A new wish is tried at once, whatever the backoff of the previous one.
      slot.attempts = 0;
      if (slot.retryAt) this.wheel.remove(id);
      slot.retryAt = 0;
      this.queue.add(id);
    }
  }

  complete(opts: { partial?: boolean } = {}): void {
    this.ready = true;
    this.resyncPartial = !!opts.partial;
    this.resync();
  }

  /** Compare everything with the registry again (source resync, SIGHUP). */
  resync(): void {
    this.resyncWanted = true;
    this.resyncRetryAt = 0;
    this.pump();
  }

  /** What is registered now (for status output and tests). */
  current(): ServiceInstance[] {
    const out: ServiceInstance[] = [];
    for (const s of this.slots.values()) {
      const inst = s.have?.digest ? (s.have.instance ?? (s.want?.digest === s.have.digest ? s.want.instance : undefined)) : undefined;
      if (inst) out.push(inst);
    }
    return out;
  }

  /**
   * Of these ids, those the registry may still hold as far as this process knows: registered,
   * a write or withdrawal under way, or a write whose answer never came. Unlike settled(), it
   * does not wait for unrelated work elsewhere on the host.
   */
  holding(ids: readonly string[]): string[] {
    return ids.filter((id) => {
      const s = this.slots.get(id);
      return s !== undefined && (s.have !== undefined || s.pending !== undefined || s.busy);
    });
  }

  /** Resolves once nothing is queued, in flight, waiting for a retry or for a resync. */
  settled(): Promise<void> {
    return new Promise((resolve) => {
      this.idleWaiters.push(resolve);
      this.checkIdle();
    });
  }

  /**
   * Stop; with `withdraw`, deregister everything this host registered, all within `deadlineMs`.
   * The backend is sealed first (no write and no new lease from here on), everything is
   * withdrawn at once, and a write that was in flight is withdrawn again once its call has
   * ended: it may land after the withdrawal, and must not undo it.
   */
  async stop(withdraw: boolean, deadlineMs = STOP_DEADLINE_MS): Promise<void> {
    this.stopped = true;
    const deadline = Date.now() + deadlineMs;
    clearInterval(this.heartbeatTimer);
    clearInterval(this.gaugeTimer);
    clearTimeout(this.retryBeatTimer);
    clearTimeout(this.pauseTimer);
    clearTimeout(this.resyncTimer);
    clearTimeout(this.outage?.timer);
    this.beatAbort?.abort();
    this.wheel.clear();
    this.backend.seal();
    if (withdraw) await this.withdrawAll(deadline);
    else {
      const waitUntil = Date.now() + Math.min(STOP_WAIT_MS, deadlineMs / 2);
      while (this.busy > 0 && Date.now() < waitUntil) await new Promise((r) => setTimeout(r, 20));
    }
    for (const w of this.idleWaiters.splice(0)) w();
  }

  private async withdrawAll(deadline: number): Promise<void> {
    // Everything that may be there: registered, being written, or a withdrawal not yet confirmed.
    const refs: InstanceRef[] = [];
    const late: Array<{ refs: InstanceRef[]; ended: Promise<void> }> = [];
    for (const s of this.slots.values()) {
      const mine: InstanceRef[] = [];
      for (const name of new Set([s.have?.name, s.pending, s.busy ? s.want?.instance.name : undefined])) if (name !== undefined) mine.push({ id: s.id, name });
      refs.push(...mine);
      const op = this.inflight.get(s.id);
      if (op && mine.length > 0) late.push({ refs: mine, ended: op });
    }
    const left = () => Math.max(100, deadline - Date.now());
    // With nothing registered, a bulk withdrawal still releases what the host holds (a lease, a heartbeat service).
    if (refs.length > 0 || this.backend.deregisterAll) await this.withdrawRefs(refs, deadline, left);
    if (late.length === 0) return;
    // Writes that were in flight: each withdrawn again once its call has ended (every backend call has a timeout).
    const outOfTime = new Promise<false>((r) => setTimeout(() => r(false), left()).unref());
    let unfinished = 0;
    await Promise.all(
      late.map(async ({ refs: mine, ended }) => {
        const over = await Promise.race([ended.then(() => true, () => true), outOfTime]);
        if (!over) {
          unfinished += mine.length;
          return;
        }
        for (const ref of mine) {
          try {
            await withTimeout(this.backend.deregister(ref), Math.min(3_000, left()), 'deregister');
          } catch (err) {
            unfinished++;
            this.opts.log.error({ event: 'error', id: ref.id, err: msg(err) }, `deregister ${ref.id} (written while shutting down) failed: ${msg(err)}`);
          }
        }
      }),
    );
    if (unfinished > 0) this.opts.log.error({ event: 'error', left: unfinished }, `${unfinished} registrations written while shutting down are left to their TTL`);
  }

  private async withdrawRefs(refs: InstanceRef[], deadline: number, left: () => number): Promise<void> {
    const gone = new Set<string>();
    const done = (ref: InstanceRef) => {
      const key = `${ref.id}\0${ref.name}`;
      if (gone.has(key)) return;
      gone.add(key);
      this.slots.delete(ref.id);
      metrics.deregistrations.inc();
      this.opts.log.info({ event: 'deregistered', service: ref.name, id: ref.id, reason: 'shutdown' }, `deregistered ${ref.id} (shutdown)`);
    };
    if (this.backend.deregisterAll) {
      let timedOut = false;
      try {
        await withTimeout(this.backend.deregisterAll(refs, done), left(), 'withdrawing every registration').catch((err: unknown) => {
          timedOut = Date.now() >= deadline - 100;
          throw err;
        });
        for (const r of refs) done(r);
        return;
      } catch (err) {
        // Out of time: what is left goes with its TTL (on Consul, critical at once: the heartbeat service went first).
        if (timedOut) {
          const rest = refs.length - gone.size;
          this.opts.log.error(
            { event: 'error', err: msg(err), withdrawn: gone.size, left: rest },
            `withdrew ${gone.size} of ${refs.length} registrations by the shutdown deadline; the other ${rest} are left to their TTL`,
          );
          return;
        }
        this.opts.log.error({ event: 'error', err: msg(err) }, `withdrawing all at once failed (${msg(err)}); withdrawing one by one`);
      }
    }
    const todo = refs.filter((r) => !gone.has(`${r.id}\0${r.name}`));
    let next = 0;
    let failed = 0;
    const worker = async () => {
      while (next < todo.length && Date.now() < deadline) {
        const ref = todo[next++];
        try {
          await withTimeout(this.backend.deregister(ref), Math.min(3_000, left()), 'deregister');
          done(ref);
        } catch (err) {
          failed++;
          this.opts.log.error({ event: 'error', id: ref.id, err: msg(err) }, `deregister ${ref.id} on shutdown failed: ${msg(err)}`);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, todo.length) }, worker));
    const notDone = todo.length - next + failed;
    if (notDone > 0) this.opts.log.error({ event: 'error', left: notDone }, `${notDone} registrations left to their TTL after the shutdown deadline`);
  }

  private slot(id: string): Slot {
    let s = this.slots.get(id);
    if (!s) this.slots.set(id, (s = { id, gen: 0, busy: false, attempts: 0, retryAt: 0 }));
    return s;
  }

  private needsWork(s: Slot): boolean {
    const w = s.want;
    // Refused for what it is: what is there is not what the container is now, so it goes.
    if (!w || s.rejected === w.digest) return s.have !== undefined || s.pending !== undefined;
    return s.have?.digest !== w.digest || s.pending !== undefined;
  }

  /** Start what can be started; the one place that decides what runs next. */
  private pump(): void {
    if (this.stopped) return;
    const now = Date.now();
    if (this.outage || !this.ready) return this.checkIdle();
    if (now < this.pauseUntil) {
      this.pauseTimer ??= setTimeout(() => {
        this.pauseTimer = undefined;
        this.pump();
      }, this.pauseUntil - now);
      return;
    }
    // A slow registry owes writes already: a periodic comparison (its listing costs the registry
    // most, and no write goes out while it runs) waits until they are through. Never the one
    // after an outage: the registry may have lost anything.
    const deferred = this.resyncWanted && this.synced && !this.afterOutage && !!this.slow && (this.queue.size > 0 || this.wheel.size > 0);
    if (this.resyncWanted && !this.resyncRunning && !deferred) {
      if (now >= this.resyncRetryAt) {
        // A resync compares with what the registry holds: nothing may be in flight meanwhile.
        if (this.busy === 0) void this.runResync();
        return;
      }
      this.resyncTimer ??= setTimeout(() => {
        this.resyncTimer = undefined;
        this.pump();
      }, this.resyncRetryAt - now);
      // Until the first comparison succeeds nothing is written: a registration from a previous
      // run would be written again (and its checks reset) instead of adopted.
      if (!this.synced) return;
    }
    if (this.resyncRunning) return;
    // Nothing owed and nothing in flight: a slow spell is over, whatever the next answer takes.
    if (this.slow && this.busy === 0 && this.queue.size === 0 && this.wheel.size === 0 && !this.resyncWanted) this.endSlow();
    for (const id of this.queue) {
      if (this.busy >= Math.max(1, Math.floor(this.limit))) break;
      this.queue.delete(id);
      const s = this.slots.get(id);
      if (!s || s.busy) continue; // a busy slot is looked at again when its operation ends
      if (s.retryAt > now) continue; // the wheel brings it back
      if (!this.needsWork(s)) {
        this.settle(s);
        continue;
      }
      this.busy++;
      s.busy = true;
      const op = this.work(s);
      this.inflight.set(s.id, op);
      void op.finally(() => {
        if (this.inflight.get(s.id) === op) this.inflight.delete(s.id);
        s.busy = false;
        this.busy--;
        if (this.needsWork(s)) {
          if (s.retryAt > Date.now()) this.wheel.add(s.id, s.retryAt);
          else this.queue.add(s.id);
        } else this.settle(s);
        this.pump();
      });
    }
    this.checkIdle();
  }

  /** Nothing (more) to do for this slot, whatever failed before: no retry is owed, and it may go. */
  private settle(s: Slot): void {
    s.attempts = 0;
    if (s.retryAt) this.wheel.remove(s.id);
    s.retryAt = 0;
    // Gone without being accepted (its container stopped): a later refusal of the same cause is news again.
    this.loggedRefusals.delete(s.id);
    if (this.refusedIds.delete(s.id) && this.refusedIds.size === 0 && this.refusals === 0 && !this.outage) this.state.registryUp = true;
    this.prune(s);
  }

  private prune(s: Slot): void {
    if (!s.want && !s.have && s.pending === undefined && !s.busy && !s.retryAt) this.slots.delete(s.id);
  }

  private async work(s: Slot): Promise<void> {
    const want = s.want && s.rejected !== s.want.digest ? s.want : undefined;
    let writing = false;
    try {
      // First whatever lives under another name (a rename: another key in etcd), or everything when nothing is wanted.
      for (const name of new Set([s.have?.name, s.pending])) {
        if (name === undefined || name === want?.instance.name) continue;
        const have = s.have;
        await this.op('deregister', () => this.backend.deregister({ id: s.id, name }));
        if (s.pending === name) s.pending = undefined;
        if (have && s.have === have && have.name === name) this.setHave(s, undefined);
        metrics.deregistrations.inc();
        const why = want ? 'renamed' : s.want ? 'the registry refused its new definition' : (s.reason ?? 'withdrawn');
        this.logWithdrawn(s.id, name, have?.name === name ? have.instance : undefined, why);
      }
      if (!want) {
        s.reason = undefined;
      } else if (s.have?.digest !== want.digest || s.pending !== undefined) {
        const before = s.pending;
        // From here the write may land whatever this process hears back.
        s.pending = want.instance.name;
        writing = true;
        try {
          await this.op('register', () => this.backend.register(want.instance));
        } catch (err) {
          // An answer refusing it means it did not land; no answer means it may have.
          if (failureKind(err) !== 'unreachable') s.pending = before;
          throw err;
        }
        s.pending = undefined;
        this.setHave(s, { name: want.instance.name, digest: want.digest, instance: want.instance });
        metrics.registrations.inc();
        const inst = want.instance;
        this.opts.log.info(
          { event: 'registered', service: inst.name, id: inst.id, addr: addr(inst), status: inst.status },
          `registered ${inst.id} as ${inst.name} at ${addr(inst)}${inst.status === 'passing' ? '' : ` (${inst.status})`}`,
        );
      }
      s.attempts = 0;
      s.retryAt = 0;
      this.loggedRefusals.delete(s.id);
      this.succeeded();
    } catch (err) {
      this.failed(err, s, writing ? want : undefined);
    }
  }

  private setHave(s: Slot, have: Slot['have']): void {
    s.have = have;
    s.gen++;
  }

  private logWithdrawn(id: string, name: string, inst: ServiceInstance | undefined, reason: string): void {
    const where = inst ? ` at ${addr(inst)}` : '';
    this.opts.log.info({ event: 'deregistered', service: name, id, ...(inst ? { addr: addr(inst) } : {}), reason }, `deregistered ${id}${where} (${reason})`);
  }

  /**
   * One registry write. The slot stays busy until the call itself ends (every backend call has
   * its own timeout): released early, a late write could land after the slot moved on and be
   * left behind. A call without an answer for opTimeoutMs already lowers the writes at once and
   * asks whether the registry still answers at all (else it is an outage).
   */
  private async op(name: string, fn: () => Promise<void>): Promise<void> {
    const t0 = Date.now();
    const watchdog = setTimeout(() => this.noAnswer(new NoAnswerError(`${name}: no answer within ${this.opTimeoutMs} ms`)), this.opTimeoutMs);
    try {
      await timed(name, fn);
      this.answered(Date.now() - t0);
    } finally {
      clearTimeout(watchdog);
    }
  }

  /** An answer in `ms`: late ones lower the writes at once before they time out, timely ones raise it back. */
  private answered(ms: number): void {
    if (ms > this.opTimeoutMs / 2) {
      this.decrease();
      this.markSlow(`answers take ${ms} ms (timeout ${this.opTimeoutMs} ms)`);
      return;
    }
    if (this.limit < this.concurrency) this.limit = Math.min(this.concurrency, this.limit + 1 / Math.max(1, this.limit));
    if (this.slow && Date.now() - this.slow.last > this.opTimeoutMs) this.endSlow();
  }

  private endSlow(): void {
    const o = this.slow;
    if (!o) return;
    this.slow = undefined;
    this.opts.log.info(
      { event: 'registry-fast', registry: this.backend.description, slowMs: Date.now() - o.since, inflightLimit: Math.floor(this.limit) },
      `registry ${this.backend.description} keeps up again after ${((Date.now() - o.since) / 1000).toFixed(1)}s of slow answers; ${Math.floor(this.limit)} writes at once, raised up to ${this.concurrency} as answers stay in time`,
    );
  }

  /** Halve the writes at once, at most once per half timeout: the calls sent together time out together. */
  private decrease(): void {
    const now = Date.now();
    if (now - this.lastDecrease < this.opTimeoutMs / 2) return;
    this.lastDecrease = now;
    this.limit = Math.max(1, Math.floor(this.limit / 2));
  }

  private markSlow(why: string): void {
    if (this.stopped) return;
    if (this.slow) {
      this.slow.last = Date.now();
      return;
    }
    this.slow = { since: Date.now(), last: Date.now() };
    let backlog = 0;
    for (const s of this.slots.values()) if (this.needsWork(s)) backlog++;
    this.opts.log.warn(
      { event: 'registry-slow', registry: this.backend.description, err: why, inflightLimit: Math.floor(this.limit), backlog },
      `registry ${this.backend.description} answers slowly (${why}); ${Math.floor(this.limit)} writes at once until it keeps up, ${backlog} waiting`,
    );
  }

  /**
   * A call sent without an answer in time. A registry that still answers a ping is slow, not
   * gone: fewer writes at once and the call retried with backoff (its write may have landed: the
   * slot keeps it pending). One that does not answer the ping either is an outage.
   */
  private noAnswer(err: unknown): void {
    this.state.lastError = msg(err);
    if (this.outage || this.stopped) return;
    this.decrease();
    this.markSlow(msg(err));
    if (this.liveness) return;
    this.liveness = withTimeout(this.backend.ping(), this.opTimeoutMs, 'ping')
      .then(
        () => undefined,
        (pingErr: unknown) => this.enterOutage(new Error(`${msg(err)}; ping: ${msg(pingErr)}`)),
      )
      .finally(() => {
        this.liveness = undefined;
        this.pump();
      });
  }

  private succeeded(): void {
    if (this.refusalLogged) {
      this.refusalLogged = false;
      this.opts.log.info({ event: 'registry-up', registry: this.backend.description }, `registry ${this.backend.description} accepts requests again`);
    }
    this.refusals = 0;
    this.refusedIds.clear();
    this.state.registryUp = !this.outage;
  }

  private failed(err: unknown, s: Slot, want: Slot['want']): void {
    const kind = failureKind(err);
    this.state.lastError = msg(err);
    if (kind === 'rejected' && want) {
      s.rejected = want.digest;
      const owner = this.desired.ownerOf(s.id);
      const container = owner === undefined ? undefined : (this.labels.get(owner) ?? owner.slice(0, 12));
      const line = `registry refused ${s.id}${container ? ` of container ${container}` : ''}: ${msg(err)}; not retried until it changes or the next resync`;
      // The same refusal at every resync is one line, not one a minute.
      const level = s.rejectedLogged === `${want.digest}\0${msg(err)}` ? 'debug' : 'error';
      s.rejectedLogged = `${want.digest}\0${msg(err)}`;
      this.opts.log[level]({ event: 'error', id: s.id, service: want.instance.name, container, err: msg(err) }, line);
      return;
    }
    s.attempts++;
    s.retryAt = Date.now() + backoffMs(s.attempts - 1, this.opts.retryIntervalMs, this.maxRetryMs);
    if (err instanceof NoAnswerError) return this.noAnswer(err);
    this.noteFailure(kind, err, s.id);
  }

  /**
   * One failure of any registry call: an outage (no answer) or a refusal (an answer, but no).
   * Refusals pause everything only once they come from more than one id (or from a listing):
   * one registration refused over and over is that id's own backoff, nobody else's.
   */
  private noteFailure(kind: FailureKind, err: unknown, id?: string): void {
    this.state.registryUp = false;
    this.state.lastError = msg(err);
    if (kind === 'unreachable') return this.enterOutage(err);
    if (id !== undefined) this.refusedIds.add(id);
    const global = id === undefined || this.refusedIds.size >= 2;
    let wait = 0;
    if (global) {
      this.refusals++;
      wait = backoffMs(this.refusals - 1, Math.min(this.opts.retryIntervalMs, 500), this.maxRetryMs);
      this.pauseUntil = Math.max(this.pauseUntil, Date.now() + wait);
    }
    const repeated = !this.loggedRefusals.note(id ?? '', msg(err));
    if (!repeated) {
      this.refusalLogged = true;
      this.opts.log.error(
        { event: 'error', registry: this.backend.description, ...(id ? { id } : {}), err: msg(err), ...(wait ? { retryMs: wait } : {}) },
        `registry ${this.backend.description} refused${id ? ` ${id}` : ''}: ${msg(err)}; retrying with backoff`,
      );
    }
  }

  private enterOutage(err: unknown): void {
    if (this.outage || this.stopped) return;
    this.state.registryUp = false;
    this.state.lastError = msg(err);
    this.outage = { since: Date.now(), attempts: 0 };
    this.opts.log.error(
      { event: 'error', registry: this.backend.description, err: msg(err) },
      `registry ${this.backend.description} unreachable: ${msg(err)}; retrying with backoff, then comparing everything with it again`,
    );
    this.scheduleProbe();
  }

  private scheduleProbe(): void {
    const o = this.outage;
    if (!o || this.stopped) return;
    const wait = backoffMs(o.attempts, this.opts.retryIntervalMs, this.maxRetryMs);
    o.timer = setTimeout(() => void this.probe(), wait);
  }

  private async probe(): Promise<void> {
    const o = this.outage;
    if (!o || this.stopped) return;
    try {
      await withTimeout(this.backend.ping(), this.opTimeoutMs, 'ping');
    } catch (err) {
      o.attempts++;
      this.state.lastError = msg(err);
      this.opts.log.debug({ registry: this.backend.description, err: msg(err) }, 'registry still unreachable');
      return this.scheduleProbe();
    }
    this.outage = undefined;
    this.state.registryUp = this.refusals === 0;
    this.opts.log.info(
      { event: 'registry-up', registry: this.backend.description, downMs: Date.now() - o.since },
      `registry ${this.backend.description} answers again after ${((Date.now() - o.since) / 1000).toFixed(1)}s; comparing everything with it`,
    );
    // It may have lost anything (a restarted agent, an expired lease), and retries start afresh.
    for (const s of this.slots.values()) {
      if (s.retryAt) {
        s.retryAt = 0;
        this.queue.add(s.id);
      }
    }
    this.wheel.clear();
    this.afterOutage = true;
    if (this.ready) this.resync();
    else this.pump();
  }

  private async runResync(): Promise<void> {
    this.resyncRunning = true;
    let records: OwnRecord[];
    try {
      // Listing costs the registry more the more this host holds: its wait grows with it (two
      // calls on Consul, each given the same scaled wait by the backend).
      const wait = Math.round(this.opTimeoutMs * 2 * (1 + this.slots.size / 1_000));
      records = await timed('list', () => withTimeout(this.backend.listOwn(this.opts.hostname), wait, 'list'));
    } catch (err) {
      this.resyncRunning = false;
      this.resyncRetryAt = Date.now() + backoffMs(this.resyncFailures++, this.opts.retryIntervalMs, this.maxRetryMs);
      this.state.lastError = msg(err);
      if (err instanceof NoAnswerError) {
        this.noAnswer(err);
        this.pump();
        return;
      }
      this.noteFailure(failureKind(err) === 'unreachable' ? 'unreachable' : 'refusing', err);
      // A registry that answers but will not list still gets the registrations it accepts.
      if (failureKind(err) !== 'unreachable') this.synced = true;
      this.pump();
      return;
    }
    const leftovers = this.applyListing(records);
    if (leftovers.length > 0 && this.backend.abandon) {
      this.backend.abandon(leftovers).catch((err: unknown) => this.opts.log.debug({ err: msg(err) }, `leaving ${leftovers.length} old entries to their TTL failed; tried again at the next resync`));
    }
    metrics.resyncs.inc();
    this.resyncFailures = 0;
    this.loggedRefusals.delete('');
    this.resyncWanted = false;
    this.resyncRunning = false;
    this.afterOutage = false;
    this.synced = true;
    this.state.lastSync = new Date();
    this.succeeded();
    // Entries adopted from a previous run need their TTL refreshed now, not a period later.
    void this.beat();
    this.pump();
  }

  /** What the registry holds for this host replaces what this process believed. */
  /** Returns what another run of this host left that nothing wants (for the backend to let expire). */
  private applyListing(records: OwnRecord[]): InstanceRef[] {
    const partial = this.resyncPartial;
    const leftovers: InstanceRef[] = [];
    const seen = new Set<string>();
    for (const rec of records) {
      seen.add(rec.id);
      const known = this.slots.get(rec.id);
      const ours = known?.have !== undefined || known?.pending !== undefined;
      // Someone else's leftovers (a previous run, a removed container) are only touched with
      // --cleanup, and only when the source could read every container this time.
      if (!known?.want && !ours && (!this.opts.cleanup || partial)) {
        if (!partial) leftovers.push({ id: rec.id, name: rec.name });
        continue;
      }
      const s = known ?? this.slot(rec.id);
      const digest = rec.renew ? '' : rec.digest;
      const instance = s.have?.digest === digest && digest ? s.have.instance : s.want?.digest === digest && digest ? s.want.instance : undefined;
      this.setHave(s, { name: rec.name, digest, instance });
      // The write whose answer never came did land, exactly as wanted.
      if (s.pending === rec.name && digest && digest === s.want?.digest) s.pending = undefined;
      if (!s.want && !ours) s.reason = 'cleanup: no container backs it';
      this.queue.add(s.id);
    }
    for (const s of this.slots.values()) {
      if (s.have && !seen.has(s.id) && !s.busy) {
        this.setHave(s, undefined);
        this.queue.add(s.id);
      }
      // Not listed: a write that may have landed did not.
      if (s.pending !== undefined && !seen.has(s.id) && !s.busy) s.pending = undefined;
      // Every wanted instance is tried again, refused or not.
      if (s.rejected || s.retryAt) {
        s.rejected = undefined;
        s.retryAt = 0;
        s.attempts = 0;
        this.queue.add(s.id);
      }
      if (s.want && this.needsWork(s)) this.queue.add(s.id);
    }
    this.wheel.clear();
    return leftovers;
  }

  private beatSoon(): void {
    if (this.stopped || this.opts.ttlRefreshMs <= 0) return;
    if (this.beating) this.beatAgain = true;
    else void this.beat();
  }

  /** One heartbeat round over what the registry confirmed; independent of the reconcile loop. */
  private async beat(): Promise<void> {
    if (this.beating || this.stopped || this.opts.ttlRefreshMs <= 0) return;
    this.beating = true;
    clearTimeout(this.retryBeatTimer);
    const refs: InstanceRef[] = [];
    const gens = new Map<string, number>();
    // Everything the registry holds for us, also while an update of it is being retried.
    for (const s of this.slots.values()) {
      if (!s.have) continue;
      refs.push({ id: s.id, name: s.have.name });
      gens.set(s.id, s.gen);
    }
    const abort = new AbortController();
    this.beatAbort = abort;
    try {
      const res = await withTimeout(this.backend.heartbeat(refs, abort.signal), Math.max(30_000, this.opts.ttlRefreshMs), 'heartbeat').finally(() => abort.abort());
      metrics.heartbeats.inc();
      for (const id of res.lost) {
        const s = this.slots.get(id);
        if (!s?.have || s.gen !== gens.get(id)) continue;
        this.opts.log.warn({ event: 'lost', id, service: s.have.name }, `registration ${id} is gone from the registry; registering it again`);
        this.setHave(s, undefined);
        this.queue.add(id);
      }
      if (res.error !== undefined) throw res.error;
      if (this.beatFailures > 0) this.opts.log.info({ event: 'heartbeat-up', registry: this.backend.description }, `heartbeats to ${this.backend.description} go through again`);
      this.beatFailures = 0;
      this.state.heartbeatOk = true;
      this.state.heartbeatError = undefined;
      this.state.lastHeartbeat = new Date();
    } catch (err) {
      metrics.heartbeatFailures.inc();
      this.beatFailures++;
      this.state.heartbeatOk = false;
      this.state.heartbeatError = msg(err);
      if (this.beatFailures === 1) {
        this.opts.log.error({ event: 'error', registry: this.backend.description, err: msg(err) }, `heartbeat to ${this.backend.description} failed: ${msg(err)}; retrying before the TTL runs out`);
      }
      // Sooner than the next period, but never more often than the period itself would.
      const wait = Math.min(this.opts.ttlRefreshMs, backoffMs(this.beatFailures - 1, Math.min(500, this.opts.ttlRefreshMs), this.opts.ttlRefreshMs));
      if (!this.stopped) this.retryBeatTimer = setTimeout(() => void this.beat(), wait);
    } finally {
      this.beating = false;
      if (this.beatAgain) {
        this.beatAgain = false;
        setImmediate(() => this.beatSoon());
      }
      this.pump();
    }
  }

  private checkIdle(): void {
    if (this.idleWaiters.length === 0) return;
    const idle =
      this.stopped ||
      !this.ready ||
      (this.busy === 0 && this.queue.size === 0 && this.wheel.size === 0 && !this.resyncWanted && !this.resyncRunning && !this.outage && this.pauseUntil <= Date.now());
    if (idle) for (const w of this.idleWaiters.splice(0)) w();
  }
}

function addr(s: ServiceInstance): string {
  return `${s.address.includes(':') ? `[${s.address}]` : s.address}:${s.port}`;
}

/** Which refusals are logged, and for which ids: one cause is logged once while any id still has it. */
class LoggedRefusals {
  private readonly byKey = new Map<string, string>();
  private readonly byMessage = new Map<string, number>();

  /** Record the refusal `text` for `key`; true when no id had its cause logged yet. */
  note(key: string, text: string): boolean {
    const message = causeOf(text);
    const fresh = !this.byMessage.has(message);
    if (this.byKey.get(key) === message) return fresh;
    this.delete(key);
    this.byKey.set(key, message);
    this.byMessage.set(message, (this.byMessage.get(message) ?? 0) + 1);
    return fresh;
  }

  delete(key: string): void {
    const m = this.byKey.get(key);
    if (m === undefined) return;
    this.byKey.delete(key);
    const n = (this.byMessage.get(m) ?? 1) - 1;
    if (n <= 0) this.byMessage.delete(m);
    else this.byMessage.set(m, n);
  }
}

function msg(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
