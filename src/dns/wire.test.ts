import dnsPacket, { type Answer, type Packet } from 'dns-packet';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { body, encodeResponse, named, questionTypeClass, type Rec } from './wire.js';

const rec = (a: Answer): Rec => {
  const { name, ...rest } = a;
  return named(name, body(rest as never));
};

/** The same message through dns-packet alone and through encodeResponse: both must decode alike. */
function both(p: Packet): { plain: Buffer; packed: Buffer } {
  const query = dnsPacket.encode({ type: 'query', id: p.id, questions: p.questions });
  const q = p.questions![0];
  const packed = encodeResponse(p.id!, p.flags ?? 0, { name: q.name, typeClass: questionTypeClass(query)! }, [
    (p.answers ?? []).map(rec),
    (p.authorities ?? []).map(rec),
    (p.additionals ?? []).map(rec),
  ]);
  return { plain: dnsPacket.encode(p), packed };
}

describe('wire', () => {
  it('decodes to what dns-packet decodes of its own encoding, with owner names compressed', () => {
    const p: Packet = {
      type: 'response',
      id: 4242,
      flags: 0x0400 | 0x0100,
      questions: [{ type: 'SRV', name: 'Web.service.consul' }],
      answers: [
        { type: 'SRV', name: 'Web.service.consul', ttl: 0, data: { priority: 1, weight: 1, port: 8001, target: '0a000001.addr.dc1.consul' } },
        { type: 'SRV', name: 'Web.service.consul', ttl: 0, data: { priority: 1, weight: 3, port: 8002, target: 'db.internal' } },
      ],
      authorities: [{ type: 'SOA', name: 'consul', ttl: 0, data: { mname: 'ns.consul', rname: 'hostmaster.consul', serial: 1, refresh: 2, retry: 3, expire: 4, minimum: 5 } }],
      additionals: [
        { type: 'A', name: '0a000001.addr.dc1.consul', ttl: 0, data: '10.0.0.1' },
        { type: 'TXT', name: 'web.service.consul', ttl: 0, data: ['a=b', 'c=d'] },
        { type: 'OPT', name: '.', udpPayloadSize: 4096, extendedRcode: 0, ednsVersion: 0, flags: 0, options: [] } as unknown as Answer,
      ],
    };
    const { plain, packed } = both(p);
    expect(dnsPacket.decode(packed)).toEqual(dnsPacket.decode(plain));
    expect(packed.length).toBeLessThan(plain.length);
  });

  it('a hundred A records of one name: 16 bytes each after the question', () => {
    const answers: Answer[] = Array.from({ length: 100 }, (_, i) => ({ type: 'A', name: 'web.service.consul', ttl: 5, data: `10.0.${i >> 8}.${i & 255}` }));
    const { packed } = both({ type: 'response', id: 1, questions: [{ type: 'A', name: 'web.service.consul' }], answers });
    expect(packed.length).toBe(12 + 20 + 4 + 100 * 16);
    expect(dnsPacket.decode(packed).answers).toHaveLength(100);
  });

  it('round-trips any names and addresses', () => {
    const label = fc.stringMatching(/^[a-z0-9-]{1,20}$/);
    const name = fc.array(label, { minLength: 1, maxLength: 5 }).map((l) => l.join('.'));
    fc.assert(
      fc.property(name, fc.array(fc.tuple(name, fc.ipV4()), { maxLength: 30 }), (q, recs) => {
        const { plain, packed } = both({ type: 'response', id: 7, questions: [{ type: 'A', name: q }], answers: recs.map(([n, ip]) => ({ type: 'A', name: n, ttl: 1, data: ip })) });
        expect(dnsPacket.decode(packed)).toEqual(dnsPacket.decode(plain));
      }),
      { numRuns: 300 },
    );
  });
});
