// Random and mutated packets at the DNS listener of a real `harbormaster dns` process, over UDP
// and TCP: nothing may crash it, every packet that does not decode is counted, an answer (when
// there is one) is a well-formed DNS response to the same id, and good questions keep being
// answered in between.
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBackend } from '../src/registry/index.js';
import { dig } from './support/dig.js';
import { Hm } from './support/harbormaster.js';
import { ETCD_ENDPOINT } from './support/registries.js';
import { uniq, waitFor } from './support/wait.js';

const API = 25120;
const uri = `etcd://${ETCD_ENDPOINT}/${uniq('dnsfuzz')}`;
let hm: Hm;
// Started in beforeAll, not at import: a run that filters every test out starts nothing.
beforeAll(() => {
  hm = new Hm(['dns', uri, '--listen', '127.0.0.1:0', '--api', `127.0.0.1:${API}`]);
});
afterAll(async () => {
  await hm?.stop('SIGKILL');
});

const question = (name: string, type: string, id: number) => dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: type as 'A', name }] });

/** Valid questions to start from: every name form and record type the server knows, with and without EDNS. */
const SEEDS = [
  question('fz.service.consul', 'A', 1),
  question('v1.fz.service.consul', 'SRV', 2),
  question('_fz._tcp.service.consul', 'SRV', 3),
  question('fz.service.dc1.consul', 'TXT', 4),
  question('7f000001.addr.dc1.consul', 'AAAA', 5),
  question('example.com', 'A', 6),
  dnsPacket.encode({ type: 'query', id: 7, questions: [{ type: 'A', name: 'fz.service.consul' }], additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: 0, options: [] } as never] }),
];

const mutated = fc.tuple(fc.constantFrom(...SEEDS), fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 8 }), fc.option(fc.nat(), { nil: undefined })).map(([seed, flips, cut]) => {
  const b = Buffer.from(seed);
  for (const [at, v] of flips) b[at % b.length] = v;
  return cut === undefined ? b : b.subarray(0, cut % (b.length + 1));
});
const random = fc.uint8Array({ minLength: 0, maxLength: 600 }).map((a) => Buffer.from(a));
const packets = fc.oneof({ arbitrary: mutated, weight: 3 }, { arbitrary: random, weight: 1 });

async function malformedCount(): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${API}/metrics`)).text();
  return [...text.matchAll(/^harbormaster_dns_malformed_total\{[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
}

describe('dns fuzz', () => {
  it('survives 1,500 random and mutated packets over UDP and TCP, counts the malformed ones, and keeps answering', async () => {
    const ready = await hm.waitForLog('dns ready', (l) => l.event === 'ready', 20_000);
    const port = Number(String(ready.dns).split(':').pop());
    const b = createBackend(uri, { ttl: 0 });
    await b.register({ id: 'fz-1', name: 'fz', address: '127.0.0.41', port: 80, protocol: 'tcp', tags: ['v1'], meta: { a: 'b' }, host: 'fuzzhost', status: 'passing' });
    await waitFor('fz answered', async () => (await dig(port, 'fz.service.consul')).data.includes('127.0.0.41'), 15_000, 100);
    const before = await malformedCount();

    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    // Every answer must decode as a response to an id that was sent (answers may come late).
    const sentIds = new Set<number>();
    let answered = 0;
    let badAnswers = 0;
    let lastAnswerAt = Date.now();
    sock.on('message', (out: Buffer) => {
      answered++;
      lastAnswerAt = Date.now();
      try {
        const d = dnsPacket.decode(out);
        if (d.type !== 'response' || !sentIds.has(d.id ?? -1)) badAnswers++;
      } catch {
        badAnswers++;
      }
    });
    let sent = 0;
    const samples = fc.sample(packets, { numRuns: 1_200, seed: 20261207 });
    for (const [i, p] of samples.entries()) {
      if (p.length >= 2) sentIds.add(p.readUInt16BE(0));
      sock.send(p, port, '127.0.0.1');
      sent++;
      if (i % 50 === 0) await new Promise((r) => setTimeout(r, 5));
      if (i % 200 === 0) expect((await dig(port, 'fz.service.consul')).data).toEqual(['127.0.0.41']);
    }
    await waitFor('UDP answers settle', () => Date.now() - lastAnswerAt > 300, 10_000, 50);
    sock.close();

    // TCP: length-prefixed garbage, then a good question after the bad ones.
    const tcpSamples = fc.sample(packets, { numRuns: 300, seed: 7 });
    let tcpAnswers = 0;
    for (let i = 0; i < tcpSamples.length; i += 10) {
      const s = net.connect(port, '127.0.0.1');
      await new Promise<void>((r, j) => s.once('connect', () => r()).once('error', j));
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('error', () => undefined);
      for (const p of tcpSamples.slice(i, i + 10)) {
        const head = Buffer.alloc(2);
        head.writeUInt16BE(p.length);
        s.write(Buffer.concat([head, p]));
        sent++;
      }
      const good = question('fz.service.consul', 'A', 0xbeef);
      const head = Buffer.alloc(2);
      head.writeUInt16BE(good.length);
      s.write(Buffer.concat([head, good]));
      // Answers come back in order: the good question's answer is the last one.
      await waitFor('tcp answers', () => {
        const all = Buffer.concat(chunks);
        let off = 0;
        let last: Buffer | undefined;
        let n = 0;
        while (off + 2 <= all.length && off + 2 + all.readUInt16BE(off) <= all.length) {
          last = all.subarray(off + 2, off + 2 + all.readUInt16BE(off));
          off += 2 + all.readUInt16BE(off);
          n++;
        }
        if (last && last.readUInt16BE(0) === 0xbeef) {
          tcpAnswers += n;
          return true;
        }
        return undefined;
      }, 5_000, 20);
      s.destroy();
    }

    const after = await malformedCount();
    expect((await dig(port, 'fz.service.consul', 'SRV')).data).toEqual(['1 1 80 7f000029.addr.dc1.consul.']);
    expect(hm.logs.filter((l) => l.level >= 50)).toEqual([]);
    expect(badAnswers).toBe(0);
    expect(after - before).toBeGreaterThan(100);
    console.log(`PROBE dns fuzz: ${sent} packets (${samples.length} UDP, ${tcpSamples.length} TCP), ${answered} UDP answers and ${tcpAnswers} TCP answers (all well-formed, same id), ${after - before} counted malformed, process alive and answering`);
    await b.close();
  });
});
