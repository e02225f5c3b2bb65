// The immutable catalog snapshot every output works from: services → instances, sorted so that
// equal registry state gives byte-equal rendered output. Registry records are outside input:
// anything that could reach a generated config is validated here, on the read side too.
import type { HealthStatus, ServiceInstance } from '../model/service-instance.js';
import { checkDnsLabel, checkPort, checkText } from '../model/validate.js';
import { isHostname, isIpAddress } from '../util/net.js';
import { checkRouteMeta } from './route-meta.js';

export interface CatalogService {
  readonly name: string;
  /** Union of the instances' tags, sorted. */
  readonly tags: readonly string[];
  readonly instances: readonly Readonly<ServiceInstance>[];
}

export interface Catalog {
  readonly services: readonly CatalogService[];
  /** Equal for equal content: outputs compare it to skip work. */
  readonly fingerprint: string;
}

export const EMPTY_CATALOG: Catalog = Object.freeze({ services: Object.freeze([]), fingerprint: '[]' });

/** Why an instance was left out, or undefined if it is usable. */
export function instanceProblem(i: ServiceInstance): string | undefined {
  const nameErr = checkDnsLabel(i.name);
  if (nameErr) return `name ${nameErr}`;
  // The ID and host reach generated configs (comments, server names) as they are.
  const idErr = typeof i.id === 'string' ? checkText(i.id, 255) : 'is not a string';
  if (idErr) return `id ${idErr}`;
  const hostErr = typeof i.host === 'string' ? checkText(i.host, 255) : 'is not a string';
  if (hostErr) return `host ${hostErr}`;
  if (!isIpAddress(i.address) && !isHostname(i.address)) return `address "${i.address.slice(0, 60)}" is not an IP address or host name`;
  if (checkPort(i.port)) return `port ${i.port} is not a port number`;
  for (const t of i.tags) {
    const err = checkText(t, 255);
    if (err) return `tag ${err}`;
  }
  for (const [k, v] of Object.entries(i.meta)) {
    const err = checkText(v) ?? checkText(k, 128) ?? checkRouteMeta(k, v);
    if (err) return `meta ${k}: ${err}`;
  }
  return undefined;
}

/** Outside text fit for one log line: control characters escaped. */
const printable = (v: string, max: number) => JSON.stringify(v.slice(0, max)).slice(1, -1);

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Build a snapshot from raw registry records: drop invalid ones (reported through `warn`, once
 * per distinct problem by the caller), keep the statuses asked for, sort everything, freeze it.
 */
export function buildCatalog(
  raw: readonly ServiceInstance[],
  statuses: readonly HealthStatus[] = ['passing'],
  warn?: (msg: string) => void,
): Catalog {
  const byName = new Map<string, ServiceInstance[]>();
  for (const r of raw) {
    const problem = instanceProblem(r);
    if (problem) {
      warn?.(`service ${printable(r.name, 63)} instance ${printable(String(r.id), 120)}: ${problem}; instance skipped`);
      continue;
    }
    if (!statuses.includes(r.status)) continue;
    const inst: ServiceInstance = {
      id: r.id,
      name: r.name,
      address: r.address,
      port: r.port,
      protocol: r.protocol,
      tags: [...r.tags].sort(cmp),
      meta: Object.fromEntries(Object.keys(r.meta).sort(cmp).map((k) => [k, r.meta[k]])),
      host: r.host,
      status: r.status,
    };
    const list = byName.get(r.name);
    if (list) list.push(inst);
    else byName.set(r.name, [inst]);
  }
  const services = [...byName.keys()].sort(cmp).map((name) => {
    const instances = byName.get(name)!.sort((a, b) => cmp(a.id, b.id) || cmp(a.address, b.address) || a.port - b.port);
    const tags = [...new Set(instances.flatMap((i) => i.tags))].sort(cmp);
    return deepFreeze({ name, tags, instances });
  });
  return Object.freeze({ services: Object.freeze(services), fingerprint: JSON.stringify(services) });
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as Record<string, unknown>)) deepFreeze(v);
  }
  return o;
}
