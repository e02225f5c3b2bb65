// How a rollout tells what it does: a progress bar per batch on a terminal, one plain line per
// step otherwise, or one JSON object per line with --json (for scripts and CI logs).
import cliProgress from 'cli-progress';
import { redact } from '../log/redact.js';

export interface RolloutEvent {
  /** plan, create, start, ready, monitor, withdraw, drain, stop, remove, keep, readmit, rollback, fail, done, note, interrupted */
  event: string;
  message: string;
  container?: string;
  replaces?: string;
  batch?: number;
  batches?: number;
  ms?: number;
  [k: string]: unknown;
}

export interface Reporter {
  emit(e: RolloutEvent): void;
  /** A batch of `steps` steps starts (for the progress bar). */
  batch(index: number, total: number, steps: number): void;
  step(): void;
  close(): void;
}

export function createReporter(opts: { json: boolean; tty: boolean; write: (s: string) => void }): Reporter {
  if (opts.json) return new JsonReporter(opts.write);
  if (opts.tty) return new BarReporter();
  return new LineReporter(opts.write);
}

class JsonReporter implements Reporter {
  constructor(private readonly write: (s: string) => void) {}
  emit(e: RolloutEvent): void {
    this.write(`${JSON.stringify({ time: new Date().toISOString(), ...e })}\n`);
  }
  batch(): void {}
  step(): void {}
  close(): void {}
}

class LineReporter implements Reporter {
  constructor(private readonly write: (s: string) => void) {}
  emit(e: RolloutEvent): void {
    this.write(`${new Date().toISOString().slice(11, 23)} ${e.message}\n`);
  }
  batch(): void {}
  step(): void {}
  close(): void {}
}

class BarReporter implements Reporter {
  private readonly bars = new cliProgress.MultiBar(
    { format: ' {label} [{bar}] {value}/{total} {step}', hideCursor: true, clearOnComplete: false, stopOnComplete: false, stream: process.stderr, autopadding: true },
    cliProgress.Presets.shades_classic,
  );
  private bar?: cliProgress.SingleBar;

  emit(e: RolloutEvent): void {
    const line = redact(`${new Date().toISOString().slice(11, 19)} ${e.message}\n`);
    // Before the first batch (the plan, a dry run) there is no bar to print above.
    if (!this.bar) {
      process.stderr.write(line);
      return;
    }
    this.bars.log(line);
    this.bar.update({ step: e.event });
  }
  batch(index: number, total: number, steps: number): void {
    this.bar?.stop();
    this.bar = this.bars.create(steps, 0, { label: `batch ${index}/${total}`, step: '' });
  }
  step(): void {
    this.bar?.increment();
  }
  close(): void {
    if (!this.bar) return;
    // Lines logged since the last redraw are written by a redraw: one more before the bars stop.
    this.bars.update();
    this.bars.stop();
  }
}
