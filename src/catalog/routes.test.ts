import { describe, expect, it } from 'vitest';
import type { ServiceInstance } from '../model/service-instance.js';
import { buildCatalog } from './catalog.js';
import { buildRoutes, findVhost, instanceWeight, matchRoute, pathMatches } from './routes.js';

const inst = (name: string, meta: Record<string, string> = {}): ServiceInstance => ({
  id: `h:${name}-${JSON.stringify(meta)}`,
  name,
  address: '127.0.0.1',
  port: 8000,
  protocol: 'tcp',
  tags: [],
  meta,
  host: 'h',
  status: 'passing',
});

describe('the routing truth', () => {
  const table = buildRoutes(
    buildCatalog([
      inst('exact', { http_host: 'a.x.localhost', http_path: '/api' }),
      inst('wide', { http_host: '*.localhost' }),
      inst('narrow', { http_host: '*.x.localhost', http_path: '/n/' }),
    ]),
    'localhost',
  );

  it('matches paths on segment boundaries', () => {
    expect(pathMatches('/api', '/api')).toBe(true);
    expect(pathMatches('/api', '/api/x')).toBe(true);
    expect(pathMatches('/api', '/apix')).toBe(false);
    expect(pathMatches('/api/', '/api')).toBe(false);
    expect(pathMatches('/api/', '/api/x')).toBe(true);
    expect(pathMatches('/', '/anything')).toBe(true);
  });

  it('picks the exact host, else the longest wildcard, and never falls through to another host', () => {
    expect(findVhost(table, 'a.x.localhost')?.host).toBe('a.x.localhost');
    expect(findVhost(table, 'b.x.localhost')?.host).toBe('*.x.localhost');
    expect(findVhost(table, 'c.b.x.localhost')?.host).toBe('*.x.localhost');
    expect(findVhost(table, 'x.localhost')?.host).toBe('*.localhost');
    expect(findVhost(table, 'localhost')).toBeUndefined();
    expect(matchRoute(table, 'a.x.localhost', '/other')).toBeUndefined(); // not *.localhost's /
    expect(matchRoute(table, 'b.x.localhost', '/n')).toBeUndefined();
    expect(matchRoute(table, 'b.x.localhost', '/n/1')?.service).toBe('narrow');
    expect(matchRoute(table, 'a.x.localhost', '/api/1')?.service).toBe('exact');
  });

  it('reads weights as numbers: "00" is 0, absent is 1', () => {
    expect(instanceWeight(inst('w', { weight: '00' }))).toBe(0);
    expect(instanceWeight(inst('w', { weight: '0250' }))).toBe(250);
    expect(instanceWeight(inst('w'))).toBe(1);
  });
});
