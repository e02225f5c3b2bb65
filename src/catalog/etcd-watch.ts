// etcd v3 read side: one linearizable range read of the prefix (at revision R), then one watch
// stream on the prefix from R + 1, applying each event. A broken stream is opened again from the
// last revision applied + 1: etcd keeps its history until it is compacted, so a resumed watch
// misses nothing and costs nothing when thousands of keys did not change.
// etcd3's own Watcher is not used: it resumes from the revision of the last response *header*,
// which is the store's revision when the response was sent, not that of the last event delivered
// (a create response, or a batch replaying history after a reconnect, carries the newest
// revision), so a connection lost while catching up skipped events; and it hides the compaction
// revision. Here the resume point only ever comes from events applied (or a progress
// notification, which etcd sends only to a watcher that has caught up).
// A full read again: when the watch is canceled (its start revision was compacted: ErrCompacted),
// on any doubt (a revision going backwards, another cluster answering, an unknown event), and
// every RESYNC_MS, which bounds how long any change missed by a fault nobody foresaw can last, for
// one range read of the prefix every few minutes.
import type { Etcd3, IWatchResponse } from 'etcd3';
import { Etcd3 as Client } from 'etcd3';
import { decodeInstance } from '../model/codec.js';
import type { ServiceInstance } from '../model/service-instance.js';
import { ETCD_GRPC_OPTIONS, etcdAuthOptions, etcdFaultHandling, etcdTlsOptions, isBookkeepingKey, type EtcdTarget } from '../registry/etcd-backend.js';
import { backoffMs } from '../util/time.js';
import type { RawWatch, RawWatchHandlers } from './types.js';

const RESYNC_MS = 5 * 60_000;
const READ_TIMEOUT_MS = 30_000;

export interface EtcdWatchOptions {
  /** Full read period (default 5 minutes). */
  resyncMs?: number;
}

/** The smallest key past every key starting with `prefix` (etcd's range_end for a prefix). */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

type StreamEnd = { full: false } | { full: true; why: string; routine?: boolean };

interface WatchStream {
  write(req: unknown): void;
  cancel(): void;
  on(event: 'data', fn: (res: IWatchResponse) => void): unknown;
  on(event: 'error', fn: (err: Error) => void): unknown;
  on(event: 'end', fn: () => void): unknown;
}

export class EtcdWatch implements RawWatch {
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly resyncMs: number;
  private stopped = false;
  private handlers?: RawWatchHandlers;
  private readonly kv = new Map<string, ServiceInstance>();
  /** The last revision the map reflects. */
  private rev = 0n;
  private clusterId?: string;
  private lastFull = 0;
  private stream?: WatchStream;
  private wake?: () => void;
  private scheduled = false;
  readonly stats = { fullReads: 0, watches: 0, compacted: 0, events: 0 };

  constructor(private readonly target: EtcdTarget, opts: EtcdWatchOptions = {}, env: Record<string, string | undefined> = process.env) {
    this.client = new Client({ hosts: target.endpoints, dialTimeout: 5000, faultHandling: etcdFaultHandling(target.endpoints.length), grpcOptions: ETCD_GRPC_OPTIONS, ...etcdAuthOptions(env), ...etcdTlsOptions(target, env) });
    this.prefix = `${target.prefix}/`;
    this.resyncMs = opts.resyncMs ?? RESYNC_MS;
  }

  start(h: RawWatchHandlers): void {
    this.handlers = h;
    void this.run();
  }

  private async run(): Promise<void> {
    let full = true;
    let attempt = 0;
    while (!this.stopped) {
      try {
        if (full || Date.now() - this.lastFull >= this.resyncMs) {
          await this.readAll();
          full = false;
        }
        const end = await this.watch(() => {
          attempt = 0;
        });
        if (end.full) {
          this.handlers?.note(`etcd watch on ${this.target.prefix}: ${end.why}; reading it in full`, end.routine ? 'debug' : 'info');
          full = true;
        }
      } catch (err) {
        if (this.stopped) return;
        this.handlers?.error(new Error(`etcd watch on ${this.target.prefix}: ${(err as Error).message}`));
        // A failed read is read again; a broken watch resumes from the last revision applied.
        await this.sleep(backoffMs(attempt++, 250, 10_000));
      }
    }
  }

  private async readAll(): Promise<void> {
    const key = Buffer.from(this.prefix);
    const res = await this.client.kv.range({ key, range_end: prefixEnd(key) }, { deadline: Date.now() + READ_TIMEOUT_MS });
    if (this.stopped) return;
    this.stats.fullReads++;
    this.kv.clear();
    for (const kv of res.kvs) this.put(kv.key.toString(), kv.value.toString());
    this.rev = BigInt(res.header.revision);
    this.clusterId = res.header.cluster_id;
    this.lastFull = Date.now();
    this.up();
    this.handlers?.update([...this.kv.values()]);
  }

  /** One watch stream from rev + 1, until it breaks (rejects), needs a full read, or the resync is due. */
  private async watch(connected: () => void): Promise<StreamEnd> {
    const stream = (await this.client.watchClient.watch()) as unknown as WatchStream;
    if (this.stopped) {
      stream.cancel();
      return { full: false };
    }
    this.stream = stream;
    this.stats.watches++;
    const key = Buffer.from(this.prefix);
    return await new Promise<StreamEnd>((resolve, reject) => {
      let done = false;
      const finish = (how: StreamEnd | Error) => {
        if (done) return;
        done = true;
        clearTimeout(resync);
        this.wake = undefined;
        if (this.stream === stream) this.stream = undefined;
        stream.cancel();
        if (how instanceof Error) reject(how);
        else resolve(how);
      };
      const resync = setTimeout(() => finish({ full: true, why: 'periodic full read', routine: true }), Math.max(0, this.lastFull + this.resyncMs - Date.now()));
      this.wake = () => finish({ full: false });
      stream.on('error', (err) => finish(err));
      stream.on('end', () => finish(new Error('watch stream ended')));
      stream.on('data', (res) => {
        if (done) return;
        const doubt = this.apply(res);
        if (doubt) return finish({ full: true, why: doubt });
        if (res.created) connected();
      });
      stream.write({ create_request: { key, range_end: prefixEnd(key), start_revision: (this.rev + 1n).toString(), progress_notify: true } });
    });
  }

  /** Apply one watch response; returns why a full read is needed, if it is. */
  private apply(res: IWatchResponse): string | undefined {
    const header = res.header;
    if (res.canceled || (res.compact_revision && res.compact_revision !== '0')) {
      if (res.compact_revision && res.compact_revision !== '0') {
        this.stats.compacted++;
        return `history compacted up to revision ${res.compact_revision}, past revision ${this.rev + 1n}`;
      }
      return `watch canceled${res.cancel_reason ? ` (${res.cancel_reason})` : ''}`;
    }
    if (header) {
      if (this.clusterId && header.cluster_id && header.cluster_id !== this.clusterId) return `another cluster answers (id ${header.cluster_id})`;
      // etcd's revision is below what was already seen: restored or replaced; the history no longer matches.
      if (BigInt(header.revision) < this.rev) return `revision ${header.revision} is behind ${this.rev}`;
    }
    if (res.created) {
      this.up();
      return undefined;
    }
    const events = res.events ?? [];
    if (events.length === 0) {
      // A progress notification: every event up to this revision has been sent.
      if (header && BigInt(header.revision) > this.rev) this.rev = BigInt(header.revision);
      return undefined;
    }
    // The events of one transaction (a lease revoked, a delete of a prefix, a multi-key write)
    // share one revision: only those at or below the revision applied before this batch are old.
    const base = this.rev;
    for (const ev of events) {
      const rev = BigInt(ev.kv.mod_revision);
      if (rev <= base) continue;
      const key = ev.kv.key.toString();
      if (ev.type === 'Put') this.put(key, ev.kv.value.toString());
      else if (ev.type === 'Delete') this.kv.delete(key);
      else return `unknown event type ${String(ev.type)}`;
      if (rev > this.rev) this.rev = rev;
      this.stats.events++;
    }
    this.up();
    this.schedule();
    return undefined;
  }

  private put(key: string, value: string): void {
    if (!key.startsWith(this.prefix) || isBookkeepingKey(this.target.prefix, key)) return;
    try {
      let raw: unknown;
      try {
        raw = JSON.parse(value);
      } catch {
        throw new Error('value is not JSON');
      }
      this.kv.set(key, decodeInstance(raw));
    } catch (err) {
      // One bad record is skipped (as absent); the rest goes on.
      this.kv.delete(key);
      this.handlers?.invalid(`etcd key ${key.slice(0, 300)}: ${(err as Error).message}; skipped`);
    }
  }

  private up(): void {
    this.handlers?.ok();
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
    this.wake?.();
    this.stream?.cancel();
    this.client.close();
  }
}
