// etcd v2 read side: a recursive quorum read of the prefix (X-Etcd-Index tells the point it
// shows), then a recursive long-poll watch from the index after it, applying each event.
// etcd keeps the last 1,000 events of the whole store: a watch broken by a fault resumes where it
// stopped and misses nothing while they cover the gap; an older index is answered
// 401 EcodeEventIndexCleared, and the prefix is read in full again. A long poll that ends without
// an event (our own bound on it, LONG_POLL_MS) is renewed from the store's current index, read
// while the poll is still pending (etcd had nothing for the prefix up to it), so a quiet prefix on
// a busy etcd does not fall out of the window.
// node-etcd's watcher is not used: it starts watching at "now" beside the first read (a change
// in between was missed), and its retry delay doubles without a bound (after a minute-long outage
// it waited minutes before watching again, while changes went unseen).
// A full read also on any doubt (an index going backwards, another cluster, an event that does
// not parse) and every RESYNC_MS.
import { Agent, request } from 'undici';
import { decodeInstance } from '../model/codec.js';
import type { ServiceInstance } from '../model/service-instance.js';
import type { Etcd2Target } from '../registry/etcd2-backend.js';
import { backoffMs } from '../util/time.js';
import { deadline } from './deadline.js';
import type { RawWatch, RawWatchHandlers } from './types.js';

const RESYNC_MS = 5 * 60_000;
const READ_TIMEOUT_MS = 15_000;
/** A long poll is ended and resumed after this long: also how long a silent partition goes unnoticed. */
const LONG_POLL_MS = 30_000;
const EVENT_INDEX_CLEARED = 401;
const KEY_NOT_FOUND = 100;
/**
 * How long a poll stays open after the store's index was read for its renewal. etcd queues an
 * event for a watcher before it answers the write, so an event at or below that index is
 * already on its way on the poll's connection; this leaves it the time to arrive.
 */
const RENEW_GRACE_MS = 250;

export interface Etcd2WatchOptions {
  resyncMs?: number;
  longPollMs?: number;
  /** Bound on a full read (default 15 s). */
  readTimeoutMs?: number;
}

interface V2Node {
  key?: string;
  value?: string;
  dir?: boolean;
  modifiedIndex?: number;
  nodes?: V2Node[];
}

interface Reply {
  status: number;
  /** X-Etcd-Index: the store's index when the read was served, or when the watch was registered. */
  index?: number;
  clusterId?: string;
  body: Record<string, unknown>;
}

/** What a long poll ended with. */
type PollEnd = { kind: 'event'; body: Record<string, unknown> } | { kind: 'quiet'; index?: number };

class Doubt extends Error {
  /** Expected now and then (the event window passed): logged at debug. */
  constructor(message: string, readonly routine = false) {
    super(message);
  }
}

export class Etcd2Watch implements RawWatch {
  private readonly dispatcher: Agent;
  private readonly abort = new AbortController();
  private readonly resyncMs: number;
  private readonly longPollMs: number;
  private readonly readTimeoutMs: number;
  private handlers?: RawWatchHandlers;
  private stopped = false;
  private endpoint = 0;
  private readonly kv = new Map<string, ServiceInstance>();
  /** The next index to watch from. */
  private waitIndex = 0;
  private clusterId?: string;
  private lastFull = 0;
  private scheduled = false;
  private wake?: () => void;
  readonly stats = { fullReads: 0, polls: 0, cleared: 0, events: 0 };

  constructor(private readonly target: Etcd2Target, opts: Etcd2WatchOptions = {}) {
    this.resyncMs = opts.resyncMs ?? RESYNC_MS;
    this.longPollMs = opts.longPollMs ?? LONG_POLL_MS;
    this.readTimeoutMs = opts.readTimeoutMs ?? READ_TIMEOUT_MS;
    // Finite backstops under each request's own deadline: an endpoint that accepts and never answers cannot hold the watch.
    const bound = Math.max(this.readTimeoutMs, this.longPollMs) + 15_000;
    this.dispatcher = new Agent({ connections: 4, headersTimeout: bound, bodyTimeout: bound, connectTimeout: 5_000 });
  }

  start(h: RawWatchHandlers): void {
    this.handlers = h;
    void this.run();
  }

  private async run(): Promise<void> {
    let full = true;
    let attempt = 0;
    let doubts = 0;
    while (!this.stopped) {
      try {
        if (full || Date.now() - this.lastFull >= this.resyncMs) {
          await this.readAll();
          full = false;
        }
        const end = await this.poll();
        attempt = 0;
        if (end.kind === 'event') this.applyEvent(end.body);
        else if (end.index !== undefined) this.waitIndex = Math.max(this.waitIndex, end.index + 1);
        doubts = 0;
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof Doubt) {
          // A busy store can clear the window again and again: full reads back to back are spaced out.
          if (doubts > 0) await this.sleep(backoffMs(doubts - 1, 500, 10_000));
          doubts++;
          if (this.stopped) return;
          this.handlers?.note(`etcd2 watch on ${this.target.prefix}: ${err.message}; reading it in full`, err.routine ? 'debug' : 'info');
          full = true;
          continue;
        }
        this.handlers?.error(new Error(`etcd2 watch on ${this.target.prefix}: ${(err as Error).message}`));
        // The next endpoint, if there are several; a broken watch resumes from waitIndex.
        this.endpoint = (this.endpoint + 1) % this.target.endpoints.length;
        await this.sleep(backoffMs(attempt++, 250, 10_000));
      }
    }
  }

  private url(query: string): string {
    const base = this.target.endpoints[this.endpoint].replace(/\/+$/, '');
    return `${base}/v2/keys${this.target.prefix}${query}`;
  }

  private async get(query: string, timeoutMs: number): Promise<Reply> {
    const dl = deadline(this.abort.signal, timeoutMs);
    let res;
    let text: string;
    try {
      res = await request(this.url(query), { method: 'GET', dispatcher: this.dispatcher, signal: dl.signal });
      text = await res.body.text();
    } catch (err) {
      if (dl.timedOut) throw new Error(`GET ${this.target.prefix}: no answer in ${timeoutMs} ms`);
      throw err;
    } finally {
      dl.clear();
    }
    let body: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      body = parsed as Record<string, unknown>;
    } catch {
      throw new Error(`GET ${this.target.prefix}: ${res.statusCode}, the answer is not a JSON object`);
    }
    return { status: res.statusCode, index: headerIndex(res.headers['x-etcd-index']), clusterId: headerText(res.headers['x-etcd-cluster-id']), body };
  }

  private checkCluster(id: string | undefined): void {
    if (id && this.clusterId && id !== this.clusterId) throw new Doubt(`another cluster answers (id ${id})`);
  }

  private async readAll(): Promise<void> {
    const r = await this.get('?recursive=true&quorum=true', this.readTimeoutMs);
    if (this.stopped) return;
    let root: V2Node | undefined;
    if (r.status === 200) root = r.body.node as V2Node | undefined;
    else if (r.body.errorCode !== KEY_NOT_FOUND) throw new Error(`reading ${this.target.prefix}: ${r.status} ${etcdMessage(r.body)}`);
    const index = r.index ?? (typeof r.body.index === 'number' ? r.body.index : undefined);
    if (index === undefined) throw new Error(`reading ${this.target.prefix}: no X-Etcd-Index in the answer`);
    this.stats.fullReads++;
    this.kv.clear();
    const walk = (n: V2Node) => {
      if (typeof n.key !== 'string' || this.skip(n.key)) return;
      if (n.dir) for (const c of n.nodes ?? []) walk(c);
      else this.put(n.key, n.value);
    };
    if (root) walk(root);
    this.waitIndex = index + 1;
    this.clusterId = r.clusterId;
    this.lastFull = Date.now();
    this.handlers?.ok();
    this.handlers?.update([...this.kv.values()]);
  }

  /** One long poll from waitIndex, ended by an event, by LONG_POLL_MS, or by the resync being due. */
  private async poll(): Promise<PollEnd> {
    this.stats.polls++;
    const budget = Math.max(0, Math.min(this.longPollMs, this.lastFull + this.resyncMs - Date.now()));
    // Never fires by itself (the renewal below cuts the poll); only the watch stopping aborts it.
    const cut = deadline(this.abort.signal, 2 ** 31 - 1);
    let renewed = false;
    let fresh: number | undefined;
    let settled = false;
    const renew = async () => {
      // The store's index now, while the poll is still open: nothing for the prefix came up to it.
      try {
        const r = await this.get('', this.readTimeoutMs);
        if ((r.status === 200 || r.body.errorCode === KEY_NOT_FOUND) && (!r.clusterId || !this.clusterId || r.clusterId === this.clusterId)) fresh = r.index;
      } catch {
        // The poll's own index is the fallback.
      }
      if (!settled) await new Promise((r) => setTimeout(r, RENEW_GRACE_MS));
      renewed = true;
      cut.abort();
    };
    const timer = setTimeout(() => void renew(), budget);
    let index: number | undefined;
    try {
      const res = await request(this.url(`?wait=true&recursive=true&waitIndex=${this.waitIndex}`), {
        method: 'GET',
        dispatcher: this.dispatcher,
        signal: cut.signal,
      });
      // etcd sends the headers once the watch is registered: it is accepted, the registry answers.
      index = headerIndex(res.headers['x-etcd-index']);
      this.checkCluster(headerText(res.headers['x-etcd-cluster-id']));
      if (index !== undefined && index + 1 < this.waitIndex && res.statusCode === 200) {
        res.body.destroy();
        throw new Doubt(`index ${index} is behind ${this.waitIndex - 1}`);
      }
      if (res.statusCode === 200) this.handlers?.ok();
      const text = await res.body.text();
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(text) as Record<string, unknown>;
      } catch {
        // An empty answer: etcd ended the poll itself (node-etcd calls it "timed out watcher").
        if (res.statusCode === 200 && text.trim() === '') return { kind: 'quiet', index: fresh ?? index };
        throw new Error(`watch answer ${res.statusCode} is not JSON`);
      }
      if (res.statusCode === 200) return { kind: 'event', body };
      if (body.errorCode === EVENT_INDEX_CLEARED) {
        this.stats.cleared++;
        throw new Doubt(`etcd no longer holds the events from index ${this.waitIndex} (${etcdMessage(body)})`, true);
      }
      throw new Error(`watch: ${res.statusCode} ${etcdMessage(body)}`);
    } catch (err) {
      if (renewed && !this.abort.signal.aborted && !(err instanceof Doubt)) return { kind: 'quiet', index: fresh ?? index };
      throw err;
    } finally {
      settled = true;
      clearTimeout(timer);
      cut.clear();
    }
  }

  private applyEvent(body: Record<string, unknown>): void {
    const node = body.node as V2Node | undefined;
    const action = body.action;
    if (!node || typeof node.key !== 'string' || typeof node.modifiedIndex !== 'number' || typeof action !== 'string') throw new Doubt('an event that does not parse');
    if (node.modifiedIndex < this.waitIndex) throw new Doubt(`event index ${node.modifiedIndex} is behind ${this.waitIndex}`);
    this.waitIndex = node.modifiedIndex + 1;
    this.stats.events++;
    const key = node.key;
    switch (action) {
      case 'set':
      case 'create':
      case 'update':
      case 'compareAndSwap':
        if (!node.dir && !this.skip(key)) this.put(key, node.value);
        break;
      case 'delete':
      case 'expire':
      case 'compareAndDelete': {
        // A directory takes everything under it along.
        const under = `${key}/`;
        for (const k of [...this.kv.keys()]) if (k === key || k.startsWith(under)) this.kv.delete(k);
        break;
      }
      default:
        throw new Doubt(`unknown event action "${action.slice(0, 40)}"`);
    }
    this.schedule();
  }

  /** Keys under <prefix>/_… are bookkeeping; anything outside the prefix is not ours. */
  private skip(key: string): boolean {
    return key.startsWith(`${this.target.prefix}/_`) || !(key === this.target.prefix || key.startsWith(`${this.target.prefix}/`));
  }

  private put(key: string, value: string | undefined): void {
    try {
      let raw: unknown;
      try {
        raw = JSON.parse(value ?? '');
      } catch {
        throw new Error('value is not JSON');
      }
      this.kv.set(key, decodeInstance(raw));
    } catch (err) {
      // One bad record is skipped (as absent); the rest goes on.
      this.kv.delete(key);
      this.handlers?.invalid(`etcd2 key ${key.slice(0, 300)}: ${(err as Error).message}; skipped`);
    }
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (!this.stopped) this.handlers?.update([...this.kv.values()]);
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    this.wake?.();
    await this.dispatcher.destroy().catch(() => undefined);
  }
}

function headerIndex(h: string | string[] | undefined): number | undefined {
  const v = Array.isArray(h) ? h[0] : h;
  return v !== undefined && /^\d{1,15}$/.test(v) ? Number(v) : undefined;
}

function headerText(h: string | string[] | undefined): string | undefined {
  return Array.isArray(h) ? h[0] : h;
}

function etcdMessage(body: Record<string, unknown>): string {
  const m = typeof body.message === 'string' ? body.message : 'no reason given';
  const c = typeof body.cause === 'string' ? ` (${body.cause})` : '';
  return `${m}${c}`.slice(0, 200);
}
