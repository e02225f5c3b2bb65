// The read side under registry faults, against private engines: a Consul agent with 500
// services of which one answers 500 (HTTP fault proxy on that service's health path only), with
// the connections to the agent counted by a TCP fault proxy; etcd v3 and v2 watches whose
// connection is cut while keys change, with the history compacted (v3) or the event window
// passed (v2) meanwhile, and records that do not decode. Each scenario prints what it measured.
import { Writable } from 'node:stream';
import { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Catalog } from '../src/catalog/catalog.js';
import { ConsulWatch } from '../src/catalog/consul-watch.js';
import { Etcd2Watch } from '../src/catalog/etcd2-watch.js';
import { EtcdWatch } from '../src/catalog/etcd-watch.js';
import { CatalogWatch } from '../src/catalog/watch.js';
import { FaultProxy } from './support/fault-proxy.js';
import { HttpFaultProxy } from './support/http-fault-proxy.js';
import { privateConsul, privateEtcd } from './support/registries.js';
import { sleep, waitFor } from './support/wait.js';

interface LogLine {
  level: number;
  msg: string;
  event?: string;
  part?: string;
}

function capture() {
  const lines: LogLine[] = [];
  const log = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _e, cb) => (lines.push(JSON.parse(chunk.toString()) as LogLine), cb()) }));
  return { log, lines };
}

const WARN = 40;
const INFO = 30;
const ERROR = 50;

/** `id:port` of every instance, sorted. */
const contentOf = (c: Catalog | undefined) => (c?.services ?? []).flatMap((s) => s.instances.map((i) => `${i.id}:${i.port}`)).sort();

describe('Consul watch: 500 services, one whose health read fails', () => {
  const BASE = 24010;
  const consul = privateConsul(BASE);
  const agent = `http://127.0.0.1:${BASE}`;
  let http: HttpFaultProxy;
  let tcp: FaultProxy;
  const name = (i: number) => `s-${String(i).padStart(3, '0')}`;
  const register = async (i: number, port = 10000 + i, extra: Record<string, unknown> = {}) => {
    const r = await fetch(`${agent}/v1/agent/service/register`, { method: 'PUT', body: JSON.stringify({ ID: `${name(i)}-1`, Name: name(i), Address: '127.0.0.1', Port: port, ...extra }) });
    if (!r.ok) throw new Error(`register ${name(i)}: ${r.status} ${await r.text()}`);
  };

  beforeAll(async () => {
    await consul.start();
    let next = 0;
    const t0 = Date.now();
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < 500) await register(next++);
    }));
    console.log(`PROBE consul setup: 500 services registered on a private agent in ${Date.now() - t0} ms`);
    http = await HttpFaultProxy.start({ host: '127.0.0.1', port: BASE }, BASE + 10);
    tcp = await FaultProxy.start({ host: '127.0.0.1', port: http.port }, BASE + 11);
  }, 90_000);

  afterAll(async () => {
    await tcp?.close();
    await http?.close();
    await consul.kill();
  });

  it('routes the other 499 at once, backs the failing one off alone, keeps its last good data, and stays far below the agent connection limit', async () => {
    const FAILING = /^\/v1\/health\/service\/s-007(\?|$)/;
    const failing = () => http.requests(FAILING);
    // Consul's own answer when a server RPC fails, with the index it gives errors.
    let rule = http.respond(FAILING, 500, 'rpc error making call: simulated failure', { headers: { 'X-Consul-Index': '0' } });
    const { log, lines } = capture();
    const raw = new ConsulWatch({ host: '127.0.0.1', port: tcp.port, secure: false });
    const w = new CatalogWatch(raw, { log });
    let maxOpen = 0;
    const sampler = setInterval(() => (maxOpen = Math.max(maxOpen, tcp.stats().open)), 5);
    try {
      const t0 = Date.now();
      const first = await w.first();
      const firstMs = Date.now() - t0;
      const names = first.services.map((s) => s.name);
      expect(names).toHaveLength(499);
      expect(names).not.toContain('s-007');

      // Other services change while it fails: they follow, it is not read any faster.
      const tc = Date.now();
      await register(1, 19001);
      await waitFor('s-001 on its new port', () => w.catalog?.services.find((s) => s.name === 's-001')?.instances[0].port === 19001, 10_000, 5);
      const changeMs = Date.now() - tc;
      await sleep(Math.max(0, t0 + 5_000 - Date.now()));
      const times = failing().map((r) => r.time - t0);
      const gaps = times.slice(1).map((t, i) => t - times[i]);
      const lastThree = times.filter((t) => t >= 2_000).length / 3;
      console.log(`PROBE consul one service answering 500 (X-Consul-Index: 0): first catalog ${firstMs} ms with ${names.length}/500 services (the failing one absent); another service's change seen in ${changeMs} ms meanwhile; reads of the failing one in 5 s: ${times.length} at ${times.map((t) => `${t}`).join(', ')} ms (gaps ${gaps.join(', ')} ms; ${lastThree.toFixed(2)}/s over the last 3 s)`);
      expect(firstMs).toBeLessThan(5_000);
      expect(times.length).toBeLessThanOrEqual(6);
      // After the first two failures, at most one read a second.
      for (const g of gaps.slice(1)) expect(g).toBeGreaterThanOrEqual(750);
      expect(lastThree).toBeLessThanOrEqual(1);

      // It answers again: it joins without anything else restarting.
      rule.remove();
      const tr = Date.now();
      await waitFor('s-007 routed', () => w.catalog?.services.some((s) => s.name === 's-007'), 20_000, 10);
      const recoverMs = Date.now() - tr;

      // It fails again, with data: a change of its own (in place: new meta, same port) makes it be
      // read again, and it keeps its last good data; another service registered meanwhile is routed.
      rule = http.respond(FAILING, 500, 'rpc error making call: simulated failure', { headers: { 'X-Consul-Index': '0' } });
      const before = failing().length;
      await register(500);
      await register(7, 10007, { Meta: { changed: 'yes' } });
      await waitFor('s-500 routed', () => w.catalog?.services.some((s) => s.name === 's-500'), 10_000, 5);
      await waitFor('s-007 read and refused', () => failing().length > before && failing().at(-1)?.status === 500, 10_000, 5);
      await sleep(1_500);
      const kept = w.catalog?.services.find((s) => s.name === 's-007')?.instances.map((i) => `${i.id}:${i.port}`);
      expect(kept).toEqual(['s-007-1:10007']);
      expect(w.catalog?.services).toHaveLength(501);
      rule.remove();
      await waitFor('second recovery logged', () => lines.filter((l) => l.event === 'part-up').length === 2, 20_000, 20);

      const partLines = lines.filter((l) => l.part === 'consul service s-007' && l.level >= INFO);
      const warnLines = partLines.filter((l) => l.level === WARN);
      const retryLines = lines.filter((l) => l.event === 'part-retry');
      const stats = raw.stats;
      console.log(`PROBE consul recovery: s-007 routed ${recoverMs} ms after its path answered again; failing again with data: kept [${kept}] through ${failing().length - before} refused reads, 501 services routed; log lines above debug about it: ${partLines.length} (${warnLines.length} warn, ${partLines.length - warnLines.length} recovered), ${retryLines.length} retries at debug; registry-wide errors: ${lines.filter((l) => l.level >= ERROR).length}; connections to the agent: max ${maxOpen} open at once, ${tcp.stats().accepted} opened in all; reads: ${stats.serviceReads} service, ${stats.catalogAnswers} catalog, ${stats.healthAnswers} health`);
      expect(warnLines).toHaveLength(2);
      expect(partLines).toHaveLength(4);
      expect(lines.filter((l) => l.level >= ERROR)).toHaveLength(0);
      // 8 service reads + 3 blocking queries, whatever the number of services (Consul closes past 200 per client).
      expect(maxOpen).toBeLessThanOrEqual(11);
    } finally {
      clearInterval(sampler);
      await w.stop();
    }
  });

  it('an agent unreachable for 2 s: last catalog kept, one error line, then a full re-read and one recovered line', async () => {
    const { log, lines } = capture();
    const raw = new ConsulWatch({ host: '127.0.0.1', port: tcp.port, secure: false });
    const w = new CatalogWatch(raw, { log });
    try {
      const first = await w.first();
      const reads0 = raw.stats.serviceReads;
      tcp.cut();
      await register(2, 19002);
      await sleep(2_000);
      const during = w.catalog;
      tcp.pass();
      const t = Date.now();
      await waitFor('s-002 on its new port', () => w.catalog?.services.find((s) => s.name === 's-002')?.instances[0].port === 19002, 20_000, 5);
      const ms = Date.now() - t;
      await waitFor('the re-read settled', async () => {
        const n = raw.stats.serviceReads;
        await sleep(200);
        return raw.stats.serviceReads === n;
      }, 10_000, 0);
      // Every query of the watch (listing, health, nodes) has to be back before it says so.
      await waitFor('the recovered line', () => lines.some((l) => l.event === 'watch-up'), 10_000, 20).catch(() => undefined);
      const errors = lines.filter((l) => l.level >= ERROR);
      const up = lines.filter((l) => l.event === 'watch-up');
      const partWarn = lines.filter((l) => l.event === 'part-error' && l.level >= WARN);
      console.log(`PROBE consul agent unreachable 2 s: catalog kept meanwhile (${during?.services.length} services, unchanged: ${during === first}), change made meanwhile seen ${ms} ms after it was reachable again, ${raw.stats.serviceReads - reads0} service reads (full re-read); log: ${errors.length} error line "${errors[0]?.msg}", ${up.length} recovered, ${lines.filter((l) => l.event === 'watch-retry').length} retries at debug, ${partWarn.length} per-service warnings`);
      expect(during).toBe(first);
      expect(errors).toHaveLength(1);
      expect(up).toHaveLength(1);
      expect(partWarn).toHaveLength(0);
      expect(raw.stats.serviceReads - reads0).toBeGreaterThanOrEqual(first.services.length);
    } finally {
      tcp.pass();
      await w.stop();
    }
  });

  it('a health answer with entries that do not decode: those are skipped with one line each, the rest kept', async () => {
    const real = (await (await fetch(`${agent}/v1/health/service/s-008`)).json()) as Array<{ Service: Record<string, unknown> }>;
    const good = real[0];
    const badPort = { ...good, Service: { ...good.Service, ID: 's-008-bad', Port: 'eighty' } };
    const noService = { ...good, Service: null };
    const rule = http.respond(/^\/v1\/health\/service\/s-008(\?|$)/, 200, [good, badPort, noService], { headers: { 'X-Consul-Index': '99999' } });
    const { log, lines } = capture();
    const w = new CatalogWatch(new ConsulWatch({ host: '127.0.0.1', port: tcp.port, secure: false }), { log });
    try {
      const first = await w.first();
      const s008 = first.services.find((s) => s.name === 's-008')?.instances.map((i) => i.id);
      const bad = lines.filter((l) => l.event === 'invalid').map((l) => l.msg);
      console.log(`PROBE consul health answer with 2 bad entries among 3: s-008 routed to [${s008}], ${first.services.length} services; log: ${bad.map((m) => `"${m}"`).join(' ')}`);
      expect(s008).toEqual(['s-008-1']);
      expect(bad.sort()).toEqual(['consul service s-008 instance s-008-bad: Service.Port is not a number; skipped', 'consul service s-008: Service is not an object; skipped']);
    } finally {
      rule.remove();
      await w.stop();
    }
  });

  it('reads again only the service whose check changed; an in-place change of an instance is seen too', async () => {
    const raw = new ConsulWatch({ host: '127.0.0.1', port: BASE, secure: false });
    const w = new CatalogWatch(raw, { log: capture().log });
    await register(600, 16000, { Check: { CheckID: 'c600', TTL: '600s', Status: 'passing' } });
    try {
      await w.first();
      await waitFor('s-600 passing', () => w.catalog?.services.some((s) => s.name === 's-600'), 10_000, 5);
      await sleep(300);
      const r0 = raw.stats.serviceReads;
      let t = Date.now();
      await fetch(`${agent}/v1/agent/check/fail/c600`, { method: 'PUT' });
      await waitFor('s-600 gone (critical)', () => !w.catalog?.services.some((s) => s.name === 's-600'), 10_000, 5);
      const failMs = Date.now() - t;
      await sleep(300);
      const r1 = raw.stats.serviceReads;
      t = Date.now();
      await fetch(`${agent}/v1/agent/check/pass/c600`, { method: 'PUT' });
      await waitFor('s-600 back', () => w.catalog?.services.some((s) => s.name === 's-600'), 10_000, 5);
      const passMs = Date.now() - t;
      await sleep(300);
      const r2 = raw.stats.serviceReads;
      t = Date.now();
      await register(600, 16001, { Check: { CheckID: 'c600', TTL: '600s', Status: 'passing' } });
      await waitFor('s-600 on its new port', () => w.catalog?.services.find((s) => s.name === 's-600')?.instances[0].port === 16001, 10_000, 5);
      const moveMs = Date.now() - t;
      await sleep(300);
      const r3 = raw.stats.serviceReads;
      console.log(`PROBE consul changes among 502 services: check critical seen in ${failMs} ms (${r1 - r0} service reads), passing again in ${passMs} ms (${r2 - r1} reads), port changed in place in ${moveMs} ms (${r3 - r2} reads; the node sweep found which service changed)`);
      expect(r1 - r0).toBeLessThanOrEqual(3);
      expect(r2 - r1).toBeLessThanOrEqual(3);
      expect(r3 - r2).toBeGreaterThanOrEqual(1);
      expect(r3 - r2).toBeLessThanOrEqual(3);
    } finally {
      await w.stop();
    }
  });

  it('a node registered again at a new address moves its instances that have no address of their own, within seconds', async () => {
    const node = (address: string, service = true) =>
      fetch(`${agent}/v1/catalog/register`, {
        method: 'PUT',
        body: JSON.stringify({ Node: 'hm-moving-node', Address: address, ...(service ? { Service: { ID: 's-moving-1', Service: 's-moving', Port: 8080 } } : {}) }),
      }).then(async (r) => {
        if (!r.ok) throw new Error(`catalog register: ${r.status} ${await r.text()}`);
      });
    await node('10.1.0.1');
    const raw = new ConsulWatch({ host: '127.0.0.1', port: BASE, secure: false });
    const w = new CatalogWatch(raw, { log: capture().log });
    const addressOf = () => w.catalog?.services.find((s) => s.name === 's-moving')?.instances.map((i) => `${i.address}:${i.port}`).join(',');
    try {
      await w.first();
      await waitFor('s-moving routed at 10.1.0.1', () => addressOf() === '10.1.0.1:8080', 10_000, 10);
      await sleep(300);
      const before = { ...raw.stats };
      const services = (await (await fetch(`${agent}/v1/catalog/services`)).json()) as Record<string, unknown>;
      const listingIndex = async () => Number((await fetch(`${agent}/v1/catalog/services`)).headers.get('x-consul-index'));
      const i0 = await listingIndex();
      const t0 = Date.now();
      // The node alone, registered again at another address: its service's entry is untouched.
      await node('10.1.0.2', false);
      await waitFor('s-moving routed at 10.1.0.2', () => addressOf() === '10.1.0.2:8080', 20_000, 10);
      const ms = Date.now() - t0;
      const listingMoved = (await listingIndex()) !== i0;
      await sleep(300);
      const reads = raw.stats.serviceReads - before.serviceReads;
      console.log(`PROBE consul node hm-moving-node registered again at a new address among ${Object.keys(services).length} services: its address-less instance moved in ${ms} ms (the service listing's index moved: ${listingMoved}); ${raw.stats.nodeAnswers - before.nodeAnswers} node listing answers, ${reads} service reads, ${raw.stats.sweeps - before.sweeps} sweeps`);
      expect(ms).toBeLessThan(5_000);
      expect(reads).toBeLessThanOrEqual(3);
    } finally {
      await w.stop();
      await fetch(`${agent}/v1/catalog/deregister`, { method: 'PUT', body: JSON.stringify({ Node: 'hm-moving-node' }) });
    }
  });

  it('25 registrations in 5 s among 500 services read about one service each, not every service', async () => {
    const raw = new ConsulWatch({ host: '127.0.0.1', port: BASE, secure: false });
    const w = new CatalogWatch(raw, { log: capture().log });
    try {
      await w.first();
      await waitFor('reads settled', async () => {
        const n = raw.stats.serviceReads;
        await sleep(300);
        return raw.stats.serviceReads === n;
      }, 20_000, 0);
      const before = { ...raw.stats };
      const t0 = Date.now();
      for (let i = 0; i < 25; i++) {
        await register(700 + i);
        await sleep(Math.max(0, t0 + (i + 1) * 200 - Date.now()));
      }
      await waitFor('all 25 routed', () => Array.from({ length: 25 }, (_, i) => name(700 + i)).every((n) => w.catalog?.services.some((s) => s.name === n)), 10_000, 10);
      const seenMs = Date.now() - t0;
      await sleep(500);
      const reads = raw.stats.serviceReads - before.serviceReads;
      const nodeReads = raw.stats.nodeReads - before.nodeReads;
      const sweeps = raw.stats.sweeps - before.sweeps;
      const services = w.catalog?.services.length;
      console.log(`PROBE consul 25 registrations in 5 s among ${services} services: all routed ${seenMs} ms after the first; ${reads} service reads (${(reads / 25).toFixed(2)} per registration), ${sweeps} node sweeps with ${nodeReads} node reads, ${raw.stats.catalogAnswers - before.catalogAnswers} listing answers`);
      expect(reads / 25).toBeLessThanOrEqual(2);
      expect(nodeReads).toBeLessThanOrEqual(4 * 25);
    } finally {
      await w.stop();
    }
  });
});

describe('etcd watches: cut connections, compaction, cleared event index, bad records', () => {
  const BASE = 24100;
  const etcd = privateEtcd(BASE);
  let v3: FaultProxy;
  let v2: FaultProxy;
  let writer: Etcd3;
  const direct = `http://127.0.0.1:${BASE}`;

  beforeAll(async () => {
    await etcd.start();
    v3 = await FaultProxy.start({ host: '127.0.0.1', port: BASE }, BASE + 10);
    v2 = await FaultProxy.start({ host: '127.0.0.1', port: BASE }, BASE + 11);
    writer = new Etcd3({ hosts: direct });
  }, 60_000);

  afterAll(async () => {
    writer?.close();
    await v3?.close();
    await v2?.close();
    await etcd.kill();
    etcd.cleanup();
  });

  const value = (i: number, port: number) => JSON.stringify({ id: `h:c${i}:80`, name: `svc-${i % 20}`, address: '127.0.0.1', port, protocol: 'tcp', tags: [], meta: {}, host: 'h', status: 'passing' });
  const keyOf = (prefix: string, i: number) => `${prefix}/svc-${i % 20}/h:c${i}:80`;

  /** `n` single-key changes (each its own revision): puts with a new port or deletes, 8 at a time. */
  async function churn(n: number, write: (i: number, port: number | undefined) => Promise<unknown>): Promise<void> {
    let done = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (done < n) {
        done++;
        const i = Math.floor(Math.random() * 400);
        await write(i, Math.random() < 0.3 ? undefined : 20000 + Math.floor(Math.random() * 20000));
      }
    }));
  }

  /** `id:port` of every record under the prefix that decodes (v3). */
  async function v3Content(prefix: string): Promise<string[]> {
    const kv = await writer.getAll().prefix(`${prefix}/`).strings();
    return Object.values(kv).flatMap((v) => {
      try {
        const r = JSON.parse(v) as { id: string; port: number };
        return typeof r.port === 'number' && r.port < 65536 ? [`${r.id}:${r.port}`] : [];
      } catch {
        return [];
      }
    }).sort();
  }

  it('v3: resumes from the last event applied across cuts (one of them while catching up), and reads in full after a compaction', async () => {
    const prefix = '/cf3';
    const put = async (i: number, port: number | undefined) => {
      if (port === undefined) await writer.delete().key(keyOf(prefix, i));
      else await writer.put(keyOf(prefix, i)).value(value(i, port));
    };
    for (let i = 0; i < 100; i++) await put(i, 20000 + i);
    const { log, lines } = capture();
    const raw = new EtcdWatch({ endpoints: [`http://${v3.address}`], prefix });
    const w = new CatalogWatch(raw, { log });
    try {
      await w.first();
      expect(contentOf(w.catalog)).toEqual(await v3Content(prefix));

      // Cut while 1,500 revisions go by, then cut again as soon as the resumed watch applied its
      // first events: etcd replays history 1,000 revisions per batch, so it is cut mid-replay.
      v3.cut();
      await churn(1500, put);
      const e0 = raw.stats.events;
      v3.pass();
      await waitFor('the resumed watch applying events', () => raw.stats.events > e0, 20_000, 1);
      v3.cut();
      const atSecondCut = raw.stats.events - e0;
      await churn(300, put);
      v3.pass();
      let t = Date.now();
      const want = await v3Content(prefix);
      await waitFor('v3 catalog equal to etcd', async () => JSON.stringify(contentOf(w.catalog)) === JSON.stringify(await v3Content(prefix)), 30_000, 10);
      const cutMs = Date.now() - t;
      const cutStats = { ...raw.stats };
      console.log(`PROBE etcd v3 cut during 1,500 changes, cut again mid-replay (${atSecondCut} of its events applied by then), 300 more, restored: converged to exactly etcd's ${want.length} records ${cutMs} ms after the restore; full reads ${cutStats.fullReads} (only the first: resumed, nothing skipped), watch streams ${cutStats.watches}, events applied ${cutStats.events}`);
      expect(cutStats.fullReads).toBe(1);

      // Compaction past the watch's revision while it is cut off.
      v3.cut();
      await churn(200, put);
      const rev = (await writer.kv.range({ key: Buffer.from(`${prefix}/`), limit: 1 })).header.revision;
      await writer.kv.compact({ revision: rev, physical: true });
      v3.pass();
      t = Date.now();
      await waitFor('v3 catalog equal to etcd after compaction', async () => JSON.stringify(contentOf(w.catalog)) === JSON.stringify(await v3Content(prefix)), 30_000, 10);
      const compactMs = Date.now() - t;
      const note = lines.find((l) => l.event === 'watch-note');
      console.log(`PROBE etcd v3 history compacted to revision ${rev} while cut off: converged ${compactMs} ms after the restore; full reads ${raw.stats.fullReads}, compactions seen ${raw.stats.compacted}; log: "${note?.msg}"`);
      expect(raw.stats.compacted).toBe(1);
      expect(raw.stats.fullReads).toBe(2);

      // A record that does not decode: one line naming it, the rest goes on.
      await writer.put(`${prefix}/svc-1/bad`).value('{"port": "eighty"');
      await writer.put(`${prefix}/svc-1/bad2`).value(JSON.stringify({ id: 'bad2', name: 'svc-1', address: '127.0.0.1', port: 70000 }));
      await put(1000, 30000);
      await waitFor('the record after the bad ones', () => contentOf(w.catalog).includes('h:c1000:80:30000'), 10_000, 5);
      await put(1001, 30001);
      await waitFor('one more', () => contentOf(w.catalog).includes('h:c1001:80:30001'), 10_000, 5);
      const bad = lines.filter((l) => l.event === 'invalid');
      console.log(`PROBE etcd v3 bad records: ${bad.length} log lines: ${bad.map((l) => `"${l.msg}"`).join(' ')}; catalog still equal to the good records: ${JSON.stringify(contentOf(w.catalog)) === JSON.stringify(await v3Content(prefix))}`);
      expect(bad.map((l) => l.msg)).toEqual([`etcd key ${prefix}/svc-1/bad: value is not JSON; skipped`, `etcd key ${prefix}/svc-1/bad2: port is not a port number; skipped`]);
      expect(contentOf(w.catalog)).toEqual(await v3Content(prefix));
      const failures = lines.filter((l) => l.level >= ERROR);
      const recovered = lines.filter((l) => l.event === 'watch-up');
      console.log(`PROBE etcd v3 logs over 3 outages: ${failures.length} error lines, ${recovered.length} recovered lines, ${lines.filter((l) => l.event === 'watch-retry').length} retries at debug`);
      expect(failures).toHaveLength(3);
      expect(recovered).toHaveLength(3);
    } finally {
      await w.stop();
    }
  });

  it('v3 and v2: a full read every resync period (400 ms here), changes still applied in between, nothing emitted when nothing changed', async () => {
    await writer.put(keyOf('/cfr', 1)).value(value(1, 20001));
    await fetch(`${direct}/v2/keys${keyOf('/cfr2', 1)}`, { method: 'PUT', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ value: value(1, 20001) }).toString() });
    const raw3 = new EtcdWatch({ endpoints: [direct], prefix: '/cfr' }, { resyncMs: 400 });
    const raw2 = new Etcd2Watch({ endpoints: [direct], prefix: '/cfr2' }, { resyncMs: 400 });
    const watches = [new CatalogWatch(raw3, { log: capture().log }), new CatalogWatch(raw2, { log: capture().log })];
    try {
      const emitted = [0, 0];
      watches.forEach((w, i) => w.subscribe(() => emitted[i]++));
      await Promise.all(watches.map((w) => w.first()));
      await sleep(1_000);
      await writer.put(keyOf('/cfr', 2)).value(value(2, 20002));
      await fetch(`${direct}/v2/keys${keyOf('/cfr2', 2)}`, { method: 'PUT', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ value: value(2, 20002) }).toString() });
      await waitFor('both changes', () => watches.every((w) => contentOf(w.catalog).length === 2), 5_000, 5);
      // three periodic reads each (400 ms apart when the machine keeps up; a loaded one stretches the timer)
      await waitFor('three full reads of each', () => raw3.stats.fullReads >= 3 && raw2.stats.fullReads >= 3, 10_000, 20);
      console.log(`PROBE etcd periodic full read every 400 ms over ~1.6 s: v3 ${raw3.stats.fullReads} full reads, v2 ${raw2.stats.fullReads}; snapshots emitted: v3 ${emitted[0]}, v2 ${emitted[1]} (the first and the one change)`);
      expect(raw3.stats.fullReads).toBeGreaterThanOrEqual(3);
      expect(raw2.stats.fullReads).toBeGreaterThanOrEqual(3);
      expect(emitted).toEqual([2, 2]);
    } finally {
      for (const w of watches) await w.stop();
    }
  });

  it('v2: resumes from the next index after a cut, and reads in full when etcd answers 401 (event index cleared)', async () => {
    const prefix = '/cf2';
    const v2put = async (key: string, val: string | undefined) => {
      const r = await fetch(`${direct}/v2/keys${key}`, val === undefined ? { method: 'DELETE' } : { method: 'PUT', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ value: val }).toString() });
      if (!r.ok && r.status !== 404) throw new Error(`v2 ${key}: ${r.status} ${await r.text()}`);
    };
    const put = (i: number, port: number | undefined) => v2put(keyOf(prefix, i), port === undefined ? undefined : value(i, port));
    const content = async () => {
      const r = await fetch(`${direct}/v2/keys${prefix}?recursive=true`);
      const out: string[] = [];
      const walk = (n: { dir?: boolean; nodes?: unknown[]; value?: string }) => {
        if (n.dir) (n.nodes ?? []).forEach((c) => walk(c as typeof n));
        else {
          try {
            const v = JSON.parse(n.value ?? '') as { id: string; port: number };
            if (typeof v.port === 'number' && v.port < 65536) out.push(`${v.id}:${v.port}`);
          } catch {
            // not a record
          }
        }
      };
      if (r.ok) walk(((await r.json()) as { node: Parameters<typeof walk>[0] }).node);
      return out.sort();
    };
    for (let i = 0; i < 40; i++) await put(i, 20000 + i);
    const { log, lines } = capture();
    const raw = new Etcd2Watch({ endpoints: [`http://${v2.address}`], prefix });
    const w = new CatalogWatch(raw, { log });
    try {
      await w.first();
      expect(contentOf(w.catalog)).toEqual(await content());

      // A cut while 100 changes go by: resumed from the next index, no full read.
      v2.cut();
      await churn(100, put);
      v2.pass();
      let t = Date.now();
      await waitFor('v2 catalog equal to etcd', async () => JSON.stringify(contentOf(w.catalog)) === JSON.stringify(await content()), 30_000, 10);
      const resumeMs = Date.now() - t;
      const resumed = { ...raw.stats };
      console.log(`PROBE etcd v2 cut during 100 changes, restored: converged ${resumeMs} ms after the restore; full reads ${resumed.fullReads}, 401s ${resumed.cleared}, events applied ${resumed.events}`);
      expect(resumed.fullReads).toBe(1);
      expect(resumed.cleared).toBe(0);

      // A cut while 50 changes here and 1,100 elsewhere go by: etcd keeps 1,000 events, the index is gone.
      v2.cut();
      await churn(50, put);
      let n = 0;
      await Promise.all(Array.from({ length: 16 }, async () => {
        while (n < 1100) await v2put(`/cf2-noise/k${n++}`, 'x');
      }));
      v2.pass();
      t = Date.now();
      await waitFor('v2 catalog equal to etcd after 401', async () => JSON.stringify(contentOf(w.catalog)) === JSON.stringify(await content()), 30_000, 10);
      const clearedMs = Date.now() - t;
      const note = lines.find((l) => l.event === 'watch-note');
      console.log(`PROBE etcd v2 cut during 50 changes + 1,100 elsewhere, restored: converged ${clearedMs} ms after the restore; 401s ${raw.stats.cleared}, full reads ${raw.stats.fullReads}; log: "${note?.msg}"`);
      expect(raw.stats.cleared).toBe(1);
      expect(raw.stats.fullReads).toBe(2);

      // A record that does not decode: one line naming it, the rest goes on.
      await v2put(`${prefix}/svc-2/bad`, 'not json');
      await put(1000, 30000);
      await waitFor('the record after the bad one', () => contentOf(w.catalog).includes('h:c1000:80:30000'), 10_000, 5);
      const bad = lines.filter((l) => l.event === 'invalid');
      console.log(`PROBE etcd v2 bad record: ${bad.length} log line(s): ${bad.map((l) => `"${l.msg}"`).join(' ')}`);
      expect(bad.map((l) => l.msg)).toEqual([`etcd2 key ${prefix}/svc-2/bad: value is not JSON; skipped`]);
      expect(contentOf(w.catalog)).toEqual(await content());
      expect(lines.filter((l) => l.level >= ERROR)).toHaveLength(2);
      expect(lines.filter((l) => l.event === 'watch-up')).toHaveLength(2);
    } finally {
      await w.stop();
    }
  });
});
