// etcd's legacy v2 API through `node-etcd`: the same <prefix>/<name>/<id> JSON layout as v3,
// with a TTL on every key that each heartbeat refreshes (refresh=true keeps the value and does
// not wake watchers). A host's index lives in the directory <prefix>/_hosts/<host>, which has
// the same TTL and one refresh per round, so a host reads back only its own entries.
import { createRequire } from 'node:module';
import { decodeInstance, encodeInstance } from '../model/codec.js';
import { compareInstances, type ServiceInstance } from '../model/service-instance.js';
import { instanceDigest } from './digest.js';
import { eachLimited } from './each.js';
import { type BackendOptions, type HeartbeatResult, type InstanceRef, type OwnRecord, RefusedError, type RegistryBackend } from './types.js';

const CALL_TIMEOUT_MS = 5_000;
const KEY_NOT_FOUND = 100;
const NODE_EXISTS = 105;

interface V2Node {
  key: string;
  value?: string;
  dir?: boolean;
  nodes?: V2Node[];
}

interface V2Error extends Error {
  errorCode?: number;
}

type Callback = (err: V2Error | null, body: { node?: V2Node } | undefined) => void;

interface EtcdV2Client {
  set(key: string, value: string | null, opts: Record<string, unknown>, cb: Callback): { abort(): void };
  get(key: string, opts: Record<string, unknown>, cb: Callback): { abort(): void };
  del(key: string, opts: Record<string, unknown>, cb: Callback): { abort(): void };
}

export interface Etcd2Target {
  endpoints: string[];
  prefix: string;
}

interface IndexValue {
  name: string;
  digest: string;
}

export class Etcd2Backend implements RegistryBackend {
  readonly description: string;
  private readonly client: EtcdV2Client;
  private readonly host: string;
  /**
   * Until when the host's index directory is known to exist with its TTL (it was created or
   * refreshed then): past it (a heartbeat failed or found it gone, an outage, an idle host) the
   * next write makes sure of it first, because etcd would otherwise create it implicitly, with
   * no TTL, and it and its index entries would outlive this process.
   */
  private dirValidUntil = 0;
  /** Sealed (shutting down): no write. */
  private closed = false;

  constructor(
    private readonly target: Etcd2Target,
    private readonly opts: BackendOptions,
  ) {
    this.description = `etcd2://${target.endpoints.map((e) => e.replace(/^https?:\/\//, '')).join(',')}${target.prefix}`;
    this.host = opts.host ?? '';
    // Loaded on use: node-etcd and its request stack hold ~18 MB of a process that never speaks v2.
    const Client = createRequire(import.meta.url)('node-etcd') as new (hosts: string[], opts: Record<string, unknown>) => EtcdV2Client;
    this.client = new Client(target.endpoints, { timeout: CALL_TIMEOUT_MS });
  }

  /** Path segments are URL-encoded: node-etcd puts the key into the URL as it is. */
  key(s: InstanceRef): string {
    return `${this.target.prefix}/${encodeURIComponent(s.name)}/${encodeURIComponent(s.id)}`;
  }

  private dir(host: string): string {
    return `${this.target.prefix}/_hosts/${encodeURIComponent(host)}`;
  }

  async ping(): Promise<void> {
    try {
      await this.call((cb) => this.client.get(this.target.prefix, {}, cb));
    } catch (err) {
      if (!(err instanceof RefusedError)) throw err;
    }
  }

  digest(s: ServiceInstance): string {
    return instanceDigest(s);
  }

  /**
   * v2 has no transactions, so the order makes a crash between two writes harmless: a new id's
   * index entry goes in first as "unconfirmed" (an empty digest, which no instance has), then the
   * data key, then the confirmed digest. A process killed in between leaves an index entry the
   * next run rewrites or cleans up, never a data key no index knows (with --ttl 0 it would stay).
   */
  async register(s: ServiceInstance): Promise<void> {
    if (this.closed) throw new RefusedError(`not registering ${s.id}: shutting down`);
    const ttl = this.opts.ttl > 0 ? { ttl: this.opts.ttl } : {};
    const dir = this.dir(s.host || this.host);
    await this.ensureDir(dir);
    const indexKey = `${dir}/${encodeURIComponent(s.id)}`;
    const unconfirmed: IndexValue = { name: s.name, digest: '' };
    try {
      await this.call((cb) => this.client.set(indexKey, JSON.stringify(unconfirmed), { prevExist: false }, cb));
    } catch (err) {
      // Already indexed (an update): the old digest stays until the new data is written.
      if (errorCode(err) !== NODE_EXISTS) throw err;
    }
    await this.call((cb) => this.client.set(this.key(s), encodeInstance(s), ttl, cb));
    const index: IndexValue = { name: s.name, digest: this.digest(s) };
    await this.call((cb) => this.client.set(indexKey, JSON.stringify(index), {}, cb));
  }

  async deregister(ref: InstanceRef): Promise<void> {
    await this.ignoreMissing(this.call((cb) => this.client.del(this.key(ref), {}, cb)));
    await this.ignoreMissing(this.call((cb) => this.client.del(`${this.dir(this.host)}/${encodeURIComponent(ref.id)}`, {}, cb)));
  }

  /** One refresh for the index directory, then one per key. */
  async heartbeat(refs: InstanceRef[], signal?: AbortSignal): Promise<HeartbeatResult> {
    if (this.opts.ttl <= 0) return { lost: [] };
    // Nothing to keep alive: the index directory lapses, and the next write creates it again.
    if (refs.length === 0 || this.closed) return { lost: [] };
    const refreshed = Date.now();
    try {
      await this.call((cb) => this.client.set(this.dir(this.host), null, { dir: true, ttl: this.opts.ttl, refresh: true, prevExist: true }, cb));
    } catch (err) {
      if (errorCode(err) !== KEY_NOT_FOUND) throw err;
      // The index expired: write everything again, which recreates it.
      this.dirValidUntil = 0;
      return { lost: refs.map((r) => r.id) };
    }
    this.dirValidUntil = refreshed + this.opts.ttl * 1000;
    const lost: string[] = [];
    let failure: unknown;
    let unreachable = false;
    await eachLimited(
      refs,
      16,
      async (r) => {
        try {
          await this.call((cb) => this.client.set(this.key(r), null, { ttl: this.opts.ttl, refresh: true, prevExist: true }, cb));
        } catch (err) {
          if (errorCode(err) === KEY_NOT_FOUND) lost.push(r.id);
          else {
            failure ??= err;
            if (!(err instanceof RefusedError)) unreachable = true;
          }
        }
      },
      () => unreachable || !!signal?.aborted,
    );
    return failure === undefined ? { lost } : { lost, error: failure };
  }

  async list(): Promise<ServiceInstance[]> {
    let root: V2Node | undefined;
    try {
      root = (await this.call((cb) => this.client.get(this.target.prefix, { recursive: true }, cb)))?.node;
    } catch (err) {
      if (errorCode(err) === KEY_NOT_FOUND) return [];
      throw err;
    }
    const out: ServiceInstance[] = [];
    const skip = `${this.target.prefix}/_`;
    const walk = (n: V2Node) => {
      if (n.key?.startsWith(skip)) return;
      if (n.dir) for (const c of n.nodes ?? []) walk(c);
      else if (n.value !== undefined) {
        try {
          out.push(decodeInstance(JSON.parse(n.value)));
        } catch (err) {
          this.opts.warn?.(`etcd2 key ${n.key}: ${(err as Error).message}; skipped`);
        }
      }
    };
    if (root) walk(root);
    return out.sort(compareInstances);
  }

  async listOwn(host: string): Promise<OwnRecord[]> {
    const dir = this.dir(host);
    let root: V2Node | undefined;
    try {
      root = (await this.call((cb) => this.client.get(dir, { recursive: true }, cb)))?.node;
    } catch (err) {
      if (errorCode(err) === KEY_NOT_FOUND) return [];
      throw err;
    }
    const out: OwnRecord[] = [];
    for (const n of root?.nodes ?? []) {
      try {
        // etcd stores the key as the URL decoded it: the id as it is (encoded only on the way in).
        const id = n.key.slice(dir.length + 1);
        const v = JSON.parse(n.value ?? '') as IndexValue;
        if (typeof v?.name !== 'string' || typeof v.digest !== 'string') throw new Error('not a harbormaster index record');
        out.push({ id, name: v.name, digest: v.digest });
      } catch (err) {
        this.opts.warn?.(`etcd2 key ${n.key}: ${(err as Error).message}; skipped`);
      }
    }
    return out;
  }

  /** The keys one by one (v2 has no transactions), then the index directory at once. */
  async deregisterAll(refs: InstanceRef[], done?: (ref: InstanceRef) => void): Promise<void> {
    this.closed = true;
    await eachLimited(refs, 16, async (r) => {
      await this.ignoreMissing(this.call((cb) => this.client.del(this.key(r), {}, cb)));
      done?.(r);
    });
    await this.ignoreMissing(this.call((cb) => this.client.del(this.dir(this.host), { recursive: true }, cb)));
    this.dirValidUntil = 0;
  }

  seal(): void {
    this.closed = true;
  }

  async close(): Promise<void> {}

  /**
   * The index directory, with the TTL (a directory etcd makes implicitly has none). Skipped while
   * it is known to exist for a while yet: within a safety margin of its expiry it is made sure of
   * again (created, or its TTL set, which also gives one to a directory left without).
   */
  private async ensureDir(dir: string): Promise<void> {
    const margin = Math.min(1000, (this.opts.ttl * 1000) / 4);
    if (this.opts.ttl > 0 ? Date.now() + margin < this.dirValidUntil : this.dirValidUntil > 0) return;
    const ttl = this.opts.ttl > 0 ? { ttl: this.opts.ttl } : {};
    const at = Date.now();
    try {
      await this.call((cb) => this.client.set(dir, null, { dir: true, ...ttl, prevExist: false }, cb));
    } catch (err) {
      if (errorCode(err) !== NODE_EXISTS) throw err;
      if (this.opts.ttl > 0) await this.call((cb) => this.client.set(dir, null, { dir: true, ttl: this.opts.ttl, prevExist: true }, cb));
    }
    this.dirValidUntil = this.opts.ttl > 0 ? at + this.opts.ttl * 1000 : Infinity;
  }

  private async ignoreMissing(p: Promise<unknown>): Promise<void> {
    try {
      await p;
    } catch (err) {
      if (errorCode(err) !== KEY_NOT_FOUND) throw err;
    }
  }

  /** etcd's own errors (an errorCode) are answers: RefusedError; anything else is no answer. */
  private call(fn: (cb: Callback) => { abort(): void }): Promise<{ node?: V2Node } | undefined> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        token.abort();
        reject(new Error(`etcd2 request timed out after ${CALL_TIMEOUT_MS} ms`));
      }, CALL_TIMEOUT_MS + 500);
      const token = fn((err, body) => {
        clearTimeout(timer);
        if (!err) resolve(body);
        else if (typeof err.errorCode === 'number') reject(Object.assign(new RefusedError(`etcd2: ${err.message} (${err.errorCode})`), { errorCode: err.errorCode }));
        else reject(err);
      });
    });
  }
}

function errorCode(err: unknown): number | undefined {
  return (err as V2Error)?.errorCode;
}
