// The immutable catalog snapshot every output works from: services → instances, sorted so that
// equal registry state gives byte-equal rendered output. Registry records are outside input:
// anything that could reach a generated config is validated here, on the read side too.
import { createHash } from 'node:crypto';
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
  return new CatalogBuilder(statuses, warn).build(raw);
}

interface BuiltService {
  readonly service: CatalogService;
  /** The normalized instances it holds, to tell in O(its size) whether a later read changed it. */
  readonly members: ReadonlySet<Readonly<ServiceInstance>>;
  readonly digest: string;
}

/**
 * Successive snapshots of one registry. A watch hands over its whole content at every change,
 * but keeps the decoded record object of every key that did not change: records are validated
 * and normalized once per object (a WeakMap), and a service whose records are all the same
 * objects keeps its frozen entry of the previous snapshot. A change of one instance thus costs
 * the work of its service plus one identity lookup per record, not a sort, copy and freeze of
 * every instance; equal content still gives an equal (byte-equal) snapshot and fingerprint.
 */
export class CatalogBuilder {
  private readonly normalized = new WeakMap<ServiceInstance, Readonly<ServiceInstance> | null>();
  private services = new Map<string, BuiltService>();
  private last?: Catalog;
  /** Records validated and normalized, services (re)built: what a change cost. */
  readonly stats = { normalized: 0, servicesBuilt: 0 };

  constructor(
    private readonly statuses: readonly HealthStatus[] = ['passing'],
    private readonly warn?: (msg: string) => void,
  ) {}

  build(raw: readonly ServiceInstance[]): Catalog {
    const byName = new Map<string, Readonly<ServiceInstance>[]>();
    for (const r of raw) {
      let inst = this.normalized.get(r);
      if (inst === undefined) this.normalized.set(r, (inst = this.normalize(r)));
      if (inst === null) continue;
      const list = byName.get(inst.name);
      if (list) list.push(inst);
      else byName.set(inst.name, [inst]);
    }
    let changed = !this.last || byName.size !== this.services.size;
    const next = new Map<string, BuiltService>();
    for (const [name, list] of byName) {
      const prev = this.services.get(name);
      if (prev && prev.members.size === list.length && list.every((i) => prev.members.has(i))) {
        next.set(name, prev);
        continue;
      }
      changed = true;
      next.set(name, this.buildService(name, list));
    }
    if (!changed && this.last) return this.last;
    // Same names as before: the previous order holds, no sort.
    const sameNames = this.last && byName.size === this.services.size && [...this.services.keys()].every((n) => next.has(n));
    const names = sameNames ? [...this.services.keys()] : [...next.keys()].sort(cmp);
    const ordered = new Map<string, BuiltService>();
    for (const n of names) ordered.set(n, next.get(n)!);
    this.services = ordered;
    const hash = createHash('sha256');
    for (const b of ordered.values()) hash.update(b.digest);
    const fingerprint = ordered.size === 0 ? EMPTY_CATALOG.fingerprint : hash.digest('hex');
    this.last = Object.freeze({ services: Object.freeze([...ordered.values()].map((b) => b.service)), fingerprint });
    return this.last;
  }

  /** The record as snapshots hold it (tags and meta sorted), or null if left out. */
  private normalize(r: ServiceInstance): Readonly<ServiceInstance> | null {
    this.stats.normalized++;
    const problem = instanceProblem(r);
    if (problem) {
      this.warn?.(`service ${printable(r.name, 63)} instance ${printable(String(r.id), 120)}: ${problem}; instance skipped`);
      return null;
    }
    if (!this.statuses.includes(r.status)) return null;
    return deepFreeze({
      id: r.id,
      name: r.name,
      address: r.address,
      port: r.port,
      protocol: r.protocol,
      tags: [...r.tags].sort(cmp),
      meta: Object.fromEntries(Object.keys(r.meta).sort(cmp).map((k) => [k, r.meta[k]])),
      host: r.host,
      status: r.status,
    });
  }

  private buildService(name: string, list: Readonly<ServiceInstance>[]): BuiltService {
    this.stats.servicesBuilt++;
    const instances = [...list].sort((a, b) => cmp(a.id, b.id) || cmp(a.address, b.address) || a.port - b.port);
    const tags = [...new Set(instances.flatMap((i) => i.tags))].sort(cmp);
    const service = deepFreeze({ name, tags, instances });
    return { service, members: new Set(list), digest: createHash('sha256').update(JSON.stringify(service)).digest('hex') };
  }
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as Record<string, unknown>)) deepFreeze(v);
  }
  return o;
}
