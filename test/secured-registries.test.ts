// harbormaster against secured registries: Consul with ACLs (default deny) and HTTPS with
// verify_incoming, etcd with client TLS, --client-cert-auth and a user whose role covers one
// key prefix. `register`, `proxy` and `services` work with the right credentials; every wrong
// one (unknown token, token without its policy, wrong password, role revoked, an untrusted CA,
// a refused client certificate) and an unreachable registry give one clear line naming the
// registry and what was refused, a /v1/health that says why, metrics that count it, and no
// crash; once the credential is fixed everything converges with nothing lost, duplicated or
// left behind. Every byte these processes write or serve is scanned for the secrets.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaultProxy } from './support/fault-proxy.js';
import { type Hm, runCli, spawnHm } from './support/harbormaster.js';
import { reportFault } from './support/observer.js';
import { converge, reader } from './support/scenario.js';
import { consulTlsEnv, etcdTlsEnv, makeTls, TlsAclConsul, TlsEtcd } from './support/secure-registries.js';
import { sleep, uniq, waitFor } from './support/wait.js';

const tls = makeTls();
const consul = new TlsAclConsul(29100, tls);
const ETCD_PREFIX = '/hmsec';
const ETCD_PASSWORD = `etcd-pw-${Math.random().toString(36).slice(2, 12)}`;
const WRONG_PASSWORD = `wrong-pw-${Math.random().toString(36).slice(2, 12)}`;
const etcd = new TlsEtcd(29120, tls, ETCD_PREFIX, ETCD_PASSWORD);
const API_TOKEN = `api-tok-${Math.random().toString(36).slice(2, 14)}`;
const UNKNOWN_TOKEN = '3f6b8c1e-9a2d-4c7e-8b1f-5d0e2a4c6b8d';

/** Hosts start with "sec-": the registrator's policy covers exactly those services. */
const REGISTRATOR_RULES = `service "harbormaster" { policy = "write" }
service_prefix "sec-" { policy = "write" }
node_prefix "" { policy = "read" }`;
const GATEWAY_RULES = `service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }`;

let registrator: { secretId: string; accessorId: string };
let gateway: { secretId: string; accessorId: string };
/** Every secret harbormaster is given in these tests, and every text it wrote or served. */
const secrets: string[] = [ETCD_PASSWORD, WRONG_PASSWORD, API_TOKEN, UNKNOWN_TOKEN];
const seen: string[] = [];
const processes: Hm[] = [];

beforeAll(async () => {
  await Promise.all([consul.start(), etcd.start()]);
  await etcd.secure();
  await consul.createPolicy('registrator', REGISTRATOR_RULES);
  await consul.createPolicy('gateway', GATEWAY_RULES);
  registrator = await consul.createToken(['registrator'], 'registrator');
  gateway = await consul.createToken(['gateway'], 'gateway');
  secrets.push(registrator.secretId, gateway.secretId);
}, 120_000);

afterAll(async () => {
  await Promise.all([consul.kill(), etcd.kill()]);
  etcd.cleanup();
  tls.cleanup();
});

/** A folder with `n` service files for `host`, served on loopback. */
function servicesDir(host: string, n: number): { dir: string; ids: Set<string> } {
  const dir = join(tls.dir, host);
  mkdirSync(dir, { recursive: true });
  const ids = new Set<string>();
  for (let i = 0; i < n; i++) {
    writeFileSync(join(dir, `s${i}.yaml`), `service:\n  name: ${host}-s${i}\n  address: 127.0.0.1\n  port: ${18000 + i}\n`);
    ids.add(`${host}:file:${host}-s${i}`);
  }
  return { dir, ids };
}

function register(host: string, dir: string, uri: string, env: Record<string, string>, api: number): Hm {
  const hm = spawnHm(['register', '--docker', 'off', '--services-dir', dir, '--hostname', host, '--ttl', '10', '--retry-interval', '300', '--resync', '5', '--api', `127.0.0.1:${api}`, uri], {
    ...env,
    HM_API_TOKEN: API_TOKEN,
  });
  processes.push(hm);
  return hm;
}

async function api(port: number, path: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { authorization: `Bearer ${API_TOKEN}` }, signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  seen.push(text);
  return { status: res.status, text };
}

interface Health {
  ok: boolean;
  components: { registry: { ok: boolean; lastError?: string } };
}

/** /v1/health once it reports the registry not ok for `reason`. */
async function refusedHealth(port: number, reason: RegExp): Promise<Health> {
  return waitFor(`/v1/health to report ${reason}`, async () => {
    const h = JSON.parse((await api(port, '/v1/health')).text) as Health;
    return !h.ok && !h.components.registry.ok && reason.test(h.components.registry.lastError ?? '') ? h : undefined;
  }, 30_000, 200);
}

/** Error lines (level ≥ 50) of a process; each must name the registry. */
function errorLines(hm: Hm): string[] {
  return hm.logs.filter((l) => l.level >= 50).map((l) => l.msg);
}

async function registryErrorsCounted(port: number): Promise<number> {
  const text = (await api(port, '/metrics')).text;
  return [...text.matchAll(/^harbormaster_registry_errors_total\{[^}]*\} (\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0);
}

const consulReader = (host: string) => reader('consul', `127.0.0.1:${consul.httpPort}`, '', host, consul.masterToken);
const etcdReader = (host: string) => reader('etcd', etcd.plainEndpoint, ETCD_PREFIX, host, `root:${etcd.rootPassword}`);

describe('Consul with ACLs and TLS (verify_incoming)', () => {
  it('register (registrator token), proxy (gateway token) and services: the catalog over TLS, each with its narrow token', async () => {
    const host = uniq('sec-ok');
    const { dir, ids } = servicesDir(host, 3);
    const r = consulReader(host);
    const t0 = Date.now();
    const reg = register(host, dir, consul.tlsUri, consulTlsEnv(tls, registrator.secretId), 29010);
    const m = await converge(r, ids, t0, 30_000);
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    const proxy = spawnHm(['proxy', consul.tlsUri, '--listen', '127.0.0.1:29011', '--api', '127.0.0.1:29012'], { ...consulTlsEnv(tls, gateway.secretId), HM_API_TOKEN: API_TOKEN });
    processes.push(proxy);
    await waitFor('the proxy to see the services', async () => {
      const text = (await api(29012, '/v1/services')).text;
      return [...ids].every((id) => text.includes(id));
    }, 30_000, 200);
    expect(JSON.parse((await api(29012, '/v1/health')).text)).toMatchObject({ ok: true });
    const list = await runCli(['services', '--json', consul.tlsUri], consulTlsEnv(tls, gateway.secretId));
    seen.push(list.stdout, list.stderr);
    expect(list.code).toBe(0);
    for (const id of ids) expect(list.stdout).toContain(id);
    reg.kill();
    expect(await reg.exited).toBe(0);
    await converge(r, new Set(), Date.now(), 15_000);
    r.close();
  });

  it('run (register and proxy in one process) over TLS with the registrator token', async () => {
    const host = uniq('sec-run');
    const { dir, ids } = servicesDir(host, 2);
    const r = consulReader(host);
    const t0 = Date.now();
    const all = spawnHm(['run', '--registry', consul.tlsUri, '--docker', 'off', '--services-dir', dir, '--hostname', host, '--ttl', '10', '--listen', '127.0.0.1:29018', '--api', '127.0.0.1:29019', '--dns', 'off'], {
      ...consulTlsEnv(tls, registrator.secretId),
      HM_API_TOKEN: API_TOKEN,
    });
    processes.push(all);
    const m = await converge(r, ids, t0, 30_000);
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    await waitFor('run to route its own services', async () => {
      const text = (await api(29019, '/v1/services')).text;
      return [...ids].every((id) => text.includes(id));
    }, 30_000, 200);
    expect(JSON.parse((await api(29019, '/v1/health')).text)).toMatchObject({ ok: true });
    expect((await api(29019, '/metrics')).status).toBe(200);
    all.kill();
    expect(await all.exited).toBe(0);
    await converge(r, new Set(), Date.now(), 15_000);
    r.close();
  });

  it('a token without its policy, then given it back: one line naming the registry and the permission, reported, counted, then converges', async () => {
    const host = uniq('sec-acl');
    const { dir, ids } = servicesDir(host, 3);
    const token = await consul.createToken([], 'no policy yet');
    secrets.push(token.secretId);
    const reg = register(host, dir, consul.tlsUri, consulTlsEnv(tls, token.secretId), 29013);
    const h = await refusedHealth(29013, /403 Permission denied.*CONSUL_HTTP_TOKEN, lacks this permission/);
    expect(h.ok).toBe(false);
    await sleep(4_000);
    const lines = errorLines(reg);
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length).toBeLessThanOrEqual(3);
    for (const l of lines) expect(l).toContain(`registry ${consul.tlsUri} refused`);
    expect(await registryErrorsCounted(29013)).toBeGreaterThan(0);
    await consul.setTokenPolicies(token.accessorId, ['registrator']);
    const fixed = Date.now();
    const r = consulReader(host);
    const m = await converge(r, ids, fixed, 60_000);
    reportFault('consul-tls: token without its policy, then given it back', { ...m, errorLines: lines.length });
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    await waitFor('/v1/health ok again', async () => (JSON.parse((await api(29013, '/v1/health')).text) as Health).ok, 30_000, 200);
    expect(reg.logs.some((l) => l.event === 'registry-up')).toBe(true);
    reg.kill();
    await reg.exited;
    await converge(r, new Set(), Date.now(), 15_000);
    r.close();
  });

  it.each([
    ['an unknown token', () => consulTlsEnv(tls, UNKNOWN_TOKEN), /403 ACL not found \(the token, CONSUL_HTTP_TOKEN, is unknown to Consul/],
    ['a CA that did not sign the agent', () => consulTlsEnv(tls, registrator.secretId, { ca: tls.otherCa }), /TLS: the server's certificate is signed by an unknown authority \(not by the CA in CONSUL_CACERT\)/],
    ['a client certificate from an untrusted CA', () => consulTlsEnv(tls, registrator.secretId, { cert: tls.otherClientCert, key: tls.otherClientKey }), /TLS: the agent closed the connection \(with verify_incoming it wants a client certificate/],
    ['no client certificate', () => ({ CONSUL_CACERT: tls.ca, CONSUL_HTTP_TOKEN: registrator.secretId }), /TLS: the agent closed the connection/],
  ])('%s: refused with one clear line, reported, retried, no crash; with the right setting it converges, nothing left behind', async (what, env, reason) => {
    const host = uniq('sec-bad');
    const { dir, ids } = servicesDir(host, 2);
    const bad = register(host, dir, consul.tlsUri, env(), 29014);
    const h = await refusedHealth(29014, reason);
    expect(h.ok).toBe(false);
    await sleep(3_000);
    const lines = errorLines(bad);
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length).toBeLessThanOrEqual(3);
    for (const l of lines) expect(l).toMatch(new RegExp(`registry ${consul.tlsUri} (refused|unreachable)`));
    expect(lines.some((l) => reason.test(l))).toBe(true);
    expect(bad.logs.some((l) => l.event === 'registered')).toBe(false);
    bad.kill();
    expect(await bad.exited).toBe(0);
    const fixed = Date.now();
    const good = register(host, dir, consul.tlsUri, consulTlsEnv(tls, registrator.secretId), 29015);
    const r = consulReader(host);
    const m = await converge(r, ids, fixed, 30_000);
    reportFault(`consul-tls: ${what}, then the right one`, { ...m, errorLines: lines.length });
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    good.kill();
    await good.exited;
    r.close();
  });

  it('the agent unreachable for a while (TLS connections cut): one line, then back with nothing lost', async () => {
    const host = uniq('sec-down');
    const { dir, ids } = servicesDir(host, 3);
    const cut = await FaultProxy.start({ host: '127.0.0.1', port: consul.httpsPort }, 29016);
    try {
      const reg = register(host, dir, `consul-tls://127.0.0.1:${cut.port}`, consulTlsEnv(tls, registrator.secretId), 29017);
      const r = consulReader(host);
      await converge(r, ids, Date.now(), 30_000);
      cut.cut();
      await refusedHealth(29017, /ECONNREFUSED|closed|UND_ERR_SOCKET|timed out|reset/);
      await sleep(3_000);
      cut.pass();
      const back = Date.now();
      const m = await converge(r, ids, back, 30_000);
      const lines = errorLines(reg);
      reportFault('consul-tls: agent unreachable 3 s (connections cut)', { ...m, errorLines: lines.length });
      expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
      expect(lines.length).toBeLessThanOrEqual(3);
      for (const l of lines) expect(l).toContain(`consul-tls://127.0.0.1:${cut.port}`);
      await waitFor('/v1/health ok again', async () => (JSON.parse((await api(29017, '/v1/health')).text) as Health).ok, 30_000, 200);
      reg.kill();
      await reg.exited;
      r.close();
    } finally {
      await cut.close();
    }
  });
});

describe('etcd with client TLS, client-certificate auth and a user limited to its prefix', () => {
  const uri = `etcd-tls://${etcd.endpoint}${ETCD_PREFIX}`;

  it('register, proxy and services with the right user, password and certificate', async () => {
    const host = uniq('sec-e');
    const { dir, ids } = servicesDir(host, 3);
    const r = etcdReader(host);
    const reg = register(host, dir, uri, etcdTlsEnv(tls, ETCD_PASSWORD), 29030);
    const m = await converge(r, ids, Date.now(), 30_000);
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    const proxy = spawnHm(['proxy', uri, '--listen', '127.0.0.1:29031', '--api', '127.0.0.1:29032'], { ...etcdTlsEnv(tls, ETCD_PASSWORD), HM_API_TOKEN: API_TOKEN });
    processes.push(proxy);
    await waitFor('the proxy to see the services', async () => {
      const text = (await api(29032, '/v1/services')).text;
      return [...ids].every((id) => text.includes(id));
    }, 30_000, 200);
    const list = await runCli(['services', '--json', uri], etcdTlsEnv(tls, ETCD_PASSWORD));
    seen.push(list.stdout, list.stderr);
    expect(list.code).toBe(0);
    for (const id of ids) expect(list.stdout).toContain(id);
    // A wrong password for `services`: one line on stderr, exit 1, the password nowhere.
    const refused = await runCli(['services', '--json', uri], etcdTlsEnv(tls, WRONG_PASSWORD));
    seen.push(refused.stdout, refused.stderr);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/authentication failed for user harbormaster/);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    reg.kill();
    await reg.exited;
    r.close();
  });

  it('a wrong password, then the user\'s password changed to it: one line, reported, counted, then converges', async () => {
    const host = uniq('sec-epw');
    const { dir, ids } = servicesDir(host, 3);
    const reg = register(host, dir, uri, etcdTlsEnv(tls, WRONG_PASSWORD), 29033);
    await refusedHealth(29033, /authentication failed for user harbormaster \(ETCDCTL_USER \/ ETCDCTL_PASSWORD\)/);
    await sleep(3_000);
    const lines = errorLines(reg);
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length).toBeLessThanOrEqual(3);
    for (const l of lines) expect(l).toContain(`registry ${uri} refused`);
    expect(await registryErrorsCounted(29033)).toBeGreaterThan(0);
    await etcd.setPassword(WRONG_PASSWORD);
    try {
      const fixed = Date.now();
      const r = etcdReader(host);
      const m = await converge(r, ids, fixed, 60_000);
      reportFault('etcd-tls: wrong password, then the user given that password', { ...m, errorLines: lines.length });
      expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
      reg.kill();
      await reg.exited;
      await converge(r, new Set(), Date.now(), 15_000);
      r.close();
    } finally {
      await etcd.setPassword(ETCD_PASSWORD);
    }
  });

  it('the role revoked while registered, then granted again: heartbeats refused with one line, then everything back', async () => {
    const host = uniq('sec-erole');
    const { dir, ids } = servicesDir(host, 3);
    const r = etcdReader(host);
    const reg = register(host, dir, uri, etcdTlsEnv(tls, ETCD_PASSWORD), 29034);
    await converge(r, ids, Date.now(), 30_000);
    // A new service while refused: it must land once the role is back.
    await etcd.revokeRole();
    writeFileSync(join(dir, 'late.yaml'), `service:\n  name: ${host}-late\n  address: 127.0.0.1\n  port: 18100\n`);
    await refusedHealth(29034, /permission denied for user harbormaster: its role needs readwrite on the key prefix \/hmsec\//);
    await sleep(3_000);
    const lines = errorLines(reg);
    await etcd.grantRole();
    const fixed = Date.now();
    const m = await converge(r, new Set([...ids, `${host}:file:${host}-late`]), fixed, 60_000);
    reportFault('etcd-tls: role revoked 3 s while registered, a service added meanwhile, role granted again', { ...m, errorLines: lines.length });
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length).toBeLessThanOrEqual(5);
    for (const l of lines) expect(l).toContain(`registry ${uri} refused`);
    reg.kill();
    await reg.exited;
    await converge(r, new Set(), Date.now(), 15_000);
    r.close();
  });

  it.each([
    ['a CA that did not sign the server', () => etcdTlsEnv(tls, ETCD_PASSWORD, { ca: tls.otherCa }), /TLS: the server's certificate is signed by an unknown authority \(not by the CA in ETCDCTL_CACERT\)/],
    ['a client certificate from an untrusted CA', () => etcdTlsEnv(tls, ETCD_PASSWORD, { cert: tls.otherClientCert, key: tls.otherClientKey }), /TLS: the server refused the client certificate/],
  ])('%s: one clear line, reported, no crash; with the right one it converges', async (what, env, reason) => {
    const host = uniq('sec-etls');
    const { dir, ids } = servicesDir(host, 2);
    const bad = register(host, dir, uri, env(), 29035);
    await refusedHealth(29035, /etcd/);
    await sleep(3_000);
    const lines = errorLines(bad);
    expect(lines.some((l) => reason.test(l))).toBe(true);
    expect(lines.length).toBeLessThanOrEqual(3);
    for (const l of lines) expect(l).toContain(`registry ${uri} unreachable`);
    bad.kill();
    expect(await bad.exited).toBe(0);
    const fixed = Date.now();
    const good = register(host, dir, uri, etcdTlsEnv(tls, ETCD_PASSWORD), 29036);
    const r = etcdReader(host);
    const m = await converge(r, ids, fixed, 30_000);
    reportFault(`etcd-tls: ${what}, then the right one`, { ...m, errorLines: lines.length });
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    good.kill();
    await good.exited;
    r.close();
  });
});

describe('the read side (proxy) refused or cut off', () => {
  it.each([
    ['consul-tls, an unknown token', () => consul.tlsUri, () => consulTlsEnv(tls, UNKNOWN_TOKEN), /403 ACL not found \(the token, CONSUL_HTTP_TOKEN, is unknown to Consul/],
    ['etcd-tls, a wrong password', () => `etcd-tls://${etcd.endpoint}${ETCD_PREFIX}`, () => etcdTlsEnv(tls, WRONG_PASSWORD), /authentication failed for user harbormaster/],
    ['consul-tls, nothing listening', () => 'consul-tls://127.0.0.1:29099', () => consulTlsEnv(tls, gateway.secretId), /ECONNREFUSED/],
    ['etcd-tls, nothing listening', () => 'etcd-tls://127.0.0.1:29098/hmsec', () => etcdTlsEnv(tls, ETCD_PASSWORD), /UNAVAILABLE|ECONNREFUSED/],
  ])('%s: one line naming the registry, /v1/health not ok with the reason, still serving', async (_what, uri, env, reason) => {
    const proxy = spawnHm(['proxy', uri(), '--listen', '127.0.0.1:29040', '--api', '127.0.0.1:29041'], { ...env(), HM_API_TOKEN: API_TOKEN });
    processes.push(proxy);
    await waitFor('/v1/health to give the reason', async () => {
      const h = JSON.parse((await api(29041, '/v1/health')).text) as { ok: boolean; lastError: string | null };
      return !h.ok && reason.test(h.lastError ?? '');
    }, 30_000, 200);
    await sleep(3_000);
    const lines = errorLines(proxy);
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length).toBeLessThanOrEqual(3);
    for (const l of lines) expect(l).toContain(`registry ${uri()}: watch`);
    // Still answering: no catalog yet is a 503 from the proxy, not a dead process.
    expect((await fetch('http://127.0.0.1:29040/', { headers: { host: 'x.localhost' } })).status).toBeGreaterThanOrEqual(400);
    proxy.kill();
    expect(await proxy.exited).toBe(0);
  });
});

describe('no secret leaves harbormaster', () => {
  it('stdout, stderr, /v1/health, /metrics, /v1/services and services --json of every run above hold none of the secrets', async () => {
    for (const hm of processes) seen.push(...hm.stdout, ...hm.stderr);
    const text = seen.join('\n');
    const found = secrets.map((s) => text.split(s).length - 1);
    console.log(`LEAK SCAN: ${secrets.length} secrets, ${processes.length} processes, ${Buffer.byteLength(text)} bytes scanned, secrets found ${found.reduce((a, b) => a + b, 0)} times`);
    expect(processes.length).toBeGreaterThan(10);
    expect(found).toEqual(secrets.map(() => 0));
  });
});

afterAll(() => rmSync(tls.dir, { recursive: true, force: true }));
