// Consul read side: three blocking queries whatever the number of services, and non-blocking reads
// of the services that changed, a few at a time.
//  - /v1/catalog/services (blocking): the service names. Its index moves on every registration,
//    deregistration or change of a service instance, not on a change of a node (a node registered
//    again with a new address); a change in place (a new port, same tags) does not
//    show in the listing, so each move starts a sweep of the nodes (/v1/catalog/nodes, then
//    /v1/catalog/node/<node> for each): every instance there carries its ModifyIndex, and only
//    services whose instances (node, ID, ModifyIndex) changed are read. Moves during a sweep make
//    one more sweep after it, not one each. With about as many nodes as services, every service
//    is read instead (as cheap); after the listing's own query failed, every service is read once.
//  - /v1/catalog/nodes (blocking): every node's address. An instance registered without an address
//    of its own has its node's, so a service with an instance on a node whose address is not the
//    one its last read saw is read again.
//  - /v1/health/state/any (blocking): every check. Each service's checks (its own, and the node
//    checks of the nodes it runs on) are compared with those of its last read: a service whose
//    checks changed is read again, the others are not.
//  - /v1/health/service/<name> (not blocking): one service's instances and checks. A service whose
//    read fails is retried alone, with its own backoff, and keeps its last good data.
// Why not one blocking query per service (consul-template's way, and this watch's before): each
// holds an HTTP connection for the whole wait, so N services need N connections, and a Consul
// agent closes connections past limits.http_max_conns_per_client (200) per client address; and a
// failure of any one of them restarted them all. Fabio and Traefik watch the catalog and read the
// services that changed for the same reason. Here at most FETCH_CONCURRENCY + 3 connections are
// ever open (the undici pool is capped too), however many services there are.
// Index handling follows Consul's blocking-query rules: an index that went backwards is reset to
// 0 (a full read), one below 1 is taken as 1, and a loop never runs more often than every
// MIN_LOOP_INTERVAL_MS. After an error the next query is a full read (an agent that restarted has
// a lower index: a blocking query with the old one would hang for the whole wait).
import { Agent, request } from 'undici';
import type { ServiceInstance } from '../model/service-instance.js';
import { type ConsulTarget, type HealthEntry, instanceFromConsul, isHeartbeatService, worstStatus } from '../registry/consul-backend.js';
import { consulConnection } from '../registry/consul-http.js';
import { explainConsulFailure, explainConsulRefusal } from '../registry/explain.js';
import { backoffMs } from '../util/time.js';
import { deadline } from './deadline.js';
import type { RawWatch, RawWatchHandlers } from './types.js';

const WAIT_S = 30;
/** Consul adds up to wait/16 of jitter to a blocking query. */
const BLOCKING_TIMEOUT_MS = (WAIT_S + WAIT_S / 16 + 5) * 1000;
const FETCH_TIMEOUT_MS = 8_000;
/** Non-blocking service reads in flight at once. */
const FETCH_CONCURRENCY = 8;
const MIN_LOOP_INTERVAL_MS = 50;
/** An agent or proxy that gives no X-Consul-Index cannot block: it is polled this often instead. */
const NO_INDEX_POLL_MS = 5_000;
/** Every service is read again this often, whatever the indexes said: a bound on how long any missed change could last. */
const RESYNC_MS = 5 * 60_000;

export interface ConsulWatchOptions {
  fetchConcurrency?: number;
  resyncMs?: number;
  /** Seconds a blocking query waits (default 30). */
  waitS?: number;
  /** Poll period of a listing answered without X-Consul-Index (default 5 s). */
  noIndexPollMs?: number;
  /** Per-service read timeout (default 8 s). */
  fetchTimeoutMs?: number;
}

type Env = Record<string, string | undefined>;

/** The agent did not answer at all (refused, reset, timed out). */
class NoAnswer extends Error {}

/**
 * The index for the next blocking query from the one just used and the one answered (Consul's
 * rules): backwards → 0, a full read that starts the loop over; missing or 0 → 1, so the next
 * query blocks instead of returning at once.
 */
export function nextIndex(used: number, answered: number | undefined): number {
  if (answered === undefined || !Number.isSafeInteger(answered) || answered < 1) return 1;
  if (answered < used) return 0;
  return answered;
}

interface Answer {
  body: unknown;
  index: number | undefined;
}

class ConsulReader {
  private readonly dispatcher: Agent;
  private readonly base: string;
  private readonly token?: string;
  private readonly secure: boolean;

  constructor(target: ConsulTarget, connections: number, env: Env = process.env) {
    this.secure = target.secure;
    const conn = consulConnection(target, env);
    this.base = conn.origin;
    this.token = conn.token;
    this.dispatcher = new Agent({
      connections,
      headersTimeout: BLOCKING_TIMEOUT_MS,
      bodyTimeout: BLOCKING_TIMEOUT_MS,
      connectTimeout: 5_000,
      ...(conn.tls ? { connect: conn.tls } : {}),
    });
  }

  /** GET `path` (+ `query`); errors name the path, without the changing query. */
  async get(path: string, query: string, timeoutMs: number, signal: AbortSignal): Promise<Answer> {
    const headers: Record<string, string> = this.token ? { 'x-consul-token': this.token } : {};
    // The time bound covers the headers and the body.
    const dl = deadline(signal, timeoutMs);
    let res;
    let text: string;
    // Consistent: a server elected a moment ago has applied only its last snapshot until its first
    // commit, and a default read served from there is a catalog with services missing (all of
    // them, when the cluster never took a snapshot). A consistent read waits until the leader is
    // ready to serve it, and fails meanwhile: the last catalog is kept.
    const q = query ? `${query}&consistent` : '?consistent';
    try {
      try {
        res = await request(`${this.base}${path}${q}`, { method: 'GET', headers, dispatcher: this.dispatcher, signal: dl.signal });
      } catch (err) {
        throw new NoAnswer(`GET ${path}: ${dl.timedOut ? 'no answer in time' : explainConsulFailure(errText(err), this.secure)}`);
      }
      try {
        text = await res.body.text();
      } catch (err) {
        throw new NoAnswer(`GET ${path}: reading the answer: ${dl.timedOut ? 'no answer in time' : errText(err)}`);
      }
    } finally {
      dl.clear();
    }
    if (res.statusCode >= 400) throw new Error(`GET ${path}: ${res.statusCode} ${explainConsulRefusal(res.statusCode, text.trim().replace(/\s+/g, ' ').slice(0, 200) || 'no reason given')}`);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new Error(`GET ${path}: the answer is not JSON`);
    }
    const h = res.headers['x-consul-index'];
    const index = typeof h === 'string' && /^\d{1,15}$/.test(h) ? Number(h) : undefined;
    return { body, index };
  }

  async close(): Promise<void> {
    await this.dispatcher.destroy().catch(() => undefined);
  }
}

function errText(err: unknown): string {
  const e = err as Error & { cause?: Error; code?: string };
  if (e?.name === 'TimeoutError') return 'no answer in time';
  if (e?.name === 'AbortError') return 'aborted';
  return e?.cause?.message ?? e?.message ?? e?.code ?? String(err);
}

interface ServiceState {
  /** The last good read; undefined until the first one. */
  instances?: ServiceInstance[];
  /** JSON of `instances`, to tell a change. */
  json?: string;
  /** Nodes the service has instances on (their node checks count as its checks), with the address each had in its last read. */
  nodes: Map<string, string>;
  /** IDs of its entries that were skipped as invalid: their checks count on neither side. */
  skipped: Set<string>;
  /** Its checks as of the last good read (see checkSignature). */
  checks?: string;
  /** The first read answered or failed: the initial catalog no longer waits for it. */
  settled: boolean;
  inFlight: boolean;
  /** Read again once the read in flight ends. */
  again: boolean;
  failing: boolean;
  attempt: number;
  /** Backing off after a failure: only this timer reads it again. */
  retry?: NodeJS.Timeout;
  /** `node ID ModifyIndex` of each entry of its last good read. */
  readSignature?: string;
  /** What a sweep found while a read was under way: compared with that read's answer when it ends. */
  swept?: string;
}

/** An instance as a sweep and a read both see it: its node and that node's address (an instance without an address has its node's), its ID and ModifyIndex. */
const instanceKey = (node: unknown, nodeAddress: unknown, id: unknown, modifyIndex: unknown) => `${String(node)}\u0000${String(nodeAddress)}\u0000${String(id)}\u0000${String(modifyIndex)}`;
const instancesSignature = (keys: string[]) => keys.sort().join('\u0001');

const checkKey = (c: { Node?: unknown; CheckID?: unknown; Status?: unknown; ModifyIndex?: unknown }) => `${String(c.Node)}\u0000${String(c.CheckID)}\u0000${String(c.Status)}\u0000${String(c.ModifyIndex)}`;

/** Order-independent identity of a set of checks: any status or definition change moves a ModifyIndex. */
function checkSignature(keys: Iterable<string>): string {
  return [...new Set(keys)].sort().join('\u0001');
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Why a health entry cannot be an instance, or undefined. Consul's answers are outside input too. */
function entryProblem(e: unknown): string | undefined {
  if (!isObject(e)) return 'entry is not an object';
  const s = e.Service;
  const n = e.Node;
  if (!isObject(s)) return 'Service is not an object';
  if (!isObject(n) || typeof n.Node !== 'string' || typeof n.Address !== 'string') return 'Node is not a node';
  if (typeof s.ID !== 'string') return 'Service.ID is not a string';
  if (typeof s.Service !== 'string') return 'Service.Service is not a string';
  if (typeof s.Address !== 'string') return 'Service.Address is not a string';
  if (typeof s.Port !== 'number') return 'Service.Port is not a number';
  if (s.Tags != null && (!Array.isArray(s.Tags) || s.Tags.some((t) => typeof t !== 'string'))) return 'Service.Tags is not a list of strings';
  if (s.Meta != null && (!isObject(s.Meta) || Object.values(s.Meta).some((v) => typeof v !== 'string'))) return 'Service.Meta is not a map of strings';
  if (e.Checks != null && (!Array.isArray(e.Checks) || e.Checks.some((c) => !isObject(c)))) return 'Checks is not a list';
  return undefined;
}

export class ConsulWatch implements RawWatch {
  private readonly reader: ConsulReader;
  private readonly abort = new AbortController();
  private readonly services = new Map<string, ServiceState>();
  /** Names waiting for a read slot, in order. */
  private readonly queue = new Set<string>();
  private active = 0;
  private handlers?: RawWatchHandlers;
  private stopped = false;
  private catalogSeen = false;
  private complete = false;
  private outputChanged = false;
  private scheduled = false;
  /** Loops (and service reads) that get no answer; the registry is "down" while any does. */
  private readonly down = new Set<string>();
  private okSent = false;
  private resyncTimer?: NodeJS.Timeout;
  private readonly sleepers = new Set<() => void>();
  private readonly concurrency: number;
  private readonly waitS: number;
  private readonly resyncMs: number;
  private readonly noIndexPollMs: number;
  private readonly fetchTimeoutMs: number;
  /** Names whose checks changed: read before the sweeps queued in `queue`. */
  private readonly urgent = new Set<string>();
  private sweeping = false;
  private sweepAgain = false;
  /** The listing's query failed (or has not answered yet): the next listing reads every service. */
  private readAllNext = true;
  /** Reads of /v1/health/service/<name> (and of the node sweeps) sent, for tests and metrics. */
  readonly stats = { serviceReads: 0, catalogAnswers: 0, healthAnswers: 0, nodeAnswers: 0, sweeps: 0, nodeReads: 0 };

  constructor(target: ConsulTarget, opts: ConsulWatchOptions = {}) {
    this.concurrency = Math.max(1, opts.fetchConcurrency ?? FETCH_CONCURRENCY);
    this.waitS = opts.waitS ?? WAIT_S;
    this.resyncMs = opts.resyncMs ?? RESYNC_MS;
    this.noIndexPollMs = opts.noIndexPollMs ?? NO_INDEX_POLL_MS;
    this.fetchTimeoutMs = opts.fetchTimeoutMs ?? FETCH_TIMEOUT_MS;
    this.reader = new ConsulReader(target, this.concurrency + 3);
  }

  start(h: RawWatchHandlers): void {
    this.handlers = h;
    void this.follow('catalog', '/v1/catalog/services', (body) => this.onCatalog(body));
    void this.follow('health', '/v1/health/state/any', (body) => this.onHealth(body));
    void this.follow('nodes', '/v1/catalog/nodes', (body) => this.onNodes(body));
    this.resyncTimer = setInterval(() => {
      for (const name of this.services.keys()) this.enqueue(name);
    }, this.resyncMs);
    this.resyncTimer.unref();
  }

  /** One blocking-query loop. */
  private async follow(what: string, path: string, onAnswer: (body: unknown) => void): Promise<void> {
    let index = 0;
    let attempt = 0;
    while (!this.stopped) {
      const t0 = Date.now();
      const blocking = index > 0;
      let pause = MIN_LOOP_INTERVAL_MS;
      try {
        const a = await this.reader.get(path, blocking ? `?index=${index}&wait=${this.waitS}s` : '', blocking ? BLOCKING_TIMEOUT_MS : this.fetchTimeoutMs, this.abort.signal);
        if (this.stopped) return;
        if (a.index === undefined || a.index < 1) {
          // Without an index nothing can block, and an answer cannot be told apart from the last
          // one: apply each answer and poll at a slow pace.
          onAnswer(a.body);
          this.handlers?.invalid(`consul GET ${path}: the answer has no X-Consul-Index; polling it every ${this.noIndexPollMs} ms instead of blocking`);
          index = 0;
          pause = this.noIndexPollMs;
        } else {
          const next = nextIndex(index, a.index);
          // An answer at an unchanged index is a wait that expired: nothing to look at.
          if (!blocking || next !== index) onAnswer(a.body);
          index = next;
        }
        attempt = 0;
        this.up(what);
      } catch (err) {
        if (this.stopped) return;
        this.fail(what, err as Error);
        if (what === 'catalog') this.readAllNext = true;
        index = 0;
        await this.sleep(backoffMs(attempt++, 250, 10_000));
        continue;
      }
      const rest = pause - (Date.now() - t0);
      if (rest > 0) await this.sleep(rest);
    }
  }

  private onCatalog(body: unknown): void {
    if (!isObject(body)) throw new Error('GET /v1/catalog/services: the answer is not an object');
    this.stats.catalogAnswers++;
    const wanted = new Set(Object.keys(body).filter((n) => n !== 'consul'));
    for (const [name, s] of this.services) {
      if (wanted.has(name)) continue;
      clearTimeout(s.retry);
      this.services.delete(name);
      this.queue.delete(name);
      this.urgent.delete(name);
      if (s.failing) this.handlers?.part(label(name), 'gone');
      if (s.instances?.length) this.outputChanged = true;
    }
    const readAll = this.readAllNext;
    this.readAllNext = false;
    for (const name of wanted) {
      if (this.services.has(name)) {
        if (readAll) this.enqueue(name);
        continue;
      }
      this.services.set(name, { nodes: new Map(), skipped: new Set(), settled: false, inFlight: false, again: false, failing: false, attempt: 0 });
      this.enqueue(name);
    }
    // A change in place is not visible in this listing: the sweep finds which services changed.
    if (!readAll) this.sweep();
    this.catalogSeen = true;
    this.schedule();
  }

  /** Start a sweep, or ask for one more after the one under way. */
  private sweep(): void {
    if (this.sweeping) {
      this.sweepAgain = true;
      return;
    }
    this.sweeping = true;
    void this.runSweep().finally(() => {
      this.sweeping = false;
      if (this.sweepAgain && !this.stopped) {
        this.sweepAgain = false;
        this.sweep();
      }
    });
  }

  /**
   * Read every node's services with their ModifyIndex, and read the services whose instances there
   * (node, ID, ModifyIndex) differ from what their last read saw. A service being read now is
   * compared when its read ends (its answer may be older than the sweep).
   */
  private async runSweep(): Promise<void> {
    this.stats.sweeps++;
    try {
      this.stats.nodeReads++;
      const listing = await this.reader.get('/v1/catalog/nodes', '', this.fetchTimeoutMs, this.abort.signal);
      if (this.stopped) return;
      if (!Array.isArray(listing.body)) throw new Error('GET /v1/catalog/nodes: the answer is not a list');
      const nodes = [...new Set(listing.body.flatMap((n) => (isObject(n) && typeof n.Node === 'string' ? [n.Node] : [])))];
      if (nodes.length + 1 >= this.services.size) {
        // As many node reads as services: reading every service costs no more.
        for (const name of this.services.keys()) this.enqueue(name);
        return;
      }
      const found = new Map<string, string[]>();
      let next = 0;
      const worker = async () => {
        while (next < nodes.length && !this.stopped) {
          const node = nodes[next++];
          this.stats.nodeReads++;
          const a = await this.reader.get(`/v1/catalog/node/${encodeURIComponent(node)}`, '', this.fetchTimeoutMs, this.abort.signal);
          // A node that left between the two reads answers null: it has no services.
          const services = isObject(a.body) && isObject(a.body.Services) ? Object.values(a.body.Services) : [];
          const address = isObject(a.body) && isObject(a.body.Node) ? a.body.Node.Address : undefined;
          for (const sv of services) {
            if (!isObject(sv) || typeof sv.Service !== 'string') continue;
            const key = instanceKey(node, address, sv.ID, sv.ModifyIndex);
            const list = found.get(sv.Service);
            if (list) list.push(key);
            else found.set(sv.Service, [key]);
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(this.concurrency, nodes.length) }, worker));
      if (this.stopped) return;
      for (const [name, s] of this.services) {
        const now = instancesSignature(found.get(name) ?? []);
        if (s.inFlight) s.swept = now;
        else if (s.readSignature !== now) this.enqueue(name);
      }
    } catch (err) {
      if (this.stopped) return;
      // Nothing tells which services changed: every one is read.
      this.handlers?.note(`consul node sweep: ${(err as Error).message}; reading every service instead`, 'debug');
      for (const name of this.services.keys()) this.enqueue(name);
    }
  }

  private onHealth(body: unknown): void {
    if (!Array.isArray(body)) throw new Error('GET /v1/health/state/any: the answer is not a list');
    this.stats.healthAnswers++;
    const byService = new Map<string, string[]>();
    const byNode = new Map<string, string[]>();
    for (const c of body) {
      if (!isObject(c)) continue;
      if (c.ServiceID && this.services.get(String(c.ServiceName))?.skipped.has(String(c.ServiceID))) continue;
      const [map, key] = c.ServiceID ? [byService, String(c.ServiceName)] : [byNode, String(c.Node)];
      const list = map.get(key);
      if (list) list.push(checkKey(c));
      else map.set(key, [checkKey(c)]);
    }
    for (const [name, s] of this.services) {
      if (s.checks === undefined) continue;
      const keys = [...(byService.get(name) ?? [])];
      for (const n of s.nodes.keys()) keys.push(...(byNode.get(n) ?? []));
      if (checkSignature(keys) !== s.checks) this.enqueue(name, true);
    }
  }

  /**
   * The node listing moved: a service whose last read saw one of its nodes at another address than
   * the node has now is read again. Its instances without an address of
   * their own follow their node; Consul's service indexes do not move for that.
   */
  private onNodes(body: unknown): void {
    if (!Array.isArray(body)) throw new Error('GET /v1/catalog/nodes: the answer is not a list');
    this.stats.nodeAnswers++;
    const addresses = new Map<string, unknown>();
    for (const n of body) if (isObject(n) && typeof n.Node === 'string') addresses.set(n.Node, n.Address);
    for (const [name, s] of this.services) {
      for (const [node, address] of s.nodes) {
        // A node missing from the listing (gone, or hidden by the token's ACL) changed nothing here: a node that leaves takes its services along, which the listing shows.
        if (!addresses.has(node) || addresses.get(node) === address) continue;
        this.enqueue(name, true);
        break;
      }
    }
  }

  /** `urgent`: a check changed; it goes ahead of the sweeps a catalog change queued. */
  private enqueue(name: string, urgent = false): void {
    const s = this.services.get(name);
    if (!s || s.retry || this.stopped) return;
    if (s.inFlight) {
      s.again = true;
      return;
    }
    if (urgent) {
      this.queue.delete(name);
      this.urgent.add(name);
    } else if (!this.urgent.has(name)) this.queue.add(name);
    this.pump();
  }

  private pump(): void {
    while (this.active < this.concurrency && this.urgent.size + this.queue.size > 0 && !this.stopped) {
      const lane = this.urgent.size > 0 ? this.urgent : this.queue;
      const name = lane.values().next().value as string;
      lane.delete(name);
      const s = this.services.get(name);
      if (!s) continue;
      this.active++;
      void this.read(name, s).finally(() => {
        this.active--;
        this.pump();
      });
    }
  }

  private async read(name: string, s: ServiceState): Promise<void> {
    s.inFlight = true;
    s.again = false;
    this.stats.serviceReads++;
    try {
      const a = await this.reader.get(`/v1/health/service/${encodeURIComponent(name)}`, '', this.fetchTimeoutMs, this.abort.signal);
      if (this.stopped || this.services.get(name) !== s) return;
      if (!Array.isArray(a.body)) throw new Error(`GET /v1/health/service/${name}: the answer is not a list`);
      const instances: ServiceInstance[] = [];
      const nodes = new Map<string, string>();
      const checks: string[] = [];
      const skipped = new Set<string>();
      const seen: string[] = [];
      for (const e of a.body as unknown[]) {
        // Consul matches the name without regard to case: other services' entries are not this one's.
        if (isObject(e) && isObject(e.Service) && typeof e.Service.Service === 'string' && e.Service.Service !== name) continue;
        if (isObject(e) && isObject(e.Service)) seen.push(instanceKey(isObject(e.Node) ? e.Node.Node : undefined, isObject(e.Node) ? e.Node.Address : undefined, e.Service.ID, e.Service.ModifyIndex));
        const problem = entryProblem(e);
        if (problem) {
          const rawId = isObject(e) && isObject(e.Service) && typeof e.Service.ID === 'string' ? e.Service.ID : undefined;
          if (rawId !== undefined) skipped.add(rawId);
          const id = rawId !== undefined ? ` instance ${printable(rawId)}` : '';
          this.handlers?.invalid(`consul service ${printable(name, 63)}${id}: ${problem}; skipped`);
          continue;
        }
        const entry = e as HealthEntry;
        const entryChecks = (entry.Checks ?? []) as Array<{ Status: string }>;
        nodes.set(entry.Node.Node, entry.Node.Address);
        for (const c of entryChecks) checks.push(checkKey(c));
        // A host's heartbeat service is bookkeeping, never an instance.
        if (isHeartbeatService(entry.Service)) continue;
        instances.push(instanceFromConsul(entry.Service, worstStatus(entryChecks.map((c) => String(c.Status))), entry.Node.Address));
      }
      s.nodes = nodes;
      s.skipped = skipped;
      s.checks = checkSignature(checks);
      s.readSignature = instancesSignature(seen);
      // A sweep ran during this read: if it saw other instances than this answer, read again (once).
      if (s.swept !== undefined) {
        if (s.swept !== s.readSignature) s.again = true;
        s.swept = undefined;
      }
      const json = JSON.stringify(instances);
      if (json !== s.json) {
        s.instances = instances;
        s.json = json;
        this.outputChanged = true;
      }
      s.attempt = 0;
      if (s.failing) {
        s.failing = false;
        this.handlers?.part(label(name), 'ok');
      }
    } catch (err) {
      if (this.stopped || this.services.get(name) !== s) return;
      // Even no answer at all is this service's failure alone: the blocking loops tell whether the
      // agent answers, and one slow service must not mark the whole registry down.
      s.failing = true;
      this.handlers?.part(label(name), err as Error);
      s.again = false;
      s.retry = setTimeout(() => {
        s.retry = undefined;
        this.enqueue(name);
      }, backoffMs(s.attempt++, 500, 15_000));
    } finally {
      s.inFlight = false;
      s.settled = true;
      if (s.again && this.services.get(name) === s) this.enqueue(name);
      this.schedule();
    }
  }

  /**
   * Emit, coalescing bursts: the first time once the catalog listing answered and every service's
   * first read answered or failed; then whenever a service's instances changed.
   */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.stopped || !this.catalogSeen) return;
      if (!this.complete) {
        for (const s of this.services.values()) if (!s.settled) return;
        this.complete = true;
      } else if (!this.outputChanged) return;
      this.outputChanged = false;
      this.handlers?.update([...this.services.values()].flatMap((s) => s.instances ?? []));
    });
  }

  private fail(what: string, err: Error): void {
    this.down.add(what);
    this.handlers?.error(err);
  }

  private up(what: string): void {
    const was = this.down.delete(what);
    // One query answers again: the others, backing off after the same outage, try again now.
    if (was && this.down.size > 0) for (const wake of [...this.sleepers]) wake();
    // The agent answers again: services backing off after its outage are read at once.
    if (was && what === 'catalog') {
      for (const [name, s] of this.services) {
        if (!s.retry) continue;
        clearTimeout(s.retry);
        s.retry = undefined;
        this.enqueue(name);
      }
    }
    if (this.down.size > 0 || (!was && this.okSent)) return;
    this.okSent = true;
    this.handlers?.ok();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.sleepers.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.sleepers.add(done);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    clearInterval(this.resyncTimer);
    for (const s of this.services.values()) clearTimeout(s.retry);
    for (const wake of [...this.sleepers]) wake();
    await this.reader.close();
  }
}

function label(name: string): string {
  return `consul service ${printable(name, 63)}`;
}

/** Outside text fit for one log line. */
function printable(v: string, max = 120): string {
  return JSON.stringify(v.slice(0, max)).slice(1, -1);
}
