// Follow a registry: validated, sorted snapshots, emitted only when the content changed.
import type { Logger } from '../log/logger.js';
import type { HealthStatus } from '../model/service-instance.js';
import { parseRegistryUri } from '../registry/uri.js';
import { buildCatalog, type Catalog } from './catalog.js';
import { ConsulWatch } from './consul-watch.js';
import { Etcd2Watch } from './etcd2-watch.js';
import { EtcdWatch } from './etcd-watch.js';
import { MemoryWatch } from './memory-watch.js';
import type { RawWatch, WatchStatus } from './types.js';

export interface CatalogWatchOptions {
  /** Statuses that make an instance routable (default: passing). */
  statuses?: HealthStatus[];
  log: Logger;
}

export function rawWatchFor(uri: string): RawWatch {
  const t = parseRegistryUri(uri);
  switch (t.kind) {
    case 'consul':
      return new ConsulWatch(t);
    case 'etcd':
      return new EtcdWatch(t);
    case 'etcd2':
      return new Etcd2Watch(t);
    case 'memory':
      return new MemoryWatch(t.name);
  }
}

export class CatalogWatch {
  readonly status: WatchStatus = { connected: false, complete: false };
  private current?: Catalog;
  private readonly listeners = new Set<(c: Catalog) => void>();
  private readonly warned = new Set<string>();
  private started = false;

  constructor(
    private readonly raw: RawWatch,
    private readonly opts: CatalogWatchOptions,
  ) {}

  static forUri(uri: string, opts: CatalogWatchOptions): CatalogWatch {
    return new CatalogWatch(rawWatchFor(uri), opts);
  }

  /** The latest snapshot, once the first complete read arrived. */
  get catalog(): Catalog | undefined {
    return this.current;
  }

  /** Subscribe; the current snapshot (if any) is delivered at once. Returns an unsubscribe function. */
  subscribe(fn: (c: Catalog) => void): () => void {
    this.listeners.add(fn);
    if (this.current) fn(this.current);
    if (!this.started) this.start();
    return () => this.listeners.delete(fn);
  }

  /** Resolves with the first complete snapshot. */
  first(): Promise<Catalog> {
    return new Promise((resolve) => {
      const off = this.subscribe((c) => {
        queueMicrotask(() => off());
        resolve(c);
      });
    });
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    let failing = false;
    this.raw.start({
      update: (instances) => {
        if (failing) this.opts.log.info({ event: 'watch-up' }, 'registry watch resumed');
        failing = false;
        this.status.connected = true;
        this.status.complete = true;
        this.status.lastUpdate = new Date();
        const next = buildCatalog(instances, this.opts.statuses ?? ['passing'], (msg) => {
          if (this.warned.has(msg)) return;
          if (this.warned.size > 10_000) this.warned.clear();
          this.warned.add(msg);
          this.opts.log.warn({ event: 'invalid' }, msg);
        });
        if (this.current && this.current.fingerprint === next.fingerprint) return;
        this.current = next;
        for (const fn of this.listeners) fn(next);
      },
      error: (err) => {
        this.status.connected = false;
        this.status.lastError = err.message;
        // One line when a watch starts failing; the retries themselves are debug noise.
        if (!failing) this.opts.log.error({ event: 'error', err: err.message }, `registry watch: ${err.message}; retrying with backoff`);
        else this.opts.log.debug({ err: err.message }, 'registry watch still failing');
        failing = true;
      },
    });
  }

  async stop(): Promise<void> {
    this.listeners.clear();
    if (this.started) await this.raw.stop();
  }
}
