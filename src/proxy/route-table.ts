// The compiled, immutable routing table: built off to the side from a catalog snapshot (through
// the shared buildRoutes), then installed by the proxy in one assignment. Host lookup is a map
// hit (wildcards `*.example.com` after exact names), then the longest path prefix on a segment
// boundary wins.
import type { Catalog } from '../catalog/catalog.js';
import { refusedPath, routingPath } from '../catalog/path-rule.js';
import { buildRoutes, type Route } from '../catalog/routes.js';
import type { HealthStatus } from '../model/service-instance.js';
import { createBalancer, InstanceState, type Balancer, type BalanceMode, type Upstream } from './balancer.js';

export interface CompiledRoute {
  readonly host: string;
  readonly path: string;
  readonly service: string;
  readonly balancer: Balancer;
}

export interface TableOptions {
  domain: string;
  balance: BalanceMode;
  /** Registry statuses the proxy sends traffic to; other instances keep their host known (503, not 404). */
  statuses: readonly HealthStatus[];
}

export class RoutingTable {
  static readonly EMPTY = new RoutingTable(new Map(), [], new Map(), [], '[]');

  constructor(
    private readonly exact: ReadonlyMap<string, readonly CompiledRoute[]>,
    /** `.suffix` → routes, longest suffix first. */
    private readonly wildcards: readonly (readonly [string, readonly CompiledRoute[]])[],
    /** Every upstream by key (one object per instance, shared by all its routes). */
    readonly upstreams: ReadonlyMap<string, Upstream>,
    readonly conflicts: readonly string[],
    /** The catalog fingerprint it was built from. */
    readonly fingerprint: string,
  ) {}

  get hostCount(): number {
    return this.exact.size + this.wildcards.length;
  }

  get routeCount(): number {
    let n = 0;
    for (const r of this.exact.values()) n += r.length;
    for (const [, r] of this.wildcards) n += r.length;
    return n;
  }

  /** The route for a normalized host and path, or undefined (unknown host, or no path of it matches). */
  match(host: string, path: string): CompiledRoute | undefined {
    let routes = this.exact.get(host);
    if (!routes) {
      for (const [suffix, r] of this.wildcards) {
        if (host.length > suffix.length && host.endsWith(suffix)) {
          routes = r;
          break;
        }
      }
      if (!routes) return undefined;
    }
    for (const r of routes) if (prefixMatches(r.path, path)) return r;
    return undefined;
  }

  /** Every route, for status output and tests. */
  routes(): CompiledRoute[] {
    return [...[...this.exact.values()].flat(), ...this.wildcards.flatMap(([, r]) => r)];
  }
}

/** `/api` matches /api and /api/x but not /apix; `/api/` matches /api/x; `/` matches everything. */
export function prefixMatches(routePath: string, path: string): boolean {
  if (routePath === '/') return true;
  if (!path.startsWith(routePath)) return false;
  return path.length === routePath.length || routePath.charCodeAt(routePath.length - 1) === 47 || path.charCodeAt(routePath.length) === 47;
}

/**
 * Compile a catalog into a table. `states` carries per-instance state across tables (in-flight
 * counts, ejections, health); entries of instances that left are removed from it. `previous`
 * hands each route's balancer state on (rotation position, smooth round robin's current weights).
 */
export function compileTable(catalog: Catalog, opts: TableOptions, states: Map<string, InstanceState>, previous: RoutingTable = RoutingTable.EMPTY): RoutingTable {
  const routing = buildRoutes(catalog, opts.domain);
  const upstreams = new Map<string, Upstream>();
  const upstreamFor = (i: Route['instances'][number]): Upstream => {
    const key = `${i.id} ${i.address}:${i.port}`;
    let u = upstreams.get(key);
    if (!u) {
      let state = states.get(key);
      if (!state) states.set(key, (state = new InstanceState()));
      const host = i.address.includes(':') ? `[${i.address}]` : i.address;
      u = Object.freeze({
        key,
        id: i.id,
        service: i.name,
        address: i.address,
        port: i.port,
        origin: `http://${host}:${i.port}`,
        weight: i.meta.weight === undefined ? 1 : Number(i.meta.weight),
        routable: opts.statuses.includes(i.status),
        state,
      });
      upstreams.set(key, u);
    }
    return u;
  };
  const exact = new Map<string, CompiledRoute[]>();
  const wildcards: [string, CompiledRoute[]][] = [];
  for (const vh of routing.vhosts) {
    const routes = vh.routes.map((r) => {
      const before = previous.match(vh.host, r.path);
      const carried = before && before.path === r.path && before.host === vh.host ? before.balancer : undefined;
      return Object.freeze({ host: vh.host, path: r.path, service: r.service, balancer: createBalancer(opts.balance, r.instances.map(upstreamFor), carried) });
    });
    if (vh.host.startsWith('*.')) wildcards.push([vh.host.slice(1), routes]);
    else exact.set(vh.host, routes);
  }
  wildcards.sort((a, b) => b[0].length - a[0].length || (a[0] < b[0] ? -1 : 1));
  for (const key of states.keys()) if (!upstreams.has(key)) states.delete(key);
  return new RoutingTable(exact, wildcards, upstreams, routing.conflicts, catalog.fingerprint);
}

const HOST_CHARS = /^[a-z0-9._-]+$/;
const IPV6 = /^\[[0-9a-f:.]+\]$/;

const validPort = (p: string): boolean => /^\d{1,5}$/.test(p) && Number(p) >= 1 && Number(p) <= 65535;

/** The Host header as a routing key: lowercase, without port or trailing dot; undefined if absent or malformed (HOST_HEADER_SOURCE). */
export function requestHost(raw: string | undefined): string | undefined {
  if (!raw || raw.length > 300) return undefined;
  let h = raw.toLowerCase();
  if (h.charCodeAt(0) === 91 /* [ */) {
    const end = h.indexOf(']');
    if (end < 0) return undefined;
    const rest = h.slice(end + 1);
    if (rest !== '' && (rest.charCodeAt(0) !== 58 /* : */ || !validPort(rest.slice(1)))) return undefined;
    h = h.slice(0, end + 1);
    return IPV6.test(h) ? h : undefined;
  }
  const colon = h.indexOf(':');
  if (colon >= 0) {
    if (!validPort(h.slice(colon + 1))) return undefined;
    h = h.slice(0, colon);
  }
  if (h.endsWith('.')) h = h.slice(0, -1);
  // No empty label (`q..w`, `.example.com`, `x..`): nginx refuses the first, and none names a host.
  if (!h || !HOST_CHARS.test(h) || h.charCodeAt(0) === 46 /* . */ || h.endsWith('.') || h.includes('..')) return undefined;
  return h;
}

export interface RequestTarget {
  /** Path the route is matched on: the received path percent-decoded (THE PATH RULE's routingPath). */
  match: string;
  /** Request target sent upstream, exactly as received (for an absolute form: its path and query). */
  forward: string;
  /** The authority of an absolute-form target: it decides the route and becomes the Host sent on (RFC 9112 §3.2.2). */
  authority?: string;
}

/** Why a request target is answered 400 (the message names the rule it broke). */
export interface RefusedTarget {
  refused: string;
}

/** Only http: a client-chosen scheme is not passed on (ACCEPTED_TARGET_SOURCE). */
const ABSOLUTE = /^(http):\/\/([^/?#]*)(.*)$/i;

/**
 * The request target: origin form as received, absolute form reduced to its path and query
 * (byte for byte). A path THE PATH RULE refuses, a fragment, userinfo, or a form the proxy cannot
 * route (`*`, authority form, another scheme) is refused.
 */
export function requestTarget(url: string | undefined): RequestTarget | RefusedTarget {
  if (!url) return { refused: 'empty request target' };
  let forward = url;
  let authority: string | undefined;
  if (url.charCodeAt(0) !== 47 /* / */) {
    const m = ABSOLUTE.exec(url);
    if (!m) return { refused: url === '*' ? 'the target * is not served by this proxy' : 'request target is neither a path nor an http:// URL' };
    authority = m[2];
    if (authority.includes('@')) return { refused: 'request target has userinfo' };
    // An empty port is the default one (RFC 3986 §6.2.3), as nginx reads it and HAProxy rewrites it.
    if (authority.endsWith(':')) authority = authority.slice(0, -1);
    if (requestHost(authority) === undefined) return { refused: 'request target has a malformed host' };
    const rest = m[3];
    // `http://host` is `/`; `http://host?q=1` is refused, as HAProxy refuses it.
    forward = rest === '' ? '/' : rest;
    if (forward.charCodeAt(0) !== 47) return { refused: 'request target has a malformed path' };
  }
  // RFC 9112 has no fragment in a request target; a backend might cut the path there.
  if (forward.includes('#')) return { refused: 'request target has a fragment (#)' };
  const q = forward.indexOf('?');
  const path = q < 0 ? forward : forward.slice(0, q);
  const why = refusedPath(path);
  if (why) return { refused: `path ${why}` };
  return authority === undefined ? { match: routingPath(path), forward } : { match: routingPath(path), forward, authority };
}
