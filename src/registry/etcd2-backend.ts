// etcd's legacy v2 API through `node-etcd`: the same <prefix>/<name>/<id> JSON layout as v3,
// with a TTL on every key that each heartbeat refreshes (refresh=true keeps the value and
// does not wake watchers).
import Etcd from 'node-etcd';
import { decodeInstance, encodeInstance } from '../model/codec.js';
import { compareInstances, type ServiceInstance } from '../model/service-instance.js';
import type { BackendOptions, HeartbeatResult, RegistryBackend } from './types.js';

const CALL_TIMEOUT_MS = 5_000;
const KEY_NOT_FOUND = 100;

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

export class Etcd2Backend implements RegistryBackend {
  readonly description: string;
  private readonly client: EtcdV2Client;

  constructor(
    private readonly target: Etcd2Target,
    private readonly opts: BackendOptions,
  ) {
    this.description = `etcd2://${target.endpoints.map((e) => e.replace(/^https?:\/\//, '')).join(',')}${target.prefix}`;
    const Client = Etcd as unknown as new (hosts: string[], opts: Record<string, unknown>) => EtcdV2Client;
    this.client = new Client(target.endpoints, { timeout: CALL_TIMEOUT_MS });
  }

  /** Path segments are URL-encoded: node-etcd puts the key into the URL as it is. */
  key(s: Pick<ServiceInstance, 'name' | 'id'>): string {
    return `${this.target.prefix}/${encodeURIComponent(s.name)}/${encodeURIComponent(s.id)}`;
  }

  async ping(): Promise<void> {
    try {
      await this.call((cb) => this.client.get(this.target.prefix, {}, cb));
    } catch (err) {
      if ((err as V2Error).errorCode !== KEY_NOT_FOUND) throw err;
    }
  }

  async register(s: ServiceInstance): Promise<void> {
    await this.call((cb) => this.client.set(this.key(s), encodeInstance(s), this.opts.ttl > 0 ? { ttl: this.opts.ttl } : {}, cb));
  }

  async deregister(s: ServiceInstance): Promise<void> {
    try {
      await this.call((cb) => this.client.del(this.key(s), {}, cb));
    } catch (err) {
      if ((err as V2Error).errorCode !== KEY_NOT_FOUND) throw err;
    }
  }

  async heartbeat(instances: ServiceInstance[]): Promise<HeartbeatResult> {
    if (this.opts.ttl <= 0) return { lost: [] };
    const lost: string[] = [];
    for (let i = 0; i < instances.length; i += 16) {
      await Promise.all(
        instances.slice(i, i + 16).map(async (s) => {
          try {
            await this.call((cb) => this.client.set(this.key(s), null, { ttl: this.opts.ttl, refresh: true, prevExist: true }, cb));
          } catch (err) {
            if ((err as V2Error).errorCode === KEY_NOT_FOUND) lost.push(s.id);
            else throw err;
          }
        }),
      );
    }
    return { lost };
  }

  async list(): Promise<ServiceInstance[]> {
    let root: V2Node | undefined;
    try {
      root = (await this.call((cb) => this.client.get(this.target.prefix, { recursive: true }, cb)))?.node;
    } catch (err) {
      if ((err as V2Error).errorCode === KEY_NOT_FOUND) return [];
      throw err;
    }
    const out: ServiceInstance[] = [];
    const walk = (n: V2Node) => {
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

  async listOwn(host: string): Promise<ServiceInstance[]> {
    return (await this.list()).filter((i) => i.host === host);
  }

  async close(): Promise<void> {}

  private call(fn: (cb: Callback) => { abort(): void }): Promise<{ node?: V2Node } | undefined> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        token.abort();
        reject(new Error(`etcd2 request timed out after ${CALL_TIMEOUT_MS} ms`));
      }, CALL_TIMEOUT_MS + 500);
      const token = fn((err, body) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(body);
      });
    });
  }
}
