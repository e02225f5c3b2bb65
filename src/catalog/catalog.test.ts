import { describe, expect, it } from 'vitest';
import type { ServiceInstance } from '../model/service-instance.js';
import { buildCatalog, CatalogBuilder, EMPTY_CATALOG, instanceProblem } from './catalog.js';
import { checkHttpHost, checkHttpPath, checkWeight } from './route-meta.js';
import { buildRoutes } from './routes.js';

const inst = (over: Partial<ServiceInstance> = {}): ServiceInstance => ({
  id: 'h:web-1:80',
  name: 'web',
  address: '127.0.0.1',
  port: 8001,
  protocol: 'tcp',
  tags: [],
  meta: {},
  host: 'h',
  status: 'passing',
  ...over,
});

describe('buildCatalog', () => {
  it('sorts services, instances, tags and meta so equal content gives an equal fingerprint', () => {
    const a = [inst({ id: 'b', tags: ['z', 'a'], meta: { y: '1', x: '2' } }), inst({ id: 'a' }), inst({ name: 'api', id: 'c' })];
    const c1 = buildCatalog(a);
    const c2 = buildCatalog([...a].reverse());
    expect(c1.fingerprint).toBe(c2.fingerprint);
    expect(c1.services.map((s) => s.name)).toEqual(['api', 'web']);
    expect(c1.services[1].instances.map((i) => i.id)).toEqual(['a', 'b']);
    expect(c1.services[1].instances[1].tags).toEqual(['a', 'z']);
    expect(Object.keys(c1.services[1].instances[1].meta)).toEqual(['x', 'y']);
    expect(c1.services[1].tags).toEqual(['a', 'z']);
  });

  it('is immutable', () => {
    const c = buildCatalog([inst()]);
    expect(Object.isFrozen(c.services)).toBe(true);
    expect(Object.isFrozen(c.services[0].instances[0])).toBe(true);
    expect(() => (c.services[0].instances as ServiceInstance[]).push(inst())).toThrow();
  });

  it('keeps only the statuses asked for (passing by default)', () => {
    const raw = [inst({ id: 'p' }), inst({ id: 'w', status: 'warning' }), inst({ id: 'c', status: 'critical' })];
    expect(buildCatalog(raw).services[0].instances.map((i) => i.id)).toEqual(['p']);
    expect(buildCatalog(raw, ['passing', 'warning']).services[0].instances.map((i) => i.id)).toEqual(['p', 'w']);
  });

  it('drops records that could inject text into a config, naming the instance and field', () => {
    const warnings: string[] = [];
    const bad = [
      inst({ id: 'x1', meta: { http_host: 'a.example;}' } }),
      inst({ id: 'x2', meta: { http_path: '/a b' } }),
      inst({ id: 'x3', address: '1.2.3.4; drop' }),
      inst({ id: 'x4', name: 'we b' }),
      inst({ id: 'x5', tags: ['ok\nnext'] }),
      inst({ id: 'x6', meta: { note: 'line\r\nbreak' } }),
      inst({ id: 'x7', port: 70000 }),
      inst({ id: 'ok' }),
    ];
    const c = buildCatalog(bad, ['passing'], (m) => warnings.push(m));
    expect(c.services.flatMap((s) => s.instances.map((i) => i.id))).toEqual(['ok']);
    expect(warnings).toHaveLength(7);
    expect(warnings[0]).toMatch(/instance x1: meta http_host: .* is not a host name; instance skipped/);
    expect(warnings[2]).toContain('address');
  });

  it('instanceProblem accepts host names and IPv6 addresses', () => {
    expect(instanceProblem(inst({ address: 'node-1.internal' }))).toBeUndefined();
    expect(instanceProblem(inst({ address: '::1' }))).toBeUndefined();
  });
});

describe('route meta', () => {
  it('validates hosts, paths and weights', () => {
    expect(checkHttpHost('a.example.com, b.localhost')).toBeUndefined();
    expect(checkHttpHost('*.example.com')).toBeUndefined();
    for (const bad of ['a b', 'a;b', 'x.example}', '', 'a..b', '-a.b', "a'b"]) expect(checkHttpHost(bad)).toBeDefined();
    expect(checkHttpPath('/api/v1')).toBeUndefined();
    for (const bad of ['api', '/a b', '/a;b', '/a{b}', '/${x}', '/a#b', '/a\nb', '/../etc', `/${'a'.repeat(300)}`, '/a//b', '/a"b']) {
      expect(checkHttpPath(bad)).toBeDefined();
    }
    expect(checkWeight('10')).toBeUndefined();
    expect(checkWeight('-1')).toBeDefined();
    expect(checkWeight('1001')).toBeDefined();
  });
});

describe('buildRoutes', () => {
  it('routes every tcp instance by http_host (default <name>.<domain>) and http_path, longest path first', () => {
    const c = buildCatalog([
      inst({ id: 'w1' }),
      inst({ id: 'w2', port: 8002 }),
      inst({ id: 'a1', name: 'api', meta: { http_host: 'shop.example, API.example', http_path: '/api' } }),
      inst({ id: 's1', name: 'shop', meta: { http_host: 'shop.example' } }),
      inst({ id: 'u1', name: 'dns', protocol: 'udp' }),
    ]);
    const t = buildRoutes(c, 'localhost');
    expect(t.vhosts.map((v) => v.host)).toEqual(['api.example', 'shop.example', 'web.localhost']);
    const shop = t.vhosts.find((v) => v.host === 'shop.example')!;
    expect(shop.routes.map((r) => [r.path, r.service])).toEqual([
      ['/api', 'api'],
      ['/', 'shop'],
    ]);
    expect(t.vhosts.find((v) => v.host === 'web.localhost')!.routes[0].instances.map((i) => i.id)).toEqual(['w1', 'w2']);
    expect(t.conflicts).toEqual([]);
  });

  it('reports a host+path claimed by two services and keeps the first by name', () => {
    const c = buildCatalog([inst({ id: 'a', name: 'alpha', meta: { http_host: 'x.example' } }), inst({ id: 'b', name: 'beta', meta: { http_host: 'x.example' } })]);
    const t = buildRoutes(c, 'localhost');
    expect(t.conflicts).toEqual(['x.example/']);
    expect(t.vhosts[0].routes[0].service).toBe('alpha');
  });
});

describe('instanceProblem: ID and host', () => {
  it('refuses an ID or a host with control characters (they reach generated configs), keeps ordinary ones', () => {
    expect(instanceProblem(inst({ id: 'x\n  server evil 6.6.6.6:80\n#' }))).toBe('id contains control characters');
    expect(instanceProblem(inst({ host: 'h1\n  option evil' }))).toBe('host contains control characters');
    expect(instanceProblem(inst({ id: 'x'.repeat(256) }))).toBe('id longer than 255 characters');
    expect(instanceProblem(inst({ id: 'h:web-1:80', host: '' }))).toBeUndefined();
    const warned: string[] = [];
    const c = buildCatalog([inst({ id: 'a\nb' }), inst({ id: 'ok' })], ['passing'], (m) => warned.push(m));
    expect(c.services[0].instances.map((i) => i.id)).toEqual(['ok']);
    expect(warned).toEqual(['service web instance a\\nb: id contains control characters; instance skipped']);
  });
});

describe('CatalogBuilder', () => {
  it('keeps unchanged services and gives the snapshot and fingerprint a fresh build gives', () => {
    const raw = [inst({ id: 'a' }), inst({ id: 'b', tags: ['z', 'a'] }), inst({ name: 'api', id: 'c', meta: { y: '1', x: '2' } })];
    const b = new CatalogBuilder();
    const first = b.build(raw);
    expect(b.build([...raw].reverse())).toBe(first); // same records: the same snapshot, nothing rebuilt
    const changed = [...raw, inst({ name: 'api', id: 'd' })];
    const next = b.build(changed);
    expect(next.services[1]).toBe(first.services[1]); // web kept as it was
    expect(b.stats).toEqual({ normalized: 4, servicesBuilt: 3 });
    const fresh = buildCatalog(changed);
    expect(JSON.stringify(next)).toBe(JSON.stringify(fresh));
    expect(next.fingerprint).toBe(fresh.fingerprint);
    expect(b.build(raw).fingerprint).toBe(first.fingerprint);
    expect(b.build([]).fingerprint).toBe(EMPTY_CATALOG.fingerprint);
  });
});
