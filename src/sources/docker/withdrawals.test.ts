import { afterEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../../log/logger.js';
import type { ServiceInstance } from '../../model/service-instance.js';
import { Registrar } from '../../registrar/registrar.js';
import { MemoryBackend, MemoryStore } from '../../registry/memory-backend.js';
import { awaitRelease, findContainer, parseWithdrawFor, type Withdrawal, WithdrawalError, Withdrawals } from './withdrawals.js';

const A = { id: 'aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111', name: 'web-blue' };
const B = { id: 'aaaaaaaaaaaa2222222222222222222222222222222222222222222222222222', name: 'web-green' };
// A container named like the start of another's id.
const C = { id: 'cccccccccccc3333333333333333333333333333333333333333333333333333', name: 'bbbbbbbbbbbb' };
const D = { id: 'bbbbbbbbbbbb4444444444444444444444444444444444444444444444444444', name: 'db' };
const ALL = [A, B, C, D];

function refused(fn: () => unknown): WithdrawalError {
  try {
    fn();
  } catch (err) {
    if (err instanceof WithdrawalError) return err;
    throw err;
  }
  throw new Error('expected a WithdrawalError');
}

describe('parseWithdrawFor', () => {
  it('takes a duration, 60 s by default, between 1 s and 1 h', () => {
    expect(parseWithdrawFor(undefined)).toBe(60_000);
    expect(parseWithdrawFor('30s')).toBe(30_000);
    expect(parseWithdrawFor('1m30s')).toBe(90_000);
    expect(parseWithdrawFor('1h')).toBe(3_600_000);
    for (const bad of ['', '30', 'soon', '-5s', '30s;x']) {
      const e = refused(() => parseWithdrawFor(bad));
      expect(e.status).toBe(400);
      expect(e.message).toMatch(/^for "/);
      expect(e.message).toContain('not a duration');
    }
    for (const out of ['500ms', '0s', '61m', '2h']) expect(refused(() => parseWithdrawFor(out)).message).toContain('between 1s and 1h');
  });
});

describe('findContainer', () => {
  it('finds by full id, id prefix of 12 or more hex digits, and name (with or without the slash)', () => {
    expect(findContainer(A.id, ALL)).toBe(A);
    expect(findContainer(A.id.slice(0, 13), ALL)).toBe(A);
    expect(findContainer('web-green', ALL)).toBe(B);
    expect(findContainer('/web-green', ALL)).toBe(B);
    expect(findContainer('db', ALL)).toBe(D);
  });

  it('refuses a prefix of two ids, and a name that is also another id prefix, naming both', () => {
    const prefix = refused(() => findContainer('aaaaaaaaaaaa', ALL));
    expect(prefix.status).toBe(400);
    expect(prefix.message).toBe('container "aaaaaaaaaaaa": ambiguous, matches web-blue (aaaaaaaaaaaa) and web-green (aaaaaaaaaaaa)');
    const nameAndPrefix = refused(() => findContainer('bbbbbbbbbbbb', ALL));
    expect(nameAndPrefix.status).toBe(400);
    expect(nameAndPrefix.message).toContain('bbbbbbbbbbbb (cccccccccccc)');
    expect(nameAndPrefix.message).toContain('db (bbbbbbbbbbbb)');
  });

  it('answers 404 for an unknown container (with a hint for a short prefix), 400 for a malformed one', () => {
    const unknown = refused(() => findContainer('nobody', ALL));
    expect(unknown.status).toBe(404);
    expect(unknown.message).toBe('container "nobody": no such container');
    expect(refused(() => findContainer('aaaaaaaa', ALL)).message).toContain('at least 12 hex digits');
    expect(refused(() => findContainer('e'.repeat(64), ALL)).status).toBe(404);
    for (const bad of ['', 'a b', '../x', 'x\ny', '-x', 'a'.repeat(300)]) {
      const e = refused(() => findContainer(bad, ALL));
      expect(e.status).toBe(400);
      expect(e.message).toContain('not a container id or name');
      expect(e.message).not.toContain('\n');
    }
  });
});

describe('Withdrawals', () => {
  afterEach(() => vi.useRealTimers());

  it('expires at its end, calls back once, and a repeated request moves the end and keeps the instances', () => {
    vi.useFakeTimers();
    const expired: Withdrawal[] = [];
    const set = new Withdrawals((w) => expired.push(w));
    const now = Date.now();
    set.add(A.id, A.name, ['h:web-blue:80'], 2_000, now);
    expect(set.has(A.id)).toBe(true);
    vi.advanceTimersByTime(1_000);
    const again = set.add(A.id, A.name, [], 5_000, now + 1_000);
    expect(again).toMatchObject({ instances: ['h:web-blue:80'], until: now + 6_000 });
    vi.advanceTimersByTime(4_000);
    expect(expired).toEqual([]);
    expect(set.has(A.id)).toBe(true);
    vi.advanceTimersByTime(1_000);
    expect(expired.map((w) => w.id)).toEqual([A.id]);
    expect(set.has(A.id)).toBe(false);
    vi.advanceTimersByTime(60_000);
    expect(expired).toHaveLength(1);
  });

  it('re-admits on remove (no expiry afterwards), lists by name, and clears', () => {
    vi.useFakeTimers();
    const expired: Withdrawal[] = [];
    const set = new Withdrawals((w) => expired.push(w));
    set.add(B.id, B.name, [], 1_000);
    set.add(A.id, A.name, ['x'], 1_000);
    expect(set.list().map((w) => w.name)).toEqual(['web-blue', 'web-green']);
    expect(set.remove(A.id)?.instances).toEqual(['x']);
    expect(set.remove(A.id)).toBeUndefined();
    vi.advanceTimersByTime(1_000);
    expect(expired.map((w) => w.name)).toEqual(['web-green']);
    set.add(D.id, D.name, [], 1_000);
    set.clear();
    vi.advanceTimersByTime(5_000);
    expect(expired).toHaveLength(1);
    expect(set.list()).toEqual([]);
  });
});

describe('awaitRelease (against a real registrar)', () => {
  const inst: ServiceInstance = { id: 'h:web-blue:80', name: 'web', address: '127.0.0.1', port: 8080, protocol: 'tcp', tags: [], meta: {}, host: 'h', status: 'passing' };
  let registrar: Registrar | undefined;
  afterEach(() => registrar?.stop(false));

  function setup(): { registrar: Registrar; backend: MemoryBackend } {
    const backend = new MemoryBackend(new MemoryStore(), 'x', { ttl: 0 });
    registrar = new Registrar(backend, { hostname: 'h', ttlRefreshMs: 0, cleanup: false, retryIntervalMs: 50, log: silentLogger() });
    registrar.start();
    return { registrar, backend };
  }

  it('confirms once the registry no longer holds the ids', async () => {
    const { registrar, backend } = setup();
    registrar.set('c1', [inst]);
    registrar.complete();
    await registrar.settled();
    expect(registrar.holding([inst.id])).toEqual([inst.id]);
    const t0 = Date.now();
    registrar.set('c1', [], 'web-blue: withdrawn');
    expect(await awaitRelease(registrar, [inst.id], 2_000)).toBe(true);
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect((await backend.listOwn('h')).map((r) => r.id)).toEqual([]);
  });

  it('answers false without waiting the whole time when the registry is down, and at the timeout otherwise', async () => {
    const { registrar, backend } = setup();
    registrar.set('c1', [inst]);
    registrar.complete();
    await registrar.settled();
    const deregister = vi.spyOn(backend, 'deregister').mockRejectedValue(new Error('connect ECONNREFUSED'));
    vi.spyOn(backend, 'ping').mockRejectedValue(new Error('connect ECONNREFUSED'));
    registrar.set('c1', [], 'withdrawn');
    const t0 = Date.now();
    expect(await awaitRelease(registrar, [inst.id], 5_000, 20, 300)).toBe(false);
    const waited = Date.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(290);
    expect(waited).toBeLessThan(2_000);
    expect(deregister).toHaveBeenCalled();
    // Nothing confirmed before the registrar first compared with the registry.
    const fresh = new Registrar(new MemoryBackend(new MemoryStore(), 'x', { ttl: 0 }), { hostname: 'h', ttlRefreshMs: 0, cleanup: false, retryIntervalMs: 50, log: silentLogger() });
    const t1 = Date.now();
    expect(await awaitRelease(fresh, [], 200)).toBe(false);
    expect(Date.now() - t1).toBeGreaterThanOrEqual(190);
    await fresh.stop(false);
  });
});
