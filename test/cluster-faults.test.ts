// Faults of a real multi-host deployment (scripts/cluster.sh: etcd 3.4 and Consul 1.8.7 clusters
// of three members with TLS and ACLs, a Consul client agent per host, a second Docker engine as
// host 2): a host lost with everything on it, registry members lost under load and quorum loss,
// one host partitioned from the cluster past the TTL, and etcd's lease TTL reset on every leader
// change. Two hosts register into one registry, a gateway (`harbormaster proxy`) routes a bounded
// GET load to both, and the registry is read independently of harbormaster; each scenario prints
// one FAULT line. Every member, engine and rule a scenario stops or adds is restored before it ends.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it, onTestFailed, onTestFinished } from 'vitest';
import { prefixEnd } from '../src/catalog/etcd-watch.js';
import { type Cluster, type ClusterMember, consulLeader, ensureCluster, etcdctlRoot, etcdLeader, member, startMember, stopMember, tlsGet } from './support/cluster.js';
import { FaultProxy } from './support/fault-proxy.js';
import { type Hm, spawnHm } from './support/harbormaster.js';
import { measure, Observer, reportFault, type Entry } from './support/observer.js';
import { afterRequests, Load } from './support/proxy.js';
import { metricValue, reachesAll } from './support/run.js';
import { continuity } from './support/scenario.js';
import { sleep, uniq, waitFor } from './support/wait.js';
import { withTimeout } from '../src/util/time.js';

const exec = promisify(execFile);

/** Short, so that every lapse is seen within the run, and not shorter: on 2 shared cores a member restart can stall etcd for seconds. The heartbeat goes every second. */
const TTL = 5;
const REGISTER = ['--ttl', String(TTL), '--ttl-refresh', '1', '--retry-interval', '200', '--resync', '0'];
/** Private ports of this file (27300–27501 are the cluster's). */
const PORT = { etcdGateway: 29500, consulGateway: 29502, api: 29510, etcdFault: 29530 };
/** Keys etcd removes on expiry are gone within its expiry sweep (500 ms) of the TTL; the last heartbeat was at most a period before the kill. */
const EXPIRY_SLACK_MS = 1_500;

// ---------------------------------------------------------------------------------------------
// The cluster's members beyond what test/support/cluster.ts does: health of a whole registry,
// moving etcd's leadership, and a partition of one address with iptables.

const membersOf = (kind: ClusterMember['kind']) => cluster.members.filter((m) => m.kind === kind);

/** Every member of the registry answers and one leads (Consul: three voters). */
async function waitHealthy(kind: 'etcd' | 'consul'): Promise<void> {
  const servers = membersOf(kind === 'etcd' ? 'etcd' : 'consul-server');
  await waitFor(`every ${kind} member answering, with a leader`, async () => {
    const leader = kind === 'etcd' ? await etcdLeader(cluster) : await consulLeader(cluster);
    if (!leader) return false;
    const path = kind === 'etcd' ? '/version' : '/v1/status/leader';
    const up = await Promise.all(servers.map((m) => tlsGet(cluster, `${m.endpoint}${path}`).then((r) => r.status === 200, () => false)));
    if (!up.every(Boolean)) return false;
    if (kind === 'etcd') return true;
    const peers = await tlsGet(cluster, `${servers[0].endpoint}/v1/status/peers`);
    return peers.status === 200 && (JSON.parse(peers.body) as string[]).length === servers.length;
  }, 60_000, 200);
}

/** Hand etcd's leadership to a follower (etcdctl move-leader, sent to the leader). */
async function moveEtcdLeader(): Promise<void> {
  const { stdout } = await etcdctlRoot(cluster, ['endpoint', 'status', '-w', 'simple']);
  const rows = stdout.split('\n').filter(Boolean).map((l) => {
    const [endpoint, id, , , leader] = l.split(', ');
    return { endpoint, id, leader: leader === 'true' };
  });
  const leader = rows.find((r) => r.leader);
  const next = rows.find((r) => !r.leader);
  if (!leader || !next) throw new Error(`no leader and follower to move leadership between: ${stdout}`);
  const name = membersOf('etcd').find((m) => m.endpoint === leader.endpoint)!.name;
  const moved = await etcdctlRoot(cluster, ['move-leader', next.id], [name]);
  if (moved.code !== 0) throw new Error(`etcdctl move-leader ${next.id}: ${moved.stderr}`);
}

/**
 * Drop every packet to or from `ip` on the Consul server and serf ports, whatever its other end
 * (memberlist falls back to TCP from an unbound address, 127.0.0.1): the agent there still
 * answers its own host on its HTTPS port, and hears nothing of the cluster.
 */
async function iptables(op: '-I' | '-D', ip: string): Promise<void> {
  for (const proto of ['tcp', 'udp']) {
    for (const rule of [['-d', ip, '!', '-s', ip], ['-s', ip, '!', '-d', ip]]) {
      await exec('iptables', [op, 'INPUT', ...rule, '-p', proto, '--dport', '27300:27302', '-j', 'DROP', '-m', 'comment', '--comment', 'hm-cluster-faults']).catch((err: Error) => {
        if (op === '-I') throw err;
      });
    }
  }
}

const partition = (ip: string) => iptables('-I', ip);
const heal = (ip: string) => iptables('-D', ip);

let cluster: Cluster;
/** TLS material and credentials of the cluster, as harbormaster reads them. */
let tlsEnv: Record<string, string>;

beforeAll(async () => {
  cluster = await ensureCluster();
  const e = cluster.env;
  tlsEnv = {
    ETCDCTL_CACERT: e.ETCDCTL_CACERT,
    ETCDCTL_CERT: e.ETCDCTL_CERT,
    ETCDCTL_KEY: e.ETCDCTL_KEY,
    ETCDCTL_USER: e.ETCDCTL_USER,
    CONSUL_CACERT: e.CONSUL_CACERT,
    CONSUL_CLIENT_CERT: e.CONSUL_CLIENT_CERT,
    CONSUL_CLIENT_KEY: e.CONSUL_CLIENT_KEY,
  };
}, 300_000);

// ---------------------------------------------------------------------------------------------
// Hosts: each a Docker engine and a registrator; host 2's engine can be lost and restarted.

type HostNo = 1 | 2;

function dockerHost(n: HostNo): string {
  return n === 1 ? cluster.env.HM_CLUSTER_DOCKER_HOST1 || 'unix:///var/run/docker.sock' : cluster.env.HM_CLUSTER_DOCKER_HOST2;
}

async function dockerOn(n: HostNo, ...args: string[]): Promise<string> {
  const { stdout } = await exec('docker', args, { env: { ...process.env, DOCKER_HOST: dockerHost(n) }, maxBuffer: 16 * 1024 * 1024 });
  return stdout.trim();
}

/** A container serving its name, published on the host's address (host 2's engine binds NET.2 by itself). */
async function serve(n: HostNo, name: string, service: string): Promise<void> {
  onTestFinished(() => dockerOn(n, 'rm', '-f', name).then(() => undefined, () => undefined));
  const publish = n === 1 ? '127.0.0.1::80' : '80';
  await dockerOn(n, 'run', '-d', '--name', name, '--restart', 'unless-stopped', '-e', `NAME=${name}`, '-e', `SERVICE_NAME=${service}`, '-p', publish, 'hm-test:2');
}

/** Everything of host 2's engine at once: the engine, its port proxies, every container's processes. */
async function loseHost2Engine(): Promise<void> {
  const pid = Number(readFileSync(member(cluster, 'docker-h2').pidfile, 'utf8').trim());
  const ids = (await dockerOn(2, 'ps', '-q')).split('\n').filter(Boolean);
  const pids = ids.length ? (await dockerOn(2, 'inspect', '-f', '{{.State.Pid}}', ...ids)).split('\n').map(Number).filter((p) => p > 0) : [];
  // Its docker-proxy processes (children of the engine) listen on the host's address: they go too.
  // Its containerd stays, as a host's disk would: the engine finds it again when it restarts.
  const children = (await exec('pgrep', ['-P', String(pid), '-x', 'docker-proxy']).then((r) => r.stdout, () => '')).split('\n').map(Number).filter((p) => p > 0);
  for (const p of [pid, ...children, ...pids]) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Registries: how harbormaster is pointed at each, and an independent reader of what it routes.

interface Flavor {
  kind: 'etcd' | 'consul';
  /** The registry URI for host n's registrator. */
  uri(n: HostNo): string;
  env(n: HostNo): Record<string, string>;
  gatewayUri(): string;
  gatewayEnv(): Record<string, string>;
  gatewayPort: number;
  /** Routable instances of `service` (Consul: passing), read straight from the registry. */
  read(service: string): Promise<Entry[]>;
  close(): Promise<void>;
}

function etcdFlavor(): Flavor {
  const e = cluster.env;
  // The client certificate's CN is the user (harbormaster): no password token, which a member
  // forgets when it restarts.
  const client = new Etcd3({
    hosts: membersOf('etcd').map((m) => `https://${m.address}:27379`),
    credentials: { rootCertificate: readFileSync(e.ETCDCTL_CACERT), certChain: readFileSync(e.ETCDCTL_CERT), privateKey: readFileSync(e.ETCDCTL_KEY) },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 3_000 }),
  });
  const prefix = '/harbormaster';
  return {
    kind: 'etcd',
    uri: () => e.HM_CLUSTER_ETCD,
    env: () => tlsEnv,
    gatewayUri: () => e.HM_CLUSTER_ETCD,
    gatewayEnv: () => tlsEnv,
    gatewayPort: PORT.etcdGateway,
    async read(service) {
      // Serializable: a read still answers on a member cut off from its quorum.
      const key = Buffer.from(`${prefix}/${service}/`);
      const res = await withTimeout(client.kv.range({ key, range_end: prefixEnd(key), serializable: true }), 4_000, 'etcd read');
      return res.kvs.map((kv) => {
        const r = JSON.parse(kv.value.toString()) as { id: string; address: string; port: number };
        return { key: kv.key.toString(), id: r.id, address: r.address, port: r.port };
      });
    },
    async close() {
      client.close();
    },
  };
}

function consulFlavor(): Flavor {
  const e = cluster.env;
  const dispatcher = new Agent({ connect: { ca: readFileSync(e.CONSUL_CACERT), cert: readFileSync(e.CONSUL_CLIENT_CERT), key: readFileSync(e.CONSUL_CLIENT_KEY) } });
  const agentOf = (n: HostNo) => (n === 1 ? e.HM_CLUSTER_CONSUL_HOST1 : e.HM_CLUSTER_CONSUL_HOST2);
  return {
    kind: 'consul',
    uri: agentOf,
    env: () => ({ ...tlsEnv, CONSUL_HTTP_TOKEN: e.HM_CLUSTER_CONSUL_REGISTRATOR_TOKEN }),
    gatewayUri: () => agentOf(1),
    gatewayEnv: () => ({ ...tlsEnv, CONSUL_HTTP_TOKEN: e.HM_CLUSTER_CONSUL_GATEWAY_TOKEN }),
    gatewayPort: PORT.consulGateway,
    async read(service) {
      // Through host 1's agent, consistent: a server just elected serves an incomplete catalog
      // to default and stale reads until its first commit. No sample while there is no leader.
      const base = agentOf(1).replace(/^consul-tls:/, 'https:');
      const res = await request(`${base}/v1/health/service/${encodeURIComponent(service)}?passing&consistent`, {
        dispatcher,
        headers: { 'x-consul-token': e.HM_CLUSTER_CONSUL_MASTER_TOKEN },
        signal: AbortSignal.timeout(3_000),
      });
      const text = await res.body.text();
      if (res.statusCode !== 200) throw new Error(`consul health ${service}: ${res.statusCode} ${text}`);
      const list = JSON.parse(text) as Array<{ Node: { Address: string }; Service: { ID: string; Address: string; Port: number } }>;
      return list.map((x) => ({ key: x.Service.ID, id: x.Service.ID, address: x.Service.Address || x.Node.Address, port: x.Service.Port }));
    },
    async close() {
      await dispatcher.close();
    },
  };
}

/** A stale read of Consul's catalog through host 1's agent, with the master token. */
async function consulRead<T>(path: string): Promise<T> {
  const res = await tlsGet(cluster, `${member(cluster, 'host1').endpoint}/v1${path}${path.includes('?') ? '&' : '?'}stale`, { 'x-consul-token': cluster.env.HM_CLUSTER_CONSUL_MASTER_TOKEN });
  if (res.status !== 200) throw new Error(`consul ${path}: ${res.status} ${res.body}`);
  return JSON.parse(res.body) as T;
}

// ---------------------------------------------------------------------------------------------
// One deployment per scenario: two registrators, containers on both hosts, a gateway, a load.

interface Deployment {
  f: Flavor;
  service: string;
  vhost: string;
  names: { 1: string[]; 2: string[] };
  hostname: { 1: string; 2: string };
  hm: { 1: Hm; 2: Hm };
  api: { 1: number; 2: number };
  gateway: Hm;
  ids(n: HostNo, names?: string[]): string[];
  /** Start host n's registrator (again), optionally through other endpoints. */
  startRegistrator(n: HostNo, uri?: string): Hm;
}

let apiNext = PORT.api;

async function deploy(f: Flavor, tag: string, perHost = 2, opts: { uri2?: string } = {}): Promise<Deployment> {
  const t = uniq(tag);
  const service = `cf-${t}`;
  const d: Deployment = {
    f,
    service,
    vhost: `${service}.localhost`,
    names: { 1: Array.from({ length: perHost }, (_, i) => `${t}-h1-${i}`), 2: Array.from({ length: perHost }, (_, i) => `${t}-h2-${i}`) },
    hostname: { 1: `${t}-h1`, 2: `${t}-h2` },
    hm: {} as Deployment['hm'],
    api: { 1: apiNext++, 2: apiNext++ },
    gateway: undefined as unknown as Hm,
    ids: (n, names = d.names[n]) => names.map((c) => `${d.hostname[n]}:${c}:80`),
    startRegistrator(n, uri = f.uri(n)) {
      const hm = spawnHm(['register', '--hostname', d.hostname[n], ...REGISTER, '--docker', dockerHost(n), '--api', `127.0.0.1:${d.api[n]}`, uri], f.env(n));
      d.hm[n] = hm;
      return hm;
    },
  };
  d.startRegistrator(1);
  d.startRegistrator(2, opts.uri2);
  d.gateway = spawnHm(['proxy', f.gatewayUri(), '--listen', `127.0.0.1:${f.gatewayPort}`, '--api', `127.0.0.1:${f.gatewayPort + 1}`, '--retries', '2', '--connect-timeout', '1000'], f.gatewayEnv());
  await Promise.all([...d.names[1].map((c) => serve(1, c, service)), ...d.names[2].map((c) => serve(2, c, service))]);
  await waitFor('every instance in the registry', async () => sameIds(await f.read(service), [...d.ids(1), ...d.ids(2)]), 60_000, 100);
  await reachesAll(f.gatewayPort, d.vhost, [...d.names[1], ...d.names[2]], '/', 60_000);
  return d;
}

function sameIds(entries: Entry[], ids: string[]): boolean {
  const m = measure(new Set(ids), entries);
  if (m.lost === 0 && m.duplicated === 0 && m.leftBehind === 0) return true;
  // The last difference, for the timeout's message.
  throw new Error(`expected ${ids.length} instances, read ${entries.map((e) => e.id).join(', ') || 'none'} (lost ${m.lost}, duplicated ${m.duplicated}, left ${m.leftBehind})`);
}

/** Sample the registry's routable instances of the deployment's service every 100 ms. */
function observe(d: Deployment, maxMs = 180_000): Observer {
  const obs = new Observer(async () => ({ entries: await withTimeout(d.f.read(d.service), 4_000, 'registry read') }), { intervalMs: 100, maxMs });
  onTestFinished(() => obs.stop());
  return obs;
}

/** A bounded GET load through the gateway; every answer's body names the instance that served it. */
function load(d: Deployment, maxMs = 120_000): Load {
  const l = new Load(d.f.gatewayPort, d.vhost, '/', 4, maxMs).start();
  onTestFinished(() => l.stop());
  return l;
}

async function health(port: number): Promise<{ ok: boolean; lastError: string | null; components: Record<string, { ok: boolean; registry?: string; lastError?: string; heartbeatError?: string }> }> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/health`, { signal: AbortSignal.timeout(3_000) });
  return (await res.json()) as Awaited<ReturnType<typeof health>>;
}

async function metric(port: number, name: string): Promise<number> {
  return metricValue(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), name);
}

/** ms from `from` until the registry no longer routes any of `ids` (bounded). */
async function goneAfter(f: Flavor, service: string, ids: string[], from: number, timeoutMs: number): Promise<number> {
  await waitFor(`${ids.join(', ')} gone from the registry`, async () => (await f.read(service)).every((e) => !ids.includes(e.id)), timeoutMs, 50);
  return Date.now() - from;
}

/** ms from `from` until the load's answers come only from `names` (the gateway no longer sends elsewhere). */
async function routesOnly(l: Load, names: string[], from: number, timeoutMs = 30_000): Promise<number> {
  let t = 0;
  await waitFor('the gateway routing only to the expected instances', async () => {
    const before = new Map(l.bodies);
    await afterRequests(l, 40);
    const other = [...l.bodies].some(([body, n]) => !names.includes(body.trim()) && n !== (before.get(body) ?? 0));
    if (other) return false;
    t ||= Date.now();
    return true;
  }, timeoutMs, 0);
  return t - from;
}

/** What a scenario did, with times, printed if it fails. */
function timeline(): (what: string) => void {
  const t0 = Date.now();
  const lines: string[] = [];
  onTestFailed(() => console.log(`--- timeline\n${lines.join('\n')}`));
  return (what) => lines.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${what}`);
}

function printOnFailure(what: string, ...hms: Hm[]): void {
  onTestFailed(() => {
    for (const hm of hms) console.log(`--- ${what}\n${hm.dump()}`);
  });
}

const FLAVORS = [
  { name: 'etcd', make: etcdFlavor },
  { name: 'consul', make: consulFlavor },
];

// ---------------------------------------------------------------------------------------------

describe.each(FLAVORS)('cluster faults: $name', ({ name, make }) => {
  let f: Flavor;
  beforeAll(() => {
    f = make();
  });
  afterAll(async () => {
    await f?.close();
  });

  it(`host 2 lost (registrator SIGKILLed, engine and containers gone${name === 'consul' ? ', then its Consul agent' : ''}): its instances leave the routable catalog within the TTL, no GET fails, host 1 never gaps; back with no duplicate`, async () => {
    const d = await deploy(f, `cl${name[0]}`);
    printOnFailure('gateway', d.gateway);
    const obs = observe(d);
    const l = load(d);
    await afterRequests(l, 100);
    // Each restore is registered before its fault: a fault step that throws midway still leaves nothing down.
    onTestFinished(() => startMember('docker-h2'));
    d.hm[2].kill('SIGKILL');
    await loseHost2Engine();
    const lost = Date.now();
    const gone = await goneAfter(f, d.service, d.ids(2), lost, (TTL + 10) * 1000);
    const routed = await routesOnly(l, d.names[1], lost);
    let serf: { ms: number; listed: number } | undefined;
    if (f.kind === 'consul') {
      // The host's client agent dies with it: Consul's failure detector marks the node critical,
      // every check of the node with it; the agent's own reaper is gone, so its services stay listed (critical) until it returns.
      onTestFinished(() => startMember('host2'));
      await stopMember('host2', 'SIGKILL');
      const t = Date.now();
      await waitFor('serfHealth of host2 critical', async () => (await consulRead<Array<{ CheckID: string; Status: string }>>('/health/node/host2')).some((c) => c.CheckID === 'serfHealth' && c.Status === 'critical'), 30_000, 100);
      const ms = Date.now() - t;
      // Still in the catalog, not passing: only the agent's own reaper (DeregisterCriticalServiceAfter) removes them, and it is gone.
      const listed = (await consulRead<Array<{ ServiceID: string }>>(`/catalog/service/${d.service}`)).filter((x) => d.ids(2).includes(x.ServiceID)).length;
      serf = { ms, listed };
    }
    await afterRequests(l, 200);
    const failedWhileLost = [...l.failures];

    // The host comes back: engine (its containers restart by policy), agent, registrator.
    const back = Date.now();
    await startMember('docker-h2');
    if (f.kind === 'consul') await startMember('host2');
    d.startRegistrator(2);
    await waitFor('host 2 back in the registry', async () => sameIds(await f.read(d.service), [...d.ids(1), ...d.ids(2)]), 90_000, 100);
    const converge = Date.now() - back;
    await reachesAll(f.gatewayPort, d.vhost, [...d.names[1], ...d.names[2]], '/', 30_000);
    await sleep(500);
    const m = measure(new Set([...d.ids(1), ...d.ids(2)]), await f.read(d.service));
    await l.stop();
    await obs.stop();
    const host1 = continuity(obs, d.ids(1), lost);
    reportFault(`cluster ${name}: host 2 lost${serf ? ' with its Consul agent' : ''} (TTL ${TTL}s), then back`, {
      converge,
      ...m,
      goneAfterMs: gone,
      gatewayOffHost2Ms: routed,
      ...(serf ? { serfCriticalMs: serf.ms, listedCritical: serf.listed } : {}),
      requests: l.total,
      failedRequests: l.failures.length,
      host1Gaps: host1.gaps,
    });
    expect(failedWhileLost).toEqual([]);
    expect(l.failures).toEqual([]);
    expect(gone).toBeLessThanOrEqual(TTL * 1000 + EXPIRY_SLACK_MS);
    expect(host1.gaps).toBe(0);
    expect(host1.samplesDuplicated).toBe(0);
    if (serf) expect(serf.listed).toBe(d.ids(2).length);
    expect(m).toEqual({ lost: 0, duplicated: 0, leftBehind: 0 });
  }, 180_000);

  it('registry members lost one at a time under load (leader, then a follower), then quorum lost and back: entries never gap, no GET fails, registrations go on; without quorum writes fail loudly and the gateway keeps its last catalog', async () => {
    const step = timeline();
    const d = await deploy(f, `cm${name[0]}`);
    step('deployed');
    printOnFailure('registrator host 1', d.hm[1]);
    printOnFailure('gateway', d.gateway);
    const obs = observe(d);
    const l = load(d, 170_000);
    await afterRequests(l, 100);
    const members = membersOf(f.kind === 'etcd' ? 'etcd' : 'consul-server').map((m) => m.name);
    const leaderOf = () => waitFor('a leader', () => (f.kind === 'etcd' ? etcdLeader(cluster) : consulLeader(cluster)), 30_000, 200);
    const t0 = Date.now();
    const steps: string[] = [];
    const registeredMs: number[] = [];
    const started: string[] = [];

    // One member down at a time: the leader first, then a follower.
    for (const role of ['leader', 'follower'] as const) {
      const leader = await leaderOf();
      // The follower is another member than the leader lost before, if it can be.
      const victim = role === 'leader' ? leader : (members.find((m) => m !== leader && !steps.some((x) => x.endsWith(` ${m} down`))) ?? members.find((m) => m !== leader)!);
      onTestFinished(() => startMember(victim));
      await stopMember(victim, f.kind === 'etcd' ? 'SIGKILL' : 'SIGTERM');
      steps.push(`${role} ${victim} down`);
      step(`${role} ${victim} down`);
      // A registration while the member is down: routed by the gateway.
      const c = `${d.names[1][0].replace(/-0$/, '')}-${role}`;
      const at = Date.now();
      await serve(1, c, d.service);
      started.push(c);
      await reachesAll(f.gatewayPort, d.vhost, [c], '/', 30_000);
      registeredMs.push(Date.now() - at);
      step(`${c} routed`);
      // Heartbeats go on past the TTL with the member down.
      await sleep((TTL + 1) * 1000);
      await startMember(victim);
      await waitHealthy(f.kind);
      step(`${victim} back, cluster healthy`);
    }
    const expected = [...d.ids(1), ...d.ids(1, started), ...d.ids(2)];
    const single = continuity(obs, expected.filter((id) => !started.some((c) => id.includes(`:${c}:`))), t0);

    // Quorum lost: two members down at once.
    const leader = await leaderOf();
    const downs = [members.find((m) => m !== leader)!, leader];
    const failuresBefore = await metric(d.api[1], 'harbormaster_heartbeat_failures_total');
    const logsBefore = d.hm[1].logs.length;
    for (const m of downs) {
      onTestFinished(() => startMember(m));
      await stopMember(m, f.kind === 'etcd' ? 'SIGKILL' : 'SIGTERM');
    }
    const qLost = Date.now();
    step(`quorum lost: ${downs.join(', ')} down`);
    const sick = await waitFor('the registrator reports the registry failing', async () => {
      const h = await health(d.api[1]);
      return !h.ok && h.components.registry && !h.components.registry.ok ? h : undefined;
    }, 30_000, 200);
    const sickMs = Date.now() - qLost;
    step('registrator reports the registry failing');
    const failuresDuring = (await metric(d.api[1], 'harbormaster_heartbeat_failures_total')) - failuresBefore;
    const errorLines = d.hm[1].logs.slice(logsBefore).filter((x) => x.level >= 50 && String(x.msg).includes(f.kind === 'etcd' ? 'etcd' : 'consul'));
    // The gateway goes on routing with what it knew, past the TTL.
    const reqBefore = l.total;
    await sleep(2 * TTL * 1000);
    await afterRequests(l, 50);
    const servedNoQuorum = l.total - reqBefore;
    step('restarting the two members');
    await Promise.all(downs.map((m) => startMember(m)));
    await waitHealthy(f.kind);
    const healed = Date.now();
    step('quorum back');
    await waitFor('everything in the registry once quorum is back', async () => sameIds(await f.read(d.service), expected), 60_000, 100);
    const converge = Date.now() - healed;
    step('converged');
    await waitFor('the registrator healthy again', async () => (await health(d.api[1])).ok, 60_000, 200);
    await sleep(500);
    const m = measure(new Set(expected), await f.read(d.service));
    await l.stop();
    await obs.stop();
    const all = continuity(obs, expected.filter((id) => !started.some((c) => id.includes(`:${c}:`))), t0);
    reportFault(`cluster ${name}: ${steps.join(', ')}, then quorum lost ${((healed - qLost) / 1000).toFixed(1)}s (TTL ${TTL}s)`, {
      converge,
      ...m,
      gapsOneDown: single.gaps,
      gapsAll: all.gaps,
      registeredWhileDownMs: registeredMs.join('/'),
      unhealthyAfterMs: sickMs,
      heartbeatFailures: failuresDuring,
      errorLines: errorLines.length,
      requestsNoQuorum: servedNoQuorum,
      requests: l.total,
      failedRequests: l.failures.length,
    });
    expect(single.gaps).toBe(0);
    expect(all.gaps).toBe(0);
    expect(l.failures).toEqual([]);
    expect(servedNoQuorum).toBeGreaterThan(0);
    expect(sick.components.registry.registry).toBeTruthy();
    expect(errorLines.length).toBeGreaterThanOrEqual(1);
    expect(errorLines.length).toBeLessThanOrEqual(3);
    expect(m).toEqual({ lost: 0, duplicated: 0, leftBehind: 0 });
  }, 240_000);

  it(`host 2 partitioned from the cluster for 2×TTL, then healed: its entries lapse after the TTL (never before), converge after the heal, host 1 untouched`, async () => {
    let proxies: FaultProxy[] = [];
    let d: Deployment;
    if (f.kind === 'etcd') {
      // Host 2's registrator reaches each member through its own fault proxy.
      proxies = await Promise.all(membersOf('etcd').map((m, i) => FaultProxy.start({ host: m.address, port: 27379 }, PORT.etcdFault + i)));
      onTestFinished(async () => {
        for (const p of proxies) await p.close();
      });
      d = await deploy(f, 'cpe', 2, { uri2: `etcd-tls://${proxies.map((p) => `localhost:${p.port}`).join(',')}/harbormaster` });
    } else d = await deploy(f, 'cpc');
    printOnFailure('registrator host 2', d.hm[2]);
    const obs = observe(d);
    await obs.waitFor((ids) => ids.size >= 4);
    const cut = Date.now();
    if (f.kind === 'etcd') for (const p of proxies) p.blackhole();
    else {
      // heal() deletes what is there: registered first, it also undoes a partition() that failed after some rules.
      onTestFinished(() => heal(member(cluster, 'host2').address));
      await partition(member(cluster, 'host2').address);
    }
    const lapsed = await goneAfter(f, d.service, d.ids(2), cut, (TTL + 20) * 1000);
    await sleep(Math.max(0, 2 * TTL * 1000 - (Date.now() - cut)));
    if (f.kind === 'etcd') for (const p of proxies) p.pass();
    else await heal(member(cluster, 'host2').address);
    const healed = Date.now();
    const expected = [...d.ids(1), ...d.ids(2)];
    await waitFor('host 2 back after the heal', async () => sameIds(await f.read(d.service), expected), 60_000, 50);
    const converge = Date.now() - healed;
    await sleep(500);
    const m = measure(new Set(expected), await f.read(d.service));
    await obs.stop();
    const host1 = continuity(obs, d.ids(1), cut);
    const host2 = continuity(obs, d.ids(2), cut);
    reportFault(`cluster ${name}: host 2 partitioned ${((healed - cut) / 1000).toFixed(1)}s (TTL ${TTL}s), then healed`, {
      converge,
      ...m,
      lapsedAfterMs: lapsed,
      host2FirstGapAfterMs: host2.firstGapAfterMs,
      host1Gaps: host1.gaps,
    });
    expect(m).toEqual({ lost: 0, duplicated: 0, leftBehind: 0 });
    expect(host1.gaps).toBe(0);
    // The TTL's promise: nothing lapses before it (the last heartbeat was at most a period before the cut).
    expect(host2.firstGapAfterMs).toBeGreaterThanOrEqual((TTL - 1) * 1000 - 250);
  }, 180_000);
});

describe('cluster faults: etcd leader churn (etcd resets a lease to its full TTL on every leader election)', () => {
  it(`a dead host's entries still disappear, within (TTL + election timeout) × (elections + 1): leader moved every TTL/2 for 4 elections`, async () => {
    const f = etcdFlavor();
    onTestFinished(() => f.close());
    const t = uniq('cle');
    const service = `cf-${t}`;
    const hostname = `${t}-h2`;
    const names = [`${t}-h2-0`, `${t}-h2-1`];
    const hm = spawnHm(['register', '--hostname', hostname, ...REGISTER, '--docker', dockerHost(2), f.uri(2)], f.env(2));
    await Promise.all(names.map((c) => serve(2, c, service)));
    const ids = names.map((c) => `${hostname}:${c}:80`);
    await waitFor('registered', async () => sameIds(await f.read(service), ids), 60_000, 100);
    hm.kill('SIGKILL');
    await hm.exited;
    const dead = Date.now();
    const elections: number[] = [];
    const ELECTIONS = 4;
    for (let i = 0; i < ELECTIONS; i++) {
      await sleep((TTL * 1000) / 2);
      if ((await f.read(service)).length === 0) break;
      await moveEtcdLeader();
      elections.push(Date.now() - dead);
    }
    // A new leader gives every lease its full TTL plus the election timeout (etcd's lessor Promote).
    const args = membersOf('etcd')[0].args;
    const electionMs = args.includes('--election-timeout') ? Number(args[args.indexOf('--election-timeout') + 1]) : 1000;
    const gone = await goneAfter(f, service, ids, dead, ((TTL + electionMs / 1000) * (ELECTIONS + 2) + 5) * 1000);
    const lastElection = elections.at(-1) ?? 0;
    const bound = (TTL * 1000 + electionMs) * (elections.length + 1);
    reportFault(`cluster etcd: dead host under leader churn (TTL ${TTL}s, leader moved every ${TTL / 2}s)`, {
      converge: gone,
      lost: 0,
      duplicated: 0,
      left: 0,
      goneAfterMs: gone,
      elections: elections.length,
      lastElectionAtMs: lastElection,
      electionTimeoutMs: electionMs,
      boundMs: bound,
    });
    // Past a TTL: the elections did reset the lease (else this test shows nothing).
    expect(gone).toBeGreaterThan(TTL * 1000 + EXPIRY_SLACK_MS);
    // Gone within TTL + election timeout of the last election, and so within (TTL + election timeout) × (elections + 1).
    expect(gone).toBeLessThanOrEqual(lastElection + TTL * 1000 + electionMs + EXPIRY_SLACK_MS);
    expect(gone).toBeLessThanOrEqual(bound + EXPIRY_SLACK_MS);
  }, 180_000);
});
