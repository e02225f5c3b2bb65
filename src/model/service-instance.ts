// The unit every seam of harbormaster exchanges: one reachable port of one service.

export type Protocol = 'tcp' | 'udp';
export type HealthStatus = 'passing' | 'warning' | 'critical';
export const HEALTH_STATUSES: readonly HealthStatus[] = ['passing', 'warning', 'critical'];

/** A health check definition in registrator's vocabulary, mapped to Consul by the Consul backend. */
export interface CheckDefinition {
  /** `cmd` is SERVICE_CHECK_CMD: a command the agent runs inside the container (a Consul Docker check). */
  kind: 'http' | 'https' | 'tcp' | 'script' | 'ttl' | 'grpc' | 'cmd';
  /** URL for http(s), host:port for tcp, host:port[/service] for grpc, the command for script and cmd; empty for ttl. */
  target: string;
  interval?: string;
  timeout?: string;
  ttl?: string;
  initialStatus?: HealthStatus;
  deregisterAfter?: string;
  grpcUseTls?: boolean;
  /** cmd: the Docker container (full ID from `docker inspect`) the command runs in. */
  containerId?: string;
  /** http, https: request method (an upper-case HTTP token); Consul's default is GET. */
  method?: string;
  /** https, and grpc with TLS: do not verify the certificate. Present only when true. */
  tlsSkipVerify?: boolean;
}

/** Meta keys the registry backends write next to a service's own meta (Consul: hm_host, hm_digest). */
export const OWN_META_KEYS = ['hm_host', 'hm_digest'] as const;
/** Consul's limit on the number of meta keys of one service. */
export const MAX_META_KEYS = 64;
/** What a service's own meta may hold, so that the backends' keys still fit within MAX_META_KEYS. */
export const MAX_USER_META_KEYS = MAX_META_KEYS - OWN_META_KEYS.length;
/** Consul's limits on a meta key and a meta value. */
export const MAX_META_KEY_LENGTH = 128;
export const MAX_META_VALUE_LENGTH = 512;

/**
 * Service IDs of the form `harbormaster:<host>` name a host's own heartbeat service in Consul
 * (one per host, never an instance): no container may take one, whatever the backend.
 */
export function isReservedId(id: string): boolean {
  return /^harbormaster:[^:]*$/.test(id);
}

export interface ServiceInstance {
  /** `<hostname>:<container-name>:<exposed-port>[:udp]` unless SERVICE_ID overrides it. */
  id: string;
  name: string;
  address: string;
  port: number;
  protocol: Protocol;
  tags: string[];
  meta: Record<string, string>;
  /** The registering node (harbormaster's --hostname). */
  host: string;
  check?: CheckDefinition;
  status: HealthStatus;
}

/** Stable serialization used to tell whether a registration changed. */
export function instanceFingerprint(s: ServiceInstance): string {
  const meta = Object.keys(s.meta)
    .sort()
    .map((k) => [k, s.meta[k]]);
  return JSON.stringify([s.id, s.name, s.address, s.port, s.protocol, s.tags, meta, s.host, s.check ?? null, s.status]);
}

export function compareInstances(a: ServiceInstance, b: ServiceInstance): number {
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  return 0;
}
