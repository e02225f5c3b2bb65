// The write side under registry faults, injected into real engines: a TCP fault proxy between
// harbormaster and a private Consul / etcd (partition, then heal), the engine frozen with
// SIGSTOP past the TTL, a Consul token losing its policy, a rate-limiting agent, renames and an
// idle host on etcd. Each scenario prints what it measured and asserts nothing lost,
// duplicated or left behind once healed.
import { Etcd3, Range } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { docker, removeContainers, run } from './support/docker.js';
import { FaultProxy } from './support/fault-proxy.js';
import { spawnHm } from './support/harbormaster.js';
import { HttpFaultProxy } from './support/http-fault-proxy.js';
import { measure, reportFault } from './support/observer.js';
import { type Daemon, privateConsul, privateConsulAcl, privateEtcd, REGISTRATOR_POLICY } from './support/registries.js';
import { continuity, converge, idsOf, type RegistryKind, reader, runMany, watch } from './support/scenario.js';
import { sleep, uniq, waitFor } from './support/wait.js';

const TTL = 3;
const common = ['--ttl', String(TTL), '--ttl-refresh', '1', '--retry-interval', '200', '--resync', '0'];

interface Engine {
  daemon: Daemon;
  /** host:port of the engine itself. */
  direct: string;
  cleanup(): void;
}

async function startEngine(kind: RegistryKind, base: number, extra: string[] = []): Promise<Engine> {
  if (kind === 'consul') {
    const c = privateConsul(base);
    await c.start();
    return { daemon: c, direct: `127.0.0.1:${base}`, cleanup: () => undefined };
  }
  const e = privateEtcd(base, extra);
  await e.start();
  return { daemon: e, direct: e.endpoint, cleanup: () => e.cleanup() };
}

afterAll(() => removeContainers('fr'));

const uriOf = (kind: RegistryKind, addr: string) => (kind === 'consul' ? `consul://${addr}` : `${kind}://${addr}/hm`);

describe.each([
  { kind: 'consul' as const, base: 20500 },
  { kind: 'etcd' as const, base: 20600 },
  { kind: 'etcd2' as const, base: 20610 },
])('write side under registry faults: $kind', ({ kind, base }) => {
  let engine: Engine;
  let proxy: FaultProxy;

  beforeAll(async () => {
    engine = await startEngine(kind, base);
    proxy = await FaultProxy.start({ host: '127.0.0.1', port: base });
  });

  afterAll(async () => {
    await proxy?.close();
    await engine?.daemon.kill();
    engine?.cleanup();
  });

  /** A registrator through the proxy with three containers, registered; returns what the scenario needs. */
  async function threeRegistered(tag: string) {
    proxy.pass();
    const host = uniq(tag);
    const hm = spawnHm(['register', '--hostname', host, ...common, uriOf(kind, proxy.address)]);
    const names = await runMany(`${host}-`, 3, { env: { SERVICE_NAME: 'svc' } });
    const r = reader(kind, engine.direct, '/hm', host);
    await converge(r, idsOf(host, names), Date.now(), 30_000);
    return { host, hm, names, r };
  }

  it('registry unreachable for 2×TTL (partition), with a stop and a start meanwhile: nothing lapses before its TTL, converges, nothing lost, duplicated or left', async () => {
    const { host, hm, names, r } = await threeRegistered('frp');
    onTestFinished(() => removeContainers(`${host}-`));
    const obs = watch(r, 50);
    onTestFinished(() => obs.stop());
    await obs.waitFor((ids) => ids.size >= 3);
    proxy.blackhole();
    const down = Date.now();
    await docker('stop', '-t', '1', names[1]);
    await run(`${host}-late`, { env: { SERVICE_NAME: 'svc' } });
    await sleep(2 * TTL * 1000 - (Date.now() - down));
    proxy.pass();
    const healed = Date.now();
    const m = await converge(r, idsOf(host, [names[0], names[2], `${host}-late`]), healed);
    await obs.stop();
    // The two untouched containers, seen by a reader straight from the engine the whole time.
    const c = continuity(obs, idsOf(host, [names[0], names[2]]), down);
    const { list, ...figures } = c;
    reportFault(`${kind}: registry unreachable ${2 * TTL}s (2×TTL), one stop and one start during it`, { ...m, ...figures });
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    expect(c.samplesDuplicated).toBe(0);
    // Unrenewable for 2×TTL, they lapse (the TTL's promise), but never before it: the last renewal was at most one period before the cut.
    if (c.gaps > 0) expect(c.firstGapAfterMs).toBeGreaterThanOrEqual((TTL - 1) * 1000 - 250);
    // And every gap closed once the registry was reachable again, within the convergence.
    for (const g of list) expect(g.to !== undefined && g.to - healed <= m.converge + 600).toBe(true);
    expect(hm.logs.some((l) => l.event === 'registry-up')).toBe(true);
    r.close();
  });

  it('registry frozen (SIGSTOP) for longer than the TTL, then thawed: back within seconds, nothing lost, duplicated or left', async () => {
    const { host, names, r } = await threeRegistered('frs');
    const obs = watch(r, 50);
    onTestFinished(() => obs.stop());
    await obs.waitFor((ids) => ids.size >= 3);
    engine.daemon.pause();
    const frozen = Date.now();
    await sleep((TTL + 2) * 1000);
    engine.daemon.resume();
    const thawed = Date.now();
    // On waking, the engine first expires what its clock says ran out (etcd v2 within a second or
    // so): convergence is measured after that, from the thaw.
    await sleep(1_500);
    const m = await converge(r, idsOf(host, names), thawed);
    await obs.stop();
    const { list, ...figures } = continuity(obs, idsOf(host, names), frozen);
    reportFault(`${kind}: registry frozen ${((thawed - frozen) / 1000).toFixed(1)}s (TTL ${TTL}s)`, { ...m, ...figures });
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    expect(figures.samplesDuplicated).toBe(0);
    // The engine's own clock ran out while it was frozen: what it dropped on waking is back within seconds.
    for (const g of list) expect(g.to !== undefined && g.to - thawed <= 5_000).toBe(true);
    r.close();
  });

  it('every connection to the registry reset mid-run: no entry ever missing, nothing lost', async () => {
    const { host, names, r } = await threeRegistered('frr');
    onTestFinished(() => removeContainers(`${host}-`));
    const obs = watch(r, 50);
    onTestFinished(() => obs.stop());
    await obs.waitFor((ids) => ids.size >= 3);
    proxy.reset();
    const at = Date.now();
    await run(`${host}-after`, { env: { SERVICE_NAME: 'svc' } });
    const m = await converge(r, idsOf(host, [...names, `${host}-after`]), at);
    // Past a heartbeat round or two.
    await sleep(2_000);
    await obs.stop();
    const { list, ...figures } = continuity(obs, idsOf(host, names), at);
    reportFault(`${kind}: every registry connection reset`, { ...m, ...figures });
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    expect(list).toEqual([]);
    expect(figures.samplesDuplicated).toBe(0);
    r.close();
  });
});

describe('write side under Consul refusals', () => {
  it('a token that loses its policy and gets it back: retried with backoff, reported in /v1/health, then converges', async () => {
    const consul = privateConsulAcl(20520);
    await consul.start();
    try {
      await consul.createPolicy('registrator', REGISTRATOR_POLICY);
      const token = await consul.createToken(['registrator']);
      const host = uniq('fra');
      const api = 20530;
      const hm = spawnHm(['register', '--hostname', host, ...common, '--api', `127.0.0.1:${api}`, consul.uri], { CONSUL_HTTP_TOKEN: token.secretId });
      const names = await runMany(`${host}-`, 2, { env: { SERVICE_NAME: 'svc' } });
      const r = reader('consul', `127.0.0.1:${consul.httpPort}`, '', host, consul.masterToken);
      await converge(r, idsOf(host, names), Date.now(), 30_000);
      const obs = watch(r, 50);
      onTestFinished(() => obs.stop());
      await obs.waitFor((ids) => ids.size >= 2);

      await consul.setTokenPolicies(token.accessorId, []);
      const revoked = Date.now();
      await run(`${host}-new`, { env: { SERVICE_NAME: 'svc' } });
      // A withdrawal refused too: it must be kept until Consul confirms it.
      await docker('stop', '-t', '1', names[1]);
      const health = await waitFor('/v1/health reports the refusal', async () => {
        const h = (await (await fetch(`http://127.0.0.1:${api}/v1/health`)).json()) as { ok: boolean; components: { registry: { ok: boolean; lastError?: string; retrying?: number } } };
        return !h.components.registry.ok && /403|ACL|[Pp]ermission/.test(h.components.registry.lastError ?? '') ? h : undefined;
      });
      expect(health.ok).toBe(false);
      await sleep(3000);
      const attempts = hm.logs.filter((l) => l.event === 'error').length;
      await consul.setTokenPolicies(token.accessorId, ['registrator']);
      const restored = Date.now();
      const m = await converge(r, idsOf(host, [names[0], `${host}-new`]), restored);
      await obs.stop();
      // Without its policy the token cannot pass the host's heartbeat either: past the TTL Consul marks the host critical, as it must.
      const { list, ...figures } = continuity(obs, idsOf(host, [names[0]]), revoked);
      reportFault('consul: token lost its policy (403), one start and one stop meanwhile, then restored', { ...m, ...figures, refusedFor: `${restored - revoked}ms`, errorLines: attempts });
      expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
      expect(figures.samplesDuplicated).toBe(0);
      if (list.length > 0) expect(figures.firstGapAfterMs).toBeGreaterThanOrEqual((TTL - 1) * 1000 - 250);
      for (const g of list) expect(g.to !== undefined && g.to - restored <= m.converge + 600).toBe(true);
      await waitFor('/v1/health ok again', async () => ((await (await fetch(`http://127.0.0.1:${api}/v1/health`)).json()) as { ok: boolean }).ok);
      r.close();
    } finally {
      await consul.kill();
    }
  });

  it('a rate-limited agent (429 on every write for 3s): backs off, then converges', async () => {
    const consul = privateConsul(20540);
    await consul.start();
    const proxy = await HttpFaultProxy.start({ host: '127.0.0.1', port: consul.httpPort });
    try {
      const host = uniq('frl');
      spawnHm(['register', '--hostname', host, ...common, `consul://${proxy.address}`]);
      const names = await runMany(`${host}-`, 2, { env: { SERVICE_NAME: 'svc' } });
      const r = reader('consul', `127.0.0.1:${consul.httpPort}`, '', host);
      await converge(r, idsOf(host, names), Date.now(), 30_000);
      const obs = watch(r, 50);
      onTestFinished(() => obs.stop());
      await obs.waitFor((ids) => ids.size >= 2);

      const rule = proxy.respond({ method: 'PUT', path: /^\/v1\/agent\/service\/register/ }, 429, 'rate limit exceeded');
      const limited = Date.now();
      await run(`${host}-new`, { env: { SERVICE_NAME: 'svc' } });
      await sleep(3000);
      rule.remove();
      const lifted = Date.now();
      const m = await converge(r, idsOf(host, [...names, `${host}-new`]), lifted);
      await obs.stop();
      const { list, ...figures } = continuity(obs, idsOf(host, names), limited);
      reportFault('consul: 429 on every registration for 3s', { ...m, ...figures, refusedRequests: rule.hits });
      expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
      // Only registrations were limited: the registered ones never went missing or critical.
      expect(list).toEqual([]);
      // Backoff, not a hot loop: a handful of attempts in 3 s.
      expect(rule.hits).toBeGreaterThan(0);
      expect(rule.hits).toBeLessThan(20);
      r.close();
    } finally {
      await proxy.close();
      await consul.kill();
    }
  });
});

describe('Consul drops what harbormaster registered', () => {
  it('the host heartbeat service and one instance removed by hand both come back, and no other instance turns critical for long', async () => {
    const consul = privateConsul(20560);
    await consul.start();
    try {
      const host = uniq('frh');
      onTestFinished(() => removeContainers(`${host}-`));
      spawnHm(['register', '--hostname', host, ...common, consul.uri]);
      const names = await runMany(`${host}-`, 3, { env: { SERVICE_NAME: 'svc' } });
      const r = reader('consul', `127.0.0.1:${consul.httpPort}`, '', host);
      await converge(r, idsOf(host, names), Date.now(), 30_000);
      const del = (id: string) => fetch(`http://127.0.0.1:${consul.httpPort}/v1/agent/service/deregister/${encodeURIComponent(id)}`, { method: 'PUT' });
      await del(`harbormaster:${host}`);
      await del(`${host}:${names[0]}:80`);
      const removed = Date.now();
      // The heartbeat comes back at the next round; the instance at the next read-back (every 6 rounds).
      const m = await converge(r, idsOf(host, names), removed, 20_000);
      reportFault('consul: heartbeat service and one instance deregistered by hand', { ...m });
      expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
      r.close();
    } finally {
      await consul.kill();
    }
  });
});

describe('write side under Consul refusals: withdrawals', () => {
  it('a withdrawal answered "403 ACL not found" is not taken as done: retried until Consul confirms it', async () => {
    const consul = privateConsul(20550);
    await consul.start();
    const proxy = await HttpFaultProxy.start({ host: '127.0.0.1', port: consul.httpPort });
    try {
      const host = uniq('frw');
      onTestFinished(() => removeContainers(`${host}-`));
      spawnHm(['register', '--hostname', host, ...common, `consul://${proxy.address}`]);
      const names = await runMany(`${host}-`, 2, { env: { SERVICE_NAME: 'svc' } });
      const r = reader('consul', `127.0.0.1:${consul.httpPort}`, '', host);
      await converge(r, idsOf(host, names), Date.now(), 30_000);
      const rule = proxy.respond({ method: 'PUT', path: /^\/v1\/agent\/service\/deregister\// }, 403, 'ACL not found');
      await docker('stop', '-t', '1', names[1]);
      await waitFor('the withdrawal refused', () => rule.hits > 0, 10_000);
      await sleep(2000);
      expect((await r.read()).entries.map((e) => e.id)).toContain(`${host}:${names[1]}:80`);
      rule.remove();
      const lifted = Date.now();
      const m = await converge(r, idsOf(host, [names[0]]), lifted);
      reportFault('consul: withdrawal answered 403 ACL not found for 2s', { ...m, refusedRequests: rule.hits });
      expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
      r.close();
    } finally {
      await proxy.close();
      await consul.kill();
    }
  });
});

describe('write side under Consul refusals: a withdrawal right after an outage', () => {
  it('a withdrawal that fails during an outage and is refused (403) right after it heals is kept and retried until Consul confirms it', async () => {
    const consul = privateConsul(20730);
    await consul.start();
    const http = await HttpFaultProxy.start({ host: '127.0.0.1', port: consul.httpPort });
    const tcp = await FaultProxy.start({ host: '127.0.0.1', port: http.port });
    try {
      const host = uniq('fro');
      onTestFinished(() => removeContainers(`${host}-`));
      const hm = spawnHm(['register', '--hostname', host, ...common, `consul://${tcp.address}`]);
      const names = await runMany(`${host}-`, 2, { env: { SERVICE_NAME: 'svc' } });
      const r = reader('consul', `127.0.0.1:${consul.httpPort}`, '', host);
      await converge(r, idsOf(host, names), Date.now(), 30_000);
      const obs = watch(r, 50);
      onTestFinished(() => obs.stop());
      tcp.cut();
      const down = Date.now();
      await docker('stop', '-t', '1', names[1]);
      await hm.waitForLog('the outage', (l) => l.event === 'error' && /unreachable/.test(l.msg), 10_000);
      // As the registry comes back, withdrawals are refused for a while.
      const rule = http.respond({ method: 'PUT', path: /^\/v1\/agent\/service\/deregister\// }, 403, 'ACL not found');
      await sleep(Math.max(0, 2_000 - (Date.now() - down)));
      tcp.pass();
      const healed = Date.now();
      await waitFor('the withdrawal refused after the heal', () => rule.hits > 0, 15_000, 20);
      await sleep(2_000);
      const stillThere = (await r.read()).entries.some((e) => e.id === `${host}:${names[1]}:80`);
      rule.remove();
      const lifted = Date.now();
      const m = await converge(r, idsOf(host, [names[0]]), lifted);
      await obs.stop();
      const { list, ...figures } = continuity(obs, idsOf(host, [names[0]]), down);
      reportFault('consul: withdrawal during a 2 s outage, refused (403) for 2 s right after it healed', { ...m, ...figures, refusedRequests: rule.hits, healedToRefusedMs: lifted - healed });
      expect(stillThere).toBe(true);
      expect(rule.hits).toBeGreaterThan(0);
      expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
      expect(list).toEqual([]);
      r.close();
    } finally {
      await tcp.close();
      await http.close();
      await consul.kill();
    }
  });
});

describe.each([{ kind: 'etcd' as const }, { kind: 'etcd2' as const }])('etcd specifics: $kind', ({ kind }) => {
  const base = kind === 'etcd' ? 20620 : 20630;
  let engine: Engine;
  let proxy: FaultProxy;

  beforeAll(async () => {
    engine = await startEngine(kind, base);
    proxy = await FaultProxy.start({ host: '127.0.0.1', port: base });
  });

  afterAll(async () => {
    await proxy?.close();
    await engine?.daemon.kill();
    engine?.cleanup();
  });

  it('a service renamed under the same ID while the registry was unreachable leaves no old key beside the new one', async () => {
    proxy.pass();
    const host = uniq('frn');
    onTestFinished(() => removeContainers(`${host}-`));
    spawnHm(['register', '--hostname', host, ...common, uriOf(kind, proxy.address)]);
    await run(`${host}-a`, { env: { SERVICE_NAME: 'old', SERVICE_ID: `${host}-fixed` } });
    const r = reader(kind, engine.direct, '/hm', host);
    await converge(r, new Set([`${host}-fixed`]), Date.now(), 30_000);
    proxy.cut();
    await docker('rm', '-f', `${host}-a`);
    await run(`${host}-b`, { env: { SERVICE_NAME: 'new', SERVICE_ID: `${host}-fixed` } });
    await sleep(1500);
    proxy.pass();
    const healed = Date.now();
    const newKey = `/hm/new/${kind === 'etcd2' ? encodeURIComponent(`${host}-fixed`) : `${host}-fixed`}`;
    await waitFor('the new key alone', async () => {
      const keys = (await r.read()).entries.map((e) => e.key);
      return keys.length === 1 && keys[0] === newKey;
    }, 30_000, 50);
    const m = await converge(r, new Set([`${host}-fixed`]), healed);
    const keys = (await r.read()).entries.map((e) => e.key);
    reportFault(`${kind}: service renamed under one ID during an outage`, { ...m, keys: keys.length });
    expect(keys).toEqual([newKey]);
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    await docker('rm', '-f', `${host}-b`);
    r.close();
  });

  it('an entry deleted by hand comes back by the heartbeat alone (--resync 0), and the other entry never goes', async () => {
    proxy.pass();
    const host = uniq('frx');
    onTestFinished(() => removeContainers(`${host}-`));
    spawnHm(['register', '--hostname', host, ...common, uriOf(kind, proxy.address)]);
    const names = await runMany(`${host}-`, 2, { env: { SERVICE_NAME: 'svc' } });
    const r = reader(kind, engine.direct, '/hm', host);
    await converge(r, idsOf(host, names), Date.now(), 30_000);
    const obs = watch(r, 50);
    onTestFinished(() => obs.stop());
    const victim = `${host}:${names[0]}:80`;
    const key = (await r.read()).entries.find((e) => e.id === victim)!.key;
    if (kind === 'etcd') {
      const client = new Etcd3({ hosts: `http://${engine.direct}` });
      await client.delete().key(key);
      client.close();
    } else {
      expect((await fetch(`http://${engine.direct}/v2/keys${key.split('/').map(encodeURIComponent).join('/')}`, { method: 'DELETE' })).ok).toBe(true);
    }
    const removed = Date.now();
    // etcd v3 reads its keys back every sixth heartbeat round (--ttl-refresh 1); v2 finds it at the next round.
    const m = await converge(r, idsOf(host, names), removed, 12_000);
    await obs.stop();
    const { list, ...figures } = continuity(obs, idsOf(host, names), removed);
    reportFault(`${kind}: one entry deleted by hand, --resync 0`, { ...m, ...figures });
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    expect(m.converge).toBeLessThan(8_000);
    // The other entry never went.
    expect(list.filter((g) => g.id !== victim)).toEqual([]);
    r.close();
  });

  it('an idle host (nothing registered for 3×TTL) registers the next container at once, without a lease error', async () => {
    proxy.pass();
    const host = uniq('fri');
    onTestFinished(() => removeContainers(`${host}-`));
    const hm = spawnHm(['register', '--hostname', host, ...common, uriOf(kind, proxy.address)]);
    await run(`${host}-a`, { env: { SERVICE_NAME: 'svc' } });
    const r = reader(kind, engine.direct, '/hm', host);
    await converge(r, idsOf(host, [`${host}-a`]), Date.now(), 30_000);
    await docker('rm', '-f', `${host}-a`);
    await converge(r, new Set(), Date.now());
    await sleep(3 * TTL * 1000);
    const errorsBefore = hm.logs.filter((l) => l.level >= 50).length;
    await run(`${host}-b`, { env: { SERVICE_NAME: 'svc' } });
    // From the container running (docker run itself takes seconds on a loaded machine).
    const started = Date.now();
    const m = await converge(r, idsOf(host, [`${host}-b`]), started, 10_000);
    reportFault(`${kind}: idle host for ${3 * TTL}s, then a container`, { ...m });
    expect(m.converge).toBeLessThan(3000);
    expect(hm.logs.filter((l) => l.level >= 50).slice(errorsBefore).map((l) => l.msg)).toEqual([]);
    await docker('rm', '-f', `${host}-b`);
    r.close();
  });
});

describe('etcd v3: keeping the lease alive does not depend on the reconcile loop', () => {
  it('one registration refused (permission denied) and retried for 4×TTL never lets the host lease expire; granted, it lands', async () => {
    const engine = await startEngine('etcd', 20640);
    try {
      const root = new Etcd3({ hosts: `http://${engine.direct}` });
      await root.user('root').create('rootpw');
      await root.role('root').create();
      await root.user('root').addRole('root');
      const role = await root.role('hm').create();
      await role.grant([{ permission: 'Readwrite', range: Range.prefix('/hm/svc/') }, { permission: 'Readwrite', range: Range.prefix('/hm/_hosts/') }]);
      await root.user('hm').create('hmpw');
      await root.user('hm').addRole('hm');
      await root.auth.authEnable({});
      root.close();
      const admin = new Etcd3({ hosts: `http://${engine.direct}`, auth: { username: 'root', password: 'rootpw' } });
      onTestFinished(() => admin.close());
      const host = uniq('frt');
      onTestFinished(() => removeContainers(`${host}-`));
      const mine = (k: string) => k.includes(`:${host}-`);
      const keys = async () => Object.keys(await admin.getAll().prefix('/hm/').strings()).filter((k) => !k.startsWith('/hm/_') && mine(k)).sort();
      const hm = spawnHm(['register', '--hostname', host, ...common, uriOf('etcd', engine.direct)], { ETCDCTL_USER: 'hm:hmpw' });
      await run(`${host}-ok`, { env: { SERVICE_NAME: 'svc' } });
      await run(`${host}-denied`, { env: { SERVICE_NAME: 'other' } });
      const okKey = `/hm/svc/${host}:${host}-ok:80`;
      await waitFor('the allowed one registered', async () => (await keys()).includes(okKey), 30_000);
      await hm.waitForLog('the refusal', (l) => l.event === 'error' && /permission denied/.test(l.msg));
      const attemptsBefore = hm.logs.filter((l) => l.event === 'error').length;
      // Four TTLs while the refused one is retried: the lease would have lapsed three times over.
      const watched = Date.now();
      let missingSamples = 0;
      let otherSamples = 0;
      for (const until = watched + 4 * TTL * 1000; Date.now() < until; await sleep(200)) {
        const now = await keys();
        if (!now.includes(okKey)) missingSamples++;
        if (now.some((k) => k !== okKey)) otherSamples++;
      }
      expect(otherSamples).toBe(0);
      await admin.role('hm').grant({ permission: 'Readwrite', range: Range.prefix('/hm/other/') });
      const granted = Date.now();
      const deniedKey = `/hm/other/${host}:${host}-denied:80`;
      await waitFor('the refused one lands once allowed', async () => (await keys()).includes(deniedKey), 30_000, 50);
      const convergeMs = Date.now() - granted;
      await sleep(500);
      const final = Object.entries(await admin.getAll().prefix('/hm/').strings()).filter(([k]) => !k.startsWith('/hm/_') && mine(k));
      const expected = new Set([`${host}:${host}-ok:80`, `${host}:${host}-denied:80`]);
      const m = measure(expected, final.map(([k, v]) => ({ key: k, id: (JSON.parse(v) as { id: string }).id })));
      reportFault('etcd: one registration refused (permission denied) for 4×TTL, then allowed', {
        converge: convergeMs,
        ...m,
        missingSamples,
        watchedMs: granted - watched,
        errorLines: hm.logs.filter((l) => l.event === 'error').length - attemptsBefore,
      });
      expect(m).toEqual({ lost: 0, duplicated: 0, leftBehind: 0 });
      expect(missingSamples).toBe(0);
    } finally {
      await engine.daemon.kill();
      engine.cleanup();
    }
  });

  it('one registration etcd rejects for what it is (request too large) is logged once and the rest stays registered', async () => {
    const engine = await startEngine('etcd', 20645, ['--max-request-bytes', '6144']);
    try {
      const host = uniq('frb');
      onTestFinished(() => removeContainers(`${host}-`));
      const hm = spawnHm(['register', '--hostname', host, ...common, uriOf('etcd', engine.direct)]);
      await run(`${host}-ok`, { env: { SERVICE_NAME: 'svc' } });
      const big: Record<string, string> = {};
      for (let i = 0; i < 20; i++) big[`SERVICE_BIG${i}`] = 'x'.repeat(400);
      await run(`${host}-big`, { env: { SERVICE_NAME: 'big' }, labels: big });
      const r = reader('etcd', engine.direct, '/hm', host);
      await converge(r, idsOf(host, [`${host}-ok`]), Date.now(), 30_000);
      await hm.waitForLog('the rejection', (l) => l.event === 'error' && /too large/.test(l.msg));
      await sleep(3 * TTL * 1000);
      const m = await converge(r, idsOf(host, [`${host}-ok`]), Date.now(), 5_000);
      const lines = hm.logs.filter((l) => /too large/.test(l.msg)).length;
      reportFault('etcd: one registration rejected (request too large) for 3×TTL', { ...m, rejectionLines: lines });
      expect(lines).toBe(1);
      expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
      r.close();
    } finally {
      await engine.daemon.kill();
      engine.cleanup();
    }
  });
});
