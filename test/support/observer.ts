// What a registry showed over time for one harbormaster host, independently of harbormaster:
// fault tests read from it whether an instance ever went missing, how long the registry took
// to converge, and what was lost, duplicated or left behind.
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { waitFor } from './wait.js';

/** One registered instance as a registry shows it; `key` is the etcd key (Consul: the ID). */
export interface Entry {
  key: string;
  id: string;
  address?: string;
  port?: number;
}

export interface Sample {
  /** Date.now() when the answer arrived. */
  t: number;
  /** IDs of the host's instances; an ID stored under two keys is listed twice. */
  ids: string[];
  entries: Entry[];
  /** Consul blocking queries: the X-Consul-Index of the answer. */
  index?: number;
}

export interface Gap {
  id: string;
  /** Time of the first sample without the ID. */
  from: number;
  /** Time of the first sample with it again; undefined if it never came back. */
  to?: number;
  /** to - from, or up to the last sample if it never came back. */
  ms: number;
}

export interface ObserveOptions {
  /** Pause between two reads (blocking queries: none). */
  intervalMs?: number;
  /** The observer stops by itself after this long. */
  maxMs?: number;
  /** Keep only entries passing this (e.g. a test's own containers). */
  filter?: (e: Entry) => boolean;
}

/** One read of the registry: the host's entries (unfiltered by `filter`), and a blocking index. */
type Read = (signal: AbortSignal, last: Sample | undefined) => Promise<{ entries: Entry[]; index?: number }>;

export class Observer {
  readonly samples: Sample[] = [];
  /** Reads that failed (registry down, timeout): no sample, so no evidence either way. */
  readonly errors: { t: number; error: string }[] = [];
  private readonly abort = new AbortController();
  private readonly loop: Promise<void>;

  constructor(
    private readonly read: Read,
    private readonly opts: ObserveOptions = {},
  ) {
    this.loop = this.run();
  }

  get latest(): Sample | undefined {
    return this.samples.at(-1);
  }

  /** Stop reading; resolves once the read in flight has ended. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  /** The first sample (the latest one or a later one) for which `pred` holds. */
  async waitFor(pred: (ids: Set<string>, s: Sample) => boolean, timeoutMs = 20_000): Promise<Sample> {
    let from = Math.max(0, this.samples.length - 1);
    return waitFor('an observed sample to match', () => {
      for (; from < this.samples.length; from++) {
        const s = this.samples[from];
        if (pred(new Set(s.ids), s)) return s;
      }
      return undefined;
    }, timeoutMs, 20);
  }

  /**
   * Intervals in which an expected ID was missing from the samples. With `afterFirstSeen`, an ID
   * counts as missing only once it has been seen; `from`/`to` limit the samples looked at.
   */
  gaps(expected: Iterable<string>, opts: { from?: number; to?: number; afterFirstSeen?: boolean } = {}): Gap[] {
    const samples = this.samples.filter((s) => s.t >= (opts.from ?? -Infinity) && s.t <= (opts.to ?? Infinity));
    const last = samples.at(-1)?.t ?? 0;
    const out: Gap[] = [];
    for (const id of new Set(expected)) {
      let seen = !opts.afterFirstSeen;
      let open: number | undefined;
      for (const s of samples) {
        const here = s.ids.includes(id);
        if (here) {
          if (open !== undefined) out.push({ id, from: open, to: s.t, ms: s.t - open });
          open = undefined;
          seen = true;
        } else if (seen && open === undefined) open = s.t;
      }
      if (open !== undefined) out.push({ id, from: open, ms: last - open });
    }
    return out.sort((a, b) => a.from - b.from);
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    const deadline = Date.now() + (this.opts.maxMs ?? 300_000);
    const pause = (ms: number) => new Promise<void>((r) => {
      const done = () => {
        clearTimeout(t);
        signal.removeEventListener('abort', done);
        r();
      };
      const t = setTimeout(done, ms);
      signal.addEventListener('abort', done);
    });
    while (!signal.aborted && Date.now() < deadline) {
      try {
        const s = await this.read(signal, this.latest);
        const entries = this.opts.filter ? s.entries.filter(this.opts.filter) : s.entries;
        this.samples.push({ t: Date.now(), ids: entries.map((e) => e.id), entries, ...(s.index === undefined ? {} : { index: s.index }) });
        await pause(this.opts.intervalMs ?? 100);
      } catch (err) {
        if (signal.aborted) break;
        this.errors.push({ t: Date.now(), error: (err as Error).message });
        await pause(Math.max(this.opts.intervalMs ?? 100, 100));
      }
    }
  }
}

/** A request that gives up with the observer, or after `ms`. */
function bounded(signal: AbortSignal, ms: number): AbortSignal {
  return AbortSignal.any([signal, AbortSignal.timeout(ms)]);
}

interface ConsulAgentService {
  ID: string;
  Address: string;
  Port: number;
  Meta?: Record<string, string>;
}

export interface ConsulObserveOptions extends ObserveOptions {
  port?: number;
  /** Keep services whose Meta.hm_host is this; all services if unset. */
  host?: string;
  /** Needed with ACLs: without it a default-deny agent answers 200 with the services filtered out. */
  token?: string;
}

/** Poll the agent's own services (/v1/agent/services), every intervalMs. */
export function observeConsul(o: ConsulObserveOptions = {}): Observer {
  const headers: Record<string, string> = o.token ? { 'X-Consul-Token': o.token } : {};
  return new Observer(async (signal) => {
    const res = await fetch(`http://127.0.0.1:${o.port ?? 8500}/v1/agent/services`, { headers, signal: bounded(signal, 5000) });
    if (!res.ok) throw new Error(`consul agent services: ${res.status} ${await res.text()}`);
    const all = Object.values((await res.json()) as Record<string, ConsulAgentService>);
    const entries = all.filter((s) => o.host === undefined || s.Meta?.hm_host === o.host).map((s) => ({ key: s.ID, id: s.ID, address: s.Address, port: s.Port }));
    return { entries };
  }, o);
}

export interface ConsulHealthObserveOptions extends ConsulObserveOptions {
  /** The service name to watch. */
  service: string;
  /** Longest a blocking query waits for a change, in seconds. */
  waitS?: number;
}

/**
 * Follow /v1/health/service/<name>?passing with blocking queries, as a client of the catalog
 * would: one sample per answer, so a test can tell whether such a watcher ever saw an instance
 * disappear. The index starts over from 0 when it goes backwards (a restarted agent).
 */
export function observeConsulHealth(o: ConsulHealthObserveOptions): Observer {
  const headers: Record<string, string> = o.token ? { 'X-Consul-Token': o.token } : {};
  const waitS = o.waitS ?? 5;
  return new Observer(async (signal, last) => {
    const index = last?.index ?? 0;
    const url = `http://127.0.0.1:${o.port ?? 8500}/v1/health/service/${encodeURIComponent(o.service)}?passing&index=${index}&wait=${waitS}s`;
    const res = await fetch(url, { headers, signal: bounded(signal, (waitS + 5) * 1000) });
    if (!res.ok) throw new Error(`consul health ${o.service}: ${res.status} ${await res.text()}`);
    const got = Number(res.headers.get('x-consul-index') ?? 0);
    const list = (await res.json()) as { Node: { Address: string }; Service: ConsulAgentService }[];
    const entries = list
      .filter((e) => o.host === undefined || e.Service.Meta?.hm_host === o.host)
      .map((e) => ({ key: e.Service.ID, id: e.Service.ID, address: e.Service.Address || e.Node.Address, port: e.Service.Port }));
    return { entries, index: got > 0 && got >= index ? got : 0 };
  }, { ...o, intervalMs: o.intervalMs ?? 0 });
}

export interface EtcdObserveOptions extends ObserveOptions {
  /** host:port of the etcd client URL. */
  endpoint?: string;
  /** The registry prefix, e.g. "/services". */
  prefix: string;
  /** Keep instances whose JSON `host` is this; all if unset. */
  host?: string;
}

/** Instance entries out of (key, value) pairs under `prefix`; index keys (`<prefix>/_…`) are not instances. */
function instances(prefix: string, kv: Iterable<[string, string]>, host: string | undefined): Entry[] {
  const out: Entry[] = [];
  const base = prefix.replace(/\/+$/, '') + '/';
  for (const [key, value] of kv) {
    if (!key.startsWith(base) || key.slice(base.length).startsWith('_')) continue;
    let r: Record<string, unknown>;
    try {
      r = JSON.parse(value) as Record<string, unknown>;
    } catch {
      // Not an instance record: counted as one of ours only when no host is asked for.
      if (host === undefined) out.push({ key, id: key });
      continue;
    }
    if (host !== undefined && r.host !== host) continue;
    out.push({
      key,
      id: typeof r.id === 'string' ? r.id : key,
      ...(typeof r.address === 'string' ? { address: r.address } : {}),
      ...(typeof r.port === 'number' ? { port: r.port } : {}),
    });
  }
  return out;
}

/** Poll a prefix of etcd v3 (one range read per sample). */
export function observeEtcd(o: EtcdObserveOptions): Observer {
  // A prefix with tens of thousands of entries is a range answer above gRPC's default 4 MiB.
  const client = new Etcd3({ hosts: `http://${o.endpoint ?? '127.0.0.1:2379'}`, grpcOptions: { 'grpc.max_receive_message_length': -1 } });
  const obs = new Observer(async () => {
    const kv = await client.getAll().prefix(`${o.prefix.replace(/\/+$/, '')}/`).options({ deadline: Date.now() + 5000 }).strings();
    return { entries: instances(o.prefix, Object.entries(kv), o.host) };
  }, o);
  const stop = obs.stop.bind(obs);
  obs.stop = async () => {
    await stop();
    client.close();
  };
  return obs;
}

interface V2Node {
  key: string;
  value?: string;
  dir?: boolean;
  nodes?: V2Node[];
}

/** Poll a prefix of the etcd v2 API (GET /v2/keys<prefix>?recursive=true). */
export function observeEtcd2(o: EtcdObserveOptions): Observer {
  return new Observer(async (signal) => {
    const res = await fetch(`http://${o.endpoint ?? '127.0.0.1:2379'}/v2/keys${o.prefix}?recursive=true`, { signal: bounded(signal, 5000) });
    if (res.status === 404) return { entries: [] };
    if (!res.ok) throw new Error(`etcd2 ${o.prefix}: ${res.status} ${await res.text()}`);
    const kv: [string, string][] = [];
    const walk = (n: V2Node) => {
      if (n.dir) (n.nodes ?? []).forEach(walk);
      else if (n.value !== undefined) kv.push([n.key, n.value]);
    };
    walk(((await res.json()) as { node: V2Node }).node);
    return { entries: instances(o.prefix, kv, o.host) };
  }, o);
}

export interface Measure {
  /** Expected but missing. */
  lost: number;
  /** Extra copies: an ID under more than one key, or more IDs than one on one address:port. */
  duplicated: number;
  /** Present but not expected. */
  leftBehind: number;
}

/**
 * Compare what a registry holds with what it should. `actual` is a list of IDs, a map of key
 * to ID (etcd), or entries carrying address and port (then two IDs on one address:port are
 * a duplicate too).
 */
export function measure(expected: Set<string>, actual: string[] | Map<string, string> | Entry[]): Measure {
  const entries: Entry[] = Array.isArray(actual)
    ? actual.map((a) => (typeof a === 'string' ? { key: a, id: a } : a))
    : [...actual].map(([key, id]) => ({ key, id }));
  const perId = new Map<string, number>();
  const perAddr = new Map<string, Set<string>>();
  for (const e of entries) {
    perId.set(e.id, (perId.get(e.id) ?? 0) + 1);
    if (e.address !== undefined && e.port !== undefined) {
      const a = `${e.address}:${e.port}`;
      perAddr.set(a, (perAddr.get(a) ?? new Set()).add(e.id));
    }
  }
  let duplicated = 0;
  for (const n of perId.values()) duplicated += n - 1;
  for (const ids of perAddr.values()) duplicated += ids.size - 1;
  return {
    lost: [...expected].filter((id) => !perId.has(id)).length,
    duplicated,
    leftBehind: [...perId.keys()].filter((id) => !expected.has(id)).length,
  };
}

export interface FaultFigures {
  /** Time to converge, in ms. */
  converge: number;
  lost: number;
  duplicated: number;
  /** Left behind (`leftBehind`, as measure() names it, is taken too). */
  left?: number;
  leftBehind?: number;
  [extra: string]: string | number | boolean | undefined;
}

/**
 * Print one line `FAULT <scenario>: converge=<ms>ms lost=<n> duplicated=<n> left=<n> [k=v ...]`
 * and append it to $HM_TEST_STATE/fault-report.txt. Returns the line.
 */
export function reportFault(scenario: string, figures: FaultFigures): string {
  const { converge, lost, duplicated, left, leftBehind, ...extra } = figures;
  const more = Object.entries(extra).filter(([, v]) => v !== undefined).map(([k, v]) => ` ${k}=${v}`).join('');
  const line = `FAULT ${scenario}: converge=${Math.round(converge)}ms lost=${lost} duplicated=${duplicated} left=${left ?? leftBehind ?? 0}${more}`;
  console.log(line);
  const dir = process.env.HM_TEST_STATE ?? '/tmp/harbormaster-test';
  mkdirSync(dir, { recursive: true });
  appendFileSync(join(dir, 'fault-report.txt'), `${line}\n`);
  return line;
}
