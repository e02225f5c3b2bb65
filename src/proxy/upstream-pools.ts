// Keep-alive connection pools, one per instance origin (undici Pool: measured faster than
// node:http's Agent for this, see bench/proxy.mjs). Each pool opens at most
// `maxConnectionsPerInstance` connections; a request beyond that waits for a free one, in order,
// for at most the response timeout, so slow clients holding responses cannot make the proxy open
// ever more connections to an instance; at most 4 × the limit wait (more get 503 at once). A pool
// whose origin left the routing table is closed gracefully: requests already on it finish, then
// its connections go; requests still waiting for it are handed back to be routed again.
import { Pool, type Dispatcher } from 'undici';

export interface PoolTimeouts {
  connectTimeoutMs: number;
  /** Wait for response headers (and for a free connection). */
  responseTimeoutMs: number;
  /** Longest silence between two pieces of a response body (default 60 s, nginx's proxy_read_timeout). */
  bodyTimeoutMs?: number;
  /** How long an idle keep-alive connection to an instance is kept. */
  idleTimeoutMs: number;
  /** Connections per instance (default 256). */
  maxConnectionsPerInstance?: number;
}

export const DEFAULT_MAX_CONNECTIONS_PER_INSTANCE = 256;
export const DEFAULT_BODY_TIMEOUT_MS = 60_000;
/** Requests waiting for an instance's connections, per connection. */
export const QUEUE_PER_CONNECTION = 4;

/** A request that needs a connection slot of an instance. */
export interface SlotUser {
  /** A slot is this user's: dispatch on `pool` now, and `release()` the slot when the request is over. */
  start(pool: Dispatcher): void;
  /** No slot came free within the response timeout; the request never left. */
  waitTimedOut(): void;
  /** The pool closed (its instance left the routing table) while the request waited; it never left. */
  poolClosed(): void;
}

/** One instance's pool and the requests waiting for one of its connections. */
export class InstancePool {
  private running = 0;
  /** Waiting users in arrival order, with their timeout. */
  private readonly waiting = new Map<SlotUser, NodeJS.Timeout>();
  private closed = false;

  constructor(
    readonly pool: Pool,
    private readonly max: number,
    private readonly waitMs: number,
  ) {}

  /** Requests holding a slot. */
  get busy(): number {
    return this.running;
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.waiting.size;
  }

  /** Whether a request would get a connection at once. */
  get hasRoom(): boolean {
    return this.running < this.max;
  }

  /** Start `user` now or queue it for up to `waitMs`; false when the queue is full (nothing happened). */
  acquire(user: SlotUser, waitMs = this.waitMs): boolean {
    if (this.running < this.max || this.closed) {
      this.running++;
      user.start(this.pool);
      return true;
    }
    if (this.waiting.size >= this.max * QUEUE_PER_CONNECTION) return false;
    const timer = setTimeout(() => {
      this.waiting.delete(user);
      user.waitTimedOut();
    }, waitMs);
    this.waiting.set(user, timer);
    return true;
  }

  release(): void {
    this.running--;
    while (this.running < this.max && this.waiting.size > 0) this.startNext();
  }

  /** Take a waiting user out of the line (its client left); false when it was not waiting. */
  cancel(user: SlotUser): boolean {
    const timer = this.waiting.get(user);
    if (timer === undefined) return false;
    clearTimeout(timer);
    this.waiting.delete(user);
    return true;
  }

  /** Hand everyone still waiting back (to be routed again, with their time limits), then close. */
  close(): Promise<void> {
    this.closed = true;
    const waiting = [...this.waiting];
    this.waiting.clear();
    for (const [user, timer] of waiting) {
      clearTimeout(timer);
      user.poolClosed();
    }
    return this.pool.close();
  }

  private startNext(): void {
    const [user, timer] = this.waiting.entries().next().value as [SlotUser, NodeJS.Timeout];
    clearTimeout(timer);
    this.waiting.delete(user);
    this.running++;
    user.start(this.pool);
  }
}

export class UpstreamPools {
  private readonly pools = new Map<string, InstancePool>();
  private readonly closing = new Map<InstancePool, Promise<void>>();

  constructor(private readonly timeouts: PoolTimeouts) {}

  get(origin: string): InstancePool {
    let p = this.pools.get(origin);
    if (!p) {
      const t = this.timeouts;
      const max = t.maxConnectionsPerInstance ?? DEFAULT_MAX_CONNECTIONS_PER_INSTANCE;
      const pool = new Pool(origin, {
        connections: max,
        connectTimeout: t.connectTimeoutMs,
        headersTimeout: t.responseTimeoutMs,
        bodyTimeout: t.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS,
        keepAliveTimeout: t.idleTimeoutMs,
        keepAliveMaxTimeout: t.idleTimeoutMs,
        pipelining: 1,
      });
      p = new InstancePool(pool, max, t.responseTimeoutMs);
      this.pools.set(origin, p);
    }
    return p;
  }

  get size(): number {
    return this.pools.size;
  }

  /** Whether a request to `u` would get a connection at once (a pool not opened yet has room). */
  readonly hasRoom = (u: { origin: string }): boolean => this.pools.get(u.origin)?.hasRoom ?? true;

  /** Drain and drop the pools of origins not in `keep`. */
  retain(keep: ReadonlySet<string>): void {
    for (const [origin, pool] of this.pools) {
      if (keep.has(origin)) continue;
      this.pools.delete(origin);
      this.drain(pool);
    }
  }

  /** Close every pool; requests still running after `graceMs` are cut. */
  async closeAll(graceMs: number): Promise<void> {
    for (const pool of this.pools.values()) this.drain(pool);
    this.pools.clear();
    let timer: NodeJS.Timeout | undefined;
    const all = Promise.all(this.closing.values());
    await Promise.race([all, new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    await Promise.all([...this.closing.keys()].map((p) => p.pool.destroy().catch(() => undefined)));
  }

  private drain(pool: InstancePool): void {
    this.closing.set(
      pool,
      pool.close().then(
        () => void this.closing.delete(pool),
        () => void this.closing.delete(pool),
      ),
    );
  }
}
