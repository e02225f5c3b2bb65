// HTTP routing derived from a catalog, shared by the config templates and the built-in proxy:
// each TCP instance serves the hosts in its meta http_host (default <service>.<domain>) under
// its meta http_path (default /). Routes are sorted so that the longest path prefix wins.
import type { ServiceInstance } from '../model/service-instance.js';
import type { Catalog } from './catalog.js';
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

export function buildRoutes(catalog: Catalog, domain: string): RouteTable {
  const byHost = new Map<string, Map<string, { service: string; instances: Readonly<ServiceInstance>[] }>>();
  const conflicts: string[] = [];
  for (const svc of catalog.services) {
    for (const inst of svc.instances) {
      if (inst.protocol !== 'tcp') continue;
      const path = inst.meta.http_path || '/';
      for (const host of instanceHosts(inst, domain)) {
        let paths = byHost.get(host);
        if (!paths) byHost.set(host, (paths = new Map()));
        const r = paths.get(path);
        if (!r) paths.set(path, { service: svc.name, instances: [inst] });
        else if (r.service === svc.name) r.instances.push(inst);
        else if (!conflicts.includes(`${host}${path}`)) conflicts.push(`${host}${path}`);
      }
    }
  }
  const vhosts = [...byHost.keys()].sort().map((host) => {
    const paths = byHost.get(host)!;
    const routes = [...paths.keys()]
      .sort((a, b) => b.length - a.length || (a < b ? -1 : 1))
      .map((path) => Object.freeze({ host, path, service: paths.get(path)!.service, instances: Object.freeze(paths.get(path)!.instances) }));
    return Object.freeze({ host, routes: Object.freeze(routes) });
  });
  return Object.freeze({ vhosts: Object.freeze(vhosts), conflicts: Object.freeze(conflicts) });
}
