// HTTP routing derived from a catalog, shared by the config templates and the built-in proxy:
// each TCP instance serves the hosts in its meta http_host (default <service>.<domain>) under
// its meta http_path (default /). Routes are sorted so that the longest path prefix wins.
import type { ServiceInstance } from '../model/service-instance.js';
import type { Catalog, CatalogService } from './catalog.js';
import { splitHosts } from './route-meta.js';

export interface Route {
  readonly host: string;
  readonly path: string;
  readonly service: string;
  readonly instances: readonly Readonly<ServiceInstance>[];
}

export interface VirtualHost {
  readonly host: string;
  /** Longest path first. */
  readonly routes: readonly Route[];
}

export interface RouteTable {
  readonly vhosts: readonly VirtualHost[];
  /** Host+path pairs claimed by more than one service: the first service by name keeps it. */
  readonly conflicts: readonly string[];
}

export function instanceHosts(i: Readonly<ServiceInstance>, domain: string): string[] {
  const declared = i.meta.http_host ? splitHosts(i.meta.http_host) : [];
  return declared.length > 0 ? declared : [`${i.name}.${domain}`];
}

/** One service's claims: host → path → its TCP instances there (in the service's order). */
export type ServiceClaims = ReadonlyMap<string, ReadonlyMap<string, readonly Readonly<ServiceInstance>[]>>;

/** What one service claims, computed from that service alone (so it can be kept while the service does not change). */
export function serviceClaims(svc: CatalogService, domain: string): ServiceClaims {
  const byHost = new Map<string, Map<string, Readonly<ServiceInstance>[]>>();
  for (const inst of svc.instances) {
    if (inst.protocol !== 'tcp') continue;
    const path = inst.meta.http_path || '/';
    for (const host of instanceHosts(inst, domain)) {
      let paths = byHost.get(host);
      if (!paths) byHost.set(host, (paths = new Map()));
      const list = paths.get(path);
      if (list) list.push(inst);
      else paths.set(path, [inst]);
    }
  }
  return byHost;
}

/**
 * A host's routes from the claims of the services naming it, given in service name order: the
 * first service keeps a host+path, later ones are reported in `conflicts`. Longest path first.
 */
export function hostRoutes(host: string, claims: readonly { service: string; paths: ReadonlyMap<string, readonly Readonly<ServiceInstance>[]> }[], conflicts: string[]): readonly Route[] {
  const taken = new Map<string, { service: string; instances: readonly Readonly<ServiceInstance>[] }>();
  for (const c of claims) {
    for (const [path, instances] of c.paths) {
      if (!taken.has(path)) taken.set(path, { service: c.service, instances });
      else if (!conflicts.includes(`${host}${path}`)) conflicts.push(`${host}${path}`);
    }
  }
  const routes = [...taken.keys()]
    .sort((a, b) => b.length - a.length || (a < b ? -1 : 1))
    .map((path) => Object.freeze({ host, path, service: taken.get(path)!.service, instances: Object.freeze([...taken.get(path)!.instances]) }));
  return Object.freeze(routes);
}

export function buildRoutes(catalog: Catalog, domain: string): RouteTable {
  const byHost = new Map<string, { service: string; paths: ReadonlyMap<string, readonly Readonly<ServiceInstance>[]> }[]>();
  for (const svc of catalog.services) {
    for (const [host, paths] of serviceClaims(svc, domain)) {
      const list = byHost.get(host);
      if (list) list.push({ service: svc.name, paths });
      else byHost.set(host, [{ service: svc.name, paths }]);
    }
  }
  const conflicts: string[] = [];
  const vhosts = [...byHost.keys()].sort().map((host) => Object.freeze({ host, routes: hostRoutes(host, byHost.get(host)!, conflicts) }));
  return Object.freeze({ vhosts: Object.freeze(vhosts), conflicts: Object.freeze(conflicts) });
}

/**
 * The load-balancing weight every output uses: meta `weight` (validated 0–1000, so `"00"` is 0),
 * default 1. Weight 0 takes no new requests; a route whose routable instances all weigh 0 has
 * nothing to send to and is answered like one without instances (503).
 */
export function instanceWeight(i: Readonly<ServiceInstance>): number {
  const w = i.meta.weight;
  if (w === undefined || !/^\d{1,4}$/.test(w)) return 1;
  return Math.min(1000, Number(w));
}

/** `/api` matches /api and /api/x but not /apix; `/api/` matches /api/x but not /api; `/` matches everything. */
export function pathMatches(routePath: string, path: string): boolean {
  if (routePath === '/') return true;
  if (!path.startsWith(routePath)) return false;
  return path.length === routePath.length || routePath.charCodeAt(routePath.length - 1) === 47 || path.charCodeAt(routePath.length) === 47;
}

/**
 * The virtual host of a request host (lowercase, without port or trailing dot): the exact name,
 * else the wildcard with the longest suffix (`*.x.example.com` before `*.example.com`; a
 * wildcard matches one or more labels, never the bare suffix). Only this host's routes are
 * considered afterwards: no fall-through to another host's routes.
 */
export function findVhost(table: RouteTable, host: string): VirtualHost | undefined {
  let best: VirtualHost | undefined;
  for (const v of table.vhosts) {
    if (v.host === host) return v;
    if (v.host.startsWith('*.')) {
      const suffix = v.host.slice(1);
      if (host.length > suffix.length && host.endsWith(suffix) && (!best || v.host.length > best.host.length)) best = v;
    }
  }
  return best;
}

/** The longest route path of the host that matches the (percent-decoded) path. */
export function matchPath(vhost: VirtualHost, path: string): Route | undefined {
  return vhost.routes.find((r) => pathMatches(r.path, path));
}

export function matchRoute(table: RouteTable, host: string, path: string): Route | undefined {
  const v = findVhost(table, host);
  return v && matchPath(v, path);
}

/**
 * The Host header the built-in proxy routes (its requestHost): a host name of letters, digits,
 * `_`, `-` in dot-separated labels, none of them empty (`q..w`, `.example.com` are refused, as
 * nginx refuses the first), one trailing dot allowed; or a bracketed IPv6 address; an optional
 * port 1–65535 (at most 5 digits); 300 characters at most. Anything else (none, empty, a comma
 * list, `host:abc`, `host:0`, `host:99999`) is answered 400; the shipped templates apply the same
 * pattern (nginx over `$http_host`, HAProxy over `req.fhdr(host)`), so that no proxy routes a
 * Host another one refuses.
 */
export const HOST_HEADER_SOURCE =
  '^(?=[^\\s]{1,300}$)([A-Za-z0-9_-]+(?:\\.[A-Za-z0-9_-]+)*\\.?|\\[[0-9A-Fa-f:.]+\\])' +
  '(:(?=[0-9]{1,5}$)0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$';

/**
 * The request targets every output accepts: the origin form (`/path`), or the absolute form with
 * the scheme http (any case) and an authority without userinfo. Any other scheme (`https://`,
 * `wss://`, `ftp://`), `http://user@host/` and targets that are neither (`host/path`) are answered
 * 400; the HAProxy template matches this over `url`, and then sends the origin form on
 * (`set-uri %[pathq]`), as nginx and the built-in proxy do. An empty port (`http://host:/`) is the
 * default one (RFC 3986 §6.2.3): HAProxy drops it before any rule sees it, nginx reads it so.
 */
export const ACCEPTED_TARGET_SOURCE = String.raw`^(?:/|[Hh][Tt][Tt][Pp]://[^/?#@\s]+(?:[/?#]|$))`;

/**
 * An absolute-form request target must have the scheme http and name the Host header's host and
 * port, compared without regard to case and with a default `:80` (or an empty port in the target) dropped
 * (HAProxy's own check, which answers 400 otherwise; the built-in proxy does the same). nginx
 * would route by the target: its template matches this pattern over `$request|$http_host` (the
 * request line, `|`, the Host header; neither holds a `|` or a blank in a request that gets this
 * far) and answers 400.
 */
export const NGINX_OTHER_AUTHORITY_SOURCE = String.raw`^(?!\S+ http://([^/?#\s]*?)(?::80|:)?(?:[/?#]\S*)? HTTP/[0-9.]+\|\1(?::80)?$)\S+ [A-Za-z][A-Za-z0-9+.-]*://`;
