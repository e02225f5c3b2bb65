// `harbormaster dns` against the real registries, asked with the real `dig`: every name form on
// Consul, etcd v3 and etcd v2 (the memory registry is asked through `run`, in run-memory.test.ts),
// truncation and the TCP retry with 100 instances, changes seen in the next answer, the last
// snapshot served while the registry is down, and forwarding to a recursor.
import dgram from 'node:dgram';
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
async function startDns(registry: string, args: string[] = []): Promise<{ hm: Hm; port: number }> {
  const hm = new Hm(['dns', registry, '--listen', '127.0.0.1:0', ...args]);
  procs.push(hm);
  const ready = await hm.waitForLog('dns ready', (l) => l.event === 'ready', 20_000);
  return { hm, port: Number(String(ready.dns).split(':').pop()) };
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
