// What a template sees: the catalog as plain sorted data, the HTTP routes derived from it, and
// one upstream per distinct set of instances a route sends to. Everything here is already
// validated by the catalog (names are DNS labels, hosts host names, paths URL paths, addresses
// IPs or host names), so templates may write these values as they are. Routing decisions (hosts,
// paths, weights, "nothing to send to") come from the catalog's one routing table, so that the
// shipped templates route exactly as the built-in proxy does.
import type { Catalog } from '../catalog/catalog.js';
import { REFUSED_DECODED_SOURCE, REFUSED_PATH_SOURCE, REFUSED_TARGET_SOURCE } from '../catalog/path-rule.js';
import { ACCEPTED_TARGET_SOURCE, buildRoutes, HOST_HEADER_SOURCE, instanceWeight, matchPath, NGINX_OTHER_AUTHORITY_SOURCE, type VirtualHost } from '../catalog/routes.js';
import { CLAIM_HEADERS } from '../proxy/headers.js';
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
  /** Load-balancing weight 0–1000 (meta `weight`, default 1); 0: no new requests. */
  weight: number;
  /**
   * The weight on HAProxy's 0–256 scale: when a service's largest weight is above 256, every
   * weight of it is scaled by 256/largest (rounded up, so a weight above 0 stays above 0), which
   * keeps the ratios that capping would flatten (300 vs 1000 would become 256 vs 256).
   */
  haproxyWeight: number;
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
  /** Some instance has a weight above 0: requests can be sent (else 503, as for no instance). */
  live: boolean;
}

export interface RouteData {
  host: string;
  path: string;
  service: string;
  upstream: string;
  instances: InstanceData[];
  /** As the upstream's: false answers 503. */
  live: boolean;
  /** Exact-match path (`/api` also matches exactly), or null when the path ends with `/`. */
  exact: string | null;
  /** Prefix on a segment boundary (`/api/`), or null when another route of the host has it. */
  prefix: string | null;
}

/**
 * `/api` for a route `/api/` that no route matches exactly: nginx would answer it with a redirect
 * to `/api/`, so the template must route it as the routing table does (`route`, or 404 if null).
 */
export interface BarePathData {
  path: string;
  route: RouteData | null;
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
  bare: BarePathData[];
}

export interface TemplateData {
  services: ServiceData[];
  /** Exact hosts first (sorted), then wildcard hosts, most specific first. */
  vhosts: VhostData[];
  upstreams: UpstreamData[];
  /**
   * The path rule as PCRE patterns: over the path (HAProxy `path`), over the whole target (nginx
   * `$request_uri`), and over the path decoded once (nginx `$uri`, HAProxy `path,url_dec`).
   */
  pathRule: { refusedPath: string; refusedTarget: string; refusedDecoded: string };
  /** The Host header grammar the built-in proxy accepts, as a PCRE pattern: any other Host is 400. */
  hostRule: string;
  /** The request targets accepted (origin form, or http:// without userinfo or an empty port), as a PCRE pattern over HAProxy's `url`: any other is 400. */
  targetRule: string;
  /**
   * Forwarding-header policy shared with the built-in proxy: `claims` are the headers only a
   * trusted peer may pass on (`name`, and nginx's `variable` for it); `realIpHops` the trusted
   * hops HAProxy's X-Forwarded-For walk follows (1..10); `nginxOtherAuthority` an nginx `map` key
   * (`~*` and a PCRE pattern) over `$request|$http_host` that matches an absolute-form target naming another host than Host.
   */
  forwarding: { claims: { name: string; variable: string }[]; realIpHops: number[]; nginxOtherAuthority: string };
  /** nginx's server_names_hash sized for the longest host name and the number of names. */
  serverNamesHash: { bucketSize: number; maxSize: number };
  domain: string;
  env: Readonly<Record<string, string | undefined>>;
}

export interface TemplateDataOptions {
  statuses: readonly HealthStatus[];
  domain: string;
  env: Record<string, string | undefined>;
}

const haproxyScale = (w: number, max: number) => (max <= 256 ? w : w === 0 ? 0 : Math.max(1, Math.ceil((w * 256) / max)));

const toData = (i: Readonly<ServiceInstance>, maxWeight = 1): InstanceData => ({
  id: i.id,
  address: i.address,
  port: i.port,
  protocol: i.protocol,
  tags: i.tags,
  meta: i.meta,
  host: i.host,
  status: i.status,
  weight: instanceWeight(i),
  haproxyWeight: haproxyScale(instanceWeight(i), maxWeight),
});

/** Trusted hops the HAProxy template's X-Forwarded-For walk follows (nginx's realip and the built-in proxy: any number). */
const REAL_IP_HOPS = Array.from({ length: 10 }, (_, i) => i + 1);

const pow2 = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/**
 * nginx stores a name in a bucket as a pointer plus the name and 2 bytes, aligned to 8, and ends
 * each bucket with a pointer; a bucket that cannot hold the longest name fails the whole config.
 * Room for two of the longest names, as a power of two ≥ 64; host names are at most 253
 * characters, so this stays ≤ 1024. The table size may grow to 4 slots per name.
 */
export function serverNamesHash(names: readonly string[]): { bucketSize: number; maxSize: number } {
  const longest = names.reduce((m, n) => Math.max(m, n.length), 0);
  const element = 8 + Math.ceil((longest + 2) / 8) * 8;
  const bucketSize = Math.min(4096, Math.max(64, pow2(2 * element + 8)));
  const maxSize = Math.min(1 << 20, Math.max(4096, pow2(4 * names.length)));
  return { bucketSize, maxSize };
}

/**
 * The catalog may hold instances of every status (so that a service whose instances are all
 * failing still has its hosts, answered with 503); only `statuses` are routable.
 */
export function templateData(catalog: Catalog, opts: TemplateDataOptions): TemplateData {
  const routable = (i: Readonly<ServiceInstance>) => opts.statuses.includes(i.status);
  const live = (list: InstanceData[]) => list.some((i) => i.weight > 0);
  const services: ServiceData[] = catalog.services.map((s) => {
    const max = s.instances.reduce((m, i) => Math.max(m, instanceWeight(i)), 0);
    const instances = s.instances.filter(routable).map((i) => toData(i, max));
    return { name: s.name, tags: [...new Set(instances.flatMap((i) => i.tags))].sort(), instances };
  });

  // One upstream per service (its routable TCP instances), then one per other instance set a
  // route needs (instances of one service that declare different hosts or paths).
  const upstreams: UpstreamData[] = [];
  const byKey = new Map<string, UpstreamData>();
  const counters = new Map<string, number>();
  const keyOf = (service: string, list: InstanceData[]) => `${service}\n${list.map((i) => i.id).join('\n')}`;
  for (const s of services) {
    const instances = s.instances.filter((i) => i.protocol === 'tcp');
    const u = { name: s.name, service: s.name, instances, live: live(instances) };
    upstreams.push(u);
    byKey.set(keyOf(s.name, u.instances), u);
  }
  const upstreamFor = (service: string, list: InstanceData[]): string => {
    const key = keyOf(service, list);
    let u = byKey.get(key);
    if (!u) {
      const n = (counters.get(service) ?? 0) + 1;
      counters.set(service, n);
      u = { name: `${service}_${n}`, service, instances: list, live: live(list) };
      upstreams.push(u);
      byKey.set(key, u);
    }
    return u.name;
  };

  const table = buildRoutes(catalog, opts.domain);
  const vhosts: VhostData[] = table.vhosts.map((v: VirtualHost) => {
    const paths = new Set(v.routes.map((r) => r.path));
    const routes: RouteData[] = v.routes.map((r) => {
      const max = r.instances.reduce((m, i) => Math.max(m, instanceWeight(i)), 0);
      const instances = r.instances.filter(routable).map((i) => toData(i, max));
      const slash = r.path.endsWith('/');
      const prefix = slash ? r.path : `${r.path}/`;
      return {
        host: r.host,
        path: r.path,
        service: r.service,
        upstream: upstreamFor(r.service, instances),
        instances,
        live: live(instances),
        exact: slash ? null : r.path,
        prefix: !slash && paths.has(prefix) ? null : prefix,
      };
    });
    const bare: BarePathData[] = [];
    for (const r of v.routes) {
      if (r.path === '/' || !r.path.endsWith('/') || paths.has(r.path.slice(0, -1))) continue;
      const path = r.path.slice(0, -1);
      const owner = matchPath(v, path);
      bare.push({ path, route: owner ? routes[v.routes.indexOf(owner)] : null });
    }
    const wildcard = v.host.startsWith('*.');
    return { host: v.host, wildcard, suffix: wildcard ? v.host.slice(1) : v.host, hasRootRoute: paths.has('/'), routes, bare };
  });
  vhosts.sort((a, b) => Number(a.wildcard) - Number(b.wildcard) || (a.wildcard ? b.host.length - a.host.length : 0) || (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));

  return {
    services,
    vhosts,
    upstreams,
    pathRule: { refusedPath: REFUSED_PATH_SOURCE, refusedTarget: REFUSED_TARGET_SOURCE, refusedDecoded: REFUSED_DECODED_SOURCE },
    hostRule: HOST_HEADER_SOURCE,
    targetRule: ACCEPTED_TARGET_SOURCE,
    forwarding: {
      claims: CLAIM_HEADERS.map((name) => ({ name, variable: `http_${name.toLowerCase().replaceAll('-', '_')}` })),
      realIpHops: REAL_IP_HOPS,
      nginxOtherAuthority: `~*${NGINX_OTHER_AUTHORITY_SOURCE}`,
    },
    serverNamesHash: serverNamesHash(vhosts.map((v) => v.host)),
    domain: opts.domain,
    env: Object.freeze({ ...opts.env }),
  };
}
