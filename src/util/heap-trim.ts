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
    if (!this.opts.idle()) return false;
    const { committed, used } = (this.opts.stats ?? heapStats)();
    if (committed - used < (this.opts.slackBytes ?? 24 * 1024 * 1024)) return false;
    this.collectFn ??= this.opts.collect ?? fullCollection();
    this.collectFn();
    this.collections++;
    return true;
  }
}
