import { describe, expect, it } from 'vitest';
import { buildCatalog } from '../catalog/catalog.js';
import { HEALTH_STATUSES, type ServiceInstance } from '../model/service-instance.js';
import { RCODE, Zone } from './zone.js';

const inst = (name: string, id: string, over: Partial<ServiceInstance> = {}): ServiceInstance => ({
  id,
  name,
  address: '10.0.0.1',
  port: 8080,
  protocol: 'tcp',
  tags: [],
  meta: {},
  host: 'node-1',
  status: 'passing',
  ...over,
});

const catalog = buildCatalog(
  [
    inst('web', 'web-1', { address: '10.0.0.1', port: 8001, tags: ['v2', 'eu'], meta: { version: '2' } }),
    inst('web', 'web-2', { address: '10.0.0.2', port: 8002, tags: ['v1', 'eu'], meta: { version: '1' }, host: 'node-2' }),
    inst('web', 'web-3', { address: '::1', port: 8003, tags: ['v2'], meta: { version: '2' } }),
    inst('web', 'web-4', { address: '10.0.0.4', port: 8004, status: 'warning' }),
    inst('web', 'web-5', { address: '10.0.0.5', port: 8005, meta: { weight: '0' } }),
    inst('web', 'web-6', { address: 'db.internal', port: 8006 }),
    inst('dns', 'dns-1', { address: '10.0.0.9', port: 53, protocol: 'udp', tags: ['udp'] }),
    inst('down', 'down-1', { status: 'critical' }),
  ],
  [...HEALTH_STATUSES],
);
const zone = new Zone(catalog, { domain: 'consul', datacenter: 'dc1', ttl: 5, statuses: ['passing'] }, 1234);
const ask = (name: string, type = 'A') => zone.answer({ name, type });
const data = (name: string, type = 'A') => ask(name, type).answers.map((a) => (a as { data: unknown }).data);
/** The address records of an answer (without the CNAME of a host name address). */
const ips = (name: string, type = 'A') => ask(name, type).answers.filter((a) => a.type !== 'CNAME').map((a) => (a as { data: unknown }).data);

describe('zone', () => {
  it('A and AAAA: the passing instances with a weight, in a new order each time', () => {
    expect(ips('web.service.consul').sort()).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(ips('web.service.consul', 'AAAA')).toEqual(['::1']);
    expect(ips('web.service.consul', 'ANY').sort()).toEqual(['10.0.0.1', '10.0.0.2', '::1']);
    const orders = new Set(Array.from({ length: 50 }, () => ips('web.service.consul').join(',')));
    expect(orders.size).toBe(2);
    expect(ask('web.service.consul').answers[1]).toMatchObject({ name: 'web.service.consul', type: 'A', ttl: 5 });
  });

  it('answers the warning instances too when asked, as Consul does without only_passing', () => {
    const wide = new Zone(catalog, { domain: 'consul', datacenter: 'dc1', ttl: 0, statuses: ['passing', 'warning'] });
    expect(wide.answer({ name: 'web.service.consul', type: 'A' }).answers.filter((a) => a.type === 'A').map((a) => (a as { data: string }).data).sort()).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.4']);
  });

  it('filters by every tag named, and in the RFC 2782 form by tag, _udp by protocol or tag, _tcp not at all', () => {
    expect(data('v2.web.service.consul')).toEqual(['10.0.0.1']);
    expect(data('eu.web.service.consul').sort()).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(data('eu.v2.web.service.consul')).toEqual(['10.0.0.1']);
    expect(data('EU.V1.web.service.consul')).toEqual(['10.0.0.2']);
    expect(ask('v1.v2.web.service.consul')).toMatchObject({ rcode: RCODE.NOERROR, answers: [] });
    expect(data('_dns._udp.service.consul', 'SRV')).toEqual([{ priority: 1, weight: 1, port: 53, target: '0a000009.addr.dc1.consul' }]);
    // As Consul: _tcp is no filter (the udp instance too).
    expect(data('_dns._tcp.service.consul', 'SRV')).toEqual([{ priority: 1, weight: 1, port: 53, target: '0a000009.addr.dc1.consul' }]);
    expect(data('_web._tcp.service.consul', 'SRV')).toHaveLength(4);
    expect(ask('_web._udp.service.consul', 'SRV')).toMatchObject({ rcode: RCODE.NOERROR, answers: [] });
    // _udp also matches Consul's reading, the tag udp.
    const tagged = new Zone(buildCatalog([inst('sip', 's1', { tags: ['udp'], port: 5060 }), inst('sip', 's2', { address: '10.0.0.2', port: 5061 })]), { domain: 'consul', datacenter: 'dc1', ttl: 0, statuses: ['passing'] });
    expect(tagged.answer({ name: '_sip._udp.service.consul', type: 'SRV' }).answers.map((a) => (a as { data: { port: number } }).data.port)).toEqual([5060]);
    expect(tagged.answer({ name: '_sip._tcp.service.consul', type: 'SRV' }).answers).toHaveLength(2);
    expect(data('_web._v1.service.consul', 'SRV')).toEqual([{ priority: 1, weight: 1, port: 8002, target: '0a000002.addr.dc1.consul' }]);
  });

  it('SRV: port and target per instance, the targets\' addresses in the additional section, host names as they are', () => {
    const r = ask('web.service.consul', 'SRV');
    expect(r.answers.map((a) => (a as { data: { port: number; target: string } }).data).sort((a, b) => a.port - b.port)).toEqual([
      { priority: 1, weight: 1, port: 8001, target: '0a000001.addr.dc1.consul' },
      { priority: 1, weight: 1, port: 8002, target: '0a000002.addr.dc1.consul' },
      { priority: 1, weight: 1, port: 8003, target: '00000000000000000000000000000001.addr.dc1.consul' },
      { priority: 1, weight: 1, port: 8006, target: 'db.internal' },
    ]);
    expect(r.additionals.map((a) => `${a.name} ${a.type} ${(a as { data: string }).data}`).sort()).toEqual([
      '00000000000000000000000000000001.addr.dc1.consul AAAA ::1',
      '0a000001.addr.dc1.consul A 10.0.0.1',
      '0a000002.addr.dc1.consul A 10.0.0.2',
    ]);
    expect(data('0a000002.addr.dc1.consul')).toEqual(['10.0.0.2']);
  });

  it('a host name address: a CNAME to it for A, AAAA and ANY, as Consul answers it, beside the IP instances', () => {
    const a = ask('web.service.consul');
    expect(a.rcode).toBe(RCODE.NOERROR);
    expect(a.answers.filter((r) => r.type === 'CNAME')).toMatchObject([{ name: 'web.service.consul', type: 'CNAME', ttl: 5, data: 'db.internal' }]);
    expect(ask('web.service.consul', 'AAAA').answers.map((r) => r.type).sort()).toEqual(['AAAA', 'CNAME']);
    expect(ask('web.service.consul', 'ANY').answers.filter((r) => r.type === 'CNAME')).toHaveLength(1);
    const only = new Zone(buildCatalog([inst('rds', 'r1', { address: 'mydb.xxxx.rds.amazonaws.com', port: 5432 }), inst('rds', 'r2', { address: 'MyDB.xxxx.rds.amazonaws.com', port: 5432, host: 'node-2' })]), {
      domain: 'consul',
      datacenter: 'dc1',
      ttl: 0,
      statuses: ['passing'],
    });
    const r = only.answer({ name: 'rds.service.consul', type: 'A' });
    expect(r).toMatchObject({ rcode: RCODE.NOERROR, authorities: [] });
    // One CNAME for the two spellings of one host name.
    expect(r.answers).toMatchObject([{ type: 'CNAME' }]);
    expect(String(r.answers[0].data).toLowerCase()).toBe('mydb.xxxx.rds.amazonaws.com');
    expect(only.answer({ name: 'rds.service.consul', type: 'TXT' })).toMatchObject({ rcode: RCODE.NOERROR, answers: [] });
    console.log(`PROBE dns zone hostname address: rds.service.consul A → ${r.answers.map((x) => `${x.type} ${String(x.data)}`).join(', ')}`);
  });

  it('NS at the apex, named ns.<domain>, which resolves to the listen address when that is an IP', () => {
    const z = new Zone(catalog, { domain: 'consul', datacenter: 'dc1', ttl: 5, statuses: ['passing'], nsAddress: '127.0.0.1' }, 1234);
    const ns = z.answer({ name: 'consul', type: 'NS' });
    expect(ns).toMatchObject({ rcode: RCODE.NOERROR, answers: [{ name: 'consul', type: 'NS', data: 'ns.consul' }], additionals: [{ name: 'ns.consul', type: 'A', data: '127.0.0.1' }] });
    expect(z.answer({ name: 'ns.consul', type: 'A' }).answers).toMatchObject([{ name: 'ns.consul', type: 'A', data: '127.0.0.1' }]);
    expect(z.answer({ name: 'ns.consul', type: 'AAAA' })).toMatchObject({ rcode: RCODE.NOERROR, answers: [], authorities: [{ type: 'SOA' }] });
    expect(z.answer({ name: 'consul', type: 'ANY' }).answers.map((r) => r.type)).toEqual(['SOA', 'NS']);
    expect((z.answer({ name: 'consul', type: 'SOA' }).answers[0].data as { mname: string }).mname).toBe('ns.consul');
    // Listening on 0.0.0.0 or a host name: ns.<domain> exists, with no address record.
    expect(ask('consul', 'NS')).toMatchObject({ rcode: RCODE.NOERROR, answers: [{ type: 'NS', data: 'ns.consul' }], additionals: [] });
    expect(ask('ns.consul')).toMatchObject({ rcode: RCODE.NOERROR, answers: [] });
    const v6 = new Zone(catalog, { domain: 'consul', datacenter: 'dc1', ttl: 5, statuses: ['passing'], nsAddress: '::1' });
    expect(v6.answer({ name: 'ns.consul', type: 'AAAA' }).answers).toMatchObject([{ type: 'AAAA', data: '::1' }]);
  });

  it('TXT: the meta as key=value, one record per distinct meta', () => {
    const txt = data('web.service.consul', 'TXT').map((d) => (d as Buffer[]).map(String));
    expect(txt.sort()).toEqual([['version=1'], ['version=2']]);
    const long = new Zone(buildCatalog([inst('big', 'b', { meta: { k: 'x'.repeat(500) } })]), { domain: 'consul', datacenter: 'dc1', ttl: 0, statuses: ['passing'] });
    const strings = (long.answer({ name: 'big.service.consul', type: 'TXT' }).answers[0] as { data: Buffer[] }).data;
    expect(strings.map((b) => b.length)).toEqual([255, 247]);
    expect(Buffer.concat(strings).toString()).toBe(`k=${'x'.repeat(500)}`);
  });

  it('nodes: the addresses a host\'s instances are reached at', () => {
    expect(data('node-2.node.consul')).toEqual(['10.0.0.2']);
    expect(data('node-1.node.dc1.consul').sort()).toEqual(['10.0.0.1', '10.0.0.4', '10.0.0.5', '10.0.0.9']);
    expect(ask('nobody.node.consul').rcode).toBe(RCODE.NXDOMAIN);
  });

  it('NXDOMAIN for unknown names, NOERROR with the SOA for a known service with nothing to answer, REFUSED outside', () => {
    const nx = ask('nosuch.service.consul');
    expect(nx).toMatchObject({ rcode: RCODE.NXDOMAIN, answers: [] });
    expect(nx.authorities).toMatchObject([
      { type: 'SOA', name: 'consul', ttl: 5, data: { mname: 'ns.consul', rname: 'hostmaster.consul', serial: 1234, refresh: 3600, retry: 600, expire: 86400, minimum: 5 } },
    ]);
    expect(ask('down.service.consul')).toMatchObject({ rcode: RCODE.NOERROR, answers: [], authorities: [{ type: 'SOA' }] });
    expect(ask('web.service.consul', 'MX')).toMatchObject({ rcode: RCODE.NOERROR, answers: [], authorities: [{ type: 'SOA' }] });
    expect(ask('web.service.dc2.consul').rcode).toBe(RCODE.NXDOMAIN);
    expect(ask('example.com')).toMatchObject({ rcode: RCODE.REFUSED, answers: [], authorities: [] });
    expect(ask('consul', 'SOA').answers).toHaveLength(1);
  });
});
