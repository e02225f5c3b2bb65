// etcd v2 read side: a recursive read, then a recursive long-poll watch (waitIndex) through
// node-etcd's watcher, which follows index clears with a resync. Each change triggers one
// fresh read, coalesced, so the snapshot is always a consistent listing.
import Etcd from 'node-etcd';
import type { Etcd2Target } from '../registry/etcd2-backend.js';
import { Etcd2Backend } from '../registry/etcd2-backend.js';
import { backoffMs } from '../util/time.js';
import type { RawWatch, RawWatchHandlers } from './types.js';

interface V2Watcher {
  on(event: 'change' | 'resync' | 'reconnect' | 'error', fn: (arg: unknown) => void): void;
  stop(): void;
}

export class Etcd2Watch implements RawWatch {
  private readonly backend: Etcd2Backend;
  private watcher?: V2Watcher;
  private stopped = false;
  private reading = false;
  private again = false;
  private attempt = 0;
  private timer?: NodeJS.Timeout;

  constructor(private readonly target: Etcd2Target) {
    this.backend = new Etcd2Backend(target, { ttl: 0 });
  }

  start(h: RawWatchHandlers): void {
    const Client = Etcd as unknown as new (hosts: string[]) => { watcher(key: string, index: number | null, opts: Record<string, unknown>): V2Watcher };
    this.watcher = new Client(this.target.endpoints).watcher(this.target.prefix, null, { recursive: true });
    const reread = () => void this.read(h);
    this.watcher.on('change', reread);
    this.watcher.on('resync', reread);
    this.watcher.on('reconnect', (e) => {
      h.error(new Error(`etcd2 watch on ${this.target.prefix} reconnecting: ${(e as { error?: Error })?.error?.message ?? 'lost'}`));
      reread();
    });
    this.watcher.on('error', (e) => h.error(e instanceof Error ? e : new Error(String(e))));
    reread();
  }

  private async read(h: RawWatchHandlers): Promise<void> {
    if (this.stopped) return;
    if (this.reading) {
      this.again = true;
      return;
    }
    this.reading = true;
    try {
      do {
        this.again = false;
        h.update(await this.backend.list());
      } while (this.again && !this.stopped);
      this.attempt = 0;
    } catch (err) {
      h.error(err as Error);
      clearTimeout(this.timer);
      this.timer = setTimeout(() => void this.read(h), backoffMs(this.attempt++, 250, 10_000));
    } finally {
      this.reading = false;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.watcher?.stop();
  }
}
