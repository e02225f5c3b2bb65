import type { Pool } from 'undici';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { InstancePool, type SlotUser } from './upstream-pools.js';

function user(log: string[], name: string): SlotUser {
  return { start: () => void log.push(`start ${name}`), waitTimedOut: () => void log.push(`timeout ${name}`), poolClosed: () => void log.push(`back ${name}`) };
}

const fakePool = { close: () => Promise.resolve() } as unknown as Pool;

afterEach(() => {
  vi.useRealTimers();
});

describe('InstancePool', () => {
  it('starts up to the limit at once, then one waiting request per released slot, in order', () => {
    const log: string[] = [];
    const p = new InstancePool(fakePool, 2, 1000);
    for (const n of ['a', 'b', 'c', 'd']) p.acquire(user(log, n));
    expect(log).toEqual(['start a', 'start b']);
    expect([p.busy, p.queued]).toEqual([2, 2]);
    p.release();
    expect(log).toEqual(['start a', 'start b', 'start c']);
    p.release();
    p.release();
    expect(log.at(-1)).toBe('start d');
    expect([p.busy, p.queued]).toEqual([1, 0]);
  });

  it('times a waiting request out after the wait, and lets one whose client left out of the line', () => {
    vi.useFakeTimers();
    const log: string[] = [];
    const p = new InstancePool(fakePool, 1, 500);
    const [a, b, c] = [user(log, 'a'), user(log, 'b'), user(log, 'c')];
    p.acquire(a);
    p.acquire(b);
    p.acquire(c);
    expect(p.cancel(b)).toBe(true);
    expect(p.cancel(a)).toBe(false);
    vi.advanceTimersByTime(499);
    expect(log).toEqual(['start a']);
    vi.advanceTimersByTime(1);
    expect(log).toEqual(['start a', 'timeout c']);
    p.release();
    expect([p.busy, p.queued]).toEqual([0, 0]);
  });

  it('keeps at most 4 waiting requests per connection and takes a shorter wait when asked', () => {
    vi.useFakeTimers();
    const log: string[] = [];
    const p = new InstancePool(fakePool, 2, 1000);
    const results = Array.from({ length: 11 }, (_, i) => p.acquire(user(log, `u${i}`), i === 2 ? 100 : undefined));
    expect(results).toEqual([...Array(10).fill(true), false]);
    expect([p.busy, p.queued]).toEqual([2, 8]);
    vi.advanceTimersByTime(100);
    expect(log.at(-1)).toBe('timeout u2');
    expect(p.hasRoom).toBe(false);
  });

  it('hands everyone still waiting back when it closes (they are routed again), and starts later ones at once', async () => {
    const log: string[] = [];
    const p = new InstancePool(fakePool, 1, 1000);
    p.acquire(user(log, 'a'));
    p.acquire(user(log, 'b'));
    await p.close();
    expect(log).toEqual(['start a', 'back b']);
    expect(p.queued).toBe(0);
    p.acquire(user(log, 'c'));
    expect(log.at(-1)).toBe('start c');
  });
});
