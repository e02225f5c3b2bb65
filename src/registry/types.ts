// The seam between the registrar and a registry engine: a handful of verbs in the spirit of
// registrator's adapter. One file per engine implements it.
import type { ServiceInstance } from '../model/service-instance.js';

/** Enough to address one registration: etcd keys hold the service name, Consul needs the id. */
export type InstanceRef = Pick<ServiceInstance, 'id' | 'name'>;

export interface HeartbeatResult {
  /** IDs the registry no longer holds (expired lease, restarted agent): they must be registered again. */
  lost: string[];
  /** Some refreshes failed for another reason (the first error); the rest went through. */
  error?: unknown;
}

/** One registration of this host as the registry holds it (`listOwn`). */
export interface OwnRecord {
  id: string;
  name: string;
  /** The digest written with the record (see `digest`); '' when the record carries none. */
  digest: string;
  /** Present, but nothing of this process keeps it alive (another lease, a missing TTL check): write it again. */
  renew?: boolean;
}

export interface RegistryBackend {
  /** For log lines; never includes credentials. */
  readonly description: string;
  /** Resolves when the registry answers at all; rejects only when it cannot be reached. */
  ping(): Promise<void>;
  /** Create or replace one instance (idempotent by id). */
  register(instance: ServiceInstance): Promise<void>;
  /** Remove one instance; removing an absent one is not an error. */
  deregister(ref: InstanceRef): Promise<void>;
  /** Refresh TTLs / pass TTL checks of what this process registered: one request per lease or TTL check; `signal` ends the round early. */
  heartbeat(refs: InstanceRef[], signal?: AbortSignal): Promise<HeartbeatResult>;
  /** Everything the registry holds (all hosts). */
  list(): Promise<ServiceInstance[]>;
  /** What the registry holds for one host, read without reading other hosts' entries. */
  listOwn(host: string): Promise<OwnRecord[]>;
  /** What `listOwn` reports as `digest` for this instance once it is written. */
  digest(instance: ServiceInstance): string;
  /** Entries of this host nothing wants, left (without --cleanup) to expire as if nobody kept them alive. */
  abandon?(refs: InstanceRef[]): Promise<void>;
  /**
   * Withdraw all of `refs` at once where the engine can do it cheaper than one by one (etcd: revoke
   * the lease); `done` hears of each one withdrawn as it goes, so that what is left is known if
   * the caller runs out of time.
   */
  deregisterAll?(refs: InstanceRef[], done?: (ref: InstanceRef) => void): Promise<void>;
  /**
   * Shutting down: from now on every write (register, abandon, a heartbeat service) and every
   * new lease is refused, so that nothing written late can undo the withdrawal; deregister and
   * deregisterAll still work.
   */
  seal(): void;
  /**
   * Where the backend says, outside a heartbeat, that entries of this host may be gone (etcd v3:
   * a write found the lease expired or revoked, so every key on it went with it): the caller
   * runs a heartbeat round at once, which reports them lost.
   */
  onLoss?(fn: () => void): void;
  close(): Promise<void>;
}

export interface BackendOptions {
  /** Seconds a registration lives without a heartbeat; 0 = no TTL. */
  ttl: number;
  /** The registering host (its index of own entries, on etcd); '' for read-only use. */
  host?: string;
  /** Log sink for records the backend skips (malformed registry entries). */
  warn?: (msg: string) => void;
  /** Longest wait for one answer of the registry (Consul agent calls); backends have their own default. */
  timeoutMs?: number;
}

/** Thrown for input errors (bad URI, flag); the CLI turns it into exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** The registry refused this one registration for what it is (an invalid check): retrying it unchanged is useless. */
export class RejectedError extends Error {
  override name = 'RejectedError';
}

/** The registry answered but refused the request (ACL, rate limit, server error): an outage of its own kind. */
export class RefusedError extends Error {
  override name = 'RefusedError';
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

/**
 * How a failed registry call is handled: `rejected` stops retrying that registration until it
 * changes; `refusing` (an answer, but no) retries with backoff; `unreachable` (no answer) also
 * means the registry may have lost state, so a full resync follows once it answers again.
 */
export type FailureKind = 'rejected' | 'refusing' | 'unreachable';

export function failureKind(err: unknown): FailureKind {
  if (err instanceof RejectedError) return 'rejected';
  if (err instanceof RefusedError) return 'refusing';
  return 'unreachable';
}
