// Health probes over the status objects the parts already keep (catalog watch, registrar,
// Docker source), in the shape the status API reports.
import type { CatalogWatch } from '../catalog/watch.js';
import type { RegistrarStatus } from '../registrar/registrar.js';
import type { DockerSourceStatus } from '../sources/docker/docker-source.js';
import { viewOf, type Withdrawal } from '../sources/docker/withdrawals.js';
import type { ComponentHealth } from './status-server.js';

export function watchProbe(watch: CatalogWatch, registry: string): () => ComponentHealth {
  return () => {
    const s = watch.status;
    return {
      ok: s.connected && s.complete,
      registry,
      connected: s.connected,
      complete: s.complete,
      services: watch.catalog?.services.length ?? 0,
      // Services whose own reads fail (their last good data is still served).
      failingServices: s.failingParts,
      lastSync: s.lastUpdate,
      lastError: s.lastError,
    };
  };
}

/**
 * Healthy when the registry answers in time and accepts, nothing waits for a retry, and heartbeats
 * go through. A slow registry is reported as such, with the writes it still owes (`pending`).
 */
export function registrarProbe(registrar: { readonly status: RegistrarStatus }, registry: string): () => ComponentHealth {
  return () => {
    const s = registrar.status;
    return {
      ok: s.registryUp && !s.slow && s.retrying === 0 && s.heartbeatOk,
      registry,
      connected: s.registryUp,
      slow: s.slow,
      inflightLimit: s.inflightLimit,
      registered: s.registered,
      pending: s.pending,
      retrying: s.retrying,
      rejected: s.rejected,
      heartbeatOk: s.heartbeatOk,
      lastHeartbeat: s.lastHeartbeat,
      heartbeatError: s.heartbeatError,
      lastSync: s.lastSync,
      lastError: s.lastError,
    };
  };
}

/** With `withdrawals`, the containers taken out of rotation on request are listed too (they do not make it unhealthy). */
export function dockerProbe(status: DockerSourceStatus, endpoint: string, withdrawals?: () => Withdrawal[]): () => ComponentHealth {
  return () => ({
    ok: status.connected,
    endpoint,
    connected: status.connected,
    ...(withdrawals ? { withdrawn: withdrawals().map(viewOf) } : {}),
    lastSync: status.lastSync,
    lastError: status.lastError,
  });
}
