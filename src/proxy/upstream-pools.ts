// Keep-alive connection pools, one per instance origin (undici Pool: measured faster than
// node:http's Agent for this, see bench/proxy.mjs). A pool whose origin left the routing table is
// closed gracefully: requests already on it finish, then its connections go (draining).
import { Pool } from 'undici';

export interface PoolTimeouts {
  connectTimeoutMs: number;
  /** Wait for response headers, and the longest silence inside a response body. */
  responseTimeoutMs: number;
  /** How long an idle keep-alive connection to an instance is kept. */
  idleTimeoutMs: number;
}

export class UpstreamPools {
  private readonly pools = new Map<string, Pool>();
  private readonly closing = new Map<Pool, Promise<void>>();

  constructor(private readonly timeouts: PoolTimeouts) {}

  get(origin: string): Pool {
    let p = this.pools.get(origin);
    if (!p) {
      p = new Pool(origin, {
        connectTimeout: this.timeouts.connectTimeoutMs,
        headersTimeout: this.timeouts.responseTimeoutMs,
        bodyTimeout: this.timeouts.responseTimeoutMs,
        keepAliveTimeout: this.timeouts.idleTimeoutMs,
        keepAliveMaxTimeout: this.timeouts.idleTimeoutMs,
        pipelining: 1,
      });
      this.pools.set(origin, p);
    }
    return p;
  }

  get size(): number {
    return this.pools.size;
  }

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
    await Promise.all([...this.closing.keys()].map((pool) => pool.destroy().catch(() => undefined)));
  }

  private drain(pool: Pool): void {
    this.closing.set(
      pool,
      pool.close().then(
        () => void this.closing.delete(pool),
        () => void this.closing.delete(pool),
      ),
    );
  }
}
