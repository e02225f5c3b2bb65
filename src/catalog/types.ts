// The read-side seam: a registry engine streams its whole content; CatalogWatch turns that into
// validated, deduplicated snapshots.
import type { ServiceInstance } from '../model/service-instance.js';

export interface RawWatchHandlers {
  /** The complete current content of the registry (all statuses). */
  update(instances: ServiceInstance[]): void;
  /** A watch error; the watch retries by itself with backoff. */
  error(err: Error): void;
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
}
