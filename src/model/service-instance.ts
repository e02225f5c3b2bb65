// The unit every seam of harbormaster exchanges: one reachable port of one service.

export type Protocol = 'tcp' | 'udp';
export type HealthStatus = 'passing' | 'warning' | 'critical';
export const HEALTH_STATUSES: readonly HealthStatus[] = ['passing', 'warning', 'critical'];

/** A health check definition in registrator's vocabulary, mapped to Consul by the Consul backend. */
export interface CheckDefinition {
  kind: 'http' | 'https' | 'tcp' | 'script' | 'ttl' | 'grpc';
  /** URL for http(s), host:port for tcp/grpc, the command for script; empty for ttl. */
  target: string;
  interval?: string;
  timeout?: string;
  ttl?: string;
  initialStatus?: HealthStatus;
  deregisterAfter?: string;
  grpcUseTls?: boolean;
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
