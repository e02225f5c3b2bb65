// The seam between the registrar and a registry engine: a handful of verbs in the spirit of
// registrator's adapter. One file per engine implements it.
import type { ServiceInstance } from '../model/service-instance.js';

export interface HeartbeatResult {
  /** IDs the registry no longer holds (expired lease, restarted agent): they must be registered again. */
  lost: string[];
}

export interface RegistryBackend {
  /** For log lines; never includes credentials. */
  readonly description: string;
  /** Resolves when the registry answers. */
  ping(): Promise<void>;
  /** Create or replace one instance (idempotent by id). */
  register(instance: ServiceInstance): Promise<void>;
  /** Remove one instance; removing an absent one is not an error. */
  deregister(instance: ServiceInstance): Promise<void>;
  /** Refresh TTLs / pass TTL checks of everything this process registered. */
  heartbeat(instances: ServiceInstance[]): Promise<HeartbeatResult>;
  /** Everything the registry holds (all hosts). */
  list(): Promise<ServiceInstance[]>;
  /** What the registry holds for one host (the registering node). */
  listOwn(host: string): Promise<ServiceInstance[]>;
  close(): Promise<void>;
}

export interface BackendOptions {
  /** Seconds a registration lives without a heartbeat; 0 = no TTL. */
  ttl: number;
  /** Log sink for records the backend skips (malformed registry entries). */
  warn?: (msg: string) => void;
}

/** Thrown for input errors (bad URI, flag); the CLI turns it into exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** The registry refused this one registration (bad check, ACL): retrying it unchanged is useless. */
export class RejectedError extends Error {
  override name = 'RejectedError';
}
