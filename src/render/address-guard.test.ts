import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { buildCatalog } from '../catalog/catalog.js';
import type { ServiceInstance } from '../model/service-instance.js';
import { AddressGuard, canonicalIpv6 } from './address-guard.js';

const inst = (id: string, address: string): ServiceInstance => ({ id, name: 'web', address, port: 80, protocol: 'tcp', tags: [], meta: {}, host: 'h', status: 'passing' });

describe('AddressGuard', () => {
  it('leaves out names that do not resolve and IPv6 zone ids, one line each while it lasts', async () => {
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
    expect(out.services[0].instances.map((i) => i.id)).toEqual(['a', 'b', 'f']);
    expect(lines.map((l) => l.instance).sort()).toEqual(['c', 'd', 'e']);
    expect(lines.find((l) => l.instance === 'c')!.msg).toBe('service web instance c: address "gone.example" does not resolve (ENOTFOUND); instance left out of the rendered configurations');
    expect(lines.find((l) => l.instance === 'e')!.msg).toContain('did not resolve within 100 ms');
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
});
