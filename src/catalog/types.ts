// The read-side seam: a registry engine streams its whole content; CatalogWatch turns that into
// validated, deduplicated snapshots and owns the logging, so that every engine reports a failure
// the same way: one line when it starts, debug while it lasts, one line when it ends.
import type { ServiceInstance } from '../model/service-instance.js';

/** How one part of the registry (a Consul service) stands: failing alone, answering again, or gone. */
export type PartState = Error | 'ok' | 'gone';

export interface RawWatchHandlers {
  /** The complete current content of the registry (all statuses). */
  update(instances: ServiceInstance[]): void;
  /** Reading the registry failed; the watch keeps its last content and retries by itself with backoff. */
  error(err: Error): void;
  /** The registry answers (again): called after the first complete read and after an error() ends. */
  ok(): void;
  /** One part failed alone (the rest goes on, its last good data is kept), or answers again, or is gone. */
  part(name: string, state: PartState): void;
  /** A record that does not decode was skipped; the message names its key. */
  invalid(message: string): void;
  /** Something worth one line that is not a failure (a full read after a compaction). */
  note(message: string, level?: 'info' | 'debug'): void;
}

export interface RawWatch {
  start(h: RawWatchHandlers): void;
  stop(): Promise<void>;
}

export interface WatchStatus {
  connected: boolean;
  /** Set once the first complete read arrived. */
  complete: boolean;
  lastUpdate?: Date;
  lastError?: string;
  /** Parts (Consul services) whose reads fail while the rest of the registry answers. */
  failingParts: number;
}
