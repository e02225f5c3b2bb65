// The embedded registry pushes changes directly; expiry is swept so TTLs behave as in a cluster.
import { memoryStore } from '../registry/memory-backend.js';
import type { RawWatch, RawWatchHandlers } from './types.js';

export class MemoryWatch implements RawWatch {
  private off?: () => void;
  private sweeper?: NodeJS.Timeout;

  constructor(private readonly name: string) {}

  start(h: RawWatchHandlers): void {
    const store = memoryStore(this.name);
    let scheduled = false;
    // Coalesce bursts (a resync registers many) into one update.
    const push = () => {
      if (scheduled) return;
      scheduled = true;
      queueMicrotask(() => {
        scheduled = false;
        h.update(store.list());
      });
    };
    this.off = store.subscribe(push);
    this.sweeper = setInterval(() => store.list(), 1000);
    this.sweeper.unref();
    push();
  }

  async stop(): Promise<void> {
    this.off?.();
    clearInterval(this.sweeper);
  }
}
