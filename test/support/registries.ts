// Direct reads of the real registries (independent of harbormaster's own backends), and
// private Consul / etcd instances for tests that kill and restart them.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
    return Object.fromEntries(Object.entries(kv).map(([k, v]) => [k, JSON.parse(v) as Record<string, unknown>]));
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

/** A restartable process on private ports. */
export class Daemon {
  private child?: ChildProcess;
  constructor(
    private readonly cmd: string,
    private readonly args: string[],
    private readonly ready: () => Promise<boolean>,
  ) {}

  async start(): Promise<void> {
    this.child = spawn(this.cmd, this.args, { stdio: 'ignore' });
    await waitFor(`${this.cmd} to answer`, () => this.ready().catch(() => false), 30_000, 200);
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill(signal);
    await exited;
  }
}

/** A Consul dev agent of its own (dev mode keeps everything in memory: a restart loses all). */
export function privateConsul(base: number): Daemon & { uri: string; httpPort: number } {
  const d = new Daemon(
    consulBinary(),
    ['agent', '-dev', '-client', '127.0.0.1', '-bind', '127.0.0.1', '-http-port', String(base), '-dns-port', String(base + 1),
      '-serf-lan-port', String(base + 2), '-serf-wan-port', String(base + 3), '-server-port', String(base + 4), '-grpc-port', String(base + 5),
      '-node', `hm-private-${base}`],
    async () => (await fetch(`http://127.0.0.1:${base}/v1/status/leader`).then((r) => r.text())).includes(':'),
  );
  return Object.assign(d, { uri: `consul://127.0.0.1:${base}`, httpPort: base });
}

/** An etcd of its own with a data directory that survives its restarts. */
export function privateEtcd(base: number): Daemon & { endpoint: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'hm-etcd-'));
  const client = `http://127.0.0.1:${base}`;
  const peer = `http://127.0.0.1:${base + 1}`;
  const d = new Daemon(
    'etcd',
    ['--name', 'p', '--data-dir', dir, '--listen-client-urls', client, '--advertise-client-urls', client, '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer, '--initial-cluster', `p=${peer}`, '--enable-v2=true'],
    async () => (await fetch(`${client}/health`)).ok,
  );
  return Object.assign(d, { endpoint: `127.0.0.1:${base}`, cleanup: () => rmSync(dir, { recursive: true, force: true }) });
}
