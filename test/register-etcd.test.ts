// harbormaster register against the real etcd, through the v3 API (etcd3) and the v2 API
// (node-etcd): key layout, TTLs, lifecycle, expiry after SIGKILL, cleanup.
import { Etcd3 } from 'etcd3';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { docker, hostPort, removeContainers, run } from './support/docker.js';
import { spawnHm } from './support/harbormaster.js';
import { ETCD_ENDPOINT, etcd2Read, etcdRead, privateEtcd } from './support/registries.js';
import { uniq, waitFor } from './support/wait.js';
import { silentLogger } from '../src/log/logger.js';
import type { ServiceInstance } from '../src/model/service-instance.js';
import { Registrar } from '../src/registrar/registrar.js';
import { Etcd2Backend } from '../src/registry/etcd2-backend.js';
import { createBackend } from '../src/registry/index.js';

const cases = [
  { api: 'etcd', read: etcdRead },
  { api: 'etcd2', read: etcd2Read },
] as const;


afterAll(async () => {
  await removeContainers('ite');
});

describe.each(cases)('register → $api', ({ api, read }) => {
  const HOST = uniq(`ite${api === 'etcd' ? '3' : '2'}`);
  const prefix = `/${HOST}`;
  const uri = `${api}://${ETCD_ENDPOINT}${prefix}`;
  afterAll(() => removeContainers(`${HOST}-`));

  it('writes <prefix>/<name>/<id> with the instance JSON on a TTL, and removes it on stop', async () => {
    const hm = spawnHm(['register', '--hostname', HOST, '--ttl', '5', '--ttl-refresh', '1', uri]);
    await run(`${HOST}-a`, { env: { SERVICE_NAME: 'api', SERVICE_TAGS: 'x,y', SERVICE_VERSION: '7' } });
    const id = `${HOST}:${HOST}-a:80`;
    const key = `${prefix}/api/${id}`;
    const kv = await waitFor('key written', async () => (await read(prefix))[key]);
    expect(kv).toMatchObject({
      id,
      name: 'api',
      address: '127.0.0.1',
      port: await hostPort(`${HOST}-a`),
      protocol: 'tcp',
      tags: ['x', 'y'],
      meta: { version: '7' },
      host: HOST,
      status: 'passing',
    });
    if (api === 'etcd2') expect(kv.ttl).toBeLessThanOrEqual(5);
    // Heartbeats keep it beyond its TTL.
    await new Promise((r) => setTimeout(r, 7000));
    expect((await read(prefix))[key]).toBeDefined();
    await docker('stop', '-t', '1', `${HOST}-a`);
    await waitFor('key removed', async () => !(await read(prefix))[key]);
    await hm.stop();
  });

  it('lets registrations expire by their TTL after the registrator is killed with SIGKILL', async () => {
    const hm = spawnHm(['register', '--hostname', HOST, '--ttl', '3', '--ttl-refresh', '1', uri]);
    await run(`${HOST}-b`, { env: { SERVICE_NAME: 'exp' } });
    const key = `${prefix}/exp/${HOST}:${HOST}-b:80`;
    await waitFor('key written', async () => (await read(prefix))[key]);
    hm.kill('SIGKILL');
    await hm.exited;
    const killedAt = Date.now();
    await waitFor('key expired', async () => !(await read(prefix))[key], 10_000, 200);
    expect(Date.now() - killedAt).toBeLessThan(8000);
  });

  it('with --cleanup removes this host\'s registrations that no container backs, and no other host\'s', async () => {
    // A stale entry of this host and a live one of another host, written by other registrators.
    const stale = spawnHm(['register', '--hostname', HOST, '--ttl', '0', uri]);
    await run(`${HOST}-c`, { env: { SERVICE_NAME: 'stale' } });
    const staleKey = `${prefix}/stale/${HOST}:${HOST}-c:80`;
    // Killed once the registration is complete (with v2 the index entry is confirmed last).
    await stale.waitForLog('stale registered', (l) => l.event === 'registered' && l.id === `${HOST}:${HOST}-c:80`);
    expect((await read(prefix))[staleKey]).toBeDefined();
    stale.kill('SIGKILL');
    await stale.exited;
    await docker('rm', '-f', `${HOST}-c`);
    const other = spawnHm(['register', '--hostname', `${HOST}-other`, '--ttl', '0', uri]);
    await run(`${HOST}-d`, { env: { SERVICE_NAME: 'other' } });
    const otherKey = `${prefix}/other/${HOST}-other:${HOST}-d:80`;
    await other.waitForLog('other registered', (l) => l.event === 'registered' && l.id === `${HOST}-other:${HOST}-d:80`);
    other.kill('SIGKILL');
    await other.exited;

    const hm = spawnHm(['register', '--hostname', HOST, '--cleanup', uri]);
    await waitFor('stale removed', async () => !(await read(prefix))[staleKey]);
    expect((await read(prefix))[otherKey]).toBeDefined();
    const line = await hm.waitForLog('cleanup line', (l) => l.event === 'deregistered' && String(l.id).includes(`${HOST}-c`));
    expect(line.msg).toContain('cleanup');
    await hm.stop();
  });

  it('withdraws this host\'s services on SIGTERM, and leaves them with --keep-on-exit', async () => {
    const hm = spawnHm(['register', '--hostname', HOST, '--ttl', '30', uri]);
    await run(`${HOST}-e`, { env: { SERVICE_NAME: 'term' } });
    const key = `${prefix}/term/${HOST}:${HOST}-e:80`;
    await waitFor('key written', async () => (await read(prefix))[key]);
    expect(await hm.stop('SIGTERM')).toBe(0);
    expect((await read(prefix))[key]).toBeUndefined();

    const keep = spawnHm(['register', '--hostname', HOST, '--ttl', '30', '--keep-on-exit', uri]);
    await waitFor('key written again', async () => (await read(prefix))[key]);
    expect(await keep.stop('SIGTERM')).toBe(0);
    expect((await read(prefix))[key]).toBeDefined();
  });
});

describe('register → etcd2, cut off between writes', () => {
  const HOST = uniq('itc2');
  const prefix = `/${HOST}`;
  const uri = `etcd2://${ETCD_ENDPOINT}${prefix}`;
  const read = etcd2Read;
  afterAll(() => removeContainers(HOST));

  it('a registration cut off between its v2 writes is rewritten or cleaned up by the next run, never left unindexed', async () => {
    // What a SIGKILL between the writes leaves: the unconfirmed index entry, with or without the data key.
    const put = async (key: string, value: string) => {
      const res = await fetch(`http://${ETCD_ENDPOINT}/v2/keys${key}`, { method: 'PUT', body: new URLSearchParams({ value }) });
      expect(res.ok).toBe(true);
    };
    const dir = `${prefix}/_hosts/${encodeURIComponent(HOST)}`;
    await run(`${HOST}-f`, { env: { SERVICE_NAME: 'cut' } });
    const liveId = `${HOST}:${HOST}-f:80`;
    const goneId = `${HOST}:${HOST}-gone:80`;
    await put(`${dir}/${encodeURIComponent(liveId)}`, JSON.stringify({ name: 'cut', digest: '' }));
    await put(`${prefix}/cut/${encodeURIComponent(liveId)}`, JSON.stringify({ id: liveId, name: 'cut', address: '10.9.9.9', port: 1 }));
    await put(`${dir}/${encodeURIComponent(goneId)}`, JSON.stringify({ name: 'cut', digest: '' }));
    await put(`${prefix}/cut/${encodeURIComponent(goneId)}`, JSON.stringify({ id: goneId, name: 'cut', address: '10.9.9.9', port: 1 }));
    const hm = spawnHm(['register', '--hostname', HOST, '--cleanup', '--ttl', '0', uri]);
    const port = await hostPort(`${HOST}-f`);
    await waitFor('unconfirmed entry rewritten, orphan cleaned up', async () => {
      const kv = await read(prefix);
      return kv[`${prefix}/cut/${liveId}`]?.port === port && !kv[`${prefix}/cut/${goneId}`];
    });
    await hm.stop();
  });
});

describe.each(cases)('register → $api: several ports under one SERVICE_ID', ({ api, read }) => {
  const HOST = uniq(`itm${api === 'etcd' ? '3' : '2'}`);
  const prefix = `/${HOST}`;
  afterAll(() => removeContainers(`${HOST}-`));

  it('a generic SERVICE_ID on a container with two published ports registers both, as <id>-<port>', async () => {
    const hm = spawnHm(['register', '--hostname', HOST, '--ttl', '10', `${api}://${ETCD_ENDPOINT}${prefix}`]);
    await run(`${HOST}-m`, { env: { SERVICE_NAME: 'multi' }, labels: { SERVICE_ID: `${HOST}-api` }, publish: ['80', '8080'] });
    // The registrator takes every container of the engine: only this test's count here.
    const kv = await waitFor('both ports registered', async () => {
      const now = Object.fromEntries(Object.entries(await read(prefix)).filter(([, v]) => String(v.id).startsWith(`${HOST}-api-`)));
      return Object.keys(now).length === 2 ? now : undefined;
    });
    const byId = Object.fromEntries(Object.values(kv).map((v) => [v.id as string, v]));
    expect(Object.keys(byId).sort()).toEqual([`${HOST}-api-80`, `${HOST}-api-8080`]);
    expect(byId[`${HOST}-api-80`]).toMatchObject({ name: 'multi-80', port: await hostPort(`${HOST}-m`, '80/tcp') });
    expect(byId[`${HOST}-api-8080`]).toMatchObject({ name: 'multi-8080', port: await hostPort(`${HOST}-m`, '8080/tcp') });
    expect(hm.logs.filter((l) => l.level >= 50)).toEqual([]);
    await hm.stop();
  });
});

describe('etcd v2: the host index directory always has its TTL', () => {
  it('a write after the directory expired (no heartbeat within the TTL) creates it again with the TTL, so it goes once nobody refreshes it', async () => {
    const host = uniq('itd2');
    const prefix = `/${host}`;
    const backend = new Etcd2Backend({ endpoints: [`http://${ETCD_ENDPOINT}`], prefix }, { ttl: 2, host });
    const inst = (c: string): ServiceInstance => ({ id: `${host}:${c}:80`, name: 'dir', address: '127.0.0.1', port: 80, protocol: 'tcp', tags: [], meta: {}, host, status: 'passing' });
    const dirUrl = `http://${ETCD_ENDPOINT}/v2/keys${prefix}/_hosts/${encodeURIComponent(host)}`;
    const dir = async () => {
      const res = await fetch(dirUrl);
      return res.status === 404 ? undefined : ((await res.json()) as { node: { ttl?: number; nodes?: unknown[] } }).node;
    };
    await backend.register(inst('a'));
    expect((await dir())?.ttl).toBeGreaterThan(0);
    // No heartbeat (an outage, or a process that stopped refreshing): the directory and the key expire.
    await waitFor('the directory expired', async () => (await dir()) === undefined, 10_000, 200);
    // The next write, then nothing more (the process killed before its next heartbeat).
    await backend.register(inst('b'));
    const after = await dir();
    console.log(`PROBE etcd2: index directory after a write following its expiry: ttl=${after?.ttl ?? 'none'}, entries=${after?.nodes?.length ?? 0}`);
    expect(after?.ttl).toBeGreaterThan(0);
    const t0 = Date.now();
    await waitFor('the directory gone by its TTL', async () => (await dir()) === undefined, 10_000, 200);
    expect(Date.now() - t0).toBeLessThan(5_000);
    await backend.close();
  });
});

/** One gRPC method's count of started calls on an etcd (its /metrics). */
async function grpcCalls(endpoint: string, method: string): Promise<number> {
  const text = await (await fetch(`http://${endpoint}/metrics`)).text();
  return Number(new RegExp(`^grpc_server_started_total\\{grpc_method="${method}",[^}]*\\} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
}

describe('etcd v3: the host lease', () => {
  it('shutdown withdraws 200 entries with one lease revoke and no other write, and a sealed backend takes no new lease', async () => {
    const etcd = privateEtcd(20700);
    await etcd.start();
    try {
      const host = uniq('itlr');
      const backend = createBackend(`etcd://${etcd.endpoint}/hm`, { ttl: 30, host });
      const registrar = new Registrar(backend, { hostname: host, ttlRefreshMs: 10_000, cleanup: false, retryIntervalMs: 100, concurrency: 16, log: silentLogger() });
      registrar.start();
      registrar.complete();
      for (let i = 0; i < 200; i++) {
        registrar.set(`c${i}`, [{ id: `${host}:c${i}:80`, name: 'rev', address: '127.0.0.1', port: 30000 + i, protocol: 'tcp', tags: [], meta: {}, host, status: 'passing' }]);
      }
      await registrar.settled();
      const keys = async () => Object.keys(await etcdRead('/hm', etcd.endpoint)).length;
      expect(await keys()).toBe(200);
      const before = { revoke: await grpcCalls(etcd.endpoint, 'LeaseRevoke'), txn: await grpcCalls(etcd.endpoint, 'Txn'), grant: await grpcCalls(etcd.endpoint, 'LeaseGrant') };
      const t0 = Date.now();
      await registrar.stop(true);
      const took = Date.now() - t0;
      // Sealed: a late write is refused before it reaches etcd, and takes no lease.
      await expect(backend.register({ id: `${host}:late:80`, name: 'rev', address: '127.0.0.1', port: 1, protocol: 'tcp', tags: [], meta: {}, host, status: 'passing' })).rejects.toThrow(/shutting down/);
      const after = { revoke: await grpcCalls(etcd.endpoint, 'LeaseRevoke'), txn: await grpcCalls(etcd.endpoint, 'Txn'), grant: await grpcCalls(etcd.endpoint, 'LeaseGrant') };
      const left = await keys();
      console.log(`PROBE etcd v3 shutdown of 200: ${took} ms, revokes=${after.revoke - before.revoke} txns=${after.txn - before.txn} grants=${after.grant - before.grant} left=${left}`);
      expect({ revokes: after.revoke - before.revoke, txns: after.txn - before.txn, grants: after.grant - before.grant, left }).toEqual({ revokes: 1, txns: 0, grants: 0, left: 0 });
      await backend.close();
    } finally {
      await etcd.kill();
      etcd.cleanup();
    }
  });

  it('a lease revoked from outside: the next container is registered at once on a fresh lease, the others are written again at once, no error line', async () => {
    const host = uniq('itlx');
    const prefix = `/${host}`;
    onTestFinished(() => removeContainers(`${host}-`));
    // A heartbeat only every 10 s: the registration meets the revoked lease before any round does.
    const hm = spawnHm(['register', '--hostname', host, '--ttl', '30', '--ttl-refresh', '10', '--resync', '0', `etcd://${ETCD_ENDPOINT}${prefix}`]);
    await run(`${host}-a`, { env: { SERVICE_NAME: 'lx' } });
    // The registrator takes every container of the engine: only this test's count here.
    const ids = async () => Object.values(await etcdRead(prefix)).map((v) => v.id as string).filter((id) => id.startsWith(`${host}:${host}-`)).sort();
    await waitFor('a registered', async () => (await ids()).length === 1);
    const client = new Etcd3({ hosts: `http://${ETCD_ENDPOINT}` });
    onTestFinished(() => client.close());
    const lease = (await client.get(`${prefix}/_hosts/${encodeURIComponent(host)}/${encodeURIComponent(`${host}:${host}-a:80`)}`).exec()).kvs[0]?.lease;
    expect(String(lease ?? '0')).not.toBe('0');
    await client.leaseClient.leaseRevoke({ ID: String(lease) });
    expect(await ids()).toEqual([]);
    const t0 = Date.now();
    await run(`${host}-b`, { env: { SERVICE_NAME: 'lx' } });
    const both = [`${host}:${host}-a:80`, `${host}:${host}-b:80`];
    await waitFor('both registered on a fresh lease', async () => JSON.stringify(await ids()) === JSON.stringify(both), 8_000, 50);
    const took = Date.now() - t0;
    const errors = hm.logs.filter((l) => l.level >= 50).map((l) => l.msg);
    console.log(`PROBE etcd v3: lease revoked from outside, next container and the lost one back in ${took} ms, error lines: ${errors.length}`);
    expect(errors).toEqual([]);
    expect(took).toBeLessThan(8_000);
  });
});
