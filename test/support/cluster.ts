// The secured multi-host cluster of scripts/cluster.sh (etcd 3.4 e1-e3, Consul 1.8 servers c1-c3
// and client agents host1/host2, host 2's dockerd): bring it up once per test process, control its
// members, find leaders, and give a harbormaster process the environment of a host.
import { execFile, spawn } from 'node:child_process';
import { openSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { waitFor } from './wait.js';

const exec = promisify(execFile);
export const CLUSTER_SCRIPT = fileURLToPath(new URL('../../scripts/cluster.sh', import.meta.url));
export const CLUSTER_STATE = process.env.HM_CLUSTER_STATE ?? '/tmp/harbormaster-cluster';

export type MemberKind = 'etcd' | 'consul-server' | 'consul-client' | 'dockerd';

export interface ClusterMember {
  name: string;
  kind: MemberKind;
  address: string;
  pidfile: string;
  log: string;
  dataDir: string;
  /** https://addr:port for etcd and Consul, the unix:// socket for dockerd. */
  endpoint: string;
  /** The exact command line that starts it again. */
  args: string[];
}

export interface Cluster {
  state: string;
  net: string;
  /** What `$STATE/env` exports (HM_CLUSTER_*, ETCDCTL_*, CONSUL_*). */
  env: Record<string, string>;
  members: ClusterMember[];
}

let up: Promise<Cluster> | undefined;

/** `cluster.sh up` (idempotent: it reuses what answers), then the parsed cluster.json; once per process. */
export function ensureCluster(): Promise<Cluster> {
  up ??= (async () => {
    try {
      await exec('bash', [CLUSTER_SCRIPT, 'up'], { timeout: 240_000, env: { ...process.env, HM_CLUSTER_STATE: CLUSTER_STATE } });
    } catch (err) {
      const e = err as Error & { stderr?: string };
      throw new Error(`scripts/cluster.sh up failed: ${(e.stderr || e.message).trim()}`);
    }
    return readCluster();
  })();
  up.catch(() => (up = undefined));
  return up;
}

export function readCluster(state = CLUSTER_STATE): Cluster {
  return JSON.parse(readFileSync(`${state}/cluster.json`, 'utf8')) as Cluster;
}

export function member(c: Cluster, name: string): ClusterMember {
  const m = c.members.find((x) => x.name === name);
  if (!m) throw new Error(`no cluster member "${name}" (members: ${c.members.map((x) => x.name).join(', ')})`);
  return m;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The member's pid if its process runs. */
export function memberPid(m: ClusterMember): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(m.pidfile, 'utf8').trim());
  } catch {
    return undefined;
  }
  return pid > 0 && alive(pid) ? pid : undefined;
}

/** Signal the member (SIGTERM by default) and wait until its process is gone. */
export async function stopMember(name: string, signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 60_000): Promise<void> {
  const m = member(await ensureCluster(), name);
  const pid = memberPid(m);
  if (pid === undefined) return;
  process.kill(pid, signal);
  await waitFor(`cluster member ${name} (pid ${pid}) to exit after ${signal}`, () => !alive(pid), timeoutMs, 100);
}

export function killMember(name: string): Promise<void> {
  return stopMember(name, 'SIGKILL');
}

/** Start the member again from its recorded command line (its data is kept) and wait until it answers. */
export async function startMember(name: string, timeoutMs = 60_000): Promise<void> {
  const c = await ensureCluster();
  const m = member(c, name);
  if (memberPid(m) === undefined) {
    const [cmd, ...args] = m.args;
    const log = openSync(m.log, 'a');
    // detached: a session of its own, as cluster.sh starts it (setsid), so it outlives the test process.
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', log, log] });
    child.unref();
    // dockerd writes its own pid file (and refuses to start over a live one).
    if (m.kind !== 'dockerd') writeFileSync(m.pidfile, `${child.pid}\n`);
  }
  await waitFor(`cluster member ${name} to answer`, () => answers(c, m), timeoutMs, 200);
}

/** One GET over TLS with the root client certificate (admin use). */
export function tlsGet(c: Cluster, url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, {
      ca: readFileSync(c.env.ETCDCTL_CACERT),
      cert: readFileSync(c.env.HM_CLUSTER_ETCD_ROOT_CERT),
      key: readFileSync(c.env.HM_CLUSTER_ETCD_ROOT_KEY),
      headers,
      agent: false,
      timeout: 5_000,
    }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}

async function answers(c: Cluster, m: ClusterMember): Promise<boolean> {
  switch (m.kind) {
    case 'etcd':
      return (await tlsGet(c, `${m.endpoint}/version`)).status === 200;
    case 'consul-server':
    case 'consul-client':
      return (await tlsGet(c, `${m.endpoint}/v1/status/leader`)).status === 200;
    case 'dockerd':
      return exec('docker', ['-H', m.endpoint, 'info'], { timeout: 10_000 }).then(() => true, () => false);
  }
}

/** etcdctl as root (certificate CN=root), against the given members (default: all). */
export async function etcdctlRoot(c: Cluster, args: string[], members?: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  const endpoints = (members ? members.map((n) => member(c, n)) : c.members.filter((m) => m.kind === 'etcd')).map((m) => m.endpoint);
  // Not the harbormaster user's ETCDCTL_* that a test may have in its environment: etcdctl refuses a flag and its variable together.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCDCTL_')));
  const flags = ['--endpoints', endpoints.join(','), '--cacert', c.env.ETCDCTL_CACERT, '--cert', c.env.HM_CLUSTER_ETCD_ROOT_CERT, '--key', c.env.HM_CLUSTER_ETCD_ROOT_KEY, '--dial-timeout', '3s', '--command-timeout', '5s'];
  try {
    const { stdout, stderr } = await exec('etcdctl', [...flags, ...args], { env, timeout: 30_000 });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string; code?: number };
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? e.message, code: typeof e.code === 'number' ? e.code : 1 };
  }
}

/** The etcd member that leads now (asked of every member that answers), or undefined while none does. */
export async function etcdLeader(c?: Cluster): Promise<string | undefined> {
  c ??= await ensureCluster();
  const etcds = c.members.filter((m) => m.kind === 'etcd');
  const { stdout } = await etcdctlRoot(c, ['endpoint', 'status', '-w', 'json']);
  if (!stdout.trim()) return undefined;
  // Member ids are 64-bit: kept as strings, not rounded to doubles.
  const rows = JSON.parse(stdout.replace(/:\s*(\d{15,})/g, ':"$1"')) as { Endpoint: string; Status: { header: { member_id: string }; leader: string } }[];
  const leaderRow = rows.find((r) => r.Status.header.member_id === r.Status.leader);
  return leaderRow ? etcds.find((m) => m.endpoint === leaderRow.Endpoint)?.name : undefined;
}

/** The Consul server that leads now, or undefined while none does (or no server answers). */
export async function consulLeader(c?: Cluster): Promise<string | undefined> {
  c ??= await ensureCluster();
  for (const m of c.members.filter((x) => x.kind === 'consul-server')) {
    const res = await tlsGet(c, `${m.endpoint}/v1/status/leader`).catch(() => undefined);
    if (res?.status !== 200) continue;
    const addr = (JSON.parse(res.body) as string).replace(/:\d+$/, '');
    if (!addr) return undefined;
    return c.members.find((x) => x.kind === 'consul-server' && x.address === addr)?.name;
  }
  return undefined;
}

export type ClusterHost = 'host1' | 'host2';

export interface HostTarget {
  /** The registry URI to give harbormaster. */
  uri: string;
  /** Its environment: DOCKER_HOST of the host, and the registry's TLS material and credentials. */
  env: Record<string, string>;
  /** The address this host's containers publish on (for register --ip). */
  ip: string;
}

/**
 * What a harbormaster process on host1 or host2 needs. etcd: the members' list (etcd-tls) under
 * `prefix` (below /harbormaster, the harbormaster user's range), as user harbormaster with the
 * harbormaster client certificate. Consul: the host's own client agent, with the registrator's
 * token (or the gateway's, for proxy/render/services).
 */
export function hostTarget(c: Cluster, host: ClusterHost, registry: 'etcd' | 'consul', o: { prefix?: string; token?: 'registrator' | 'gateway' } = {}): HostTarget {
  const e = c.env;
  const docker = host === 'host1' ? e.HM_CLUSTER_DOCKER_HOST1 : e.HM_CLUSTER_DOCKER_HOST2;
  const ip = host === 'host1' ? e.HM_CLUSTER_HOST1_IP : e.HM_CLUSTER_HOST2_IP;
  if (registry === 'etcd') {
    const prefix = o.prefix ? `/${o.prefix.replace(/^\/+/, '')}` : '';
    return {
      uri: `${e.HM_CLUSTER_ETCD}${prefix}`,
      env: { DOCKER_HOST: docker, ETCDCTL_CACERT: e.ETCDCTL_CACERT, ETCDCTL_CERT: e.ETCDCTL_CERT, ETCDCTL_KEY: e.ETCDCTL_KEY, ETCDCTL_USER: e.ETCDCTL_USER },
      ip,
    };
  }
  const token = o.token === 'gateway' ? e.HM_CLUSTER_CONSUL_GATEWAY_TOKEN : e.HM_CLUSTER_CONSUL_REGISTRATOR_TOKEN;
  return {
    uri: host === 'host1' ? e.HM_CLUSTER_CONSUL_HOST1 : e.HM_CLUSTER_CONSUL_HOST2,
    env: { DOCKER_HOST: docker, CONSUL_CACERT: e.CONSUL_CACERT, CONSUL_CLIENT_CERT: e.CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY: e.CONSUL_CLIENT_KEY, CONSUL_HTTP_TOKEN: token },
    ip,
  };
}

/** Wait until both etcd and Consul have a leader again (after a member was stopped or started). */
export async function waitForLeaders(c: Cluster, timeoutMs = 60_000): Promise<{ etcd: string; consul: string }> {
  const etcd = await waitFor('an etcd leader', () => etcdLeader(c), timeoutMs, 250);
  const consul = await waitFor('a Consul leader', () => consulLeader(c), timeoutMs, 250);
  return { etcd, consul };
}
