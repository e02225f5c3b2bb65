import v8 from 'node:v8';
import { describe, expect, it } from 'vitest';
import { HeapTrim } from './heap-trim.js';

const MiB = 1024 * 1024;

describe('HeapTrim', () => {
  it('collects once after a burst, only when idle, and not again while the heap stays tight', () => {
    let idle = false;
    let heap = { committed: 90 * MiB, used: 30 * MiB }; // what a burst of registrations leaves
    let collected = 0;
    const trim = new HeapTrim({
      idle: () => idle,
      stats: () => heap,
      collect: () => {
        collected++;
        heap = { committed: 26 * MiB, used: 24 * MiB };
      },
    });
    expect(trim.check()).toBe(false); // registrations still pending: not now
    idle = true;
    expect(trim.check()).toBe(true);
    expect(collected).toBe(1);
    for (let i = 0; i < 10; i++) trim.check(); // steady state: nothing to give back
    expect(collected).toBe(1);
    heap = { committed: 60 * MiB, used: 25 * MiB }; // the next burst
    expect(trim.check()).toBe(true);
    expect(trim.collections).toBe(2);
  });

  it('does not collect again every period when a collection leaves the slack above the threshold (fragmented old space, a busy young one)', () => {
    // Measured on Node 20: 38 MiB live in a fragmented old space kept 86-198 MiB committed over it
    // after each of several full collections, each one taking 0.4-1 s on a loaded machine.
    let heap = { committed: 240 * MiB, used: 90 * MiB };
    const trim = new HeapTrim({
      idle: () => true,
      stats: () => heap,
      collect: () => {
        heap = { committed: 236 * MiB, used: 38 * MiB };
      },
    });
    expect(trim.check()).toBe(true);
    for (let i = 0; i < 30; i++) trim.check();
    expect(trim.collections).toBe(1);
    // Pages reused, then given back: the floor follows the slack down.
    heap = { committed: 100 * MiB, used: 90 * MiB };
    expect(trim.check()).toBe(false);
    // A new burst grows the heap by another threshold over that: worth one more.
    heap = { committed: 150 * MiB, used: 100 * MiB };
    expect(trim.check()).toBe(true);
    expect(trim.collections).toBe(2);
  });

  it('a collector that cannot be had stops the trim instead of throwing from its timer', () => {
    let looked = 0;
    const trim = new HeapTrim({
      idle: () => true,
      stats: () => (looked++, { committed: 90 * MiB, used: 30 * MiB }),
      collect: () => {
        throw new ReferenceError('gc is not defined');
      },
    });
    expect(trim.check()).toBe(false);
    expect(trim.check()).toBe(false);
    expect(trim.collections).toBe(0);
    expect(looked).toBe(1);
  });

  it('really collects (without --expose-gc): garbage left by a burst is gone afterwards', () => {
    let junk: unknown[] = [];
    for (let i = 0; i < 200_000; i++) junk.push({ i, s: `x${i}` });
    junk = [];
    const before = v8.getHeapStatistics().used_heap_size;
    const trim = new HeapTrim({ idle: () => true, slackBytes: 0 });
    expect(trim.check()).toBe(true);
    const after = v8.getHeapStatistics().used_heap_size;
    console.log(`PROBE heap trim: used heap ${(before / 1048576).toFixed(1)} → ${(after / 1048576).toFixed(1)} MiB`);
    expect(after).toBeLessThan(before);
    expect(junk).toEqual([]);
  });
});
