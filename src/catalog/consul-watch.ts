// Consul read side: a blocking query on the catalog's service list, and one blocking query on
// /v1/health/service/<name> per service (index / X-Consul-Index, wait). The consul client's
// watch helper retries with backoff and follows index resets after an agent restart.
import type Consul from 'consul';
import type { ServiceInstance } from '../model/service-instance.js';
import { consulClient, type ConsulTarget, type HealthEntry, instanceFromConsul, worstStatus } from '../registry/consul-backend.js';
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

  constructor(target: ConsulTarget) {
    this.consul = consulClient(target);
  }

  start(h: RawWatchHandlers): void {
    this.handlers = h;
    const c = this.consul as unknown as { watch(o: unknown): Watcher };
    this.catalogWatch = c.watch({
      method: this.consul.catalog.service.list,
      options: { wait: WAIT, timeout: WAIT_TIMEOUT_MS },
      backoffFactor: 100,
      backoffMax: 10_000,
    });
    this.catalogWatch.on('change', (data) => this.onServices(Object.keys(data as Record<string, unknown>)));
    this.catalogWatch.on('error', (err) => h.error(err));
  }

  private onServices(names: string[]): void {
    const wanted = new Set(names.filter((n) => n !== 'consul'));
    for (const [name, w] of this.perService) {
      if (!wanted.has(name)) {
        w.end();
        this.perService.delete(name);
        this.entries.delete(name);
      }
    }
    for (const name of wanted) {
      if (this.perService.has(name)) continue;
      this.entries.set(name, undefined);
      const c = this.consul as unknown as { watch(o: unknown): Watcher };
      const w = c.watch({
        method: this.consul.health.service,
        options: { service: name, wait: WAIT, timeout: WAIT_TIMEOUT_MS },
        backoffFactor: 100,
        backoffMax: 10_000,
      });
      w.on('change', (data) => {
        const list = (data as HealthEntry[]).map((e) => instanceFromConsul(e.Service, worstStatus(e.Checks.map((k) => k.Status)), e.Node.Address));
        this.entries.set(name, list);
        this.schedule();
      });
      w.on('error', (err) => this.handlers?.error(err));
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
    this.catalogWatch?.end();
    for (const w of this.perService.values()) w.end();
    this.perService.clear();
    this.consul.destroy();
  }
}
