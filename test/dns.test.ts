// `harbormaster dns` against the real registries, asked with the real `dig`: every name form on
// Consul, etcd v3 and etcd v2 (the memory registry is asked through `run`, in run-memory.test.ts),
// truncation and the TCP retry with 100 instances, changes seen in the next answer, the last
// snapshot served while the registry is down, and forwarding to a recursor. Then the edges: no
// answer before the first snapshot, bounded forwarding, TCP clients that trickle, and the answers
// compared with Consul's own DNS on the same catalog.
import dgram from 'node:dgram';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import { afterAll, describe, expect, it } from 'vitest';
import type { ServiceInstance } from '../src/model/service-instance.js';
import { createBackend } from '../src/registry/index.js';
import type { RegistryBackend } from '../src/registry/types.js';
import { dig } from './support/dig.js';
import { Hm } from './support/harbormaster.js';
import { CONSUL, ETCD_ENDPOINT, privateEtcd } from './support/registries.js';
import { sleep, uniq, waitFor } from './support/wait.js';

const procs: Hm[] = [];
const backends: RegistryBackend[] = [];
afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  for (const b of backends) await b.close().catch(() => undefined);
});

/** `harbormaster dns` on a free port; resolves with the port once it is ready. */
/** A `dns` process; unless `snapshot` is false, returned once it answers from a first catalog snapshot (before, every name is SERVFAIL). */
async function startDns(registry: string, args: string[] = [], snapshot = true): Promise<{ hm: Hm; port: number }> {
  const hm = new Hm(['dns', registry, '--listen', '127.0.0.1:0', ...args]);
  procs.push(hm);
  const ready = await hm.waitForLog('dns ready', (l) => l.event === 'ready', 20_000);
  const port = Number(String(ready.dns).split(':').pop());
  if (snapshot) await waitFor('a first catalog snapshot', async () => (await dig(port, 'snapshot-probe.service.consul')).status !== 'SERVFAIL', 20_000, 100);
  return { hm, port };
}

const inst = (name: string, id: string, host: string, over: Partial<ServiceInstance> = {}): ServiceInstance => ({
  id,
  name,
  address: '127.0.0.1',
  port: 8000,
  protocol: 'tcp',
  tags: [],
  meta: {},
  host,
  status: 'passing',
  ...over,
});

const sorted = (a: string[]) => [...a].sort();

describe.each([
  ['Consul', () => CONSUL],
  ['etcd v3', () => `etcd://${ETCD_ENDPOINT}/${uniq('dns3')}`],
  ['etcd v2', () => `etcd2://${ETCD_ENDPOINT}/${uniq('dns2')}`],
])('dns on %s', (_kind, uriOf) => {
  const uri = uriOf();
  const host = uniq('dnshost');
  const b = createBackend(uri, { ttl: 0 });
  backends.push(b);
  let port = 0;

  it('answers every name form with what the registry holds', async () => {
    port = (await startDns(uri, ['--dns-ttl', '5'])).port;
    const web = uniq('dweb');
    const idle = uniq('didle');
    await b.register(inst(web, `${host}:web-1:80`, host, { address: '127.0.0.11', port: 8001, tags: ['v2', 'eu'], meta: { version: '2' } }));
    await b.register(inst(web, `${host}:web-2:80`, host, { address: '127.0.0.12', port: 8002, tags: ['v1', 'eu'], meta: { version: '1' } }));
    await b.register(inst(web, `${host}:web-3:80`, host, { address: '::1', port: 8003, tags: ['v2'], meta: { version: '2' } }));
    await b.register(inst(idle, `${host}:idle:80`, host, { address: '127.0.0.13', meta: { weight: '0' } }));
    const svc = `${web}.service.consul`;
    await waitFor('web answered', async () => (await dig(port, svc)).answer.length === 2, 15_000, 100);

    const a = await dig(port, svc);
    expect(a.status).toBe('NOERROR');
    expect(a.flags).toContain('aa');
    expect(sorted(a.data)).toEqual(['127.0.0.11', '127.0.0.12']);
    expect(a.answer[0]).toMatch(new RegExp(`^${svc}\\. 5 IN A 127\\.0\\.0\\.1[12]$`));
    expect((await dig(port, svc, 'AAAA')).data).toEqual(['::1']);
    // Tags: one, several (all required), none matching.
    expect((await dig(port, `v2.${svc}`)).data).toEqual(['127.0.0.11']);
    expect(sorted((await dig(port, `eu.${svc}`)).data)).toEqual(['127.0.0.11', '127.0.0.12']);
    expect((await dig(port, `eu.v1.${svc}`)).data).toEqual(['127.0.0.12']);
    expect(await dig(port, `v1.v2.${svc}`)).toMatchObject({ status: 'NOERROR', answer: [] });
    // The datacenter, in Consul's two forms.
    expect(sorted((await dig(port, `${web}.service.dc1.consul`)).data)).toEqual(['127.0.0.11', '127.0.0.12']);
    expect(sorted((await dig(port, `${web}.service.dc1.dc.consul`)).data)).toEqual(['127.0.0.11', '127.0.0.12']);
    expect((await dig(port, `${web}.service.dc9.consul`)).status).toBe('NXDOMAIN');
    // SRV: one per instance, the targets' addresses in the additional section.
    const srv = await dig(port, svc, 'SRV');
    expect(sorted(srv.data)).toEqual(['1 1 8001 7f00000b.addr.dc1.consul.', '1 1 8002 7f00000c.addr.dc1.consul.', '1 1 8003 00000000000000000000000000000001.addr.dc1.consul.']);
    expect(sorted(srv.additional)).toEqual([
      '00000000000000000000000000000001.addr.dc1.consul. 5 IN AAAA ::1',
      '7f00000b.addr.dc1.consul. 5 IN A 127.0.0.11',
      '7f00000c.addr.dc1.consul. 5 IN A 127.0.0.12',
    ]);
    expect((await dig(port, '7f00000c.addr.dc1.consul')).data).toEqual(['127.0.0.12']);
    // RFC 2782.
    expect(sorted((await dig(port, `_${web}._tcp.service.consul`, 'SRV')).data)).toHaveLength(3);
    expect((await dig(port, `_${web}._v1.service.consul`, 'SRV')).data).toEqual(['1 1 8002 7f00000c.addr.dc1.consul.']);
    expect((await dig(port, `_${web}._udp.service.consul`, 'SRV')).answer).toEqual([]);
    // TXT: the meta.
    expect(sorted((await dig(port, svc, 'TXT')).data)).toEqual(['"version=1"', '"version=2"']);
    // The registering host.
    expect(sorted((await dig(port, `${host}.node.consul`)).data)).toEqual(['127.0.0.11', '127.0.0.12', '127.0.0.13']);
    // Known with nothing to answer (weight 0 is draining) / unknown / outside the domain.
    const empty = await dig(port, `${idle}.service.consul`);
    expect(empty).toMatchObject({ status: 'NOERROR', answer: [] });
    expect(empty.authority).toEqual([expect.stringMatching(/^consul\. 5 IN SOA ns\.consul\. hostmaster\.consul\. \d+ 3600 600 86400 5$/)]);
    const nx = await dig(port, `${uniq('nosuch')}.service.consul`);
    expect(nx.status).toBe('NXDOMAIN');
    expect(nx.authority).toHaveLength(1);
    expect((await dig(port, `${host}x.node.consul`)).status).toBe('NXDOMAIN');
    expect((await dig(port, 'example.com')).status).toBe('REFUSED');
    console.log(`PROBE dns on ${_kind}: A ${a.data.join(',')} | SRV ${srv.answer.length} + ${srv.additional.length} additional | ${nx.status} | ${empty.status} (${empty.answer.length} answers, SOA) | example.com REFUSED`);
  });

  it('truncates 100 instances over UDP (TC) and answers them whole over TCP', async () => {
    const many = uniq('dmany');
    for (let i = 0; i < 100; i++) await b.register(inst(many, `${host}:many-${i}:80`, host, { address: `127.1.0.${i + 1}`, port: 9000 + i }));
    const svc = `${many}.service.consul`;
    await waitFor('all 100 answered over TCP', async () => (await dig(port, svc, 'A', ['+tcp'])).answer.length === 100, 20_000, 200);
    const plain = await dig(port, svc, 'A', ['+noedns', '+ignore']);
    expect(plain.flags).toContain('tc');
    expect(plain.size).toBeLessThanOrEqual(512);
    expect(plain.answer.length).toBeGreaterThan(0);
    expect(plain.answer.length).toBeLessThan(100);
    // EDNS0: the client's buffer size is honoured (dig offers 1232 by default; ask for 4096).
    const edns = await dig(port, svc, 'A', ['+bufsize=4096', '+ignore']);
    expect(edns.flags).not.toContain('tc');
    expect(edns.answer).toHaveLength(100);
    // dig's own fallback: a truncated UDP answer is asked again over TCP.
    const fallback = await dig(port, svc, 'SRV', ['+noedns']);
    expect(fallback.protocol).toBe('TCP');
    expect(fallback.answer).toHaveLength(100);
    expect(fallback.additional).toHaveLength(100);
    console.log(`PROBE dns ${_kind} 100 instances: UDP without EDNS ${plain.answer.length} answers in ${plain.size} bytes with TC; EDNS 4096: ${edns.answer.length} in ${edns.size} bytes; SRV retried over ${fallback.protocol}: ${fallback.answer.length} + ${fallback.additional.length}`);
  });

  it('answers a change in the registry in the next answer', async () => {
    const svc = uniq('dchg');
    const name = `${svc}.service.consul`;
    await b.register(inst(svc, `${host}:chg-1:80`, host, { address: '127.0.0.21' }));
    await waitFor('first instance', async () => (await dig(port, name)).data.includes('127.0.0.21'), 15_000, 50);
    const t0 = Date.now();
    await b.register(inst(svc, `${host}:chg-2:80`, host, { address: '127.0.0.22' }));
    await waitFor('second instance', async () => (await dig(port, name)).data.length === 2, 15_000, 20);
    const added = Date.now() - t0;
    const t1 = Date.now();
    await b.deregister(inst(svc, `${host}:chg-1:80`, host, { address: '127.0.0.21' }));
    await waitFor('first instance gone', async () => sorted((await dig(port, name)).data).join() === '127.0.0.22', 15_000, 20);
    const removed = Date.now() - t1;
    console.log(`PROBE dns ${_kind}: registration → answered in ${added} ms, withdrawal → gone in ${removed} ms`);
    expect(added).toBeLessThan(5_000);
    expect(removed).toBeLessThan(5_000);
  });
});

describe('dns while the registry is away, and beside a recursor', () => {
  it('keeps answering from the last snapshot while etcd is down, and says so in /v1/health', async () => {
    const etcd = privateEtcd(25100);
    await etcd.start();
    try {
      const uri = `etcd://${etcd.endpoint}/dnsdown`;
      const b = createBackend(uri, { ttl: 0 });
      backends.push(b);
      await b.register(inst('kept', 'h:kept:80', 'h', { address: '127.0.0.31' }));
      const apiPort = 25110;
      const { port } = await startDns(uri, ['--api', `127.0.0.1:${apiPort}`]);
      await waitFor('kept answered', async () => (await dig(port, 'kept.service.consul')).data.includes('127.0.0.31'), 15_000, 100);
      await b.close();
      await etcd.kill();
      const health = await waitFor('registry reported down', async () => {
        const h = (await (await fetch(`http://127.0.0.1:${apiPort}/v1/health`)).json()) as { components: { registry: { ok: boolean } } };
        return h.components.registry.ok === false ? h : undefined;
      }, 20_000, 200);
      const during = await dig(port, 'kept.service.consul');
      expect(during.data).toEqual(['127.0.0.31']);
      console.log(`PROBE dns with etcd down: still answers ${during.data.join(',')}; /v1/health registry ${JSON.stringify(health.components.registry).slice(0, 160)}`);
    } finally {
      await etcd.kill();
      etcd.cleanup();
    }
  });

  it('forwards names outside the domain to --recursor, and answers SERVFAIL when it does not answer', async () => {
    // A recursor on loopback that answers every A question with 127.0.0.99.
    const rec = dgram.createSocket('udp4');
    rec.on('message', (msg, rinfo) => {
      const q = dnsPacket.decode(msg);
      const out = dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.RECURSION_AVAILABLE, questions: q.questions, answers: [{ type: 'A', name: q.questions![0].name, ttl: 60, data: '127.0.0.99' }] });
      rec.send(out, rinfo.port, rinfo.address);
    });
    await new Promise<void>((r) => rec.bind(0, '127.0.0.1', () => r()));
    const recPort = rec.address().port;
    try {
      const { port } = await startDns(CONSUL, ['--recursor', `127.0.0.1:${recPort}`]);
      const fwd = await dig(port, 'www.example.com');
      expect(fwd).toMatchObject({ status: 'NOERROR', data: ['127.0.0.99'] });
      expect(fwd.flags).toContain('ra');
      expect((await dig(port, `${uniq('nosuch')}.service.consul`)).status).toBe('NXDOMAIN');
      rec.close();
      await sleep(100);
      const t0 = Date.now();
      const failed = await dig(port, 'www.example.org', 'A', ['+time=5']);
      expect(failed.status).toBe('SERVFAIL');
      console.log(`PROBE dns recursor: www.example.com → ${fwd.data.join(',')} (ra); recursor gone → ${failed.status} after ${Date.now() - t0} ms`);
    } finally {
      try {
        rec.close();
      } catch {
        // closed above
      }
    }
  });
});

const rcodeOf = (out: Buffer) => (dnsPacket.decode(out) as { rcode?: string }).rcode;
const question = (name: string, type: string, id: number, additionals: unknown[] = []) =>
  dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: type as 'A', name }], additionals: additionals as never });
const OPT = { type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: 0, options: [] };

/** One raw message over UDP; its answer, or undefined after `ms`. */
async function udpAsk(port: number, msg: Buffer, ms = 2_000): Promise<Buffer | undefined> {
  const s = dgram.createSocket('udp4');
  try {
    return await new Promise<Buffer | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), ms);
      s.on('message', (out) => {
        clearTimeout(timer);
        resolve(out);
      });
      s.send(msg, port, '127.0.0.1');
    });
  } finally {
    s.close();
  }
}

/** One raw message over a new TCP connection; its answer, or undefined after `ms`. */
function tcpAsk(port: number, msg: Buffer, ms = 3_000): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const done = (out?: Buffer) => {
      clearTimeout(timer);
      c.destroy();
      resolve(out);
    };
    const timer = setTimeout(() => done(), ms);
    c.on('error', () => done());
    c.on('connect', () => c.write(Buffer.concat([Buffer.from([msg.length >> 8, msg.length & 255]), msg])));
    c.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) done(buf.subarray(2, 2 + buf.readUInt16BE(0)));
    });
  });
}

describe('dns: flags refused at start', () => {
  it('refuses --recursor at its own listen address and a --datacenter that is a type label, with a one-line usage error', async () => {
    const own = new Hm(['dns', 'memory://', '--listen', '127.0.0.1:25141', '--recursor', '127.0.0.1:25141']);
    const loop = new Hm(['dns', 'memory://', '--listen', '0.0.0.0:25141', '--recursor', '127.0.0.1:25141']);
    const dc = new Hm(['dns', 'memory://', '--listen', '127.0.0.1:25141', '--datacenter', 'service']);
    procs.push(own, loop, dc);
    expect(await own.exited).toBe(2);
    expect(await loop.exited).toBe(2);
    expect(await dc.exited).toBe(2);
    const text = own.stderr.join('');
    expect(text).toBe("harbormaster: --recursor 127.0.0.1:25141: that is this server's own --listen address; it would forward questions to itself\n");
    expect(loop.stderr.join('')).toContain('own --listen address');
    expect(dc.stderr.join('').trim().split('\n')).toHaveLength(1);
    expect(dc.stderr.join('')).toContain('--datacenter service: a type label');
    console.log(`PROBE dns usage errors: ${text.trim()} | ${dc.stderr.join('').trim()}`);
  });
});

describe('dns before the first catalog snapshot', () => {
  it('answers SERVFAIL (not authoritative) while the registry was never reached, /v1/health dns not ok; NOERROR / NXDOMAIN once it is', async () => {
    const etcd = privateEtcd(25142);
    try {
      const apiPort = 25144;
      const uri = `etcd://${etcd.endpoint}/dnsfirst`;
      const { port } = await startDns(uri, ['--api', `127.0.0.1:${apiPort}`, '--dns-ttl', '5'], false);
      const before = await dig(port, 'first.service.consul');
      const unknown = await dig(port, 'nosuch.service.consul');
      expect(before.status).toBe('SERVFAIL');
      expect(unknown.status).toBe('SERVFAIL');
      expect(before.flags).not.toContain('aa');
      expect(before.authority).toEqual([]);
      expect((await dig(port, 'example.com')).status).toBe('REFUSED');
      const h0 = (await (await fetch(`http://127.0.0.1:${apiPort}/v1/health`)).json()) as { ok: boolean; components: { dns: { ok: boolean; snapshots: number; lastError?: string } } };
      expect(h0.components.dns).toMatchObject({ ok: false, snapshots: 0 });
      expect(h0.ok).toBe(false);
      await etcd.start();
      const t0 = Date.now();
      const b = createBackend(uri, { ttl: 0 });
      backends.push(b);
      await b.register(inst('first', 'h:first:80', 'h', { address: '127.0.0.51' }));
      const after = await waitFor('answered once etcd is up', async () => {
        const r = await dig(port, 'first.service.consul');
        return r.status === 'NOERROR' && r.data.length === 1 ? r : undefined;
      }, 20_000, 100);
      expect(after.flags).toContain('aa');
      expect((await dig(port, 'nosuch.service.consul')).status).toBe('NXDOMAIN');
      const h1 = (await (await fetch(`http://127.0.0.1:${apiPort}/v1/health`)).json()) as { components: { dns: { ok: boolean; snapshots: number } } };
      expect(h1.components.dns.ok).toBe(true);
      console.log(`PROBE dns before the first snapshot: ${before.status} [${before.flags.join(' ')}], unknown ${unknown.status}, health dns ${JSON.stringify(h0.components.dns)}; etcd started → ${after.status} ${after.data.join(',')} [${after.flags.join(' ')}] after ${Date.now() - t0} ms, health dns ok=${h1.components.dns.ok}`);
    } finally {
      await etcd.kill();
      etcd.cleanup();
    }
  });
});

describe('dns edge cases on etcd (--datacenter dc)', () => {
  const uri = `etcd://${ETCD_ENDPOINT}/${uniq('dnsedge')}`;
  const b = createBackend(uri, { ttl: 0 });
  backends.push(b);
  let port = 0;
  let hm: Hm;

  it('answers web.service.dc.consul with --datacenter dc, NS at the apex, a CNAME for a host name address, no AA on REFUSED', async () => {
    ({ hm, port } = await startDns(uri, ['--datacenter', 'dc']));
    await b.register(inst('eweb', 'h:eweb-1:80', 'h', { address: '127.0.0.61', port: 8061 }));
    await b.register(inst('eweb', 'h:eweb-2:80', 'h', { address: '127.0.0.62', port: 8062, protocol: 'udp' }));
    await b.register(inst('edb', 'h:edb:5432', 'h', { address: 'localhost', port: 5432 }));
    await waitFor('eweb answered', async () => (await dig(port, 'eweb.service.consul')).data.length === 2, 15_000, 100);
    expect(sorted((await dig(port, 'eweb.service.dc.consul')).data)).toEqual(['127.0.0.61', '127.0.0.62']);
    expect(sorted((await dig(port, 'eweb.service.dc.dc.consul')).data)).toEqual(['127.0.0.61', '127.0.0.62']);
    expect((await dig(port, 'eweb.service.dc1.consul')).status).toBe('NXDOMAIN');
    // _tcp filters nothing; _udp (our extension) the udp instance.
    expect((await dig(port, '_eweb._tcp.service.consul', 'SRV')).answer).toHaveLength(2);
    expect((await dig(port, '_eweb._udp.service.consul', 'SRV')).data).toEqual(['1 1 8062 7f00003e.addr.dc.consul.']);
    const cname = await dig(port, 'edb.service.consul');
    expect(cname.answer).toEqual(['edb.service.consul. 0 IN CNAME localhost.']);
    const ns = await dig(port, 'consul', 'NS');
    expect(ns.answer).toEqual(['consul. 0 IN NS ns.consul.']);
    expect(ns.additional).toEqual(['ns.consul. 0 IN A 127.0.0.1']);
    expect((await dig(port, 'ns.consul')).data).toEqual(['127.0.0.1']);
    const refused = await dig(port, 'example.com');
    expect(refused.status).toBe('REFUSED');
    expect(refused.flags).not.toContain('aa');
    console.log(`PROBE dns edge: eweb.service.dc.consul → 2 A; edb A → ${cname.answer.join()}; consul NS → ${ns.answer.join()} + ${ns.additional.join()}; example.com ${refused.status} [${refused.flags.join(' ')}]`);
  });

  it('FORMERR for a label holding a dot and for two OPT records; AXFR and IXFR REFUSED over UDP and TCP', async () => {
    const dotted = await dig(port, 'a\\.b.eweb.service.consul');
    expect(dotted.status).toBe('FORMERR');
    const twoOpt = await udpAsk(port, question('eweb.service.consul', 'A', 11, [OPT, OPT]));
    expect(rcodeOf(twoOpt!)).toBe('FORMERR');
    const results: string[] = [];
    for (const type of ['AXFR', 'IXFR']) {
      const u = await udpAsk(port, question('consul', type, 12));
      const t = await tcpAsk(port, question('consul', type, 13));
      expect(rcodeOf(u!)).toBe('REFUSED');
      expect(rcodeOf(t!)).toBe('REFUSED');
      results.push(`${type} udp ${rcodeOf(u!)} tcp ${rcodeOf(t!)}`);
    }
    expect((await dig(port, 'eweb.service.consul')).status).toBe('NOERROR');
    console.log(`PROBE dns malformed: a\\.b label → ${dotted.status}; two OPT → ${rcodeOf(twoOpt!)}; ${results.join('; ')}`);
  });

  it('answers a fresh dig +tcp within 3 s while more clients than the connection limit trickle bytes', async () => {
    // 34 source addresses × 16 connections (the per-source cap) = 544 > 512, each trickling a message a byte at a time.
    const trickle: net.Socket[] = [];
    let closedByServer = 0;
    try {
      for (let a = 2; a < 36; a++) {
        await Promise.all(
          Array.from({ length: 16 }, () =>
            new Promise<void>((resolve) => {
              const c = net.connect({ port, host: '127.0.0.1', localAddress: `127.0.0.${a}` });
              c.on('error', () => resolve());
              c.on('close', () => closedByServer++);
              c.on('connect', () => {
                c.write(Buffer.from([0x00]));
                resolve();
              });
              trickle.push(c);
            }),
          ),
        );
      }
      const pace = setInterval(() => {
        for (const c of trickle) if (!c.destroyed) c.write(Buffer.from([0x20]));
      }, 500);
      try {
        const t0 = Date.now();
        const r = await dig(port, 'eweb.service.consul', 'A', ['+tcp', '+time=3']);
        const ms = Date.now() - t0;
        expect(r.status).toBe('NOERROR');
        expect(r.protocol).toBe('TCP');
        expect(ms).toBeLessThan(3_000);
        const closedAtOnce = closedByServer;
        await sleep(2_500);
        const t1 = Date.now();
        const again = await dig(port, 'eweb.service.consul', 'A', ['+tcp', '+time=3']);
        const ms2 = Date.now() - t1;
        expect(again.status).toBe('NOERROR');
        expect(ms2).toBeLessThan(3_000);
        console.log(`PROBE dns tcp with ${trickle.length} trickling connections from 34 addresses: dig +tcp ${r.status} in ${ms} ms (${closedAtOnce} closed by then); 2.5 s later (message deadline 2 s: ${closedByServer} closed) dig +tcp ${again.status} in ${ms2} ms`);
      } finally {
        clearInterval(pace);
      }
    } finally {
      for (const c of trickle) c.destroy();
    }
    expect(hm.logs.filter((l) => l.level >= 50)).toEqual([]);
  });
});

describe('dns forwarding bounds', () => {
  it('with a silent recursor, 2,000 questions keep the open fds bounded and in-domain answers coming', async () => {
    const rec = dgram.createSocket('udp4');
    await new Promise<void>((r) => rec.bind(0, '127.0.0.1', () => r()));
    let asked = 0;
    rec.on('message', () => asked++);
    const client = dgram.createSocket('udp4');
    await new Promise<void>((r) => client.bind(0, '127.0.0.1', () => r()));
    try {
      const uri = `etcd://${ETCD_ENDPOINT}/${uniq('dnsfwd')}`;
      const b = createBackend(uri, { ttl: 0 });
      backends.push(b);
      await b.register(inst('fwd', 'h:fwd:80', 'h', { address: '127.0.0.71' }));
      const { hm, port } = await startDns(uri, ['--recursor', `127.0.0.1:${rec.address().port}`]);
      await waitFor('fwd answered', async () => (await dig(port, 'fwd.service.consul')).data.length === 1, 15_000, 100);
      const fds = () => readdirSync(`/proc/${hm.pid}/fd`).length;
      const base = fds();
      let answers = 0;
      let servfail = 0;
      client.on('message', (m) => {
        answers++;
        if (rcodeOf(m) === 'SERVFAIL') servfail++;
      });
      let maxFds = base;
      const inDomain: string[] = [];
      for (let i = 0; i < 2_000; i++) {
        client.send(question(`q${i}.example.com`, 'A', i), port, '127.0.0.1');
        if (i % 250 === 249) {
          maxFds = Math.max(maxFds, fds());
          inDomain.push((await dig(port, 'fwd.service.consul')).data.join());
        }
        if (i % 50 === 49) await sleep(5);
      }
      await waitFor('every question answered', () => answers >= 2_000, 30_000, 100);
      maxFds = Math.max(maxFds, fds());
      expect(inDomain.every((d) => d === '127.0.0.71')).toBe(true);
      expect(maxFds - base).toBeLessThan(20);
      expect(asked).toBeLessThanOrEqual(2_000);
      expect(servfail).toBe(2_000);
      const metrics = hm.logs.filter((l) => l.level >= 50);
      expect(metrics).toEqual([]);
      console.log(`PROBE dns forwarding to a silent recursor: 2,000 questions → ${asked} sent upstream, ${servfail} SERVFAIL, fds ${base} → max ${maxFds}, in-domain answered ${inDomain.length}/${inDomain.length} times meanwhile`);
    } finally {
      rec.close();
      client.close();
    }
  });
});

describe('dns compared with Consul\'s own DNS on the same catalog', () => {
  it('agrees on _svc._tcp, a host name address, REFUSED flags and NS at the apex', async () => {
    const b = createBackend(CONSUL, { ttl: 0 });
    backends.push(b);
    const host = uniq('cmphost');
    const svc = uniq('cmpsvc');
    const named = uniq('cmphn');
    const registered = [
      inst(svc, `${host}:a:80`, host, { address: '127.0.0.81', port: 8081 }),
      inst(svc, `${host}:b:80`, host, { address: '127.0.0.82', port: 8082, protocol: 'udp' }),
      inst(named, `${host}:h:80`, host, { address: 'localhost', port: 8083 }),
    ];
    for (const i of registered) await b.register(i);
    try {
      const { port } = await startDns(CONSUL);
      await waitFor('both see the catalog', async () => (await dig(port, `${svc}.service.consul`)).data.length === 2 && (await dig(8600, `${svc}.service.consul`)).data.length === 2, 15_000, 100);
      const rows: string[] = [];
      const row = async (name: string, type: string, pick: (r: Awaited<ReturnType<typeof dig>>) => unknown) => {
        const consul = await dig(8600, name, type);
        const ours = await dig(port, name, type);
        rows.push(`${name} ${type}: Consul ${JSON.stringify(pick(consul))} | harbormaster ${JSON.stringify(pick(ours))}`);
        expect(pick(ours)).toEqual(pick(consul));
      };
      await row(`_${svc}._tcp.service.consul`, 'SRV', (r) => [r.status, r.answer.length, r.flags.includes('aa')]);
      await row(`${named}.service.consul`, 'A', (r) => [r.status, r.answer.map((l) => l.split(/\s+/).slice(3).join(' '))]);
      await row(`${named}.service.consul`, 'AAAA', (r) => [r.status, r.answer.map((l) => l.split(/\s+/).slice(3, 4).join(' '))]);
      await row('example.com', 'A', (r) => [r.status, r.flags.includes('aa')]);
      await row('consul', 'NS', (r) => [r.status, r.answer.map((l) => l.split(/\s+/)[3]), r.flags.includes('aa')]);
      console.log(`PROBE dns vs Consul:\n  ${rows.join('\n  ')}`);
    } finally {
      for (const i of registered) await b.deregister(i);
    }
  });
});
