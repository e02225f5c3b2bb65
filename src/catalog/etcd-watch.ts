// etcd v3 read side: one revision-consistent range read of the prefix, then one prefix watch
// from the next revision. etcd3 resumes the watch after disconnects; a compaction (or any
// watch error) leads to a fresh read and a new watch, with backoff.
import { Etcd3, type Watcher } from 'etcd3';
import { decodeInstance } from '../model/codec.js';
import type { ServiceInstance } from '../model/service-instance.js';
import { ETCD_GRPC_OPTIONS, etcdFaultHandling, isBookkeepingKey, type EtcdTarget } from '../registry/etcd-backend.js';
import { backoffMs } from '../util/time.js';
import type { RawWatch, RawWatchHandlers } from './types.js';

export class EtcdWatch implements RawWatch {
  private readonly client: Etcd3;
  private watcher?: Watcher;
  private stopped = false;
  private attempt = 0;
  private timer?: NodeJS.Timeout;
  private readonly kv = new Map<string, ServiceInstance>();
  private scheduled = false;

  constructor(private readonly target: EtcdTarget) {
    this.client = new Etcd3({ hosts: target.endpoints, dialTimeout: 5000, faultHandling: etcdFaultHandling(target.endpoints.length), grpcOptions: ETCD_GRPC_OPTIONS });
  }

  start(h: RawWatchHandlers): void {
    void this.connect(h);
  }

  private put(key: string, value: string): void {
    if (isBookkeepingKey(this.target.prefix, key)) return;
    try {
      this.kv.set(key, decodeInstance(JSON.parse(value)));
    } catch {
      // An invalid record is treated as absent; the catalog never sees it.
      this.kv.delete(key);
    }
  }

  private async connect(h: RawWatchHandlers): Promise<void> {
    if (this.stopped) return;
    const prefix = `${this.target.prefix}/`;
    try {
      const res = await this.client.getAll().prefix(prefix).exec();
      this.kv.clear();
      for (const kv of res.kvs) this.put(kv.key.toString(), kv.value.toString());
      const revision = BigInt(res.header.revision);
      h.update([...this.kv.values()]);
      const watcher = await this.client
        .watch()
        .prefix(prefix)
        .startRevision(String(revision + 1n))
        .create();
      if (this.stopped) {
        await watcher.cancel();
        return;
      }
      this.watcher = watcher;
      this.attempt = 0;
      const emit = () => {
        if (this.scheduled) return;
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          h.update([...this.kv.values()]);
        });
      };
      watcher.on('put', (kv) => {
        this.put(kv.key.toString(), kv.value.toString());
        emit();
      });
      watcher.on('delete', (kv) => {
        this.kv.delete(kv.key.toString());
        emit();
      });
      watcher.on('disconnected', () => h.error(new Error(`etcd watch on ${this.target.prefix} disconnected`)));
      watcher.on('connected', () => emit());
      watcher.on('error', (err: Error) => {
        h.error(err);
        void watcher.cancel().catch(() => undefined);
        if (this.watcher === watcher) this.watcher = undefined;
        this.retry(h);
      });
    } catch (err) {
      h.error(err as Error);
      this.retry(h);
    }
  }

  private retry(h: RawWatchHandlers): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.connect(h), backoffMs(this.attempt++, 250, 10_000));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.watcher?.cancel().catch(() => undefined);
    this.client.close();
  }
}
