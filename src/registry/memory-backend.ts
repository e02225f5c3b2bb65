// The embedded registry: a process-wide store per name, with the same TTL semantics as the
// real engines so that `harbormaster run` on one machine behaves like a cluster would.
import { compareInstances, type ServiceInstance } from '../model/service-instance.js';
import { instanceDigest } from './digest.js';
import { type BackendOptions, type HeartbeatResult, type InstanceRef, type OwnRecord, RefusedError, type RegistryBackend } from './types.js';

interface Entry {
  instance: ServiceInstance;
  digest: string;
  expiresAt: number; // Infinity without TTL
}

export class MemoryStore {
  private readonly entries = new Map<string, Entry>();
  private readonly listeners = new Set<() => void>();
  /** Earliest expiry of any entry: sweeping is skipped until then. */
  private nextExpiry = Infinity;

  put(instance: ServiceInstance, ttlMs: number): void {
    const expiresAt = ttlMs > 0 ? Date.now() + ttlMs : Infinity;
    this.entries.set(instance.id, { instance: structuredClone(instance), digest: instanceDigest(instance), expiresAt });
    this.nextExpiry = Math.min(this.nextExpiry, expiresAt);
    this.emit();
  }

  delete(id: string): void {
    if (this.entries.delete(id)) this.emit();
  }

  /** Refresh many at once; returns the ids that are gone (expired or never there). */
  refresh(ids: string[], ttlMs: number): string[] {
    this.expire();
    const gone: string[] = [];
    const expiresAt = ttlMs > 0 ? Date.now() + ttlMs : Infinity;
    for (const id of ids) {
      const e = this.entries.get(id);
      if (e) e.expiresAt = expiresAt;
      else gone.push(id);
    }
    return gone;
  }

  list(): ServiceInstance[] {
    this.expire();
    return [...this.entries.values()].map((e) => structuredClone(e.instance)).sort(compareInstances);
  }

  own(host: string): OwnRecord[] {
    this.expire();
    const out: OwnRecord[] = [];
    for (const e of this.entries.values()) if (e.instance.host === host) out.push({ id: e.instance.id, name: e.instance.name, digest: e.digest });
    return out;
  }

  /** Change notification for the read side; returns an unsubscribe function. */
  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Drop what has expired (cheap when nothing has); listeners hear of any removal. */
  expire(): void {
    const now = Date.now();
    if (now < this.nextExpiry) return;
    let changed = false;
    let next = Infinity;
    for (const [id, e] of this.entries) {
      if (e.expiresAt <= now) {
        this.entries.delete(id);
        changed = true;
      } else next = Math.min(next, e.expiresAt);
    }
    this.nextExpiry = next;
    if (changed) this.emit();
  }

  private emit(): void {
    for (const fn of this.listeners) fn();
  }
}

const stores = new Map<string, MemoryStore>();

export function memoryStore(name: string): MemoryStore {
  let s = stores.get(name);
  if (!s) stores.set(name, (s = new MemoryStore()));
  return s;
}

export class MemoryBackend implements RegistryBackend {
  readonly description: string;
  private readonly ttlMs: number;
  private sealed = false;

  constructor(
    readonly store: MemoryStore,
    name: string,
    opts: BackendOptions,
  ) {
    this.description = `memory://${name === 'default' ? '' : name}`;
    this.ttlMs = opts.ttl * 1000;
  }

  async ping(): Promise<void> {}

  digest(instance: ServiceInstance): string {
    return instanceDigest(instance);
  }

  async register(instance: ServiceInstance): Promise<void> {
    if (this.sealed) throw new RefusedError(`not registering ${instance.id}: shutting down`);
    this.store.put(instance, this.ttlMs);
  }

  seal(): void {
    this.sealed = true;
  }

  async deregister(ref: InstanceRef): Promise<void> {
    this.store.delete(ref.id);
  }

  async heartbeat(refs: InstanceRef[], _signal?: AbortSignal): Promise<HeartbeatResult> {
    return { lost: this.store.refresh(refs.map((r) => r.id), this.ttlMs) };
  }

  async list(): Promise<ServiceInstance[]> {
    return this.store.list();
  }

  async listOwn(host: string): Promise<OwnRecord[]> {
    return this.store.own(host);
  }

  async close(): Promise<void> {}
}
