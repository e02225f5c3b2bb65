import { afterAll, describe, expect, it } from 'vitest';
import { buildCatalog } from '../catalog/catalog.js';
import { silentLogger } from '../log/logger.js';
import { parseListenAddress } from './listen-address.js';
import { healthReport, StatusServer } from './status-server.js';

describe('healthReport', () => {
  it('is ok only when every part is, with the latest sync and the first error named by its part', () => {
    const h = healthReport({
      catalog: () => undefined,
      components: {
        docker: () => ({ ok: false, lastSync: new Date('2026-01-01T00:00:01Z'), lastError: 'connect ENOENT' }),
        registry: () => ({ ok: true, lastSync: new Date('2026-01-01T00:00:05Z'), lastError: 'timed out' }),
      },
    });
    expect(h.ok).toBe(false);
    expect(h.lastSync).toBe('2026-01-01T00:00:05.000Z');
    expect(h.lastError).toBe('docker: connect ENOENT');
    expect(healthReport({ catalog: () => undefined, components: { a: () => ({ ok: true }) } })).toMatchObject({ ok: true, lastSync: null, lastError: null });
  });
});

describe('parseListenAddress', () => {
  it('takes host:port, [v6]:port and :port', () => {
    expect(parseListenAddress('api', '127.0.0.1:8081')).toEqual({ host: '127.0.0.1', port: 8081 });
    expect(parseListenAddress('api', '[::1]:0')).toEqual({ host: '::1', port: 0 });
    expect(parseListenAddress('api', ':9000')).toEqual({ host: '127.0.0.1', port: 9000 });
    expect(parseListenAddress('api', 'localhost:80')).toEqual({ host: 'localhost', port: 80 });
    for (const bad of ['8081', '127.0.0.1', '[zz]:1', 'a b:1', '1.2.3.4:65536', '::1:80']) expect(() => parseListenAddress('api', bad)).toThrow('--api');
  });
});

describe('StatusServer', () => {
  const server = new StatusServer(
    { catalog: () => buildCatalog([{ id: 'h:a:80', name: 'a', address: '127.0.0.1', port: 1, protocol: 'tcp', tags: [], meta: {}, host: 'h', status: 'passing' }]), components: { x: () => ({ ok: false }) } },
    silentLogger(),
  );
  let base = '';
  afterAll(() => server.close());

  it('serves the catalog, health (503 when a part is down), metrics; 404 and 405 otherwise', async () => {
    const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${port}`;
    const services = (await (await fetch(`${base}/v1/services`)).json()) as { complete: boolean; services: { name: string }[] };
    expect(services).toMatchObject({ complete: true, services: [{ name: 'a' }] });
    expect((await fetch(`${base}/v1/health`)).status).toBe(503);
    expect(await (await fetch(`${base}/metrics`)).text()).toContain('harbormaster_proxy_requests_total');
    const head = await fetch(`${base}/v1/services`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    expect((await fetch(`${base}/v1/other`)).status).toBe(404);
    const post = await fetch(`${base}/metrics`, { method: 'DELETE' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
  });
});
