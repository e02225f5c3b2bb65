// Direct reads of the real registries (independent of harbormaster's own backends), and
// private Consul / etcd instances for tests that kill and restart them.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { waitFor } from './wait.js';

export const CONSUL = 'consul://127.0.0.1:8500';
export const ETCD_ENDPOINT = '127.0.0.1:2379';
const STATE = process.env.HM_TEST_STATE ?? '/tmp/harbormaster-test';

export interface ConsulService {
  ID: string;
  Service: string;
  Address: string;
  Port: number;
  Tags: string[];
  Meta: Record<string, string>;
}

export interface ConsulCheck {
  CheckID: string;
  Status: string;
  ServiceID: string;
  Type?: string;
}

export async function consulGet<T>(path: string, port = 8500): Promise<T> {
  const res = await fetch(`http://127.0.0.1:${port}/v1${path}`);
  if (!res.ok) throw new Error(`consul ${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

export async function consulServices(host: string, port = 8500): Promise<Record<string, ConsulService>> {
  const all = await consulGet<Record<string, ConsulService>>('/agent/services', port);
  return Object.fromEntries(Object.entries(all).filter(([, s]) => s.Meta?.hm_host === host));
}

export async function consulChecks(port = 8500): Promise<Record<string, ConsulCheck>> {
  return consulGet<Record<string, ConsulCheck>>('/agent/checks', port);
}

export async function etcdRead(prefix: string, endpoint = ETCD_ENDPOINT): Promise<Record<string, Record<string, unknown>>> {
  const client = new Etcd3({ hosts: `http://${endpoint}` });
  try {
    const kv = await client.getAll().prefix(`${prefix}/`).strings();
    // <prefix>/_hosts/… is harbormaster's index of each host's entries, not instances.
    return Object.fromEntries(Object.entries(kv).filter(([k]) => !k.startsWith(`${prefix}/_`)).map(([k, v]) => [k, JSON.parse(v) as Record<string, unknown>]));
  } finally {
    client.close();
  }
}

export async function etcd2Read(prefix: string, endpoint = ETCD_ENDPOINT): Promise<Record<string, Record<string, unknown>>> {
  const res = await fetch(`http://${endpoint}/v2/keys${prefix}?recursive=true`);
  if (res.status === 404) return {};
  const body = (await res.json()) as { node: V2Node };
  const out: Record<string, Record<string, unknown>> = {};
  const walk = (n: V2Node) => {
    if (n.key?.startsWith(`${prefix}/_`)) return;
    if (n.dir) (n.nodes ?? []).forEach(walk);
    else if (n.value) out[n.key] = { ...(JSON.parse(n.value) as Record<string, unknown>), ttl: n.ttl };
  };
  walk(body.node);
  return out;
}

interface V2Node {
  key: string;
  value?: string;
  dir?: boolean;
  ttl?: number;
  nodes?: V2Node[];
}

function consulBinary(): string {
  try {
    return readFileSync(join(STATE, 'consul-path'), 'utf8').trim();
  } catch {
    throw new Error(`consul binary unknown: run scripts/test-env.sh first (${STATE}/consul-path is missing)`);
  }
}

// A SIGSTOPped child outlives us stopped, holding its ports: resume any left so when we exit.
const stopped = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of stopped) c.kill('SIGCONT');
});

/** A restartable process on private ports, which can also be frozen (SIGSTOP) and thawed. */
export class Daemon {
  private child?: ChildProcess;
  constructor(
    private readonly cmd: string,
    private readonly args: string[],
    private readonly ready: () => Promise<boolean>,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** The process exists (stopped or not). */
  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  get paused(): boolean {
    return !!this.child && stopped.has(this.child);
  }

  async start(): Promise<void> {
    const c = spawn(this.cmd, this.args, { stdio: 'ignore' });
    this.child = c;
    c.once('exit', () => stopped.delete(c));
    try {
      await waitFor(`${this.cmd} to answer`, () => this.ready().catch(() => false), 30_000, 200);
    } catch (err) {
      // Not left running on its ports, to fail the next start as well.
      await this.kill();
      throw err;
    }
  }

  /** Freeze the process: its sockets stay open and connections are accepted by the kernel, but nothing answers. */
  pause(): void {
    const c = this.child;
    if (!c || !this.running || stopped.has(c)) return;
    c.kill('SIGSTOP');
    stopped.add(c);
  }

  resume(): void {
    const c = this.child;
    if (!c || !stopped.has(c)) return;
    stopped.delete(c);
    c.kill('SIGCONT');
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const c = this.child;
    // No pid: it never started (spawn failed), so there is nothing to wait for.
    if (!c || c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill(signal);
    // A stopped process acts on its signal only once it runs again; sent after the signal, so
    // a paused daemon never gets to answer another request first.
    this.resume();
    await exited;
  }
}

function consulArgs(base: number, extra: string[] = []): string[] {
  return ['agent', '-dev', '-client', '127.0.0.1', '-bind', '127.0.0.1', '-http-port', String(base), '-dns-port', String(base + 1),
    '-serf-lan-port', String(base + 2), '-serf-wan-port', String(base + 3), '-server-port', String(base + 4), '-grpc-port', String(base + 5),
    '-node', `hm-private-${base}`, ...extra];
}

const consulLeader = (port: number) => async () => (await fetch(`http://127.0.0.1:${port}/v1/status/leader`).then((r) => r.text())).includes(':');

/** A Consul dev agent of its own (dev mode keeps everything in memory: a restart loses all). */
export function privateConsul(base: number): Daemon & { uri: string; httpPort: number } {
  const d = new Daemon(consulBinary(), consulArgs(base), consulLeader(base));
  return Object.assign(d, { uri: `consul://127.0.0.1:${base}`, httpPort: base });
}

/** What a registrator needs: write any service (and its checks), read nodes and the agent. */
export const REGISTRATOR_POLICY = `service_prefix "" { policy = "write" }
node_prefix "" { policy = "read" }
agent_prefix "" { policy = "read" }`;

export interface AclToken {
  secretId: string;
  accessorId: string;
}

/**
 * A Consul dev agent with ACLs on and everything denied by default. The master token is also
 * the agent's own token, so its anti-entropy sync into the catalog is allowed.
 */
export class AclConsul extends Daemon {
  readonly masterToken: string;
  readonly uri: string;
  readonly httpPort: number;

  constructor(base: number, extra: string[] = []) {
    const token = randomUUID();
    super(
      consulBinary(),
      consulArgs(base, [
        '-hcl', `acl { enabled = true, default_policy = "deny", enable_token_persistence = false, tokens { master = "${token}", agent = "${token}" } }`,
        '-hcl', 'enable_local_script_checks = true',
        ...extra,
      ]),
      async () => (await consulLeader(base)()) && (await fetch(`http://127.0.0.1:${base}/v1/acl/token/self`, { headers: { 'X-Consul-Token': token } })).ok,
    );
    this.masterToken = token;
    this.uri = `consul://127.0.0.1:${base}`;
    this.httpPort = base;
  }

  /** A call to the HTTP API with the master token (or `token`); throws on a non-2xx answer. */
  async api<T>(method: string, path: string, body?: unknown, token = this.masterToken): Promise<T> {
    const res = await fetch(`http://127.0.0.1:${this.httpPort}/v1${path}`, {
      method,
      headers: { 'X-Consul-Token': token },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`consul ${method} ${path}: ${res.status} ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** Returns the policy's ID. */
  async createPolicy(name: string, rules: string): Promise<string> {
    return (await this.api<{ ID: string }>('PUT', '/acl/policy', { Name: name, Rules: rules })).ID;
  }

  async createToken(policyNames: string[], description = 'harbormaster test'): Promise<AclToken> {
    const t = await this.api<{ AccessorID: string; SecretID: string }>('PUT', '/acl/token', { Description: description, Policies: policyNames.map((Name) => ({ Name })) });
    return { secretId: t.SecretID, accessorId: t.AccessorID };
  }

  /** Replace a token's policies; an empty list leaves it allowed nothing beyond the default. */
  async setTokenPolicies(accessorId: string, policyNames: string[]): Promise<void> {
    await this.api('PUT', `/acl/token/${accessorId}`, { AccessorID: accessorId, Policies: policyNames.map((Name) => ({ Name })) });
  }
}

export function privateConsulAcl(base: number): AclConsul {
  return new AclConsul(base);
}

/** An etcd of its own with a data directory that survives its restarts. */
export function privateEtcd(base: number, extra: string[] = []): Daemon & { endpoint: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'hm-etcd-'));
  const client = `http://127.0.0.1:${base}`;
  const peer = `http://127.0.0.1:${base + 1}`;
  const d = new Daemon(
    'etcd',
    ['--name', 'p', '--data-dir', dir, '--listen-client-urls', client, '--advertise-client-urls', client, '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer, '--initial-cluster', `p=${peer}`, '--enable-v2=true', ...extra],
    async () => (await fetch(`${client}/health`)).ok,
  );
  return Object.assign(d, { endpoint: `127.0.0.1:${base}`, cleanup: () => rmSync(dir, { recursive: true, force: true }) });
}

export interface FillResult {
  count: number;
  ms: number;
}

/** Key under the prefix and JSON value of entry i, as another host's registrator might write them. */
export const foreignKey = (i: number) => `foreign-svc-${i % 50}/foreign-host:c${i}:80`;
export const foreignValue = (i: number) => JSON.stringify({
  id: `foreign-host:c${i}:80`, name: `foreign-svc-${i % 50}`, address: '10.9.0.1', port: 10000 + (i % 50000),
  protocol: 'tcp', tags: [], meta: {}, host: 'foreign-host', status: 'passing',
});

/** Write `count` entries `<prefix>/<makeKey(i)>` = makeValue(i) through etcd v3, 128 puts per transaction. */
export async function fillEtcd(endpoint: string, prefix: string, count: number, makeKey = foreignKey, makeValue = foreignValue): Promise<FillResult> {
  const client = new Etcd3({ hosts: `http://${endpoint}` });
  const t0 = Date.now();
  try {
    let next = 0;
    const worker = async () => {
      while (next < count) {
        const from = next;
        next = Math.min(count, next + 128);
        const success = [];
        for (let i = from; i < next; i++) success.push({ request_put: { key: Buffer.from(`${prefix}/${makeKey(i)}`), value: Buffer.from(makeValue(i)) } });
        await client.kv.txn({ success }, { deadline: Date.now() + 30_000 });
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    return { count, ms: Date.now() - t0 };
  } finally {
    client.close();
  }
}

/**
 * The same through the etcd v2 API, one PUT per entry, `concurrency` at a time. node:http on
 * kept-alive sockets: about five times the rate fetch() reaches here.
 */
export async function fillEtcd2(endpoint: string, prefix: string, count: number, makeKey = foreignKey, makeValue = foreignValue, concurrency = 64): Promise<FillResult> {
  const [host, port] = [endpoint.slice(0, endpoint.lastIndexOf(':')), Number(endpoint.slice(endpoint.lastIndexOf(':') + 1))];
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const put = (path: string, body: string) => new Promise<void>((resolve, reject) => {
    const req = http.request({ host, port, path, method: 'PUT', agent, timeout: 30_000,
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      res.on('end', () => ((res.statusCode ?? 0) < 300 ? resolve() : reject(new Error(`etcd2 PUT ${path}: ${res.statusCode} ${text}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`etcd2 PUT ${path}: no answer within 30 s`)));
    req.on('error', reject);
    req.end(body);
  });
  const t0 = Date.now();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      await put(`/v2/keys${prefix}/${makeKey(i)}`, new URLSearchParams({ value: makeValue(i) }).toString());
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
    return { count, ms: Date.now() - t0 };
  } finally {
    agent.destroy();
  }
}
