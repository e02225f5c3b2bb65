import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../log/logger.js';
import { Forwarder, ForwardError } from './forward.js';
import { DnsServer } from './server.js';

const query = (name: string, id: number, type = 'A') => dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: type as 'A', name }] });

/** A recursor on loopback: records what it is asked; answers after `delayMs` (never with `silent`), with AA set. */
async function recursor(opts: { delayMs?: number; silent?: boolean; wrongFirst?: boolean } = {}) {
  const sock = dgram.createSocket('udp4');
  const asked: { id: number; name: string; from: number }[] = [];
  sock.on('message', (msg, rinfo) => {
    const q = dnsPacket.decode(msg);
    asked.push({ id: q.id!, name: q.questions![0].name, from: rinfo.port });
    if (opts.silent) return;
    const answer = (id: number, name: string) =>
      dnsPacket.encode({ type: 'response', id, flags: dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_AVAILABLE, questions: [{ ...q.questions![0], name }], answers: [{ type: 'A', name, ttl: 60, data: '127.0.0.99' }] });
    setTimeout(() => {
      // A forged answer first: another ID, then the right ID for another question. Both must be ignored.
      if (opts.wrongFirst) {
        sock.send(answer((q.id! + 1) & 0xffff, q.questions![0].name), rinfo.port, rinfo.address);
        sock.send(answer(q.id!, 'other.example'), rinfo.port, rinfo.address);
      }
      sock.send(answer(q.id!, q.questions![0].name), rinfo.port, rinfo.address);
    }, opts.delayMs ?? 0);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  return { sock, asked, port: sock.address().port };
}

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

describe('forwarding to --recursor', () => {
  it('asks identical questions in flight once (any case), and gives every client its own ID and question case, AA cleared', async () => {
    const rec = await recursor({ delayMs: 100 });
    const f = new Forwarder({ recursor: { host: '127.0.0.1', port: rec.port } });
    cleanup.push(() => rec.sock.close(), () => f.close());
    const names = Array.from({ length: 50 }, (_, i) => (i % 2 ? 'WWW.Example.COM' : 'www.example.com'));
    const answers = await Promise.all(names.map((n, i) => f.forward(query(n, 1000 + i), 'udp', 512)));
    expect(rec.asked).toHaveLength(1);
    answers.forEach((a, i) => {
      const d = dnsPacket.decode(a);
      expect(d.id).toBe(1000 + i);
      expect(d.questions![0].name).toBe(names[i]);
      expect(d.flag_aa).toBe(false);
      expect(d.answers![0]).toMatchObject({ type: 'A', data: '127.0.0.99' });
    });
    // Another type is another question.
    await f.forward(query('www.example.com', 1, 'AAAA'), 'udp', 512);
    expect(rec.asked).toHaveLength(2);
    console.log(`PROBE dns forward coalescing: 50 clients asking www.example.com (2 cases) → ${rec.asked.length - 1} upstream question(s), upstream id ${rec.asked[0].id}`);
  });

  it('sends each question with a random ID over a few shared sockets, and ignores answers with another ID or question', async () => {
    const rec = await recursor({ wrongFirst: true });
    const f = new Forwarder({ recursor: { host: '127.0.0.1', port: rec.port }, sockets: 4 });
    cleanup.push(() => rec.sock.close(), () => f.close());
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => f.forward(query(`q${i}.example.com`, 7), 'udp', 512)));
    for (const [i, a] of answers.entries()) expect(dnsPacket.decode(a).questions![0].name).toBe(`q${i}.example.com`);
    const ids = new Set(rec.asked.map((a) => a.id));
    const ports = new Set(rec.asked.map((a) => a.from));
    expect(rec.asked).toHaveLength(40);
    expect(ids.size).toBeGreaterThan(30);
    expect(ports.size).toBe(4);
    expect(f.stats()).toEqual({ inFlight: 0, sockets: 4 });
    console.log(`PROBE dns forward: 40 questions → ${ids.size} distinct upstream IDs from ${ports.size} sockets; forged answers ignored`);
  });

  it('caps questions in flight: beyond the cap a client is refused at once, and the sockets stay few', async () => {
    const rec = await recursor({ silent: true });
    const f = new Forwarder({ recursor: { host: '127.0.0.1', port: rec.port }, maxInFlight: 16, timeoutMs: 500 });
    cleanup.push(() => rec.sock.close(), () => f.close());
    const t0 = Date.now();
    const results = Array.from({ length: 100 }, (_, i) =>
      f.forward(query(`n${i}.example.com`, i), 'udp', 512).then(
        () => 'answered',
        (e: ForwardError) => `${e.reason}@${Date.now() - t0}`,
      ),
    );
    const settled = await Promise.all(results);
    const busy = settled.filter((r) => r.startsWith('busy'));
    const failed = settled.filter((r) => r.startsWith('failed'));
    expect(busy).toHaveLength(84);
    expect(Math.max(...busy.map((r) => Number(r.split('@')[1])))).toBeLessThan(100);
    expect(failed).toHaveLength(16);
    expect(rec.asked).toHaveLength(16);
    expect(f.stats()).toEqual({ inFlight: 0, sockets: 4 });
    console.log(`PROBE dns forward cap 16, silent recursor, 100 questions: ${busy.length} busy at once, ${failed.length} timed out after 500 ms, ${rec.asked.length} sent upstream over ${f.stats().sockets} sockets`);
  });

  it('a server forwarding to itself (through a loop) sends each question upstream once and answers SERVFAIL', async () => {
    // A relay that sends everything it gets to the server, and the answers back: a forwarding loop.
    const relay = dgram.createSocket('udp4');
    await new Promise<void>((r) => relay.bind(0, '127.0.0.1', () => r()));
    const s = new DnsServer({ domain: 'consul', datacenter: 'dc1', ttl: 0, statuses: ['passing'], log: silentLogger(), recursor: { host: '127.0.0.1', port: relay.address().port }, forward: { timeoutMs: 400 } });
    const { port } = await s.listen({ host: '127.0.0.1', port: 0 });
    let relayed = 0;
    const back = new Map<number, dgram.RemoteInfo>();
    relay.on('message', (msg, rinfo) => {
      if (rinfo.port === port) {
        const to = back.get(msg.readUInt16BE(0));
        if (to) relay.send(msg, to.port, to.address);
        return;
      }
      relayed++;
      back.set(msg.readUInt16BE(0), rinfo);
      relay.send(msg, port, '127.0.0.1');
    });
    cleanup.push(() => relay.close());
    try {
      const t0 = Date.now();
      const out = await s.handle(query('loop.example.com', 5), 'udp');
      expect((dnsPacket.decode(out!) as { rcode?: string }).rcode).toBe('SERVFAIL');
      expect(relayed).toBe(1);
      console.log(`PROBE dns forwarding loop: ${relayed} question relayed, SERVFAIL after ${Date.now() - t0} ms`);
    } finally {
      await s.close();
    }
  });
});
