import { describe, expect, it } from 'vitest';
import { available, createBalancer, endEjection, InstanceState, recordFailure, recordReset, recordSuccess, type Upstream } from './balancer.js';

function up(port: number, weight = 1, routable = true): Upstream {
  return { key: `i${port}`, id: `i${port}`, service: 's', address: '127.0.0.1', port, origin: `http://127.0.0.1:${port}`, weight, routable, state: new InstanceState() };
}

function picks(b: ReturnType<typeof createBalancer>, n: number, now = 0): number[] {
  return Array.from({ length: n }, () => b.pick(now)?.port ?? -1);
}

describe('round robin', () => {
  it('rotates over equal-weight instances', () => {
    expect(picks(createBalancer('round-robin', [up(1), up(2), up(3)]), 7)).toEqual([1, 2, 3, 1, 2, 3, 1]);
  });

  it('spreads weights smoothly (5:1:1 → a a b a c a a)', () => {
    const b = createBalancer('round-robin', [up(1, 5), up(2, 1), up(3, 1)]);
    expect(picks(b, 7)).toEqual([1, 1, 2, 1, 3, 1, 1]);
  });

  it('honours weights over many picks', () => {
    const b = createBalancer('round-robin', [up(1, 3), up(2, 1)]);
    const counts = picks(b, 400).reduce<Record<number, number>>((m, p) => ((m[p] = (m[p] ?? 0) + 1), m), {});
    expect(counts).toEqual({ 1: 300, 2: 100 });
  });

  it('gives weight 0 and unroutable instances nothing', () => {
    expect(picks(createBalancer('round-robin', [up(1, 0), up(2)]), 3)).toEqual([2, 2, 2]);
    expect(picks(createBalancer('round-robin', [up(1, 2), up(2, 0), up(3, 1, false)]), 3)).toEqual([1, 1, 1]);
    expect(createBalancer('round-robin', [up(1, 0)]).pick(0)).toBeUndefined();
  });

  it('skips excluded instances (a retry goes elsewhere) and answers undefined when none is left', () => {
    const a = up(1);
    const b = up(2);
    const bal = createBalancer('round-robin', [a, b]);
    expect(bal.pick(0, new Set([a]))).toBe(b);
    expect(bal.pick(0, new Set([b]))).toBe(a);
    expect(bal.pick(0, new Set([a, b]))).toBeUndefined();
  });

  it('continues after the instance picked last when the next table takes over', () => {
    const [a, b, c] = [up(1), up(2), up(3)];
    const first = createBalancer('round-robin', [a, b, c]);
    expect(picks(first, 2)).toEqual([1, 2]);
    expect(picks(createBalancer('round-robin', [a, b, c], first), 2)).toEqual([3, 1]);
    // The instance picked last left: the rotation goes on where it would have sorted.
    const second = createBalancer('round-robin', [a, b, c]);
    picks(second, 2);
    expect(picks(createBalancer('round-robin', [a, c], second), 3)).toEqual([3, 1, 3]);
  });

  it('keeps the exact weighted ratio across swaps every few picks (current weights carried by instance)', () => {
    const [a, b] = [up(1, 3), up(2, 1)];
    let bal = createBalancer('round-robin', [a, b]);
    const seq: number[] = [];
    for (let i = 0; i < 400; i++) {
      if (i % 3 === 0) bal = createBalancer('round-robin', [a, b], bal);
      seq.push(bal.pick(0)!.port);
    }
    expect(seq.filter((p) => p === 1).length).toBe(300);
    expect(seq.slice(0, 8)).toEqual([1, 1, 2, 1, 1, 1, 2, 1]);
    // Without the hand-over every swap restarts the sequence (a a b): 2:1, not 3:1.
    let fresh = createBalancer('round-robin', [a, b]);
    let n = 0;
    for (let i = 0; i < 399; i++) {
      if (i % 3 === 0) fresh = createBalancer('round-robin', [a, b]);
      if (fresh.pick(0)!.port === 1) n++;
    }
    expect(n).toBe(266);
    // A weight change keeps the current weights; a new instance starts from zero.
    const c = up(3, 1);
    const changed = createBalancer('round-robin', [{ ...a, weight: 2 }, b, c], bal);
    expect(picks(changed, 8).filter((p) => p === 1)).toHaveLength(4);
  });
});

describe('least connections', () => {
  it('picks the instance with the fewest requests in flight', () => {
    const [a, b, c] = [up(1), up(2), up(3)];
    a.state.active = 2;
    b.state.active = 0;
    c.state.active = 1;
    expect(createBalancer('least-conn', [a, b, c]).pick(0)).toBe(b);
  });

  it('divides by weight', () => {
    const [a, b] = [up(1, 4), up(2, 1)];
    a.state.active = 3; // 0.75 per weight
    b.state.active = 1; // 1 per weight
    expect(createBalancer('least-conn', [a, b]).pick(0)).toBe(a);
  });

  it('rotates between ties and skips ejected instances', () => {
    const [a, b, c] = [up(1), up(2), up(3)];
    const bal = createBalancer('least-conn', [a, b, c]);
    expect(picks(bal, 3)).toEqual([1, 2, 3]);
    b.state.ejectedUntil = 1_000;
    expect(picks(bal, 4, 500)).toEqual([1, 3, 1, 3]);
  });
});

describe('passive ejection', () => {
  it('ejects for a period that doubles on repeated failures, up to a cap', () => {
    const s = new InstanceState();
    const policy = { baseMs: 100, maxMs: 500 };
    expect(recordFailure(s, 0, policy)).toBe(100);
    expect(s.ejectedUntil).toBe(100);
    // Failures of requests that were in flight while it is ejected do not escalate.
    expect(recordFailure(s, 50, policy)).toBe(0);
    expect(recordFailure(s, 100, policy)).toBe(200);
    expect(recordFailure(s, 300, policy)).toBe(400);
    expect(recordFailure(s, 700, policy)).toBe(500);
    expect(s.failures).toBe(4);
  });

  it('brings an instance back when the period is over, and a success resets the count', () => {
    const u = up(1);
    recordFailure(u.state, 0, { baseMs: 100, maxMs: 1000 });
    expect(available(u, 50)).toBe(false);
    expect(available(u, 100)).toBe(true);
    recordSuccess(u.state);
    expect(u.state.failures).toBe(0);
    expect(recordFailure(u.state, 200, { baseMs: 100, maxMs: 1000 })).toBe(100);
  });

  it('ejects on the second reset in a row, not the first (which may be a stale keep-alive connection)', () => {
    const s = new InstanceState();
    expect(recordReset(s, 0)).toBe(0);
    expect(s.ejectedUntil).toBe(0);
    recordSuccess(s);
    expect(recordReset(s, 0)).toBe(0);
    expect(recordReset(s, 0)).toBe(1000);
    expect(s.ejectedUntil).toBe(1000);
  });

  it('routes around ejected instances, and tries them anyway when all are out (panic)', () => {
    const [a, b] = [up(1), up(2)];
    const bal = createBalancer('round-robin', [a, b]);
    recordFailure(a.state, 0);
    expect(picks(bal, 3, 10)).toEqual([2, 2, 2]);
    recordFailure(b.state, 0);
    expect(picks(bal, 4, 10)).toEqual([1, 2, 1, 2]);
    // A retry never goes back to an instance it already tried.
    expect(bal.pick(10, new Set([a, b]))).toBeUndefined();
    // Panic is for ejected or check-failing instances only: drained (weight 0) and unroutable ones get nothing.
    expect(createBalancer('round-robin', [up(3, 0), up(4, 1, false)]).pick(0)).toBeUndefined();
    for (const mode of ['round-robin', 'least-conn'] as const) {
      const [c, d, e] = [up(5, 3), up(6, 1), up(7, 0)];
      c.state.checkFailed = true;
      recordFailure(d.state, 0);
      expect(createBalancer(mode, [c, d, e]).pick(10)).toBeDefined();
      expect(picks(createBalancer(mode, [c, d, e]), 8, 10)).not.toContain(7);
    }
  });

  it('ends an ejection on an answer to a request sent after the last failure, or on a passing check', () => {
    const s = new InstanceState();
    recordFailure(s, 1_000);
    // An answer to a request sent before the failure says nothing about the instance now.
    expect(recordSuccess(s, 900)).toBe(false);
    expect(s.ejectedUntil).toBe(2_000);
    expect(recordSuccess(s, 1_500)).toBe(true);
    expect(s.ejectedUntil).toBe(0);
    recordFailure(s, 3_000);
    expect(endEjection(s, 3_100)).toBe(true);
    expect(s.ejectedUntil).toBe(0);
    expect(s.failures).toBe(0);
  });

  it('leaves instances failing an active check out', () => {
    const [a, b] = [up(1), up(2)];
    a.state.checkFailed = true;
    expect(picks(createBalancer('round-robin', [a, b]), 2)).toEqual([2, 2]);
  });
});
