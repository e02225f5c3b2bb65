// Follow a registry: validated, sorted snapshots, emitted only when the content changed.
import type { Logger } from '../log/logger.js';
import type { HealthStatus } from '../model/service-instance.js';
import { redactUri } from '../log/redact.js';
import { metrics } from '../metrics/metrics.js';
import { causeOf } from '../registry/explain.js';
import { parseRegistryUri } from '../registry/uri.js';
import { CatalogBuilder, type Catalog } from './catalog.js';
import { ConsulWatch } from './consul-watch.js';
import { Etcd2Watch } from './etcd2-watch.js';
import { EtcdWatch } from './etcd-watch.js';
import { MemoryWatch } from './memory-watch.js';
import type { RawWatch, WatchStatus } from './types.js';

/** Distinct invalid-record messages remembered (each logged once). */
const WARNED_MAX = 10_000;
/** Different causes of one outage logged at error level, at most (the rest at debug). */
const DISTINCT_MAX = 5;

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
  readonly status: WatchStatus = { connected: false, complete: false, failingParts: 0 };
  private current?: Catalog;
  /** Keeps the previous snapshot's entries, so a change costs the work of the services it touched. */
  private builder?: CatalogBuilder;
  private readonly listeners = new Set<(c: Catalog) => void>();
  private readonly warned = new Set<string>();
  private started = false;
  private stopped = false;
  /** first() calls still waiting: they fail if the watch stops before a snapshot. */
  private readonly waiting = new Set<(err: Error) => void>();

  constructor(
    private readonly raw: RawWatch,
    private readonly opts: CatalogWatchOptions,
    /** The registry as messages name it. */
    private readonly description = 'registry',
  ) {}

  static forUri(uri: string, opts: CatalogWatchOptions): CatalogWatch {
    return new CatalogWatch(rawWatchFor(uri), opts, `registry ${redactUri(uri)}`);
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
    return new Promise((resolve, reject) => {
      if (this.stopped) return reject(new Error('catalog watch stopped before the first snapshot'));
      const fail = (err: Error) => {
        off();
        reject(err);
      };
      this.waiting.add(fail);
      const off = this.subscribe((c) => {
        queueMicrotask(() => off());
        this.waiting.delete(fail);
        resolve(c);
      });
    });
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    const log = this.opts.log;
    // The registry as a whole: one line when it starts failing, debug per retry, one when it answers again.
    let failing: { since: number; retries: number; causes: Set<string> } | undefined;
    // Parts failing alone; `announced` when their first failure was logged above debug.
    const parts = new Map<string, { announced: boolean; retries: number }>();
    this.raw.start({
      update: (instances) => {
        this.status.complete = true;
        this.status.lastUpdate = new Date();
        this.builder ??= new CatalogBuilder(this.opts.statuses ?? ['passing'], (msg) => this.warnOnce(msg));
        const next = this.builder.build(instances);
        if (this.current && this.current.fingerprint === next.fingerprint) return;
        this.current = next;
        for (const fn of this.listeners) fn(next);
      },
      error: (err) => {
        // Every failed read counts, logged or not: the reader's side of harbormaster_registry_errors_total.
        metrics.registryErrors.inc({ op: 'watch' });
        this.status.connected = false;
        this.status.lastError = err.message;
        if (!failing) {
          failing = { since: Date.now(), retries: 0, causes: new Set([causeOf(err.message)]) };
          log.error({ event: 'error', registry: this.description, err: err.message }, `${this.description}: watch failed: ${err.message}; keeping the last catalog, retrying with backoff`);
        } else if (!failing.causes.has(causeOf(err.message)) && failing.causes.size < DISTINCT_MAX) {
          // Another cause (a certificate fixed, the password still wrong): one line for each, not one per retry or query.
          failing.retries++;
          failing.causes.add(causeOf(err.message));
          log.error({ event: 'error', registry: this.description, err: err.message }, `${this.description}: watch still failing, now: ${err.message}`);
        } else {
          failing.retries++;
          log.debug({ event: 'watch-retry', err: err.message }, 'registry watch still failing');
        }
      },
      ok: () => {
        this.status.connected = true;
        if (!failing) return;
        log.info({ event: 'watch-up', registry: this.description, downMs: Date.now() - failing.since, retries: failing.retries }, `${this.description}: watch recovered`);
        failing = undefined;
      },
      part: (name, state) => {
        const known = parts.get(name);
        if (state instanceof Error) {
          if (!known) {
            // While the whole registry fails, each part's failure is part of that one story.
            const announced = !failing;
            parts.set(name, { announced, retries: 0 });
            const msg = `registry watch: ${name}: ${state.message}; keeping its last data, retrying it alone with backoff`;
            if (announced) log.warn({ event: 'part-error', part: name, err: state.message }, msg);
            else log.debug({ event: 'part-error', part: name, err: state.message }, msg);
          } else {
            known.retries++;
            log.debug({ event: 'part-retry', part: name, err: state.message }, `registry watch: ${name} still failing`);
          }
        } else if (known) {
          parts.delete(name);
          if (state === 'ok') {
            const level = known.announced ? 'info' : 'debug';
            log[level]({ event: 'part-up', part: name, retries: known.retries }, `registry watch: ${name} recovered`);
          }
        }
        this.status.failingParts = parts.size;
      },
      invalid: (msg) => this.warnOnce(msg),
      note: (msg, level = 'info') => log[level]({ event: 'watch-note' }, msg),
    });
  }

  /** Invalid records are logged once per distinct problem, not at every snapshot. */
  private warnOnce(msg: string): void {
    // Least recently seen first: a problem that keeps coming back stays known, however many others pass.
    if (this.warned.delete(msg)) {
      this.warned.add(msg);
      return;
    }
    if (this.warned.size >= WARNED_MAX) this.warned.delete(this.warned.values().next().value as string);
    this.warned.add(msg);
    this.opts.log.warn({ event: 'invalid' }, msg);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.listeners.clear();
    for (const fail of [...this.waiting]) fail(new Error('catalog watch stopped before the first snapshot'));
    this.waiting.clear();
    if (this.started) await this.raw.stop();
  }
}
