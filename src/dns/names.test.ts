import { describe, expect, it } from 'vitest';
import { addrLabel, parseName } from './names.js';

const p = (n: string) => parseName(n, 'consul', 'dc1');

describe('DNS names', () => {
  it('reads Consul\'s service forms, any case, with or without the final dot', () => {
    expect(p('web.service.consul')).toEqual({ kind: 'service', service: 'web', tags: [] });
    expect(p('WEB.Service.CONSUL.')).toEqual({ kind: 'service', service: 'web', tags: [] });
    expect(p('v2.web.service.consul')).toEqual({ kind: 'service', service: 'web', tags: ['v2'] });
    expect(p('eu.v2.web.service.consul')).toEqual({ kind: 'service', service: 'web', tags: ['eu', 'v2'] });
    expect(p('_web._tcp.service.consul')).toEqual({ kind: 'service', service: 'web', tags: [] });
    expect(p('_dns._udp.service.consul')).toEqual({ kind: 'service', service: 'dns', tags: [], protocol: 'udp' });
    expect(p('_web._v2.service.consul')).toEqual({ kind: 'service', service: 'web', tags: ['v2'] });
  });

  it('accepts the datacenter when it is ours, in both forms, and nothing else', () => {
    expect(p('web.service.dc1.consul')).toEqual({ kind: 'service', service: 'web', tags: [] });
    expect(p('web.service.dc1.dc.consul')).toEqual({ kind: 'service', service: 'web', tags: [] });
    expect(p('v2.web.service.dc1.consul')).toEqual({ kind: 'service', service: 'web', tags: ['v2'] });
    expect(p('web.service.dc2.consul')).toEqual({ kind: 'none' });
    expect(p('web.service.dc2.dc.consul')).toEqual({ kind: 'none' });
    expect(p('node-1.node.dc1.consul')).toEqual({ kind: 'node', node: 'node-1' });
  });

  it('with --datacenter dc, reads web.service.dc.consul in both readings (the bare form wins when the .dc form names nothing)', () => {
    const dc = (n: string) => parseName(n, 'consul', 'dc');
    expect(dc('web.service.dc.consul')).toEqual({ kind: 'service', service: 'web', tags: [] });
    expect(dc('web.service.dc.dc.consul')).toEqual({ kind: 'service', service: 'web', tags: [] });
    expect(dc('v2.web.service.dc.consul')).toEqual({ kind: 'service', service: 'web', tags: ['v2'] });
    expect(dc('web.service.consul')).toEqual({ kind: 'service', service: 'web', tags: [] });
    expect(dc('node-1.node.dc.consul')).toEqual({ kind: 'node', node: 'node-1' });
    expect(dc('web.service.dc1.consul')).toEqual({ kind: 'none' });
    expect(dc('web.service.dc1.dc.consul')).toEqual({ kind: 'none' });
    console.log(`PROBE dns names --datacenter dc: web.service.dc.consul → ${JSON.stringify(dc('web.service.dc.consul'))}`);
  });

  it('names the server itself: ns.<domain>', () => {
    expect(p('ns.consul')).toEqual({ kind: 'ns' });
    expect(p('NS.consul.')).toEqual({ kind: 'ns' });
    expect(p('a.ns.consul')).toEqual({ kind: 'none' });
    expect(p('ns.service.consul')).toEqual({ kind: 'service', service: 'ns', tags: [] });
  });

  it('reads nodes and addr targets', () => {
    expect(p('node-1.node.consul')).toEqual({ kind: 'node', node: 'node-1' });
    expect(p('7f000001.addr.dc1.consul')).toEqual({ kind: 'addr', address: '127.0.0.1' });
    expect(p('00000000000000000000000000000001.addr.dc1.consul')).toEqual({ kind: 'addr', address: '::1' });
    expect(p('20010db8000000000000000000000042.addr.consul')).toEqual({ kind: 'addr', address: '2001:db8::42' });
    expect(p('7f0000.addr.consul')).toEqual({ kind: 'none' });
  });

  it('tells the apex, names inside the domain that mean nothing, and names outside it', () => {
    expect(p('consul')).toEqual({ kind: 'apex' });
    expect(p('consul.')).toEqual({ kind: 'apex' });
    expect(p('service.consul')).toEqual({ kind: 'none' });
    expect(p('web.consul')).toEqual({ kind: 'none' });
    expect(p('web.query.consul')).toEqual({ kind: 'none' });
    expect(p('a..web.service.consul')).toEqual({ kind: 'none' });
    expect(p('_web.service.consul')).toEqual({ kind: 'service', service: '_web', tags: [] });
    expect(p('example.com')).toEqual({ kind: 'outside' });
    expect(p('notconsul')).toEqual({ kind: 'outside' });
    expect(p('web.service.consul.example.com')).toEqual({ kind: 'outside' });
    expect(parseName('web.service.sd.internal', 'sd.internal', 'dc1')).toEqual({ kind: 'service', service: 'web', tags: [] });
  });

  it('writes addresses as Consul\'s hex labels', () => {
    expect(addrLabel('127.0.0.1')).toBe('7f000001');
    expect(addrLabel('10.1.2.254')).toBe('0a0102fe');
    expect(addrLabel('::1')).toBe('00000000000000000000000000000001');
    expect(addrLabel('2001:db8::42')).toBe('20010db8000000000000000000000042');
    expect(addrLabel('::ffff:10.0.0.1')).toBe('00000000000000000000ffff0a000001');
    expect(addrLabel('db.internal')).toBeUndefined();
    for (const a of ['127.0.0.1', '::1', '2001:db8::42', 'fe80::1:2', '1:2:3:4:5:6:7:8']) {
      expect(p(`${addrLabel(a)}.addr.consul`)).toEqual({ kind: 'addr', address: a });
    }
  });
});
