// Ids waiting for their retry time, in 100 ms buckets behind one timer: thousands of failed
// operations cost one timer and a handful of buckets, not a timer or a scan each.
const BUCKET_MS = 100;

export class RetryWheel {
  private readonly buckets = new Map<number, Set<string>>();
  private readonly where = new Map<string, number>();
  private timer?: NodeJS.Timeout;
  private timerAt = Infinity;

  constructor(private readonly due: (ids: string[]) => void) {}

  get size(): number {
    return this.where.size;
  }

  add(id: string, at: number): void {
    this.remove(id);
    const b = Math.ceil(at / BUCKET_MS) * BUCKET_MS;
    let set = this.buckets.get(b);
    if (!set) this.buckets.set(b, (set = new Set()));
    set.add(id);
    this.where.set(id, b);
    if (b < this.timerAt) this.arm(b);
  }

  remove(id: string): void {
    const b = this.where.get(id);
    if (b === undefined) return;
    this.where.delete(id);
    const set = this.buckets.get(b);
    set?.delete(id);
    if (set && set.size === 0) this.buckets.delete(b);
  }

  clear(): void {
    this.buckets.clear();
    this.where.clear();
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  private arm(at: number): void {
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.fire(), Math.max(0, at - Date.now()));
    this.timer.unref?.();
  }

  private fire(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    const now = Date.now();
    const ids: string[] = [];
    let next = Infinity;
    for (const [b, set] of this.buckets) {
      if (b <= now) {
        for (const id of set) {
          ids.push(id);
          this.where.delete(id);
        }
        this.buckets.delete(b);
      } else next = Math.min(next, b);
    }
    if (next < Infinity) this.arm(next);
    if (ids.length > 0) this.due(ids);
  }
}
