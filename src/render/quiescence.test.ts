import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Quiescence } from './quiescence.js';

describe('quiescence (--wait min:max)', () => {
  let runs: number[];
  let q: Quiescence;
  const start = new Date('2030-01-01T00:00:00Z').getTime();
  const at = () => Date.now() - start;

  beforeEach(() => {
    vi.useFakeTimers({ now: start });
    runs = [];
    q = new Quiescence({ minMs: 500, maxMs: 3000 }, () => runs.push(at()));
  });
  afterEach(() => {
    q.cancel();
    vi.useRealTimers();
  });

  it('runs once the changes have been quiet for min; every change restarts min', () => {
    q.notify();
    vi.advanceTimersByTime(400);
    q.notify(); // restarts the quiet time
    vi.advanceTimersByTime(400);
    expect(runs).toEqual([]);
    vi.advanceTimersByTime(100);
    expect(runs).toEqual([900]);
  });

  it('50 changes within min give one run', () => {
    for (let i = 0; i < 50; i++) {
      q.notify();
      vi.advanceTimersByTime(8);
    }
    vi.advanceTimersByTime(10_000);
    expect(runs).toHaveLength(1);
  });

  it('max is a deadline after the first change, even while changes keep coming', () => {
    for (let t = 0; t < 5000; t += 100) {
      q.notify();
      vi.advanceTimersByTime(100);
    }
    expect(runs[0]).toBe(3000);
  });

  it('a flapping service causes at most one run per max', () => {
    // a change every 600 ms: each is quiet for longer than min
    for (let t = 0; t < 20_000; t += 600) {
      q.notify();
      vi.advanceTimersByTime(600);
    }
    vi.advanceTimersByTime(10_000);
    for (let i = 1; i < runs.length; i++) expect(runs[i] - runs[i - 1]).toBeGreaterThanOrEqual(3000);
    expect(runs.length).toBeGreaterThanOrEqual(6);
    expect(runs.length).toBeLessThanOrEqual(8);
  });

  it('a change soon after a run waits until max after that run, never past its own deadline', () => {
    q.notify();
    vi.advanceTimersByTime(500); // run at 500
    vi.advanceTimersByTime(100);
    q.notify(); // quiet at 1100, but the last run was at 500: not before 3500
    vi.advanceTimersByTime(2000);
    expect(runs).toEqual([500]);
    vi.advanceTimersByTime(900);
    expect(runs).toEqual([500, 3500]);
  });

  it('a single change long after the last run waits only min', () => {
    q.notify();
    vi.advanceTimersByTime(600);
    vi.advanceTimersByTime(10_000);
    q.notify();
    vi.advanceTimersByTime(500);
    expect(runs).toEqual([500, 11_100]);
  });

  it('0:0 runs on the next tick', () => {
    const r: number[] = [];
    const z = new Quiescence({ minMs: 0, maxMs: 0 }, () => r.push(at()));
    z.notify();
    z.notify();
    vi.advanceTimersByTime(0);
    expect(r).toHaveLength(1);
    expect(z.pending).toBe(false);
  });

  it('cancel drops a pending run', () => {
    q.notify();
    expect(q.pending).toBe(true);
    q.cancel();
    vi.advanceTimersByTime(10_000);
    expect(runs).toEqual([]);
  });
});
