// The embedded registry: a process-wide store per name, with the same TTL semantics as the
// real engines so that `harbormaster run` on one machine behaves like a cluster would.
import { compareInstances, type ServiceInstance } from '../model/service-instance.js';
import type { BackendOptions, HeartbeatResult, RegistryBackend } from './types.js';

interface Entry {
  instance: ServiceInstance;
  expiresAt: number; // Infinity without TTL
}

export class MemoryStore {
  private readonly entries = new Map<string, Entry>();
  private readonly listeners = new Set<() => void>();

  put(instance: ServiceInstance, ttlMs: number): void {
    this.entries.set(instance.id, { instance: structuredClone(instance), expiresAt: ttlMs > 0 ? Date.now() + ttlMs : Infinity });
    this.emit();
  }

  delete(id: string): void {
    if (this.entries.delete(id)) this.emit();
  }

  /** Returns false when the entry is gone (expired or never there). */
  refresh(id: string, ttlMs: number): boolean {
    this.expire();
    const e = this.entries.get(id);
    if (!e) return false;
    e.expiresAt = ttlMs > 0 ? Date.now() + ttlMs : Infinity;
    return true;
  }

  list(): ServiceInstance[] {
    this.expire();
    return [...this.entries.values()].map((e) => structuredClone(e.instance)).sort(compareInstances);
  }

  /** Change notification for the read side; returns an unsubscribe function. */
  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private expire(): void {
    const now = Date.now();
    let changed = false;
    for (const [id, e] of this.entries) {
      if (e.expiresAt <= now) {
        this.entries.delete(id);
        changed = true;
      }
    }
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

  constructor(
    readonly store: MemoryStore,
    name: string,
    opts: BackendOptions,
  ) {
    this.description = `memory://${name === 'default' ? '' : name}`;
    this.ttlMs = opts.ttl * 1000;
  }

  async ping(): Promise<void> {}

  async register(instance: ServiceInstance): Promise<void> {
    this.store.put(instance, this.ttlMs);
  }

  async deregister(instance: ServiceInstance): Promise<void> {
    this.store.delete(instance.id);
  }

  async heartbeat(instances: ServiceInstance[]): Promise<HeartbeatResult> {
    return { lost: instances.filter((i) => !this.store.refresh(i.id, this.ttlMs)).map((i) => i.id) };
  }

  async list(): Promise<ServiceInstance[]> {
    return this.store.list();
  }

  async listOwn(host: string): Promise<ServiceInstance[]> {
    return this.store.list().filter((i) => i.host === host);
  }

  async close(): Promise<void> {}
}
