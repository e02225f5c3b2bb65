import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildCatalog } from '../catalog/catalog.js';
import type { ServiceInstance } from '../model/service-instance.js';
import { REFUSED_DECODED_SOURCE, REFUSED_PATH_SOURCE, REFUSED_TARGET_SOURCE } from '../catalog/path-rule.js';
import { serverNamesHash, templateData } from './template-data.js';
import { compileTemplate } from './template-file.js';

const ALL = ['passing', 'warning', 'critical'] as const;
const inst = (name: string, id: string, port: number, over: Partial<ServiceInstance> = {}): ServiceInstance => ({
  id,
  name,
  address: '127.0.0.1',
  port,
  protocol: 'tcp',
  tags: [],
  meta: {},
  host: 'h1',
  status: 'passing',
  ...over,
});

const raw = [
  inst('web', 'h1:web-2:80', 32002, { tags: ['v2', 'blue'] }),
  inst('web', 'h1:web-1:80', 32001, { tags: ['v1'] }),
  inst('web', 'h1:web-3:80', 32003, { status: 'warning' }),
  inst('api', 'h1:api-1:80', 32011, { meta: { http_host: 'api.example.com,*.example.com', http_path: '/v1' } }),
  inst('api', 'h1:api-2:80', 32012, { meta: { http_host: 'api.example.com', http_path: '/v1/' } }),
  inst('gone', 'h1:gone-1:80', 32021, { status: 'critical' }),
  inst('dns', 'h1:dns:53:udp', 32053, { protocol: 'udp' }),
];
const opts = { statuses: ['passing' as const], domain: 'localhost', env: { HOME: '/root' } };

describe('templateData', () => {
  const d = templateData(buildCatalog(raw, [...ALL]), opts);

  it('lists services sorted, with only routable instances and their tags', () => {
    expect(d.services.map((s) => s.name)).toEqual(['api', 'dns', 'gone', 'web']);
    const web = d.services.find((s) => s.name === 'web')!;
    expect(web.instances.map((i) => i.id)).toEqual(['h1:web-1:80', 'h1:web-2:80']);
    expect(web.tags).toEqual(['blue', 'v1', 'v2']);
    expect(web.instances[0]).toEqual({ id: 'h1:web-1:80', address: '127.0.0.1', port: 32001, protocol: 'tcp', tags: ['v1'], meta: {}, host: 'h1', status: 'passing', weight: 1, haproxyWeight: 1 });
    // a service whose instances all fail keeps its name (and hosts), with no instance
    expect(d.services.find((s) => s.name === 'gone')!.instances).toEqual([]);
    expect(d.domain).toBe('localhost');
    expect(d.env.HOME).toBe('/root');
  });

  it('--status passing,warning widens the routable instances', () => {
    const w = templateData(buildCatalog(raw, [...ALL]), { ...opts, statuses: ['passing', 'warning'] });
    expect(w.services.find((s) => s.name === 'web')!.instances).toHaveLength(3);
  });

  it('builds vhosts: exact hosts sorted, wildcards last; routes longest path first with exact/prefix forms', () => {
    expect(d.vhosts.map((v) => v.host)).toEqual(['api.example.com', 'gone.localhost', 'web.localhost', '*.example.com']);
    const api = d.vhosts[0];
    expect(api.routes.map((r) => [r.path, r.exact, r.prefix, r.upstream])).toEqual([
      ['/v1/', null, '/v1/', 'api_2'],
      ['/v1', '/v1', null, 'api_1'], // /v1/ is its own route
    ]);
    const wild = d.vhosts[3];
    expect(wild).toMatchObject({ wildcard: true, suffix: '.example.com' });
    expect(wild.routes.map((r) => [r.path, r.exact, r.prefix, r.upstream])).toEqual([['/v1', '/v1', '/v1/', 'api_1']]);
    expect(d.vhosts[2].routes[0]).toMatchObject({ path: '/', exact: null, prefix: '/', upstream: 'web', service: 'web' });
  });

  it('gives one upstream per service and one per other instance set a route needs', () => {
    expect(d.upstreams.map((u) => [u.name, u.instances.map((i) => i.port)])).toEqual([
      ['api', [32011, 32012]],
      ['dns', []], // udp only
      ['gone', []],
      ['web', [32001, 32002]],
      ['api_1', [32011]],
      ['api_2', [32012]],
    ]);
    // the failing service's route points at its empty upstream: templates answer 503
    expect(d.vhosts[1].routes[0]).toMatchObject({ upstream: 'gone', instances: [] });
  });

  it('equal registry content renders byte-identical output, whatever the order it arrived in', () => {
    const t = compileTemplate('nginx.conf.hbs', readFileSync(new URL('../../templates/nginx.conf.hbs', import.meta.url), 'utf8'));
    const h = compileTemplate('haproxy.cfg.hbs', readFileSync(new URL('../../templates/haproxy.cfg.hbs', import.meta.url), 'utf8'));
    const again = templateData(buildCatalog([...raw].reverse(), [...ALL]), opts);
    expect(t.render(again)).toBe(t.render(d));
    expect(h.render(again)).toBe(h.render(d));
    expect(t.render(d)).toContain('return 503 "no healthy instance of gone\\n";');
  });
});

describe('templateData: one routing truth', () => {
  const d = templateData(
    buildCatalog([
      inst('api', 'a1', 1, { meta: { http_host: 'x.localhost', http_path: '/api' } }),
      inst('adm', 'a2', 2, { meta: { http_host: 'x.localhost', http_path: '/api/admin/' } }),
      inst('top', 'a3', 3, { meta: { http_host: 'x.localhost', http_path: '/top/' } }),
      inst('zero', 'z1', 4, { meta: { weight: '00' } }),
      inst('zero', 'z2', 5, { meta: { weight: '0' } }),
      inst('half', 'h1', 6, { meta: { weight: '0' } }),
      inst('half', 'h2', 7, { meta: { weight: '0250' } }),
    ], [...ALL]),
    opts,
  );

  it('normalises weights: "00" is 0; a route whose instances all weigh 0 is not live (503 everywhere)', () => {
    const zero = d.upstreams.find((u) => u.name === 'zero')!;
    expect(zero.instances.map((i) => i.weight)).toEqual([0, 0]);
    expect(zero.live).toBe(false);
    expect(d.vhosts.find((v) => v.host === 'zero.localhost')!.routes[0].live).toBe(false);
    const half = d.upstreams.find((u) => u.name === 'half')!;
    expect([half.live, half.instances.map((i) => i.weight)]).toEqual([true, [0, 250]]);
  });

  it('routes the bare form of a trailing-slash path as the table does (nginx would redirect it)', () => {
    const x = d.vhosts.find((v) => v.host === 'x.localhost')!;
    expect(x.bare.map((b) => [b.path, b.route?.service ?? null])).toEqual([
      ['/api/admin', 'api'], // /api matches /api/admin
      ['/top', null],
    ]);
  });

  it('sizes the server names hash for the longest name', () => {
    expect(d.serverNamesHash).toEqual({ bucketSize: 64, maxSize: 4096 });
    const long = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(55)}.x`;
    expect(long).toHaveLength(249);
    expect(serverNamesHash([long]).bucketSize).toBe(1024);
    expect(serverNamesHash(Array.from({ length: 5000 }, (_, i) => `h${i}.x`)).maxSize).toBe(32768);
  });

  it('hands templates the path rule', () => {
    expect(d.pathRule.refusedPath).toBe(REFUSED_PATH_SOURCE);
    expect(d.pathRule.refusedTarget).toBe(REFUSED_TARGET_SOURCE);
    expect(d.pathRule.refusedDecoded).toBe(REFUSED_DECODED_SOURCE);
  });
});
