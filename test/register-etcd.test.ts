// harbormaster register against the real etcd, through the v3 API (etcd3) and the v2 API
// (node-etcd): key layout, TTLs, lifecycle, expiry after SIGKILL, cleanup.
import { afterAll, describe, expect, it } from 'vitest';
import { docker, hostPort, removeContainers, run } from './support/docker.js';
import { spawnHm } from './support/harbormaster.js';
import { ETCD_ENDPOINT, etcd2Read, etcdRead } from './support/registries.js';
import { uniq, waitFor } from './support/wait.js';

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
