// Consul read side: a blocking query on the catalog's service list, and one blocking query on
// /v1/health/service/<name> per service (index / X-Consul-Index, wait), through the consul
// client's watch helper. On any error everything starts over from index 0 with backoff.
import type Consul from 'consul';
import type { ServiceInstance } from '../model/service-instance.js';
import { consulClient, type ConsulTarget, type HealthEntry, instanceFromConsul, isHeartbeatService, worstStatus } from '../registry/consul-backend.js';
import { backoffMs } from '../util/time.js';
import type { RawWatch, RawWatchHandlers } from './types.js';

const WAIT = '30s';
const WAIT_TIMEOUT_MS = 36_000;

interface Watcher {
  on(event: 'change', fn: (data: unknown) => void): void;
  on(event: 'error', fn: (err: Error) => void): void;
  end(): void;
}

export class ConsulWatch implements RawWatch {
  private readonly consul: Consul;
  private catalogWatch?: Watcher;
  private readonly perService = new Map<string, Watcher>();
  /** Instances per service; undefined until that service's first answer. */
  private readonly entries = new Map<string, ServiceInstance[] | undefined>();
  private handlers?: RawWatchHandlers;
  private scheduled = false;
  private attempt = 0;
  private restartTimer?: NodeJS.Timeout;
  private stopped = false;

  constructor(target: ConsulTarget) {
    this.consul = consulClient(target);
  }

  start(h: RawWatchHandlers): void {
    this.handlers = h;
    this.watchCatalog();
  }

  private watch(method: unknown, options: Record<string, unknown>): Watcher {
    const c = this.consul as unknown as { watch(o: unknown): Watcher };
    const w = c.watch({ method, options: { ...options, wait: WAIT, timeout: WAIT_TIMEOUT_MS } });
    // Any failure starts over from index 0: an agent that restarted has a lower index, and a
    // blocking query with the old one would hang for the whole wait before noticing.
    w.on('error', (err) => this.restart(err));
    return w;
  }

  private watchCatalog(): void {
    this.catalogWatch = this.watch(this.consul.catalog.service.list, {});
    this.catalogWatch.on('change', (data) => {
      this.attempt = 0;
      this.onServices(Object.keys(data as Record<string, unknown>));
    });
  }

  private restart(err: Error): void {
    this.handlers?.error(err);
    if (this.restartTimer || this.stopped) return;
    this.catalogWatch?.end();
    for (const w of this.perService.values()) w.end();
    this.perService.clear();
    // Keep serving the last snapshot; the next one is emitted once every service answered again.
    for (const name of this.entries.keys()) this.entries.set(name, undefined);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      this.watchCatalog();
    }, backoffMs(this.attempt++, 200, 10_000));
  }

  private onServices(names: string[]): void {
    const wanted = new Set(names.filter((n) => n !== 'consul'));
    for (const name of [...this.entries.keys()]) {
      if (wanted.has(name)) continue;
      this.perService.get(name)?.end();
      this.perService.delete(name);
      this.entries.delete(name);
    }
    for (const name of wanted) {
      if (this.perService.has(name)) continue;
      this.entries.set(name, undefined);
      const w = this.watch(this.consul.health.service, { service: name });
      w.on('change', (data) => {
        // A host's heartbeat service is bookkeeping, never an instance.
        const list = (data as HealthEntry[]).filter((e) => !isHeartbeatService(e.Service)).map((e) => instanceFromConsul(e.Service, worstStatus(e.Checks.map((k) => k.Status)), e.Node.Address));
        this.entries.set(name, list);
        this.schedule();
      });
      this.perService.set(name, w);
    }
    this.schedule();
  }

  /** Emit once every known service has answered, coalescing bursts of changes. */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if ([...this.entries.values()].some((v) => v === undefined)) return;
      this.handlers?.update([...this.entries.values()].flatMap((v) => v ?? []));
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    this.catalogWatch?.end();
    for (const w of this.perService.values()) w.end();
    this.perService.clear();
    this.consul.destroy();
  }
}
