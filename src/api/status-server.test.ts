import http from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { buildCatalog } from '../catalog/catalog.js';
import { silentLogger } from '../log/logger.js';
import { parseListenAddress } from './listen-address.js';
import { type WithdrawalControl, WithdrawalError } from '../sources/docker/withdrawals.js';
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

describe('StatusServer /v1/withdraw', () => {
  const calls: string[] = [];
  const control: WithdrawalControl = {
    async withdraw(container, forMs) {
      calls.push(`withdraw ${container} ${forMs}`);
      if (container === 'ghost') throw new WithdrawalError(404, 'container "ghost": no such container');
      return { container: 'f'.repeat(64), name: container, withdrawn: [`h:${container}:80`], until: '2026-01-01T00:01:00.000Z', confirmed: true };
    },
    async readmit(container) {
      calls.push(`readmit ${container}`);
      return { container: 'f'.repeat(64), name: container, readmitted: true };
    },
    list: () => [{ container: 'f'.repeat(64), name: 'web', withdrawn: ['h:web:80'], until: '2026-01-01T00:01:00.000Z' }],
  };
  const server = new StatusServer({ catalog: () => undefined, components: {}, withdrawals: control }, silentLogger());
  const plain = new StatusServer({ catalog: () => undefined, components: {} }, silentLogger());
  let port = 0;
  let plainPort = 0;
  afterAll(async () => {
    await server.close();
    await plain.close();
  });

  /** A raw request, so that Host and Origin are exactly what the test says. */
  function request(method: string, path: string, headers: Record<string, string> = {}, body?: Buffer, to = port): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: to, method, path, headers, agent: false }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, headers: res.headers }));
      });
      req.on('error', reject);
      req.setTimeout(5_000, () => req.destroy(new Error(`${method} ${path}: no answer`)));
      if (body) req.write(body);
      // A body that never ends must not hold up the answer: the request is left open.
      if (headers['transfer-encoding'] === undefined) req.end();
    });
  }

  it('withdraws (60 s by default), re-admits and lists; answers 404 with the one-line reason', async () => {
    ({ port } = await server.listen({ host: '127.0.0.1', port: 0 }));
    ({ port: plainPort } = await plain.listen({ host: '127.0.0.1', port: 0 }));
    const w = await request('POST', '/v1/withdraw?container=web&for=30s');
    expect(w.status).toBe(200);
    expect(JSON.parse(w.body)).toEqual({ container: 'f'.repeat(64), name: 'web', withdrawn: ['h:web:80'], until: '2026-01-01T00:01:00.000Z', confirmed: true });
    expect((await request('POST', '/v1/withdraw?container=%2Fweb')).status).toBe(200);
    expect((await request('DELETE', '/v1/withdraw?container=web')).body).toContain('"readmitted": true');
    expect(calls.splice(0)).toEqual(['withdraw web 30000', 'withdraw /web 60000', 'readmit web']);
    const list = await request('GET', '/v1/withdraw');
    expect(JSON.parse(list.body)).toEqual({ withdrawals: [{ container: 'f'.repeat(64), name: 'web', withdrawn: ['h:web:80'], until: '2026-01-01T00:01:00.000Z' }] });
    expect(await request('POST', '/v1/withdraw?container=ghost')).toMatchObject({ status: 404, body: 'container "ghost": no such container\n' });
    calls.splice(0);
  });

  it('answers 400 naming the parameter, 405 for other methods', async () => {
    const cases: Array<[string, string]> = [
      ['/v1/withdraw', 'container: missing'],
      ['/v1/withdraw?container=', 'container: missing'],
      ['/v1/withdraw?container=web&for=soon', 'for "soon": not a duration'],
      ['/v1/withdraw?container=web&for=2h', 'for "2h": must be between 1s and 1h'],
      ['/v1/withdraw?container=web&fro=30s', 'fro: unknown parameter'],
      ['/v1/withdraw?container=a&container=b', 'container: given more than once'],
      ['/v1/withdraw?container=%zz', 'malformed percent-encoding'],
    ];
    for (const [path, reason] of cases) {
      const r = await request('POST', path);
      expect(r.status, path).toBe(400);
      expect(r.body, path).toContain(reason);
      expect(r.body.trim().split('\n'), path).toHaveLength(1);
    }
    expect((await request('DELETE', '/v1/withdraw?container=web&for=30s')).body).toContain('for: unknown parameter');
    const put = await request('PUT', '/v1/withdraw?container=web');
    expect(put.status).toBe(405);
    expect(put.headers.allow).toBe('GET, HEAD, POST, DELETE');
    // Other paths still take only GET and HEAD; an API without withdrawals has no such path.
    expect((await request('POST', '/v1/services')).status).toBe(405);
    expect((await request('POST', '/v1/withdraw?container=web', {}, undefined, plainPort)).status).toBe(405);
    expect((await request('GET', '/v1/withdraw', {}, undefined, plainPort)).status).toBe(404);
    expect(calls.splice(0)).toEqual([]);
  });

  it("refuses a web page's request: an Origin header, Sec-Fetch-Site, or a DNS name as Host on a loopback API", async () => {
    const browsers: Record<string, string>[] = [{ origin: 'http://evil.example' }, { origin: 'null' }, { 'sec-fetch-site': 'cross-site' }, { host: `evil.example:${port}` }];
    for (const headers of browsers) {
      for (const method of ['POST', 'DELETE']) {
        const r = await request(method, '/v1/withdraw?container=web', headers);
        expect(r.status, JSON.stringify(headers)).toBe(403);
        expect(r.body.trim().split('\n')).toHaveLength(1);
      }
    }
    expect(calls).toEqual([]);
    expect((await request('POST', '/v1/withdraw?container=web', { host: `localhost:${port}` })).status).toBe(200);
    expect((await request('POST', '/v1/withdraw?container=web', { host: `[::1]:${port}` })).status).toBe(200);
    // Reading is not refused.
    expect((await request('GET', '/v1/withdraw', { origin: 'http://evil.example' })).status).toBe(200);
    calls.splice(0);
  });

  it('ignores a POST body: a large one and one that never ends are answered at once', async () => {
    const t0 = Date.now();
    const big = await request('POST', '/v1/withdraw?container=web', { 'content-length': String(1 << 20) }, Buffer.alloc(1 << 20, 'x'));
    expect(big.status).toBe(200);
    const open = await request('POST', '/v1/withdraw?container=web', { 'transfer-encoding': 'chunked' }, Buffer.from('5\r\nhello\r\n'));
    expect(open.status).toBe(200);
    expect(open.headers.connection).toBe('close');
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(calls.splice(0)).toEqual(['withdraw web 60000', 'withdraw web 60000']);
  });
});
