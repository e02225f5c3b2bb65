// What a template sees: the catalog as plain sorted data, the HTTP routes derived from it, and
// one upstream per distinct set of instances a route sends to. Everything here is already
// validated by the catalog (names are DNS labels, hosts host names, paths URL paths, addresses
// IPs or host names), so templates may write these values as they are.
import type { Catalog } from '../catalog/catalog.js';
import { buildRoutes } from '../catalog/routes.js';
import type { HealthStatus, ServiceInstance } from '../model/service-instance.js';

export interface InstanceData {
  id: string;
  address: string;
  port: number;
  protocol: string;
  tags: readonly string[];
  meta: Readonly<Record<string, string>>;
  host: string;
  status: HealthStatus;
}

export interface ServiceData {
  name: string;
  /** Union of the routable instances' tags, sorted. */
  tags: string[];
  /** Routable instances (status in --status); empty when the service has none right now. */
  instances: InstanceData[];
}

export interface UpstreamData {
  /** The service name for all of its TCP instances; `<service>_<n>` for a route that uses a subset. */
  name: string;
  service: string;
  /** Routable TCP instances; may be empty (nginx needs a fallback, HAProxy answers 503). */
  instances: InstanceData[];
}

export interface RouteData {
  host: string;
  path: string;
  service: string;
  upstream: string;
  instances: InstanceData[];
  /** Exact-match path (`/api` also matches exactly), or null when the path ends with `/`. */
  exact: string | null;
  /** Prefix on a segment boundary (`/api/`), or null when another route of the host has it. */
  prefix: string | null;
}

export interface VhostData {
  host: string;
  /** `*.example.com`: matches any subdomain; `suffix` is `.example.com`. */
  wildcard: boolean;
  suffix: string;
  /** A route serves `/`; without one, requests outside the routes' paths must get a 404. */
  hasRootRoute: boolean;
  /** Longest path first. */
  routes: RouteData[];
}

export interface TemplateData {
  services: ServiceData[];
  /** Exact hosts first (sorted), then wildcard hosts, most specific first. */
  vhosts: VhostData[];
  upstreams: UpstreamData[];
  domain: string;
  env: Readonly<Record<string, string | undefined>>;
}

export interface TemplateDataOptions {
  statuses: readonly HealthStatus[];
  domain: string;
  env: Record<string, string | undefined>;
}

const toData = (i: Readonly<ServiceInstance>): InstanceData => ({
  id: i.id,
  address: i.address,
  port: i.port,
  protocol: i.protocol,
  tags: i.tags,
  meta: i.meta,
  host: i.host,
  status: i.status,
});

/**
 * The catalog may hold instances of every status (so that a service whose instances are all
 * failing still has its hosts, answered with 503); only `statuses` are routable.
 */
export function templateData(catalog: Catalog, opts: TemplateDataOptions): TemplateData {
  const routable = (i: Readonly<ServiceInstance>) => opts.statuses.includes(i.status);
  const services: ServiceData[] = catalog.services.map((s) => {
    const instances = s.instances.filter(routable).map(toData);
    return { name: s.name, tags: [...new Set(instances.flatMap((i) => i.tags))].sort(), instances };
  });

  // One upstream per service (its routable TCP instances), then one per other instance set a
  // route needs (instances of one service that declare different hosts or paths).
  const upstreams: UpstreamData[] = [];
  const byKey = new Map<string, UpstreamData>();
  const counters = new Map<string, number>();
  const keyOf = (service: string, list: InstanceData[]) => `${service}\n${list.map((i) => i.id).join('\n')}`;
  for (const s of services) {
    const u = { name: s.name, service: s.name, instances: s.instances.filter((i) => i.protocol === 'tcp') };
    upstreams.push(u);
    byKey.set(keyOf(s.name, u.instances), u);
  }
  const upstreamFor = (service: string, list: InstanceData[]): string => {
    const key = keyOf(service, list);
    let u = byKey.get(key);
    if (!u) {
      const n = (counters.get(service) ?? 0) + 1;
      counters.set(service, n);
      u = { name: `${service}_${n}`, service, instances: list };
      upstreams.push(u);
      byKey.set(key, u);
    }
    return u.name;
  };

  const vhosts: VhostData[] = buildRoutes(catalog, opts.domain).vhosts.map((v) => {
    const paths = new Set(v.routes.map((r) => r.path));
    const routes = v.routes.map((r) => {
      const instances = r.instances.filter(routable).map(toData);
      const slash = r.path.endsWith('/');
      const prefix = slash ? r.path : `${r.path}/`;
      return {
        host: r.host,
        path: r.path,
        service: r.service,
        upstream: upstreamFor(r.service, instances),
        instances,
        exact: slash ? null : r.path,
        prefix: !slash && paths.has(prefix) ? null : prefix,
      };
    });
    const wildcard = v.host.startsWith('*.');
    return { host: v.host, wildcard, suffix: wildcard ? v.host.slice(1) : v.host, hasRootRoute: paths.has('/'), routes };
  });
  vhosts.sort((a, b) => Number(a.wildcard) - Number(b.wildcard) || (a.wildcard ? b.host.length - a.host.length : 0) || (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));

  return { services, vhosts, upstreams, domain: opts.domain, env: Object.freeze({ ...opts.env }) };
}
