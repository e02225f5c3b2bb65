// The compiled, immutable routing table: built off to the side from a catalog snapshot (through
// the shared buildRoutes), then installed by the proxy in one assignment. Host lookup is a map
// hit (wildcards `*.example.com` after exact names), then the longest path prefix on a segment
// boundary wins.
import type { Catalog } from '../catalog/catalog.js';
import { refusedPath, routingPath } from '../catalog/path-rule.js';
import type { CatalogService } from '../catalog/catalog.js';
import { hostRoutes, serviceClaims, type ServiceClaims } from '../catalog/routes.js';
import type { HealthStatus, ServiceInstance } from '../model/service-instance.js';
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

  /** Set by compileTable: what the next table is compiled from. */
  lineage?: Lineage;
  /** Set by compileTable when built from the previous table: its upstreams this one dropped. */
  dropped?: readonly Upstream[];

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
    // Hosts sorted: a table compiled after changes lists them as one compiled at once does.
    const hosts = [...this.exact.keys()].sort();
    return [...hosts.flatMap((h) => this.exact.get(h)!), ...this.wildcards.flatMap(([, r]) => r)];
  }
}

/** `/api` matches /api and /api/x but not /apix; `/api/` matches /api/x; `/` matches everything. */
export function prefixMatches(routePath: string, path: string): boolean {
  if (routePath === '/') return true;
  if (!path.startsWith(routePath)) return false;
  return path.length === routePath.length || routePath.charCodeAt(routePath.length - 1) === 47 || path.charCodeAt(routePath.length) === 47;
}

/** What a table keeps to compile the next one from it in proportion to what changed. */
interface Lineage {
  readonly opts: TableOptions;
  readonly states: Map<string, InstanceState>;
  /** Per service: the catalog entry, its claims, and the upstream keys of the routes it won. */
  readonly services: ReadonlyMap<string, { readonly service: CatalogService; readonly claims: ServiceClaims; readonly keys: readonly string[] }>;
  /** Host → the names of the services claiming it, sorted. */
  readonly claimants: ReadonlyMap<string, readonly string[]>;
  /** Host → its conflicting host+path pairs. */
  readonly conflicts: ReadonlyMap<string, readonly string[]>;
  /** The table's routes by exact host and by wildcard suffix. */
  readonly exact: ReadonlyMap<string, readonly CompiledRoute[]>;
  readonly wild: ReadonlyMap<string, readonly CompiledRoute[]>;
}

/** Work done by compileTable, for tests: hosts whose routes were compiled, upstreams created. */
export const compileStats = { hosts: 0, upstreams: 0, full: 0 };

const sameOpts = (a: TableOptions, b: TableOptions) =>
  a.domain === b.domain && a.balance === b.balance && a.statuses.length === b.statuses.length && a.statuses.every((s, i) => s === b.statuses[i]);

/**
 * Compile a catalog into a table. `states` carries per-instance state across tables (in-flight
 * counts, ejections, health); entries of instances that left are removed from it. `previous`
 * hands each route's balancer state on (rotation position, smooth round robin's current weights).
 * Built from `previous` with the same options and states, only the hosts of services whose catalog
 * entry changed (a snapshot keeps unchanged services' frozen entries) are compiled again, and
 * only their instances get new upstream objects: one instance's change costs its service's hosts,
 * plus passes over services and hosts that compare references and copy maps.
 */
export function compileTable(catalog: Catalog, opts: TableOptions, states: Map<string, InstanceState>, previous: RoutingTable = RoutingTable.EMPTY): RoutingTable {
  const base = previous.lineage && previous.lineage.states === states && sameOpts(previous.lineage.opts, opts) ? previous : undefined;
  if (!base) compileStats.full++;
  const prev = base?.lineage;
  const services = new Map<string, { service: CatalogService; claims: ServiceClaims; keys: readonly string[] }>();
  const changed: string[] = [];
  for (const svc of catalog.services) {
    const old = prev?.services.get(svc.name);
    if (old && old.service === svc) services.set(svc.name, old);
    else {
      services.set(svc.name, { service: svc, claims: serviceClaims(svc, opts.domain), keys: [] });
      changed.push(svc.name);
    }
  }
  if (prev) for (const name of prev.services.keys()) if (!services.has(name)) changed.push(name);

  // Hosts named by a changed service before or now, and who claims them now.
  const claimants = new Map(prev?.claimants);
  const affected = new Set<string>();
  for (const name of changed) {
    const before = prev?.services.get(name)?.claims;
    const now = services.get(name)?.claims;
    if (before) for (const host of before.keys()) affected.add(host);
    if (now) for (const host of now.keys()) affected.add(host);
    for (const host of before?.keys() ?? []) {
      if (now?.has(host)) continue;
      const rest = (claimants.get(host) ?? []).filter((n) => n !== name);
      if (rest.length > 0) claimants.set(host, rest);
      else claimants.delete(host);
    }
    for (const host of now?.keys() ?? []) {
      const list = claimants.get(host) ?? [];
      if (!list.includes(name)) claimants.set(host, [...list, name].sort());
    }
  }

  // Upstreams: those of services not involved are kept (same objects); the others are made again.
  const upstreams = new Map(base?.upstreams);
  const involved = new Set(changed);
  for (const host of affected) for (const n of claimants.get(host) ?? []) involved.add(n);
  for (const name of involved) for (const key of prev?.services.get(name)?.keys ?? []) upstreams.delete(key);
  const owner = new Map<string, string>();
  const made = new Map<string, string[]>();
  // One instance key in two services (one upstream object for both): tables compiled from this one start over.
  let shared = false;
  const own = (key: string, service: string): void => {
    const first = owner.get(key);
    if (first !== undefined) {
      if (first !== service) shared = true;
      return;
    }
    owner.set(key, service);
    const list = made.get(service);
    if (list) list.push(key);
    else made.set(service, [key]);
  };
  const upstreamFor = (i: Readonly<ServiceInstance>): Upstream => {
    const key = `${i.id} ${i.address}:${i.port}`;
    let u = upstreams.get(key);
    if (u && u.service !== i.name) shared = true;
    if (!u) {
      let state = states.get(key);
      if (!state) states.set(key, (state = new InstanceState()));
      const host = i.address.includes(':') ? `[${i.address}]` : i.address;
      compileStats.upstreams++;
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
    own(key, i.name);
    return u;
  };

  const exact = new Map(prev?.exact);
  const wild = new Map(prev?.wild);
  const hostConflicts = new Map(prev?.conflicts);
  const compile = (host: string): void => {
    compileStats.hosts++;
    const names = claimants.get(host) ?? [];
    const conflicts: string[] = [];
    const routes = hostRoutes(host, names.map((n) => ({ service: n, paths: services.get(n)!.claims.get(host)! })), conflicts).map((r) => {
      const before = previous.match(host, r.path);
      const carried = before && before.path === r.path && before.host === host ? before.balancer : undefined;
      return Object.freeze({ host, path: r.path, service: r.service, balancer: createBalancer(opts.balance, r.instances.map(upstreamFor), carried) });
    });
    if (conflicts.length > 0) hostConflicts.set(host, conflicts);
    else hostConflicts.delete(host);
    const wildcard = host.startsWith('*.');
    if (routes.length === 0) wildcard ? wild.delete(host.slice(1)) : exact.delete(host);
    else if (wildcard) wild.set(host.slice(1), routes);
    else exact.set(host, routes);
  };
  // A service involved only through a shared host keeps its other hosts' routes, and their upstreams.
  for (const name of involved) {
    const entry = services.get(name);
    if (!entry || changed.includes(name)) continue;
    for (const host of entry.claims.keys()) {
      if (affected.has(host)) continue;
      const routes = host.startsWith('*.') ? wild.get(host.slice(1)) : exact.get(host);
      for (const r of routes ?? []) {
        if (r.service !== name) continue;
        for (const u of r.balancer.upstreams) {
          upstreams.set(u.key, u);
          own(u.key, name);
        }
      }
    }
  }
  for (const host of base ? [...affected].sort() : [...claimants.keys()].sort()) compile(host);
  for (const name of involved) {
    const entry = services.get(name);
    if (entry) services.set(name, { ...entry, keys: made.get(name) ?? [] });
  }
  const wildcards = [...wild].sort((a, b) => b[0].length - a[0].length || (a[0] < b[0] ? -1 : 1));
  // Upstreams of the previous table that this one no longer has (their pools can go).
  const gone: Upstream[] = [];
  for (const name of involved) {
    for (const key of prev?.services.get(name)?.keys ?? []) {
      const u = base!.upstreams.get(key);
      if (u && !upstreams.has(key)) gone.push(u);
    }
  }
  if (base) for (const u of gone) states.delete(u.key);
  else for (const key of states.keys()) if (!upstreams.has(key)) states.delete(key);
  const conflicts = [...hostConflicts.keys()].sort().flatMap((h) => hostConflicts.get(h)!);
  const table = new RoutingTable(exact, wildcards, upstreams, conflicts, catalog.fingerprint);
  if (base) table.dropped = gone;
  if (!shared) table.lineage = { opts: { ...opts, statuses: [...opts.statuses] }, states, services, claimants, conflicts: hostConflicts, exact, wild };
  return table;
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
