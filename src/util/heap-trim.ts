// A burst (thousands of registrations at start, a services folder rewritten, a resync that
// writes everything again) grows V8's heap: a young generation of up to 32 MB and old-generation
// pages full of the burst's garbage. Nothing makes V8 give them back while the process idles
// afterwards, and a sidecar idles almost all the time: at 2,500 services a registrator kept
// ~160 MB RSS of which ~30 MB was live heap. One full collection once the burst is over returns
// the pages (measured: ~100 MB), and is not repeated while the heap stays close to what it holds.
import v8 from 'node:v8';
import vm from 'node:vm';

export interface HeapTrimOptions {
  /** Nothing to do now (no registration waiting or in flight): a collection will not be undone at once. */
  idle: () => boolean;
  /** How often the heap is looked at (default 10 s). */
  everyMs?: number;
  /** Committed heap above what is in use that is worth a full collection (default 24 MiB). */
  slackBytes?: number;
  /** For tests: the statistics and the collection. */
  stats?: () => { committed: number; used: number };
  collect?: () => void;
}

/** The collector, made callable without `--expose-gc` on the command line. */
function fullCollection(): () => void {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

function heapStats(): { committed: number; used: number } {
  const h = v8.getHeapStatistics();
  return { committed: h.total_heap_size, used: h.used_heap_size };
}

export class HeapTrim {
  private timer?: NodeJS.Timeout;
  private collectFn?: () => void;
  /**
   * The slack the last collection left, lowered whenever the heap shrinks further. A full
   * collection does not compact a fragmented old generation nor shrink a busy young one (under a
   * proxy's traffic in `run`), so the slack can stay above the threshold after it: only a heap
   * that grew by another threshold since is worth the next one, else a collection of no use
   * would run every period.
   */
  private floor = 0;
  /** The collector cannot be had in this runtime: no more tries. */
  private unavailable = false;
  /** Collections made so far. */
  collections = 0;

  constructor(private readonly opts: HeapTrimOptions) {}

  start(): void {
    this.timer = setInterval(() => this.check(), this.opts.everyMs ?? 10_000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One look: collects when idle and the heap holds much more than it uses. */
  check(): boolean {
    if (this.unavailable || !this.opts.idle()) return false;
    const stats = this.opts.stats ?? heapStats;
    const { committed, used } = stats();
    const slack = committed - used;
    this.floor = Math.min(this.floor, slack);
    if (slack - this.floor < (this.opts.slackBytes ?? 24 * 1024 * 1024)) return false;
    try {
      this.collectFn ??= this.opts.collect ?? fullCollection();
      this.collectFn();
    } catch {
      // A runtime that refuses the flag or the collector: the heap is left to V8, the sidecar runs on.
      this.unavailable = true;
      this.stop();
      return false;
    }
    this.collections++;
    const after = stats();
    this.floor = Math.max(0, after.committed - after.used);
    return true;
  }
}
