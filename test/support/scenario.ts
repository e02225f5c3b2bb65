// Building blocks of the fault scenarios: many containers at once, the instance ids a host
// should have, a read of what one registry holds for a host (straight from the engine, not
// through any fault proxy), and waiting for it to converge.
import { onTestFinished } from 'vitest';
import { Etcd3 } from 'etcd3';
import { removeContainers, run, type RunOptions } from './docker.js';
import { type Entry, type Gap, measure, type Measure, Observer } from './observer.js';
import { waitFor } from './wait.js';

/** Start containers `<prefix>0…<prefix>{n-1}`, `concurrency` at a time; removed when the test ends. */
export async function runMany(prefix: string, n: number, o: RunOptions | ((i: number) => RunOptions), concurrency = 8): Promise<string[]> {
  onTestFinished(() => removeContainers(prefix));
  const names = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await run(names[i], typeof o === 'function' ? o(i) : o);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return names;
}

/** The default ids of containers registered by host `host` (port 80/tcp). */
export function idsOf(host: string, names: string[], port = 80): Set<string> {
  return new Set(names.map((n) => `${host}:${n}:${port}`));
}

export type RegistryKind = 'consul' | 'etcd' | 'etcd2';

/** What a registry holds for one host right now: entries, and for Consul whether every heartbeat check passes. */
export interface Holding {
  entries: Entry[];
  /** Consul: ids whose checks are not all passing. */
  notPassing: string[];
}

export interface RegistryReader {
  kind: RegistryKind;
  read(): Promise<Holding>;
  close(): void;
}

/**
 * Reads one host's entries straight from the engine (a private Consul agent or etcd). A
 * registrator registers every container of the Docker host, other tests' too: only ids of
 * this test's containers count (`<host>:<host>-…` or an explicit SERVICE_ID `<host>-…`).
 */
export function reader(kind: RegistryKind, endpoint: string, prefix: string, host: string, token?: string): RegistryReader {
  const r = rawReader(kind, endpoint, prefix, host, token);
  const mine = (id: string) => id.startsWith(`${host}-`) || id.includes(`:${host}-`);
  return {
    kind,
    async read() {
      const h = await r.read();
      return { entries: h.entries.filter((e) => mine(e.id)), notPassing: h.notPassing.filter(mine) };
    },
    close: () => r.close(),
  };
}

function rawReader(kind: RegistryKind, endpoint: string, prefix: string, host: string, token?: string): RegistryReader {
  if (kind === 'consul') {
    const headers: Record<string, string> = token ? { 'X-Consul-Token': token } : {};
    const get = async <T>(path: string): Promise<T> => {
      const res = await fetch(`http://${endpoint}/v1${path}`, { headers, signal: AbortSignal.timeout(5000) });
      if (!res.ok) throw new Error(`consul ${path}: ${res.status}`);
      return (await res.json()) as T;
    };
    return {
      kind,
      async read() {
        const services = await get<Record<string, { ID: string; Address: string; Port: number; Meta?: Record<string, string> }>>('/agent/services');
        const checks = await get<Record<string, { ServiceID: string; Status: string }>>('/agent/checks');
        const entries = Object.values(services)
          .filter((s) => s.Meta?.hm_host === host)
          .map((s) => ({ key: s.ID, id: s.ID, address: s.Address, port: s.Port }));
        const bad = new Set(Object.values(checks).filter((c) => c.Status !== 'passing').map((c) => c.ServiceID));
        return { entries, notPassing: entries.filter((e) => bad.has(e.id)).map((e) => e.id) };
      },
      close() {},
    };
  }
  if (kind === 'etcd') {
    // For etcd, `token` is user:password (an etcd with auth on).
    const auth = token ? { auth: { username: token.slice(0, token.indexOf(':')), password: token.slice(token.indexOf(':') + 1) } } : {};
    const client = new Etcd3({ hosts: `http://${endpoint}`, grpcOptions: { 'grpc.max_receive_message_length': -1 }, ...auth });
    return {
      kind,
      async read() {
        const kv = await client.getAll().prefix(`${prefix}/`).options({ deadline: Date.now() + 5000 }).strings();
        return { entries: instanceEntries(prefix, Object.entries(kv), host), notPassing: [] };
      },
      close: () => client.close(),
    };
  }
  return {
    kind,
    async read() {
      const res = await fetch(`http://${endpoint}/v2/keys${prefix}?recursive=true`, { signal: AbortSignal.timeout(5000) });
      if (res.status === 404) return { entries: [], notPassing: [] };
      const kv: [string, string][] = [];
      const walk = (n: V2Node) => {
        if (n.dir) (n.nodes ?? []).forEach(walk);
        else if (n.value !== undefined) kv.push([n.key, n.value]);
      };
      walk(((await res.json()) as { node: V2Node }).node);
      return { entries: instanceEntries(prefix, kv, host), notPassing: [] };
    },
    close() {},
  };
}

interface V2Node {
  key: string;
  value?: string;
  dir?: boolean;
  nodes?: V2Node[];
}

function instanceEntries(prefix: string, kv: Iterable<[string, string]>, host: string): Entry[] {
  const out: Entry[] = [];
  for (const [key, value] of kv) {
    if (key.startsWith(`${prefix}/_`)) continue;
    try {
      const r = JSON.parse(value) as { id?: string; host?: string; address?: string; port?: number };
      if (r.host === host && typeof r.id === 'string') out.push({ key, id: r.id, address: r.address, port: r.port });
    } catch {
      // not an instance
    }
  }
  return out;
}

export interface Converged extends Measure {
  /** ms from `since` until the registry held exactly `expected`, all passing. */
  converge: number;
}

/** Wait until the registry holds exactly `expected` (each once, passing); then measure it. */
export async function converge(r: RegistryReader, expected: Set<string>, since: number, timeoutMs = 60_000): Promise<Converged> {
  let last: Holding | undefined;
  try {
    await waitFor(
      'the registry to hold exactly the expected instances',
      async () => {
        last = await r.read();
        const m = measure(expected, last.entries);
        return m.lost === 0 && m.duplicated === 0 && m.leftBehind === 0 && last.notPassing.length === 0;
      },
      timeoutMs,
      50,
    );
  } catch (err) {
    const got = last ? `${last.entries.map((e) => e.id).sort().join(', ')}${last.notPassing.length ? `; not passing: ${last.notPassing.join(', ')}` : ''}` : 'nothing read';
    throw new Error(`${(err as Error).message}; expected ${[...expected].sort().join(', ')}; got ${got}`);
  }
  const converged = Date.now() - since;
  // Measured again a moment later: a late duplicate or a flap shows up here.
  await new Promise((res) => setTimeout(res, 500));
  const again = await r.read();
  return { converge: converged, ...measure(expected, again.entries) };
}

/**
 * Read `r` every `intervalMs` from now on, as a consumer polling the registry would: an entry
 * that is not passing (Consul) counts as absent. Reads that fail (the engine itself frozen or
 * unreachable) leave no sample. Stops by itself after `maxMs`.
 */
export function watch(r: RegistryReader, intervalMs = 100, maxMs = 180_000): Observer {
  return new Observer(
    async () => {
      const h = await r.read();
      const bad = new Set(h.notPassing);
      return { entries: h.entries.filter((e) => !bad.has(e.id)) };
    },
    { intervalMs, maxMs },
  );
}

/** What a continuous observation showed of entries that should have been there all along. */
export interface Continuity {
  /** Gaps (an expected ID missing from one sample to the next one holding it again). */
  gaps: number;
  /** The longest gap, ms (0 without any). */
  longestGapMs: number;
  /** ms from `from` to the start of the first gap (-1 without any). */
  firstGapAfterMs: number;
  /** Samples with some expected ID missing, and samples in all. */
  samplesMissing: number;
  samples: number;
  /** Reads that failed (no evidence either way). */
  readErrors: number;
  /** Samples where an ID showed more than once. */
  samplesDuplicated: number;
}

/** Summarize `obs` for `expected` IDs between `from` and `to` (default: the last sample). */
export function continuity(obs: Observer, expected: Iterable<string>, from: number, to = Infinity): Continuity & { list: Gap[] } {
  const want = [...expected];
  const list = obs.gaps(want, { from, to });
  const samples = obs.samples.filter((s) => s.t >= from && s.t <= to);
  return {
    list,
    gaps: list.length,
    longestGapMs: list.reduce((m, g) => Math.max(m, g.ms), 0),
    firstGapAfterMs: list.length ? Math.min(...list.map((g) => g.from)) - from : -1,
    samplesMissing: samples.filter((s) => want.some((id) => !s.ids.includes(id))).length,
    samples: samples.length,
    readErrors: obs.errors.filter((e) => e.t >= from && e.t <= to).length,
    samplesDuplicated: samples.filter((s) => new Set(s.ids).size !== s.ids.length).length,
  };
}
