import dnsPacket from 'dns-packet';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
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

/** Polls `cond` every 10 ms for up to 5 s (a loaded machine delays socket events); the assertions after it say what was wrong. */
async function settle(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
}

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

const query = (name: string, type: string, id = 7, extra: Record<string, unknown> = {}) => dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: type as 'A', name }], ...extra });
/** The response code dns-packet reads (its types leave it out). */
const rcodeOf = (out: Buffer | undefined) => (dnsPacket.decode(out!) as { rcode?: string }).rcode;
const aaOf = (out: Buffer | undefined) => (out!.readUInt16BE(2) & 0x0400) !== 0;

describe('dns server before its first snapshot', () => {
  it('answers SERVFAIL without AA inside the domain and reports not ok until a snapshot arrives, then NOERROR / NXDOMAIN', async () => {
    const s = new DnsServer({ domain: 'consul', datacenter: 'dc1', ttl: 5, statuses: ['passing'], log: silentLogger() });
    await s.listen({ host: '127.0.0.1', port: 0 });
    try {
      const before = await s.handle(query('big.service.consul', 'A'), 'udp');
      const nx = await s.handle(query('nosuch.service.consul', 'A'), 'udp');
      expect(rcodeOf(before)).toBe('SERVFAIL');
      expect(rcodeOf(nx)).toBe('SERVFAIL');
      expect(aaOf(before)).toBe(false);
      expect(dnsPacket.decode(before!).authorities).toEqual([]);
      expect(rcodeOf(await s.handle(query('example.com', 'A'), 'udp'))).toBe('REFUSED');
      const h0 = s.health();
      expect(h0).toMatchObject({ ok: false, snapshots: 0, listening: true });
      expect(h0.lastError).toMatch(/no catalog snapshot/);
      s.setCatalog(buildCatalog(many(2), [...HEALTH_STATUSES]));
      const after = await s.handle(query('big.service.consul', 'A'), 'udp');
      expect(rcodeOf(after)).toBe('NOERROR');
      expect(aaOf(after)).toBe(true);
      expect(rcodeOf(await s.handle(query('nosuch.service.consul', 'A'), 'udp'))).toBe('NXDOMAIN');
      expect(s.health()).toMatchObject({ ok: true, snapshots: 1 });
      console.log(`PROBE dns before the first snapshot: ${rcodeOf(before)} aa=${aaOf(before)} health ok=${h0.ok}; after: ${rcodeOf(after)} aa=${aaOf(after)} health ok=${s.health().ok}`);
    } finally {
      await s.close();
    }
  });
});

describe('dns server edge cases', () => {
  const s = server(2);

  it('sets AA on answers from the zone only: not on REFUSED, NOTIMP or SERVFAIL', async () => {
    expect(aaOf(await s.handle(query('big.service.consul', 'A'), 'udp'))).toBe(true);
    expect(aaOf(await s.handle(query('nosuch.service.consul', 'A'), 'udp'))).toBe(true);
    const refused = await s.handle(query('example.com', 'A'), 'udp');
    expect(rcodeOf(refused)).toBe('REFUSED');
    expect(aaOf(refused)).toBe(false);
    const chaos = await s.handle(dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'TXT', name: 'version.bind', class: 'CH' }] }), 'udp');
    expect(rcodeOf(chaos)).toBe('NOTIMP');
    expect(aaOf(chaos)).toBe(false);
  });

  it('refuses a question whose label holds a "." byte with FORMERR', async () => {
    const good = Buffer.from(query('abcde.service.consul', 'A', 9));
    const dotted = Buffer.from(good);
    dotted.write('a.b.c', 13, 'latin1');
    expect(dnsPacket.decode(dotted).questions![0].name).toBe('a.b.c.service.consul');
    const out = await s.handle(dotted, 'udp');
    expect(rcodeOf(out)).toBe('FORMERR');
    expect(dnsPacket.decode(out!).id).toBe(9);
    expect(rcodeOf(await s.handle(good, 'udp'))).toBe('NXDOMAIN');
  });

  it('refuses AXFR and IXFR over UDP and TCP, inside the domain and outside it', async () => {
    const seen: string[] = [];
    for (const type of ['AXFR', 'IXFR']) {
      for (const name of ['consul', 'big.service.consul', 'example.com']) {
        for (const transport of ['udp', 'tcp'] as const) {
          const out = await s.handle(query(name, type), transport);
          const d = dnsPacket.decode(out!) as ReturnType<typeof dnsPacket.decode> & { rcode?: string };
          expect(d.rcode).toBe('REFUSED');
          expect(d.answers).toEqual([]);
          expect(aaOf(out)).toBe(false);
          seen.push(`${type} ${name}/${transport} ${d.rcode}`);
        }
      }
    }
    console.log(`PROBE dns zone transfers: ${seen.join('; ')}`);
  });

  it('answers FORMERR to a query with two OPT records (RFC 6891 §6.1.1), and normally to one', async () => {
    const opt = { type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: 0, options: [] } as never;
    expect(rcodeOf(await s.handle(query('big.service.consul', 'A', 3, { additionals: [opt, opt] }), 'udp'))).toBe('FORMERR');
    expect(rcodeOf(await s.handle(query('big.service.consul', 'A', 3, { additionals: [opt] }), 'udp'))).toBe('NOERROR');
  });
});

describe('dns server over TCP: limits', () => {
  type Closed = { closedAt?: number };
  const open = async (port: number, localAddress: string, first?: Buffer): Promise<net.Socket & Closed> => {
    const c = net.connect({ port, host: '127.0.0.1', localAddress }) as net.Socket & Closed;
    c.on('error', () => undefined);
    c.on('close', () => (c.closedAt = Date.now()));
    await new Promise<void>((r) => c.once('connect', () => r()));
    if (first) c.write(first);
    return c;
  };
  /** One question over a new TCP connection; its rcode, or the reason there was none. */
  const tcpAsk = (port: number, localAddress: string, name: string): Promise<string> =>
    new Promise((resolve) => {
      const q = query(name, 'A', 77);
      const c = net.connect({ port, host: '127.0.0.1', localAddress });
      const timer = setTimeout(() => finish('timeout'), 3_000);
      let buf = Buffer.alloc(0);
      const finish = (r: string) => {
        clearTimeout(timer);
        c.destroy();
        resolve(r);
      };
      c.on('error', (e) => finish(`error ${e.message}`));
      c.on('close', () => finish('closed'));
      c.on('connect', () => c.write(Buffer.concat([Buffer.from([q.length >> 8, q.length & 255]), q])));
      c.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) finish(rcodeOf(buf.subarray(2)) ?? '?');
      });
    });
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const conns: net.Socket[] = [];
  const servers: DnsServer[] = [];
  afterEach(async () => {
    for (const c of conns.splice(0)) c.destroy();
    for (const s of servers.splice(0)) await s.close();
  });
  const start = async (tcp: NonNullable<ConstructorParameters<typeof DnsServer>[0]['tcp']>) => {
    const s = new DnsServer({ domain: 'consul', datacenter: 'dc1', ttl: 0, statuses: ['passing'], log: silentLogger(), tcp });
    s.setCatalog(buildCatalog(many(2), [...HEALTH_STATUSES]));
    servers.push(s);
    return { s, port: (await s.listen({ host: '127.0.0.1', port: 0 })).port };
  };

  it('closes a message not complete within the deadline, and a connection idle between messages', async () => {
    const { port } = await start({ messageDeadlineMs: 300, idleMs: 700 });
    const t0 = Date.now();
    const trickle = await open(port, '127.0.0.1', Buffer.from([0x00]));
    const idle = await open(port, '127.0.0.1');
    conns.push(trickle, idle);
    // A byte every 100 ms does not extend the deadline (an idle timeout alone would be reset by it).
    for (let i = 0; i < 15 && trickle.closedAt === undefined; i++) {
      await sleep(100);
      if (!trickle.destroyed) trickle.write(Buffer.from([0x20]));
    }
    for (let i = 0; i < 20 && idle.closedAt === undefined; i++) await sleep(50);
    const trickleMs = trickle.closedAt! - t0;
    const idleMs = idle.closedAt! - t0;
    console.log(`PROBE dns tcp: trickling message closed after ${trickleMs} ms (deadline 300), idle connection after ${idleMs} ms (idle 700)`);
    expect(trickleMs).toBeGreaterThanOrEqual(280);
    expect(trickleMs).toBeLessThan(700);
    expect(idleMs).toBeGreaterThanOrEqual(650);
    expect(idleMs).toBeLessThan(1_500);
  });

  it('caps connections per source address, and at the global limit closes the oldest idle one (else the slowest sender) for a new client', async () => {
    const { s, port } = await start({ maxConnections: 8, maxPerSource: 4, messageDeadlineMs: 10_000, idleMs: 10_000 });
    // Per source: the fifth from 127.0.0.2 is closed at once.
    const fromTwo: (net.Socket & Closed)[] = [];
    for (let i = 0; i < 5; i++) fromTwo.push(await open(port, '127.0.0.2'));
    conns.push(...fromTwo);
    await settle(() => fromTwo[4].closedAt !== undefined);
    expect(fromTwo.map((c) => c.closedAt !== undefined)).toEqual([false, false, false, false, true]);
    // 4 idle (127.0.0.2) + 4 trickling a message (127.0.0.3, 127.0.0.4): the server is full.
    const tricklers: (net.Socket & Closed)[] = [];
    for (const src of ['127.0.0.3', '127.0.0.3', '127.0.0.4', '127.0.0.4']) tricklers.push(await open(port, src, Buffer.from([0x00])));
    conns.push(...tricklers);
    await settle(() => s.health().tcpConnections === 8);
    expect(s.health().tcpConnections).toBe(8);
    // A new client is answered; the oldest idle connection made room.
    expect(await tcpAsk(port, '127.0.0.1', 'big.service.consul')).toBe('NOERROR');
    await settle(() => fromTwo[0].closedAt !== undefined);
    expect(fromTwo.map((c) => c.closedAt !== undefined)).toEqual([true, false, false, false, true]);
    // Only tricklers left besides idle ones: when no idle connection is left, the slowest sender goes.
    for (const c of fromTwo) c.destroy();
    await settle(() => s.health().tcpConnections === 4);
    for (const src of ['127.0.0.5', '127.0.0.5', '127.0.0.6', '127.0.0.6']) tricklers.push(await open(port, src, Buffer.from([0x00])));
    conns.push(...tricklers);
    await settle(() => s.health().tcpConnections === 8);
    const t0 = Date.now();
    const rcode = await tcpAsk(port, '127.0.0.1', 'big.service.consul');
    const ms = Date.now() - t0;
    await settle(() => tricklers.some((c) => c.closedAt !== undefined));
    expect(rcode).toBe('NOERROR');
    // One trickler made room (which one depends on when each first byte landed on a loaded machine).
    expect(tricklers.filter((c) => c.closedAt !== undefined)).toHaveLength(1);
    console.log(`PROBE dns tcp limits: 5th connection from one address closed at once; full of 8 (idle + trickling): new client answered ${rcode} in ${ms} ms, the oldest idle / oldest trickler closed`);
  });
});
