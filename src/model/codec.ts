// Reading ServiceInstances back from a registry: registry answers are outside input too,
// so every field is checked before it reaches a catalog or a generated config.
import { HEALTH_STATUSES, type HealthStatus, type ServiceInstance } from './service-instance.js';
import { checkPort, checkText } from './validate.js';

function str(v: unknown, field: string, max = 512): string {
  if (typeof v !== 'string') throw new Error(`${field} is not a string`);
  const err = checkText(v, max);
  if (err) throw new Error(`${field} ${err}`);
  return v;
}

/** Validate a decoded JSON record; throws an Error naming the bad field. */
export function decodeInstance(raw: unknown): ServiceInstance {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error('record is not an object');
  const r = raw as Record<string, unknown>;
  const port = r.port;
  if (typeof port !== 'number' || checkPort(port)) throw new Error('port is not a port number');
  const protocol = r.protocol ?? 'tcp';
  if (protocol !== 'tcp' && protocol !== 'udp') throw new Error('protocol is not tcp or udp');
  const status = r.status ?? 'passing';
  if (!HEALTH_STATUSES.includes(status as HealthStatus)) throw new Error('status is not passing, warning or critical');
  const tags = r.tags ?? [];
  if (!Array.isArray(tags)) throw new Error('tags is not an array');
  const meta = r.meta ?? {};
  if (typeof meta !== 'object' || meta === null || Array.isArray(meta)) throw new Error('meta is not an object');
  const inst: ServiceInstance = {
    id: str(r.id, 'id', 255),
    name: str(r.name, 'name', 255),
    address: str(r.address, 'address', 255),
    port,
    protocol,
    tags: tags.map((t, i) => str(t, `tags[${i}]`, 255)),
    meta: Object.fromEntries(Object.entries(meta).map(([k, v]) => [str(k, 'meta key', 128), str(v, `meta.${k}`)])),
    host: r.host === undefined ? '' : str(r.host, 'host', 255),
    status: status as HealthStatus,
  };
  if (r.check !== undefined && r.check !== null) inst.check = r.check as ServiceInstance['check'];
  return inst;
}

/** The stored JSON form (etcd, etcd2): {id, name, address, port, protocol, tags, meta, host, status}. */
export function encodeInstance(s: ServiceInstance): string {
  return JSON.stringify({
    id: s.id,
    name: s.name,
    address: s.address,
    port: s.port,
    protocol: s.protocol,
    tags: s.tags,
    meta: s.meta,
    host: s.host,
    status: s.status,
    ...(s.check ? { check: s.check } : {}),
  });
}
