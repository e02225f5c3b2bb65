// Read-side watches against real engines, for faults found in review: etcd v3 transactions and
// lease revocation (many events in one revision), etcd v3 with auth on, an etcd v2 endpoint that
// accepts and never answers, a quiet v2 prefix on a busy store; a Consul service read that hangs,
// listings without X-Consul-Index, service names differing only in case, and hostile IDs.
// Private engines on their own ports; each scenario prints what it measured.
import { Writable } from 'node:stream';
import { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Catalog } from '../src/catalog/catalog.js';
import { ConsulWatch } from '../src/catalog/consul-watch.js';
import { Etcd2Watch } from '../src/catalog/etcd2-watch.js';
import { EtcdWatch } from '../src/catalog/etcd-watch.js';
import { CatalogWatch } from '../src/catalog/watch.js';
import { HttpFaultProxy } from './support/http-fault-proxy.js';
import { privateConsul, privateEtcd } from './support/registries.js';
import { sleep, waitFor } from './support/wait.js';

interface LogLine {
  level: number;
  msg: string;
  event?: string;
}

function capture() {
  const lines: LogLine[] = [];
  const log = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _e, cb) => (lines.push(JSON.parse(chunk.toString()) as LogLine), cb()) }));
  return { log, lines };
}

const ERROR = 50;
const contentOf = (c: Catalog | undefined) => (c?.services ?? []).flatMap((s) => s.instances.map((i) => `${i.id}:${i.port}`)).sort();
const value = (id: string, name: string, port: number) => JSON.stringify({ id, name, address: '127.0.0.1', port, protocol: 'tcp', tags: [], meta: {}, host: 'h', status: 'passing' });

describe('etcd watches: transactions, leases, auth, hung endpoints, busy stores', () => {
  const BASE = 24300;
  const etcd = privateEtcd(BASE);
  const authEtcd = privateEtcd(BASE + 50);
  const direct = `http://127.0.0.1:${BASE}`;
  let writer: Etcd3;
  let http: HttpFaultProxy;

  beforeAll(async () => {
    await Promise.all([etcd.start(), authEtcd.start()]);
    writer = new Etcd3({ hosts: direct });
    http = await HttpFaultProxy.start({ host: '127.0.0.1', port: BASE }, BASE + 10);
  }, 60_000);

  afterAll(async () => {
    writer?.close();
    await http?.close();
    await Promise.all([etcd.kill(), authEtcd.kill()]);
    etcd.cleanup();
    authEtcd.cleanup();
  });

  it('v3: a lease revoked (every key of a host in one revision) and a multi-key transaction are applied whole', async () => {
    const prefix = '/wf-txn';
    const { log, lines } = capture();
    const w = new CatalogWatch(new EtcdWatch({ endpoints: [direct], prefix }, { resyncMs: 60_000 }), { log });
    try {
      await w.first();
      // One transaction, three instances: one revision.
      await writer.if(`${prefix}/web/a`, 'Version', '==', 0).then(
        writer.put(`${prefix}/web/a`).value(value('a', 'web', 8001)),
        writer.put(`${prefix}/web/b`).value(value('b', 'web', 8002)),
        writer.put(`${prefix}/web/c`).value(value('c', 'web', 8003)),
      ).commit();
      await waitFor('three instances', () => contentOf(w.catalog).length === 3, 5_000, 5).catch(() => undefined);
      const afterTxn = contentOf(w.catalog);
      // A host's keys on one lease, its index key sorting first, as the registrator writes them.
      const lease = writer.lease(600, { autoKeepAlive: false });
      await lease.put(`${prefix}/_hosts/h/i1`).value('{}');
      for (const id of ['i1', 'i2', 'i3']) await lease.put(`${prefix}/api/${id}`).value(value(id, 'api', 9000));
      await waitFor('api instances', () => contentOf(w.catalog).length === 6, 5_000, 5);
      const t = Date.now();
      await lease.revoke();
      await waitFor('api gone', () => contentOf(w.catalog).length === 3, 5_000, 5).catch(() => undefined);
      const revokeMs = Date.now() - t;
      const afterRevoke = contentOf(w.catalog);
      const etcdNow = Object.keys(await writer.getAll().prefix(`${prefix}/`).strings()).sort();
      console.log(`PROBE etcd v3 one-revision events: txn of 3 puts → catalog [${afterTxn.join(', ')}]; lease revoked (4 keys, one revision) → etcd holds [${etcdNow.join(', ')}], catalog [${afterRevoke.join(', ')}] after ${revokeMs} ms`);
      expect(afterTxn).toEqual(['a:8001', 'b:8002', 'c:8003']);
      expect(afterRevoke).toEqual(['a:8001', 'b:8002', 'c:8003']);
      expect(lines.filter((l) => l.level >= ERROR)).toHaveLength(0);
    } finally {
      await w.stop();
    }
  });

  it('v3: reads an etcd with auth on with the ETCDCTL_USER credentials', async () => {
    const ep = `http://127.0.0.1:${BASE + 50}`;
    const admin = new Etcd3({ hosts: ep });
    await admin.role('root').create().catch(() => undefined);
    await admin.user('root').create('rootpw');
    await admin.user('root').addRole('root');
    await admin.auth.authEnable();
    admin.close();
    const root = new Etcd3({ hosts: ep, auth: { username: 'root', password: 'rootpw' } });
    await root.put('/wf-auth/web/i1').value(value('i1', 'web', 8080));
    root.close();
    const { log, lines } = capture();
    const w = new CatalogWatch(new EtcdWatch({ endpoints: [ep], prefix: '/wf-auth' }, {}, { ETCDCTL_USER: 'root:rootpw' }), { log });
    try {
      const t = Date.now();
      const first = await Promise.race([w.first(), sleep(5_000).then(() => undefined)]);
      console.log(`PROBE etcd v3 with auth on, ETCDCTL_USER=root:…: first catalog [${contentOf(first).join(', ')}] in ${Date.now() - t} ms, ${lines.filter((l) => l.level >= ERROR).length} error lines (${lines.find((l) => l.level >= ERROR)?.msg ?? 'none'})`);
      expect(contentOf(first)).toEqual(['i1:8080']);
    } finally {
      await w.stop();
    }
  });

  it('v2: an endpoint that accepts and never answers fails the read in its time bound, and the watch follows once it answers', async () => {
    const prefix = '/wf-hang';
    await fetch(`${direct}/v2/keys${prefix}/web/i1`, { method: 'PUT', body: new URLSearchParams({ value: value('i1', 'web', 8081) }) });
    const rule = http.hang(/^\/v2\/keys\/wf-hang/);
    const { log, lines } = capture();
    const w = new CatalogWatch(new Etcd2Watch({ endpoints: [http.url], prefix }, { readTimeoutMs: 1_000 }), { log });
    try {
      const t = Date.now();
      const first = w.first();
      await waitFor('an error line', () => lines.some((l) => l.level >= ERROR), 5_000, 10).catch(() => undefined);
      const errMs = Date.now() - t;
      const err = lines.find((l) => l.level >= ERROR)?.msg;
      rule.remove();
      http.releaseHung('destroy');
      const c = await Promise.race([first, sleep(10_000).then(() => undefined)]);
      console.log(`PROBE etcd v2 endpoint that never answers (read bound 1 s): error after ${errMs} ms ("${err}"); once it answers, catalog [${contentOf(c).join(', ')}] ${Date.now() - t} ms after start`);
      expect(errMs).toBeLessThan(3_000);
      expect(err).toContain('no answer in 1000 ms');
      expect(contentOf(c)).toEqual(['i1:8081']);
    } finally {
      rule.remove();
      await w.stop();
    }
  });

  it('v2: a quiet prefix on a store with more than 1,000 writes between renewals is not read in full again', async () => {
    const prefix = '/wf-quiet';
    const other = '/wf-busy';
    await fetch(`${direct}/v2/keys${prefix}/web/i1`, { method: 'PUT', body: new URLSearchParams({ value: value('i1', 'web', 8082) }) });
    const { log, lines } = capture();
    const raw = new Etcd2Watch({ endpoints: [direct], prefix }, { longPollMs: 1_000 });
    const w = new CatalogWatch(raw, { log });
    try {
      await w.first();
      const t = Date.now();
      let writes = 0;
      // Two renewal periods, each with 1,100 writes elsewhere.
      for (let round = 0; round < 2; round++) {
        const r0 = Date.now();
        for (let i = 0; i < 1100; i += 25) {
          await Promise.all(Array.from({ length: 25 }, (_, j) => fetch(`${direct}/v2/keys${other}/k${(i + j) % 50}`, { method: 'PUT', body: new URLSearchParams({ value: String(i + j) }) }).then((r) => r.text())));
          writes += 25;
        }
        await sleep(Math.max(0, 1_300 - (Date.now() - r0)));
      }
      // A change under the prefix is still seen.
      await fetch(`${direct}/v2/keys${prefix}/web/i2`, { method: 'PUT', body: new URLSearchParams({ value: value('i2', 'web', 8083) }) });
      await waitFor('i2', () => contentOf(w.catalog).includes('i2:8083'), 5_000, 5);
      console.log(`PROBE etcd v2 quiet prefix, ${writes} writes elsewhere in ${Date.now() - t} ms (long poll renewed every 1 s): full reads ${raw.stats.fullReads} (1 = only the first), 401 cleared ${raw.stats.cleared}, polls ${raw.stats.polls}, notes above debug ${lines.filter((l) => l.event === 'watch-note' && l.level > 20).length}; a change under the prefix afterwards seen`);
      expect(raw.stats.fullReads).toBe(1);
      expect(raw.stats.cleared).toBe(0);
    } finally {
      await w.stop();
    }
  });
});

describe('Consul watch: hung reads, no index, names by case, hostile IDs', () => {
  const BASE = 24200;
  const consul = privateConsul(BASE);
  const agent = `http://127.0.0.1:${BASE}`;
  let http: HttpFaultProxy;
  const register = async (body: Record<string, unknown>) => {
    const r = await fetch(`${agent}/v1/agent/service/register`, { method: 'PUT', body: JSON.stringify({ Address: '127.0.0.1', ...body }) });
    if (!r.ok) throw new Error(`register: ${r.status} ${await r.text()}`);
  };

  beforeAll(async () => {
    await consul.start();
    for (const n of ['hg-a', 'hg-b', 'nx-a', 'nx-b']) await register({ ID: `${n}-1`, Name: n, Port: 8000 });
    http = await HttpFaultProxy.start({ host: '127.0.0.1', port: BASE }, BASE + 10);
  }, 60_000);

  afterAll(async () => {
    await http?.close();
    await consul.kill();
  });

  it('one service whose read hangs: the others are routed after its time bound, the registry stays up, one part warning', async () => {
    const rule = http.hang(/^\/v1\/health\/service\/hg-a(\?|$)/);
    const { log, lines } = capture();
    const w = new CatalogWatch(new ConsulWatch({ host: '127.0.0.1', port: http.port, secure: false }, { fetchTimeoutMs: 1_000 }), { log });
    try {
      const t = Date.now();
      const first = await Promise.race([w.first(), sleep(15_000).then(() => undefined)]);
      const firstMs = Date.now() - t;
      await sleep(1_500);
      const errors = lines.filter((l) => l.level >= ERROR);
      const parts = lines.filter((l) => l.event === 'part-error' && l.level >= 40);
      console.log(`PROBE consul one service read hanging (bound 1 s): first catalog in ${firstMs} ms with [${first?.services.map((s) => s.name).join(', ')}]; registry connected ${w.status.connected}, failing parts ${w.status.failingParts}; ${errors.length} error lines, ${parts.length} part warning ("${parts[0]?.msg}")`);
      expect(firstMs).toBeLessThan(3_000);
      expect(first?.services.map((s) => s.name)).toContain('hg-b');
      expect(errors).toHaveLength(0);
      expect(w.status.connected).toBe(true);
      expect(parts).toHaveLength(1);
    } finally {
      rule.remove();
      http.releaseHung('destroy');
      await w.stop();
    }
  });

  it('a service listing answered without X-Consul-Index is applied and polled slowly, not ignored in a hot loop', async () => {
    const LISTING = /^\/v1\/catalog\/services(\?|$)/;
    let rule = http.respond(LISTING, 200, { 'nx-a': [] });
    const { log, lines } = capture();
    const w = new CatalogWatch(new ConsulWatch({ host: '127.0.0.1', port: http.port, secure: false }, { noIndexPollMs: 300 }), { log });
    try {
      const t = Date.now();
      const first = await Promise.race([w.first(), sleep(5_000).then(() => undefined)]);
      rule.remove();
      rule = http.respond(LISTING, 200, { 'nx-a': [], 'nx-b': [] });
      const t1 = Date.now();
      await waitFor('nx-b listed', () => w.catalog?.services.some((s) => s.name === 'nx-b'), 5_000, 5).catch(() => undefined);
      const addMs = Date.now() - t1;
      const n0 = http.requests(LISTING).length;
      await sleep(1_000);
      const perS = http.requests(LISTING).length - n0;
      const warned = lines.filter((l) => l.event === 'invalid').map((l) => l.msg);
      console.log(`PROBE consul listing without X-Consul-Index: first catalog [${first?.services.map((s) => s.name).join(', ')}] in ${Date.now() - t - addMs - 1_000} ms; a service added to the listing seen in ${addMs} ms; listing requests in 1 s: ${perS}; warnings: ${warned.map((m) => `"${m}"`).join(' ')}`);
      expect(first?.services.map((s) => s.name)).toEqual(['nx-a']);
      expect(w.catalog?.services.map((s) => s.name)).toEqual(['nx-a', 'nx-b']);
      expect(perS).toBeLessThanOrEqual(5);
      expect(warned).toHaveLength(1);
    } finally {
      rule.remove();
      await w.stop();
    }
  });

  it('service names differing only in case do not duplicate instances; hostile IDs and hosts are skipped with one line', async () => {
    await register({ ID: 'cs-web-1', Name: 'cs-web', Port: 8101 });
    // IDs are case-insensitive in Consul's catalog too: a distinct one.
    await register({ ID: 'cs-web-upper', Name: 'CS-WEB', Port: 8102 });
    const node = `wf-node-${process.pid}`;
    const r = await fetch(`${agent}/v1/catalog/register`, { method: 'PUT', body: JSON.stringify({ Node: node, Address: '127.0.0.2', Service: { ID: 'x\n  server evil 6.6.6.6:80\n#', Service: 'hostile', Port: 80, Meta: { hm_host: 'h1' } } }) });
    expect(r.ok).toBe(true);
    const r2 = await fetch(`${agent}/v1/catalog/register`, { method: 'PUT', body: JSON.stringify({ Node: node, Address: '127.0.0.2', Service: { ID: 'hostile-2', Service: 'hostile', Port: 81, Meta: { hm_host: 'h1\n  option evil' } } }) });
    expect(r2.ok).toBe(true);
    await register({ ID: 'hostile-ok', Name: 'hostile', Port: 82 });
    const { log, lines } = capture();
    const w = new CatalogWatch(new ConsulWatch({ host: '127.0.0.1', port: BASE, secure: false }), { log });
    try {
      const c = await w.first();
      const web = c.services.find((s) => s.name === 'cs-web')?.instances.map((i) => i.id);
      const hostile = c.services.find((s) => s.name === 'hostile')?.instances.map((i) => i.id);
      const warned = lines.filter((l) => l.event === 'invalid').map((l) => l.msg).filter((m) => m.includes('hostile'));
      console.log(`PROBE consul names by case (cs-web, CS-WEB): cs-web instances [${web}]; hostile ID/host: routed [${hostile}], log: ${warned.map((m) => `"${m}"`).join(' ')}`);
      expect(web).toEqual(['cs-web-1']);
      expect(hostile).toEqual(['hostile-ok']);
      expect(warned.sort()).toEqual([
        'service hostile instance hostile-2: host contains control characters; instance skipped',
        'service hostile instance x\\n  server evil 6.6.6.6:80\\n#: id contains control characters; instance skipped',
      ]);
    } finally {
      await w.stop();
      await fetch(`${agent}/v1/catalog/deregister`, { method: 'PUT', body: JSON.stringify({ Node: node }) });
    }
  });
});
