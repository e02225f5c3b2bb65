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
    await waitFor('stale written', async () => (await read(prefix))[staleKey]);
    stale.kill('SIGKILL');
    await stale.exited;
    await docker('rm', '-f', `${HOST}-c`);
    const other = spawnHm(['register', '--hostname', `${HOST}-other`, '--ttl', '0', uri]);
    await run(`${HOST}-d`, { env: { SERVICE_NAME: 'other' } });
    const otherKey = `${prefix}/other/${HOST}-other:${HOST}-d:80`;
    await waitFor('other written', async () => (await read(prefix))[otherKey]);
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
