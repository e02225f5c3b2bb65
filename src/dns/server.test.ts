import dnsPacket from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { buildCatalog } from '../catalog/catalog.js';
import { silentLogger } from '../log/logger.js';
import { HEALTH_STATUSES, type ServiceInstance } from '../model/service-instance.js';
import { DnsServer } from './server.js';

const many = (n: number): ServiceInstance[] =>
  Array.from({ length: n }, (_, i) => ({ id: `h:big-${i}`, name: 'big', address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, port: 1000 + (i % 60000), protocol: 'tcp', tags: [], meta: {}, host: 'h', status: 'passing' }));

function server(n: number): DnsServer {
  const s = new DnsServer({ domain: 'consul', datacenter: 'dc1', ttl: 0, statuses: ['passing'], log: silentLogger() });
  s.setCatalog(buildCatalog(many(n), [...HEALTH_STATUSES]));
  return s;
}

const ask = (type: 'A' | 'SRV', edns?: number) =>
  dnsPacket.encode({
    type: 'query',
    id: 99,
    questions: [{ type, name: 'big.service.consul' }],
    additionals: edns ? [{ type: 'OPT', name: '.', udpPayloadSize: edns, extendedRcode: 0, ednsVersion: 0, flags: 0, options: [] } as never] : [],
  });

describe('dns server sizes', () => {
  it('cuts every answer to what its transport carries: 512, the EDNS size up to 4096, 65,535 over TCP', async () => {
    const s = server(6_000);
    const sizes: string[] = [];
    for (const [type, transport, edns, limit] of [
      ['A', 'udp', undefined, 512],
      ['A', 'udp', 1232, 1232],
      ['A', 'udp', 65000, 4096],
      ['A', 'tcp', undefined, 65535],
      ['SRV', 'tcp', undefined, 65535],
    ] as const) {
      const out = (await s.handle(ask(type, edns), transport))!;
      const d = dnsPacket.decode(out);
      expect(out.length).toBeLessThanOrEqual(limit);
      expect(d.flag_tc).toBe(true);
      expect(d.id).toBe(99);
      expect(d.answers!.length).toBeGreaterThan(0);
      sizes.push(`${type}/${transport}${edns ? `/edns ${edns}` : ''}: ${d.answers!.length} answers in ${out.length} bytes`);
    }
    const small = dnsPacket.decode((await server(100).handle(ask('SRV'), 'tcp'))!);
    expect(small.flag_tc).toBe(false);
    expect(small.answers).toHaveLength(100);
    expect(small.additionals).toHaveLength(100);
    console.log(`PROBE dns sizes with 6,000 instances: ${sizes.join('; ')}`);
  });
});
