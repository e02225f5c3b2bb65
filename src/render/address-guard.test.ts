import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { buildCatalog } from '../catalog/catalog.js';
import type { ServiceInstance } from '../model/service-instance.js';
import { AddressGuard, canonicalIpv6 } from './address-guard.js';

const inst = (id: string, address: string): ServiceInstance => ({ id, name: 'web', address, port: 80, protocol: 'tcp', tags: [], meta: {}, host: 'h', status: 'passing' });

describe('AddressGuard', () => {
  it('leaves out names that do not exist and IPv6 zone ids, one line each while it lasts; a name that never answers is kept', async () => {
    const lines: Array<{ msg: string; instance: string }> = [];
    const log = pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString())), cb()) }));
    const lookups: string[] = [];
    const resolver = async (h: string) => {
      lookups.push(h);
      if (h === 'slow.example') return new Promise(() => undefined);
      if (h !== 'good.example') throw Object.assign(new Error('nope'), { code: 'ENOTFOUND' });
      return [{ address: '10.0.0.1', family: 4 }];
    };
    const guard = new AddressGuard(log, resolver, 100);
    const catalog = buildCatalog([inst('a', '10.0.0.2'), inst('b', 'good.example'), inst('c', 'gone.example'), inst('d', 'fe80::1%eth0'), inst('e', 'slow.example'), inst('f', '::1')]);
    const out = await guard.apply(catalog);
    expect(out.services[0].instances.map((i) => i.id)).toEqual(['a', 'b', 'e', 'f']);
    expect(lines.filter((l) => l.instance).map((l) => l.instance).sort()).toEqual(['c', 'd']);
    expect(lines.find((l) => l.instance === 'c')!.msg).toBe('service web instance c: address "gone.example" does not resolve (ENOTFOUND); instance left out of the rendered configurations');
    expect(lines.find((l) => !l.instance)!.msg).toBe('address "slow.example": lookup failed (no answer within 100 ms); instances kept, the check decides');
    // the next run: answers cached, nothing logged again
    await guard.apply(catalog);
    expect(lines).toHaveLength(3);
    expect(lookups.filter((h) => h === 'gone.example')).toHaveLength(1);
    // nothing to leave out: the same catalog object
    const clean = buildCatalog([inst('a', '10.0.0.2')]);
    expect(await guard.apply(clean)).toBe(clean);
  });

  it('writes IPv6 addresses in canonical form (nginx refuses "::" for a single zero group)', async () => {
    expect(canonicalIpv6('F:82:f:d5f0:689:79ea:1::')).toBe('f:82:f:d5f0:689:79ea:1:0');
    expect(canonicalIpv6('::1')).toBe('::1');
    const out = await new AddressGuard(pino({ level: 'silent' })).apply(buildCatalog([inst('a', '1:2:3:4:5:6:7::'), inst('b', '127.0.0.1')]));
    expect(out.services[0].instances.map((i) => i.address)).toEqual(['1:2:3:4:5:6:7:0', '127.0.0.1']);
  });

  it('slow lookups: bounded concurrency, the timer starts with the lookup, a timeout or EAI_AGAIN drops nothing', async () => {
    // 16 names answering in 100 ms each through a pool of 4 (as Node's threadpool): the last
    // ones finish after 400 ms, past the 350 ms timeout if their timers started when queued.
    let busy = 0;
    let peak = 0;
    const failing = new Set<string>();
    const resolver = async (h: string) => {
      busy++;
      peak = Math.max(peak, busy);
      await new Promise((r) => setTimeout(r, 100));
      busy--;
      if (failing.has(h)) throw Object.assign(new Error('try again'), { code: h.startsWith('gone') ? 'ENOTFOUND' : 'EAI_AGAIN' });
      return [{ address: '127.0.0.1', family: 4 }];
    };
    const guard = new AddressGuard(pino({ level: 'silent' }), resolver, 350);
    const names = Array.from({ length: 16 }, (_, i) => inst(`h:s${i}`, `node${i}.slow.test`));
    const catalog = buildCatalog([...names, inst('h:ip', '127.0.0.1')]);
    const t0 = Date.now();
    const first = await guard.apply(catalog);
    const firstMs = Date.now() - t0;
    const firstPeak = peak;
    await new Promise((r) => setTimeout(r, 150)); // the last batch answers
    // The next lookups fail temporarily (EAI_AGAIN) for every name: the last answers stand.
    for (const n of names) failing.add(n.address);
    (guard as unknown as { decided: Map<string, { at: number }> }).decided.forEach((d) => (d.at = 0));
    const t1 = Date.now();
    const second = await guard.apply(catalog);
    const secondMs = Date.now() - t1;
    await new Promise((r) => setTimeout(r, 500)); // background refreshes done
    const third = await guard.apply(catalog);
    // A name that never answered and then fails temporarily is kept; one that does not exist is left out.
    const fresh = new AddressGuard(pino({ level: 'silent' }), resolver, 350);
    failing.add('gone.slow.test');
    const mixed = await fresh.apply(buildCatalog([inst('a', 'never.slow.test'), inst('b', 'gone.slow.test')]));
    failing.add('never.slow.test');
    const mixed2 = await new AddressGuard(pino({ level: 'silent' }), resolver, 350).apply(buildCatalog([inst('a', 'never.slow.test'), inst('b', 'gone.slow.test')]));
    console.log(
      `PROBE address-guard: 16 names at 100 ms through 4 lookups at a time, timeout 350 ms: kept ${first.services[0].instances.length} of 17 in ${firstMs} ms (peak ${firstPeak} lookups at a time); ` +
        `all lookups then EAI_AGAIN: kept ${second.services[0].instances.length} (render waited ${secondMs} ms), then ${third.services[0].instances.length}; ` +
        `unknown name + EAI_AGAIN kept: ${mixed2.services[0].instances.map((i) => i.id).join(',')}, ENOTFOUND left out: ${!mixed.services[0].instances.some((i) => i.id === 'b')}`,
    );
    expect(firstPeak).toBeLessThanOrEqual(4);
    expect(first.services[0].instances).toHaveLength(17);
    expect(second.services[0].instances).toHaveLength(17);
    expect(secondMs).toBeLessThan(100);
    expect(third.services[0].instances).toHaveLength(17);
    expect(mixed.services[0].instances.map((i) => i.id)).toEqual(['a']);
    expect(mixed2.services[0].instances.map((i) => i.id)).toEqual(['a']);
  });
});
