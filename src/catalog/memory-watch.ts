// The embedded registry pushes changes directly; expiry is swept so TTLs behave as in a cluster.
import { memoryStore } from '../registry/memory-backend.js';
import type { RawWatch, RawWatchHandlers } from './types.js';

export class MemoryWatch implements RawWatch {
  private off?: () => void;
  private sweeper?: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly name: string) {}

  start(h: RawWatchHandlers): void {
    const store = memoryStore(this.name);
    let scheduled = false;
    // Coalesce bursts (a resync registers thousands, each in a microtask) into one update per
    // turn of the event loop, so a burst costs one copy of the catalog, not one per registration.
    const push = () => {
      if (scheduled) return;
      scheduled = true;
      setImmediate(() => {
        scheduled = false;
        if (!this.stopped) h.update(store.list());
      });
    };
    this.off = store.subscribe(push);
    // Expiry only: a change it finds notifies `push`.
    this.sweeper = setInterval(() => store.expire(), 1000);
    this.sweeper.unref();
    queueMicrotask(() => {
      if (this.stopped) return;
      h.ok();
      h.update(store.list());
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.off?.();
    clearInterval(this.sweeper);
  }
}
