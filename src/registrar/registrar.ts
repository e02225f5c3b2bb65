// Reconciles the desired set (from sources, per owner such as a container) with what this host
// has registered. Everything that touches the registry runs in one serialized loop, so a burst
// of events, a heartbeat and a resync never interleave; failures back off and end in a full
// resync that registers every current service again.
import { instanceFingerprint, type ServiceInstance } from '../model/service-instance.js';
import type { RegistryBackend } from '../registry/types.js';
import { RejectedError } from '../registry/types.js';
import type { Logger } from '../log/logger.js';
import { metrics, timed } from '../metrics/metrics.js';
import { backoffMs, withTimeout } from '../util/time.js';

export interface RegistrarOptions {
  hostname: string;
  /** Heartbeat period; 0 disables heartbeats. */
  ttlRefreshMs: number;
  /** Remove this host's registrations that no desired instance backs, on start and every resync. */
  cleanup: boolean;
  /** Base of the retry backoff. */
  retryIntervalMs: number;
  maxRetryMs?: number;
  /** Registry operations running at once. */
  concurrency?: number;
  log: Logger;
}

/** Where sources put what they want registered. */
export interface DesiredSink {
  /** Replace the instances of one owner; an empty list withdraws them, `reason` goes to the log. */
  set(owner: string, instances: ServiceInstance[], reason?: string): void;
  /** Replace everything (full resync): owners not in `all` are withdrawn. */
  replaceAll(all: Map<string, ServiceInstance[]>): void;
}

interface Registered {
  instance: ServiceInstance;
  fingerprint: string;
}

export interface RegistrarStatus {
  registryUp: boolean;
  lastSync?: Date;
  lastError?: string;
  registered: number;
}

const OP_TIMEOUT_MS = 15_000;

export class Registrar implements DesiredSink {
  private desired = new Map<string, ServiceInstance[]>();
  private readonly registered = new Map<string, Registered>();
  /** Fingerprints the registry refused (bad check…): not retried until the instance changes. */
  private readonly rejected = new Map<string, string>();
  private dirty = false;
  private fullPending = true;
  private reregisterAll = false;
  private heartbeatDue = false;
  private loop?: Promise<void>;
  private failures = 0;
  private retryTimer?: NodeJS.Timeout;
  private heartbeatTimer?: NodeJS.Timeout;
  private stopped = false;
  private readonly conflicts = new Set<string>();
  /** Why an instance is about to be withdrawn (e.g. "kill SIGTERM"), for its log line. */
  private readonly reasons = new Map<string, string>();
  /** Which owner an instance id came from, to attribute withdrawal reasons. */
  private readonly ownerOf = new Map<string, string>();
  readonly status: RegistrarStatus = { registryUp: true, registered: 0 };

  constructor(
    private readonly backend: RegistryBackend,
    private readonly opts: RegistrarOptions,
  ) {}

  start(): void {
    if (this.opts.ttlRefreshMs > 0) {
      this.heartbeatTimer = setInterval(() => {
        this.heartbeatDue = true;
        this.kick();
      }, this.opts.ttlRefreshMs);
      this.heartbeatTimer.unref();
    }
    this.kick();
  }

  set(owner: string, instances: ServiceInstance[], reason?: string): void {
    if (instances.length === 0) this.desired.delete(owner);
    else this.desired.set(owner, instances);
    for (const inst of this.desired.get(owner) ?? []) this.reasons.delete(inst.id);
    if (reason) for (const r of this.registered.values()) if (!instances.some((i) => i.id === r.instance.id) && this.ownerOf.get(r.instance.id) === owner) this.reasons.set(r.instance.id, reason);
    this.kick();
  }

  replaceAll(all: Map<string, ServiceInstance[]>): void {
    this.desired = new Map([...all].filter(([, list]) => list.length > 0));
    this.fullPending = true;
    this.kick();
  }

  /** What is registered now (for status output and tests). */
  current(): ServiceInstance[] {
    return [...this.registered.values()].map((r) => r.instance);
  }

  /** Resolves once the loop is idle with nothing pending (tests, --once style callers). */
  async settled(): Promise<void> {
    while (this.loop) await this.loop;
  }

  /** Stop; with `withdraw`, deregister everything this host registered. */
  async stop(withdraw: boolean): Promise<void> {
    this.stopped = true;
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.retryTimer);
    await this.loop;
    if (withdraw) {
      const all = [...this.registered.values()];
      await this.pool(all, async (r) => {
        try {
          await withTimeout(this.backend.deregister(r.instance), 5_000, 'deregister');
          this.registered.delete(r.instance.id);
          this.opts.log.info({ event: 'deregistered', service: r.instance.name, id: r.instance.id, addr: addr(r.instance), reason: 'shutdown' }, `deregistered ${r.instance.id} ${addr(r.instance)} (shutdown)`);
        } catch (err) {
          this.opts.log.error({ event: 'error', id: r.instance.id, err: msg(err) }, `deregister ${r.instance.id} on shutdown failed: ${msg(err)}`);
        }
      });
    }
  }

  private kick(): void {
    if (this.stopped) return;
    this.dirty = true;
    if (!this.loop && !this.retryTimer) {
      this.loop = this.run().finally(() => (this.loop = undefined));
    }
  }

  private async run(): Promise<void> {
    while (this.dirty && !this.stopped) {
      this.dirty = false;
      try {
        await this.reconcile();
        if (!this.status.registryUp || this.failures > 0) {
          this.opts.log.info({ event: 'registry-up', registry: this.backend.description, services: this.registered.size }, `registry ${this.backend.description} answers again; resynced ${this.registered.size} services`);
        }
        this.failures = 0;
        this.status.registryUp = true;
        this.status.lastSync = new Date();
      } catch (err) {
        this.failures++;
        this.status.registryUp = false;
        this.status.lastError = msg(err);
        // After an outage the registry may have lost anything: list it again and re-register all.
        this.fullPending = true;
        this.reregisterAll = true;
        const wait = backoffMs(this.failures - 1, this.opts.retryIntervalMs, this.opts.maxRetryMs ?? 30_000);
        this.opts.log.error({ event: 'error', registry: this.backend.description, err: msg(err), retryMs: wait }, `registry ${this.backend.description}: ${msg(err)}; retrying in ${(wait / 1000).toFixed(1)}s`);
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          this.kick();
        }, wait);
        this.dirty = false;
      }
    }
    this.status.registered = this.registered.size;
  }

  private wanted(): Map<string, ServiceInstance> {
    const want = new Map<string, ServiceInstance>();
    for (const [owner, list] of this.desired) {
      for (const inst of list) {
        const prev = want.get(inst.id);
        if (prev) {
          const key = `${owner}:${inst.id}`;
          if (!this.conflicts.has(key)) {
            this.conflicts.add(key);
            this.opts.log.error({ event: 'error', id: inst.id, owner }, `service id ${inst.id} is claimed twice (SERVICE_ID collision); keeping the first`);
          }
          continue;
        }
        want.set(inst.id, inst);
        this.ownerOf.set(inst.id, owner);
      }
    }
    return want;
  }

  private async reconcile(): Promise<void> {
    const heartbeat = this.heartbeatDue;
    this.heartbeatDue = false;
    // After an outage everything is registered again below, which refreshes every TTL too.
    if (heartbeat && !this.reregisterAll) {
      const { lost } = await timed('heartbeat', () => withTimeout(this.backend.heartbeat(this.current()), OP_TIMEOUT_MS, 'heartbeat'));
      metrics.heartbeats.inc();
      for (const id of lost) {
        const r = this.registered.get(id);
        if (!r) continue;
        this.registered.delete(id);
        this.opts.log.warn({ event: 'lost', id, service: r.instance.name }, `registration ${id} is gone from the registry; registering it again`);
      }
    }
    const want = this.wanted();
    if (this.fullPending) {
      const actual = await timed('list', () => withTimeout(this.backend.listOwn(this.opts.hostname), OP_TIMEOUT_MS, 'list'));
      const present = new Set(actual.map((a) => a.id));
      // What this process registered, including withdrawals that failed during an outage.
      const ours = new Set(this.registered.keys());
      if (this.reregisterAll) this.registered.clear();
      for (const id of [...this.registered.keys()]) if (!present.has(id)) this.registered.delete(id);
      const stale = actual.filter((a) => !want.has(a.id) && (this.opts.cleanup || ours.has(a.id)));
      await this.pool(stale, (a) => this.withdraw(a, ours.has(a.id) ? 'withdrawn after resync' : 'cleanup: no container backs it'));
      this.fullPending = false;
      this.reregisterAll = false;
    }

    const gone = [...this.registered.values()].filter((r) => !want.has(r.instance.id));
    await this.pool(gone, (r) => this.withdraw(r.instance, this.reasons.get(r.instance.id) ?? 'withdrawn'));

    const todo = [...want.values()].filter((inst) => {
      const fp = instanceFingerprint(inst);
      return this.registered.get(inst.id)?.fingerprint !== fp && this.rejected.get(inst.id) !== fp;
    });
    await this.pool(todo, async (inst) => {
      const prev = this.registered.get(inst.id);
      // A renamed service lives under another key in etcd: remove the old one first.
      if (prev && prev.instance.name !== inst.name) await this.withdraw(prev.instance, 'renamed');
      const fp = instanceFingerprint(inst);
      try {
        await timed('register', () => withTimeout(this.backend.register(inst), OP_TIMEOUT_MS, 'register'));
      } catch (err) {
        if (!(err instanceof RejectedError)) throw err;
        this.rejected.set(inst.id, fp);
        this.opts.log.error({ event: 'error', id: inst.id, service: inst.name, err: msg(err) }, `registry refused ${inst.id}: ${msg(err)}`);
        return;
      }
      this.rejected.delete(inst.id);
      this.registered.set(inst.id, { instance: inst, fingerprint: fp });
      metrics.registrations.inc();
      this.opts.log.info(
        { event: 'registered', service: inst.name, id: inst.id, addr: addr(inst), status: inst.status },
        `registered ${inst.id} as ${inst.name} at ${addr(inst)}${inst.status === 'passing' ? '' : ` (${inst.status})`}`,
      );
    });
    for (const id of [...this.rejected.keys()]) if (!want.has(id)) this.rejected.delete(id);
    this.status.registered = this.registered.size;
    metrics.registered.set(this.registered.size);
  }

  private async withdraw(inst: ServiceInstance, reason: string): Promise<void> {
    await timed('deregister', () => withTimeout(this.backend.deregister(inst), OP_TIMEOUT_MS, 'deregister'));
    this.registered.delete(inst.id);
    metrics.deregistrations.inc();
    this.reasons.delete(inst.id);
    this.ownerOf.delete(inst.id);
    this.opts.log.info({ event: 'deregistered', service: inst.name, id: inst.id, addr: addr(inst), reason }, `deregistered ${inst.id} at ${addr(inst)} (${reason})`);
  }

  /** Run `fn` over `items` with bounded concurrency; the first failure is rethrown after all settle. */
  private async pool<T>(items: T[], fn: (item: T) => Promise<void>): Promise<void> {
    const limit = this.opts.concurrency ?? 8;
    let next = 0;
    let failure: unknown;
    const worker = async () => {
      while (next < items.length) {
        const item = items[next++];
        try {
          await fn(item);
        } catch (err) {
          failure ??= err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
    if (failure !== undefined) throw failure;
  }
}

function addr(s: ServiceInstance): string {
  return `${s.address.includes(':') ? `[${s.address}]` : s.address}:${s.port}`;
}

function msg(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
