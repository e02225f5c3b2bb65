// The multi-host cluster of scripts/cluster.sh, end to end: a registrator on each of two hosts
// (host 1: this lane's engine, publishing on 127.0.0.1; host 2: its own dockerd, publishing on
// NET.2) writes into the secured etcd cluster (TLS client certificates, user harbormaster) or
// into its own host's Consul client agent (TLS, registrator token), and one gateway proxy (the
// gateway token, for Consul) routes to the containers of both hosts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Cluster, consulLeader, ensureCluster, etcdctlRoot, etcdLeader, hostTarget, killMember, member, memberPid, startMember } from './support/cluster.js';
import { removeContainers, run } from './support/docker.js';
import { spawnHm } from './support/harbormaster.js';
import { get } from './support/proxy.js';
import { uniq, waitFor } from './support/wait.js';

const P = uniq('hmcs');
let c: Cluster;

beforeAll(async () => {
  c = await ensureCluster();
}, 240_000);

afterAll(async () => {
  await removeContainers(`${P}-`);
  if (c) await removeContainers(`${P}-`, c.env.HM_CLUSTER_DOCKER_HOST2);
});

const CASES = [
  { registry: 'etcd' as const, short: 'e', proxyPort: 29750 },
  { registry: 'consul' as const, short: 'c', proxyPort: 29752 },
];

describe('two hosts, one secured cluster, one gateway', () => {
  for (const k of CASES) {
    it(`${k.registry}: host1 and host2 register over TLS; the gateway routes to both`, async () => {
      const name = (host: string) => `${P}-${k.short}-${host}`;
      // Below /harbormaster (the harbormaster user's range), a prefix of this test's own.
      const prefix = `harbormaster/${P}`;
      const h1 = hostTarget(c, 'host1', k.registry, { prefix });
      const h2 = hostTarget(c, 'host2', k.registry, { prefix });
      const gw = hostTarget(c, 'host1', k.registry, { prefix, token: 'gateway' });
      await run(name('host1'), { env: { NAME: 'from-host1', SERVICE_NAME: name('host1') }, publish: [`${h1.ip}::80`] });
      await run(name('host2'), { env: { NAME: 'from-host2', SERVICE_NAME: name('host2') }, publish: [`${h2.ip}::80`], host: h2.env.DOCKER_HOST });

      const t0 = Date.now();
      // --explicit: of this shared engine's containers, only those that ask (SERVICE_NAME).
      const flags = ['--explicit', '--ttl', '15', '--resync', '10'];
      const r1 = spawnHm(['register', h1.uri, '--hostname', 'host1', '--ip', h1.ip, ...flags], h1.env);
      const r2 = spawnHm(['register', h2.uri, '--hostname', 'host2', '--ip', h2.ip, ...flags], h2.env);
      const proxy = spawnHm(['proxy', gw.uri, '--listen', `127.0.0.1:${k.proxyPort}`, '--api', 'off'], gw.env);

      const routed = async (host: string) => {
        const a = await get(k.proxyPort, `${name(host)}.localhost`, '/', { timeoutMs: 5_000 }).catch(() => undefined);
        return a?.status === 200 && a.body.trim() === `from-${host}` ? Date.now() - t0 : undefined;
      };
      const [ms1, ms2] = await Promise.all([waitFor('host1 routed', () => routed('host1'), 90_000, 200), waitFor('host2 routed', () => routed('host2'), 90_000, 200)]);
      console.log(`cluster smoke (${k.registry}): register start → host1 routed ${ms1} ms, host2 routed ${ms2} ms, both ${Math.max(ms1, ms2)} ms`);

      expect(r1.registered(`host1:${name('host1')}:80`)).toBe(true);
      expect(r2.registered(`host2:${name('host2')}:80`)).toBe(true);
      const reg2 = r2.logs.find((l) => l.event === 'registered' && l.id === `host2:${name('host2')}:80`)!;
      expect(reg2.addr).toMatch(new RegExp(`^${h2.ip.replace(/\./g, '\\.')}:\\d+$`));
      expect(r1.logs.filter((l) => l.level >= 50)).toEqual([]);
      expect(r2.logs.filter((l) => l.level >= 50)).toEqual([]);

      // Registrators withdraw on SIGTERM; the gateway's routes go with them.
      expect(await r1.stop('SIGTERM')).toBe(0);
      expect(await r2.stop('SIGTERM')).toBe(0);
      await waitFor('both routes withdrawn', async () => (await get(k.proxyPort, `${name('host2')}.localhost`)).status === 404 && (await get(k.proxyPort, `${name('host1')}.localhost`)).status === 404, 60_000, 250);
      await proxy.stop('SIGTERM');
    }, 240_000);
  }
});

describe('member control (test/support/cluster.ts)', () => {
  it('finds both leaders; an etcd follower killed with SIGKILL starts again from its recorded command line and rejoins', async () => {
    const leader = await waitFor('an etcd leader', () => etcdLeader(c), 30_000, 250);
    expect(['e1', 'e2', 'e3']).toContain(leader);
    expect(['c1', 'c2', 'c3']).toContain(await waitFor('a Consul leader', () => consulLeader(c), 30_000, 250));
    const follower = ['e1', 'e2', 'e3'].find((n) => n !== leader)!;
    const before = memberPid(member(c, follower));
    expect(before).toBeGreaterThan(0);
    const t0 = Date.now();
    await killMember(follower);
    expect(memberPid(member(c, follower))).toBeUndefined();
    await startMember(follower);
    const health = await waitFor('all three members healthy', async () => ((await etcdctlRoot(c, ['endpoint', 'health'])).code === 0 ? true : undefined), 60_000, 250);
    expect(health).toBe(true);
    expect(memberPid(member(c, follower))).not.toBe(before);
    console.log(`cluster member control: ${follower} killed and back healthy in ${Date.now() - t0} ms (leader ${leader})`);
  }, 120_000);
});
