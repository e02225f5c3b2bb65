import { describe, expect, it } from 'vitest';
import { buildCatalog, CatalogBuilder } from '../catalog/catalog.js';
import type { HealthStatus, ServiceInstance } from '../model/service-instance.js';
import { InstanceState } from './balancer.js';
import fc from 'fast-check';
import { HOST_HEADER_SOURCE } from '../catalog/routes.js';
import { compileStats, compileTable, prefixMatches, requestHost, requestTarget, RoutingTable, type TableOptions } from './route-table.js';

function inst(name: string, port: number, meta: Record<string, string> = {}, status: HealthStatus = 'passing', id = `h:${name}-${port}:80`): ServiceInstance {
  return { id, name, address: '127.0.0.1', port, protocol: 'tcp', tags: [], meta, host: 'h', status };
}

const OPTS: TableOptions = { domain: 'localhost', balance: 'round-robin', statuses: ['passing'] };
const ALL: HealthStatus[] = ['passing', 'warning', 'critical'];

function table(list: ServiceInstance[], states = new Map<string, InstanceState>(), previous?: RoutingTable): RoutingTable {
  return compileTable(buildCatalog(list, ALL), OPTS, states, previous);
}

describe('requestHost', () => {
  it('lowercases and drops the port and a trailing dot', () => {
    expect(requestHost('Web.LocalHost:8080')).toBe('web.localhost');
    expect(requestHost('web.localhost.')).toBe('web.localhost');
    expect(requestHost('web.localhost')).toBe('web.localhost');
  });
  it('keeps IPv6 literals in brackets', () => {
    expect(requestHost('[::1]:8080')).toBe('[::1]');
    expect(requestHost('[::1]')).toBe('[::1]');
  });
  it('rejects absent and malformed hosts', () => {
    expect(requestHost(undefined)).toBeUndefined();
    expect(requestHost('')).toBeUndefined();
    expect(requestHost('a b')).toBeUndefined();
    expect(requestHost('web:80x')).toBeUndefined();
    expect(requestHost('[::1')).toBeUndefined();
    for (const bad of ['web:99999', 'web:65536', 'web:0', '[::1]:70000', '[::1]x80', 'web:']) expect(requestHost(bad), bad).toBeUndefined();
    expect([requestHost('web:65535'), requestHost('web:1'), requestHost('[::1]:443')]).toEqual(['web', 'web', '[::1]']);
    expect(requestHost('x'.repeat(400))).toBeUndefined();
  });
  it('rejects empty labels (nginx refuses q..w)', () => {
    for (const bad of ['q..w.localhost', '.localhost', 'x.localhost..', '.', '..']) expect(requestHost(bad), bad).toBeUndefined();
  });
  it('accepts exactly what the templates\' Host pattern accepts', () => {
    const rule = new RegExp(HOST_HEADER_SOURCE);
    const part = fc.constantFrom('a', 'B', '0', '_', '-', '.', '..', ':', ':0', ':80', ':080', ':00080', ':65535', ':65536', ':99999', ':123456', '[::1]', '[', ']', 'x y', ',');
    fc.assert(
      fc.property(fc.array(part, { minLength: 0, maxLength: 6 }), (parts) => {
        const h = parts.join('');
        expect(requestHost(h) !== undefined, h).toBe(rule.test(h));
      }),
      { numRuns: 3000 },
    );
  });
});

describe('requestTarget', () => {
  it('matches on the path without the query and forwards the target unchanged', () => {
    expect(requestTarget('/api/x?q=1')).toEqual({ match: '/api/x', forward: '/api/x?q=1' });
  });
  it('routes on the percent-decoded path and forwards the encoded one', () => {
    expect(requestTarget('/%61pi/x%20y?a=%2e%2e')).toEqual({ match: '/api/x y', forward: '/%61pi/x%20y?a=%2e%2e' });
  });
  it('reduces the absolute form to its path and query, byte for byte, and keeps its authority', () => {
    expect(requestTarget('http://Web.LocalHost:8080/a?b')).toEqual({ match: '/a', forward: '/a?b', authority: 'Web.LocalHost:8080' });
    expect(requestTarget('HTTP://web.localhost')).toEqual({ match: '/', forward: '/', authority: 'web.localhost' });
    // A query with no path: HAProxy refuses it, nginx would forward `?x=1` as the target.
    expect(requestTarget('http://web.localhost?x=1')).toHaveProperty('refused', 'request target has a malformed path');
    expect(requestTarget('http://[::1]:80/%7Ex')).toEqual({ match: '/~x', forward: '/%7Ex', authority: '[::1]:80' });
    // An empty port is the default one.
    expect(requestTarget('http://a.test:/x')).toEqual({ match: '/x', forward: '/x', authority: 'a.test' });
  });
  it('refuses what THE PATH RULE refuses, in origin and absolute form', () => {
    for (const t of ['/x/../api/y', '/api//../admin', '/api/..%2fadmin', '/api/..;/admin', '/api/%2e%2e/admin', '/api/.', '//x', '/a\\b', '/a%zz', '/a%00', 'http://a.test/x/../api', 'http://a.test//x']) {
      expect(requestTarget(t), t).toHaveProperty('refused', expect.stringMatching(/^path /));
    }
    // Dots and encoded slashes in the query are the instance's business.
    expect(requestTarget('/api?next=/../admin%2f')).toEqual({ match: '/api', forward: '/api?next=/../admin%2f' });
  });
  it('refuses *, other schemes, userinfo, bad hosts, fragments and empty targets', () => {
    expect(requestTarget('*')).toEqual({ refused: 'the target * is not served by this proxy' });
    for (const t of ['ftp://x/', 'https://a.test/', 'HTTPS://a.test/', 'wss://a.test/', 'x', 'a.test:80', 'http://user@a.test/', 'http:///x', 'http://a b/', 'http://a.test/x#y', '/x#/../../y', '']) {
      expect(requestTarget(t), t).toHaveProperty('refused');
    }
  });
});

describe('prefixMatches', () => {
  it('matches on segment boundaries or exactly', () => {
    expect(prefixMatches('/api', '/api')).toBe(true);
    expect(prefixMatches('/api', '/api/x')).toBe(true);
    expect(prefixMatches('/api', '/apix')).toBe(false);
    expect(prefixMatches('/api/', '/api/x')).toBe(true);
    expect(prefixMatches('/api/', '/api')).toBe(false);
    expect(prefixMatches('/', '/anything')).toBe(true);
  });
});

describe('compileTable', () => {
  const t = table([
    inst('web', 1),
    inst('web', 2),
    inst('api', 3, { http_host: 'Example.test, www.example.test', http_path: '/api' }),
    inst('apiv2', 4, { http_host: 'example.test', http_path: '/api/v2' }),
    inst('site', 5, { http_host: 'example.test' }),
    inst('wild', 6, { http_host: '*.apps.test' }),
    inst('deep', 7, { http_host: '*.b.apps.test' }),
  ]);

  it('routes the default host <service>.<domain> to all instances of the service', () => {
    const r = t.match('web.localhost', '/')!;
    expect(r.service).toBe('web');
    expect(r.balancer.upstreams.map((u) => u.port)).toEqual([1, 2]);
  });

  it('routes declared hosts (case-insensitive, comma list) and picks the longest path prefix', () => {
    expect(t.match('example.test', '/api/v2/users')!.service).toBe('apiv2');
    expect(t.match('example.test', '/api/v1')!.service).toBe('api');
    expect(t.match('example.test', '/api')!.service).toBe('api');
    expect(t.match('example.test', '/apix')!.service).toBe('site');
    expect(t.match('www.example.test', '/api/x')!.service).toBe('api');
  });

  it('answers undefined for an unknown host, and for a known host with no matching path', () => {
    expect(t.match('nope.localhost', '/')).toBeUndefined();
    expect(t.match('www.example.test', '/other')).toBeUndefined();
    // A declared http_host replaces the default one.
    expect(t.match('api.localhost', '/api')).toBeUndefined();
  });

  it('matches wildcard hosts after exact ones, the longest suffix first', () => {
    expect(t.match('x.apps.test', '/')!.service).toBe('wild');
    expect(t.match('y.x.apps.test', '/')!.service).toBe('wild');
    expect(t.match('c.b.apps.test', '/')!.service).toBe('deep');
    expect(t.match('apps.test', '/')).toBeUndefined();
  });

  it('counts hosts, routes and instances', () => {
    expect(t.hostCount).toBe(5);
    expect(t.routeCount).toBe(7);
    expect(t.upstreams.size).toBe(7);
    expect(t.routes().length).toBe(t.routeCount);
  });

  it('keeps the first service by name on a host+path conflict and reports it', () => {
    const c = table([inst('alpha', 1, { http_host: 'same.test' }), inst('beta', 2, { http_host: 'same.test' })]);
    expect(c.match('same.test', '/')!.service).toBe('alpha');
    expect(c.conflicts).toEqual(['same.test/']);
  });

  it('keeps instances with a status that gets no traffic in the table, as not routable', () => {
    const c = compileTable(buildCatalog([inst('web', 1, {}, 'critical'), inst('web', 2, {}, 'warning')], ALL), OPTS, new Map());
    const r = c.match('web.localhost', '/')!;
    expect(r.balancer.upstreams.map((u) => u.routable)).toEqual([false, false]);
    expect(r.balancer.pick(Date.now())).toBeUndefined();
    const warn = compileTable(buildCatalog([inst('web', 2, {}, 'warning')], ALL), { ...OPTS, statuses: ['passing', 'warning'] }, new Map());
    expect(warn.match('web.localhost', '/')!.balancer.pick(Date.now())?.port).toBe(2);
  });

  it('reads weights from meta (default 1) and skips UDP instances', () => {
    const udp: ServiceInstance = { ...inst('dns', 53), protocol: 'udp' };
    const c = table([inst('web', 1, { weight: '5' }), inst('web', 2), udp]);
    expect(c.match('web.localhost', '/')!.balancer.upstreams.map((u) => u.weight)).toEqual([5, 1]);
    expect(c.match('dns.localhost', '/')).toBeUndefined();
  });

  it('shares instance state across tables by instance, and forgets instances that left', () => {
    const states = new Map<string, InstanceState>();
    const t1 = table([inst('web', 1), inst('web', 2)], states);
    const u1 = t1.match('web.localhost', '/')!.balancer.upstreams[0];
    u1.state.active = 3;
    const t2 = table([inst('web', 1), inst('web', 9)], states, t1);
    const again = t2.match('web.localhost', '/')!.balancer.upstreams.find((u) => u.port === 1)!;
    expect(again.state).toBe(u1.state);
    expect(again.state.active).toBe(3);
    expect([...states.keys()].sort()).toEqual(['h:web-1:80 127.0.0.1:1', 'h:web-9:80 127.0.0.1:9']);
  });

  it('carries the rotation position of a route into the next table', () => {
    const states = new Map<string, InstanceState>();
    const t1 = table([inst('web', 1), inst('web', 2), inst('web', 3)], states);
    expect(t1.match('web.localhost', '/')!.balancer.pick(0)!.port).toBe(1);
    const t2 = table([inst('web', 1), inst('web', 2), inst('web', 3)], states, t1);
    expect(t2.match('web.localhost', '/')!.balancer.pick(0)!.port).toBe(2);
  });

  it('brackets IPv6 addresses in the origin', () => {
    const v6 = compileTable(buildCatalog([{ ...inst('web', 80), address: '::1' }], ALL), OPTS, new Map());
    expect([...v6.upstreams.values()][0].origin).toBe('http://[::1]:80');
  });

  it('is empty to start with', () => {
    expect(RoutingTable.EMPTY.match('web.localhost', '/')).toBeUndefined();
    expect(RoutingTable.EMPTY.routeCount).toBe(0);
  });
});

describe('compileTable after a change', () => {
  // Ten instances per service, as the scale bench registers them; some share a host and a path.
  function world(services: number): ServiceInstance[] {
    const out: ServiceInstance[] = [];
    for (let s = 0; s < services; s++) for (let i = 0; i < 10; i++) out.push(inst(`svc${s}`, 1000 + i, s % 50 === 0 ? { http_host: 'shared.test', http_path: `/p${s % 3}` } : {}));
    return out;
  }
  const view = (t: RoutingTable) => ({
    routes: t.routes().map((r) => [r.host, r.path, r.service, r.balancer.upstreams.map((u) => `${u.key} ${u.weight} ${u.routable}`)]),
    upstreams: [...t.upstreams.keys()].sort(),
    conflicts: [...t.conflicts].sort(),
  });

  /** What adding one probe instance and removing it again cost, at `n` instances. */
  function oneChange(n: number) {
    const builder = new CatalogBuilder(ALL);
    const raw = world(n / 10);
    const states = new Map<string, InstanceState>();
    let t = compileTable(builder.build(raw), OPTS, states);
    const instances = t.upstreams.size;
    const b0 = { ...builder.stats };
    const c0 = { ...compileStats };
    t = compileTable(builder.build([...raw, inst('probe', 9)]), OPTS, states, t);
    expect(t.match('probe.localhost', '/')?.service).toBe('probe');
    t = compileTable(builder.build(raw), OPTS, states, t);
    expect(t.match('probe.localhost', '/')).toBeUndefined();
    expect([states.size, t.upstreams.size]).toEqual([instances, instances]);
    return { normalized: builder.stats.normalized - b0.normalized, servicesBuilt: builder.stats.servicesBuilt - b0.servicesBuilt, hosts: compileStats.hosts - c0.hosts, upstreams: compileStats.upstreams - c0.upstreams, full: compileStats.full - c0.full };
  }

  it('costs the changed service, not the catalog: the same work at 1,000 and 10,000 instances', () => {
    const small = oneChange(1000);
    const large = oneChange(10_000);
    // The probe is validated once, its service built once, its host compiled on arrival and departure.
    expect(small).toEqual({ normalized: 1, servicesBuilt: 1, hosts: 2, upstreams: 1, full: 0 });
    expect(large).toEqual(small);
  });

  it('gives the table a full compile gives, change after change', () => {
    const builder = new CatalogBuilder(ALL);
    let raw = world(60);
    const states = new Map<string, InstanceState>();
    let t = compileTable(builder.build(raw), OPTS, states);
    let seed = 7;
    const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
    for (let step = 0; step < 200; step++) {
      const s = `svc${rnd(70)}`;
      const port = 1000 + rnd(12);
      const kinds: Record<string, string>[] = [{}, { http_host: 'shared.test', http_path: `/p${rnd(3)}` }, { http_host: `${s}.localhost,other.test` }, { weight: String(rnd(3)) }, { http_host: '*.wild.test' }];
      const meta = kinds[rnd(kinds.length)];
      const id = `h:${s}-${port}:80`;
      raw = raw.filter((r) => r.id !== id);
      if (rnd(3) > 0) raw = [...raw, inst(s, port, meta, rnd(5) === 0 ? 'critical' : 'passing')];
      const catalog = builder.build(raw);
      t = compileTable(catalog, OPTS, states, t);
      const fresh = compileTable(buildCatalog(raw, ALL), OPTS, new Map());
      expect(view(t), `step ${step}`).toEqual(view(fresh));
      expect([...states.keys()].sort()).toEqual(view(fresh).upstreams);
      for (const u of t.upstreams.values()) expect(states.get(u.key)).toBe(u.state);
    }
  });
});
