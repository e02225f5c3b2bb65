// --wait <min>:<max>: wait for the catalog to stay quiet for `min` (restarted by every change),
// but never longer than `max` after the first change; and never run twice within `max`, so a
// flapping service cannot cause more than one reload per `max`.
import type { WaitSpec } from './types.js';

export class Quiescence {
  private timer?: NodeJS.Timeout;
  /** First change since the last run. */
  private firstAt?: number;
  private lastRunAt = -Infinity;

  constructor(
    private readonly wait: WaitSpec,
    private readonly run: () => void,
  ) {}

  /** A change happened. */
  notify(): void {
    const now = Date.now();
    this.firstAt ??= now;
    const quietAt = now + this.wait.minMs;
    const deadline = this.firstAt + this.wait.maxMs;
    // firstAt ≥ lastRunAt, so the spacing rule never pushes a run past the deadline.
    const at = Math.max(Math.min(quietAt, deadline), this.lastRunAt + this.wait.maxMs);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.fire(), Math.max(0, at - now));
  }

  get pending(): boolean {
    return this.firstAt !== undefined;
  }

  cancel(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.firstAt = undefined;
  }

  private fire(): void {
    this.timer = undefined;
    this.firstAt = undefined;
    this.lastRunAt = Date.now();
    this.run();
  }
}
