// The built-in proxy in-process, fed by the embedded registry through the real catalog watch,
// in front of real loopback HTTP and WebSocket servers: routing, balancing, retries and
// ejection, timeouts, headers, draining on table swaps, graceful shutdown, active checks.
import net from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Agent, WebSocket } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CatalogWatch } from '../src/catalog/watch.js';
import { metrics } from '../src/metrics/metrics.js';
import { HEALTH_STATUSES, type HealthStatus, type ServiceInstance } from '../src/model/service-instance.js';
import type { ProxyOptions } from '../src/proxy/context.js';
import { ProxyServer } from '../src/proxy/proxy-server.js';
import { createBackend } from '../src/registry/index.js';
import { deadPort, get, startBackend, type Backend } from './support/proxy.js';
import { waitFor } from './support/wait.js';

const REG = 'memory://proxy-server-test';
const registry = createBackend(REG, { ttl: 0 });

interface LogLine {
  event?: string;
  msg: string;
  [k: string]: unknown;
}

interface TestProxy {
  proxy: ProxyServer;
  port: number;
  logs: LogLine[];
  stop(): Promise<void>;
}

const running: TestProxy[] = [];
const backends: Backend[] = [];

async function startProxy(o: Partial<ProxyOptions> = {}): Promise<TestProxy> {
  const logs: LogLine[] = [];
  const log = pino({ level: 'info' }, new Writable({ write: (chunk: Buffer, _e, cb) => (logs.push(JSON.parse(chunk.toString()) as LogLine), cb()) }));
  const watch = CatalogWatch.forUri(REG, { statuses: [...HEALTH_STATUSES], log });
  const proxy = new ProxyServer({ domain: 'localhost', balance: 'round-robin', statuses: ['passing'], connectTimeoutMs: 2000, responseTimeoutMs: 10_000, idleTimeoutMs: 10_000, retries: 2, log, ...o });
  const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
  const off = watch.subscribe((c) => proxy.setCatalog(c));
  const t = {
    proxy,
    port,
    logs,
    stop: async () => {
      off();
      await proxy.close(0);
      await watch.stop();
    },
  };
  running.push(t);
  return t;
}

async function backend(name: string, opts: { ws?: boolean } = {}): Promise<Backend> {
  const b = await startBackend(name, opts);
  backends.push(b);
  return b;
}

const registered: ServiceInstance[] = [];

async function register(name: string, port: number, meta: Record<string, string> = {}, status: HealthStatus = 'passing', id = `t:${name}-${port}:80`): Promise<ServiceInstance> {
  const inst: ServiceInstance = { id, name, address: '127.0.0.1', port, protocol: 'tcp', tags: [], meta, host: 't', status };
  await registry.register(inst);
  registered.push(inst);
  return inst;
}

/** Wait until the proxy routes `host` to `n` instances. */
async function routed(p: TestProxy, host: string, n: number, path = '/'): Promise<void> {
  await waitFor(`${host} routed to ${n} instances`, () => p.proxy.table().match(host, path)?.balancer.upstreams.length === n, 5_000, 10);
}

function counterValue(name: 'retries' | 'upstreamErrors', service: string): Promise<number> {
  return metrics[name].get().then((m) => m.values.find((v) => v.labels.service === service)?.value ?? 0);
}

let main: TestProxy;

beforeAll(async () => {
  main = await startProxy();
});

afterEach(async () => {
  for (const i of registered.splice(0)) await registry.deregister(i);
});

afterAll(async () => {
  for (const p of running) await p.stop();
  for (const b of backends) await b.close();
});

describe('routing', () => {
  it('routes <service>.<domain> to every instance in turn, ignoring case and port in Host', async () => {
    const [a, b] = [await backend('rr-a'), await backend('rr-b')];
    await register('rr', a.port);
    await register('rr', b.port);
    await routed(main, 'rr.localhost', 2);
    const bodies = [];
    for (let i = 0; i < 4; i++) bodies.push((await get(main.port, i % 2 ? 'RR.LocalHost:8080' : 'rr.localhost')).body);
    expect(bodies.sort()).toEqual(['rr-a', 'rr-a', 'rr-b', 'rr-b']);
  });

  it('routes declared hosts and the longest path prefix on segment boundaries', async () => {
    const [site, api, v2] = [await backend('site'), await backend('api'), await backend('api-v2')];
    await register('site', site.port, { http_host: 'shop.test' });
    await register('api', api.port, { http_host: 'shop.test,www.shop.test', http_path: '/api' });
    await register('apiv2', v2.port, { http_host: 'shop.test', http_path: '/api/v2' });
    await routed(main, 'shop.test', 1, '/api/v2');
    expect((await get(main.port, 'shop.test', '/')).body).toBe('site');
    expect((await get(main.port, 'shop.test', '/api')).body).toBe('api');
    expect((await get(main.port, 'shop.test', '/api/v1/x?y=1')).body).toBe('api');
    expect((await get(main.port, 'shop.test', '/api/v2/users')).body).toBe('api-v2');
    expect((await get(main.port, 'shop.test', '/apix')).body).toBe('site');
    expect((await get(main.port, 'www.shop.test', '/api/x')).body).toBe('api');
  });

  it('answers 404 with a short body for an unknown host or path, 400 without a usable Host', async () => {
    const nf = await get(main.port, 'nobody.localhost', '/x');
    expect(nf.status).toBe(404);
    expect(nf.body).toBe('no route for nobody.localhost/x\n');
    const b = await backend('only-api');
    await register('onlyapi', b.port, { http_host: 'only.test', http_path: '/api' });
    await routed(main, 'only.test', 1, '/api');
    expect((await get(main.port, 'only.test', '/other')).status).toBe(404);
    expect((await get(main.port, 'bad host!', '/')).status).toBe(400);
  });

  it('answers 503 when the route has no instance with a routable status', async () => {
    const b = await backend('sick');
    await register('sick', b.port, {}, 'critical');
    await routed(main, 'sick.localhost', 1);
    const r = await get(main.port, 'sick.localhost');
    expect(r.status).toBe(503);
    expect(r.body).toBe('no healthy instance of sick\n');
    expect(b.hits).toBe(0);
  });

  it('balances by weight and by least connections', async () => {
    const [a, b] = [await backend('w-a'), await backend('w-b')];
    await register('weighted', a.port, { weight: '3' });
    await register('weighted', b.port, { weight: '1' });
    await routed(main, 'weighted.localhost', 2);
    const counts: Record<string, number> = {};
    for (let i = 0; i < 40; i++) {
      const r = await get(main.port, 'weighted.localhost');
      counts[r.body] = (counts[r.body] ?? 0) + 1;
    }
    expect(counts).toEqual({ 'w-a': 30, 'w-b': 10 });

    const lc = await startProxy({ balance: 'least-conn' });
    const [c, d] = [await backend('lc-c'), await backend('lc-d')];
    await register('lc', c.port, {}, 'passing', 't:lc-1');
    await register('lc', d.port, {}, 'passing', 't:lc-2');
    await routed(lc, 'lc.localhost', 2);
    // Two slow requests hold lc-c and lc-d; finishing one leaves the other busy, so quick ones go to the idle one.
    const slow = get(lc.port, 'lc.localhost', '/slow/1500');
    await waitFor('slow request in flight', () => c.hits + d.hits === 1, 5_000, 10);
    const busy = c.hits === 1 ? 'lc-c' : 'lc-d';
    const quick = [];
    for (let i = 0; i < 5; i++) quick.push((await get(lc.port, 'lc.localhost')).body);
    expect(quick.every((q) => q !== busy)).toBe(true);
    expect((await slow).body).toBe(busy);
  });
});

describe('headers', () => {
  it('passes Host and end-to-end headers, adds X-Forwarded-*, drops hop-by-hop headers', async () => {
    const b = await backend('hdr');
    await register('hdr', b.port);
    await routed(main, 'hdr.localhost', 1);
    const r = await get(main.port, 'hdr.localhost:9999', '/headers', {
      headers: { 'x-forwarded-for': '10.9.8.7', 'x-custom': 'yes', connection: 'keep-alive, x-drop', 'x-drop': 'no', 'proxy-authorization': 'Basic eA==', te: 'trailers' },
    });
    const seen = JSON.parse(r.body) as Record<string, string>;
    expect(seen.host).toBe('hdr.localhost:9999');
    expect(seen['x-custom']).toBe('yes');
    // No peer is trusted by default: the client's own X-Forwarded-For is replaced, not appended to.
    expect(seen['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen['x-forwarded-proto']).toBe('http');
    expect(seen['x-forwarded-host']).toBe('hdr.localhost:9999');
    expect(seen['x-drop']).toBeUndefined();
    expect(seen['proxy-authorization']).toBeUndefined();
    // TE is hop-by-hop; only its trailers token travels (trailers are passed back).
    expect(seen.te).toBe('trailers');
    const plain = await get(main.port, 'hdr.localhost', '/');
    expect(plain.headers['x-backend']).toBe('hdr');
  });

  it('streams request bodies both ways', async () => {
    const b = await backend('body');
    await register('body', b.port);
    await routed(main, 'body.localhost', 1);
    const r = await get(main.port, 'body.localhost', '/echo', { method: 'POST', body: 'x'.repeat(300_000) });
    expect(r.body).toBe('body:300000');
    const big = await get(main.port, 'body.localhost', '/big/8000000');
    expect(big.status).toBe(200);
    expect(big.headers['content-length']).toBe('8000000');
    expect(big.body.length).toBe(8_000_000);
  });
});

describe('resilience', () => {
  it('retries a refused connection on another instance, even a POST whose body was not read, and ejects the dead one', async () => {
    const live = await backend('live');
    const dead = await deadPort();
    // Sorted by id, the dead instance comes first and gets the first request.
    await register('retry', dead, {}, 'passing', 't:retry-a-dead');
    await register('retry', live.port, {}, 'passing', 't:retry-b-live');
    await routed(main, 'retry.localhost', 2);
    const before = await counterValue('retries', 'retry');
    const post = await get(main.port, 'retry.localhost', '/echo', { method: 'POST', body: 'hello' });
    expect(post).toMatchObject({ status: 200, body: 'live:5' });
    for (let i = 0; i < 10; i++) expect((await get(main.port, 'retry.localhost')).body).toBe('live');
    expect((await counterValue('retries', 'retry')) - before).toBe(1);
    const ejected = main.logs.find((l) => l.event === 'ejected' && l.id === 't:retry-a-dead')!;
    expect(ejected.msg).toContain('ECONNREFUSED');
    expect(live.hits).toBe(11);
  });

  it('refused connections use up no retry: with --retries 1, three dead instances and a live one, every GET is answered by the live one', async () => {
    const live = await backend('refused-live');
    // Sorted by id, the dead instances come first: the first request meets all three before the live one.
    for (const x of ['a', 'b', 'c']) await register('refused', await deadPort(), {}, 'passing', `t:refused-${x}-dead`);
    await register('refused', live.port, {}, 'passing', 't:refused-z-live');
    const p = await startProxy({ retries: 1 });
    await routed(p, 'refused.localhost', 4);
    for (let i = 0; i < 6; i++) expect(await get(p.port, 'refused.localhost')).toMatchObject({ status: 200, body: 'refused-live' });
    expect(p.logs.filter((l) => l.event === 'ejected').length).toBe(3);
  });

  it('retries a GET whose connection was reset before any answer (a first reset may be a stale connection), but not a POST', async () => {
    const [a, b] = [await backend('reset-a'), await backend('reset-b')];
    await register('reset', a.port, {}, 'passing', 't:reset-a');
    await register('reset', b.port, {}, 'passing', 't:reset-b');
    await routed(main, 'reset.localhost', 2);
    // /reset kills the connection on both: the GET goes a → b → a (a's second reset ejects it), then gives up.
    const g = await get(main.port, 'reset.localhost', '/reset');
    expect(g.status).toBe(502);
    expect([a.hits, b.hits]).toEqual([2, 1]);
    expect(main.logs.filter((l) => l.event === 'ejected' && String(l.id).startsWith('t:reset-')).map((l) => l.id)).toEqual(['t:reset-a']);
    await waitFor('ejections over', () => [...main.proxy.table().upstreams.values()].every((u) => u.state.ejectedUntil <= Date.now()), 5_000, 50);
    const p = await get(main.port, 'reset.localhost', '/reset', { method: 'POST', body: 'x' });
    expect(p.status).toBe(502);
    expect(a.hits + b.hits).toBe(4);
  });

  it('answers 502 for an answer Node cannot pass on, and passes the final answer after a 1xx', async () => {
    const raw = await rawBackend((n) =>
      n === 0 ? 'HTTP/1.1 200 OK\r\nX-Bad: a\u0001b\r\nContent-Length: 2\r\n\r\nok' : 'HTTP/1.1 103 Early Hints\r\nLink: </x.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal',
    );
    await register('raw', raw.port);
    await routed(main, 'raw.localhost', 1);
    expect((await get(main.port, 'raw.localhost')).status).toBe(502);
    expect(await get(main.port, 'raw.localhost')).toMatchObject({ status: 200, body: 'final' });
    await raw.close();
  });

  it('retries a GET whose instance died after its response head or inside a small body, and cuts one that died inside a large body', async () => {
    let headOnlyCalls = 0;
    const headOnly = await rawBackend(() => (headOnlyCalls++, 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n'));
    const live = await backend('after-head');
    await register('headonly', headOnly.port, {}, 'passing', 't:headonly-a');
    await register('headonly', live.port, {}, 'passing', 't:headonly-b');
    await routed(main, 'headonly.localhost', 2);
    expect(await get(main.port, 'headonly.localhost')).toMatchObject({ status: 200, body: 'after-head' });
    expect(headOnlyCalls).toBe(1);
    // A small response is held whole, so an instance dying inside its body is replaced too.
    let midCalls = 0;
    const midBody = await rawBackend(() => (midCalls++, 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial'));
    const live2 = await backend('after-partial');
    await register('midbody', midBody.port, {}, 'passing', 't:midbody-a');
    await register('midbody', live2.port, {}, 'passing', 't:midbody-b');
    await routed(main, 'midbody.localhost', 2);
    expect(await get(main.port, 'midbody.localhost')).toMatchObject({ status: 200, body: 'after-partial' });
    expect(midCalls).toBe(1);
    // A large one has gone to the client already: all that is left is to cut it.
    const bigBody = await rawBackend(() => `HTTP/1.1 200 OK\r\nContent-Length: ${1 << 20}\r\n\r\n${'x'.repeat(100_000)}`);
    await register('bigbody', bigBody.port);
    await routed(main, 'bigbody.localhost', 1);
    await expect(get(main.port, 'bigbody.localhost')).rejects.toThrow();
    await Promise.all([headOnly.close(), midBody.close(), bigBody.close()]);
  });

  it('passes a 304 or 204 that announces a Content-Length without a body, and ejects nobody for it', async () => {
    const notModified = await rawBackend(() => 'HTTP/1.1 304 Not Modified\r\nContent-Length: 11\r\nETag: "x"\r\n\r\n');
    const noContent = await rawBackend(() => 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n');
    await register('cond304', notModified.port);
    await register('cond204', noContent.port);
    await routed(main, 'cond304.localhost', 1);
    await routed(main, 'cond204.localhost', 1);
    const errors = await counterValue('upstreamErrors', 'cond304');
    for (let i = 0; i < 3; i++) {
      expect(await get(main.port, 'cond304.localhost')).toMatchObject({ status: 304 });
      expect(await get(main.port, 'cond204.localhost')).toMatchObject({ status: 204 });
    }
    expect(await counterValue('upstreamErrors', 'cond304')).toBe(errors);
    await Promise.all([notModified.close(), noContent.close()]);
  });

  it('answers 502 when every instance is down, and tries them again while all are ejected (panic)', async () => {
    await register('down', await deadPort(), {}, 'passing', 't:down-1');
    await register('down', await deadPort(), {}, 'passing', 't:down-2');
    await routed(main, 'down.localhost', 2);
    expect((await get(main.port, 'down.localhost')).status).toBe(502);
    expect((await get(main.port, 'down.localhost')).status).toBe(502);
  });

  it('answers 504 when an instance does not answer within the response timeout', async () => {
    const p = await startProxy({ responseTimeoutMs: 300 });
    const b = await backend('slowpoke');
    await register('slowpoke', b.port);
    await routed(p, 'slowpoke.localhost', 1);
    const started = Date.now();
    const r = await get(p.port, 'slowpoke.localhost', '/slow/3000');
    expect(r.status).toBe(504);
    expect(Date.now() - started).toBeLessThan(2500);
  });

  it('aborts the upstream request when the client goes away', async () => {
    const b = await backend('abandoned');
    await register('abandoned', b.port);
    await routed(main, 'abandoned.localhost', 1);
    const req = get(main.port, 'abandoned.localhost', '/slow/5000', { timeoutMs: 300 });
    await expect(req).rejects.toThrow('timed out');
    await waitFor('backend saw the abort', () => b.aborted === 1, 5_000, 20);
  });

  it('takes instances failing an active health check out of rotation and back in', async () => {
    const p = await startProxy({ healthCheck: { path: '/healthz', intervalMs: 200 } });
    const [a, b] = [await backend('hc-a'), await backend('hc-b')];
    await register('hc', a.port);
    await register('hc', b.port);
    await routed(p, 'hc.localhost', 2);
    b.health = 500;
    await waitFor('hc-b out', () => p.logs.some((l) => l.event === 'check-failed' && String(l.id).includes(String(b.port))), 5_000, 20);
    for (let i = 0; i < 6; i++) expect((await get(p.port, 'hc.localhost')).body).toBe('hc-a');
    b.health = 200;
    await waitFor('hc-b back', () => p.logs.some((l) => l.event === 'check-passed'), 5_000, 20);
    const bodies = new Set<string>();
    for (let i = 0; i < 4; i++) bodies.add((await get(p.port, 'hc.localhost')).body);
    expect([...bodies].sort()).toEqual(['hc-a', 'hc-b']);
  });
});

describe('table swaps and shutdown', () => {
  it('lets a request finish on an instance removed while it runs (drain), and routes new ones elsewhere', async () => {
    const [a, b] = [await backend('drain-a'), await backend('drain-b')];
    const ia = await register('drain', a.port, {}, 'passing', 't:drain-a');
    await register('drain', b.port, {}, 'passing', 't:drain-b');
    await routed(main, 'drain.localhost', 2);
    const slow = get(main.port, 'drain.localhost', '/slow/1200');
    await waitFor('slow request on drain-a', () => a.hits === 1, 5_000, 10);
    await registry.deregister(ia);
    await routed(main, 'drain.localhost', 1);
    expect((await get(main.port, 'drain.localhost')).body).toBe('drain-b');
    expect(await slow).toMatchObject({ status: 200, body: 'drain-a' });
    expect(a.aborted).toBe(0);
  });

  it('on close, stops accepting and lets requests in flight finish', async () => {
    const p = await startProxy();
    const b = await backend('grace');
    await register('grace', b.port);
    await routed(p, 'grace.localhost', 1);
    const slow = get(p.port, 'grace.localhost', '/slow/1000');
    await waitFor('in flight', () => b.hits === 1, 5_000, 10);
    const closed = p.proxy.close(10_000);
    await waitFor('listener closed', () => connectRefused(p.port), 5_000, 20);
    expect(await slow).toMatchObject({ status: 200, body: 'grace' });
    expect(await closed).toBe(0);
  });

  it('cuts what is still running at the end of the drain timeout', async () => {
    const p = await startProxy();
    const b = await backend('cut');
    await register('cut', b.port);
    await routed(p, 'cut.localhost', 1);
    const slow = get(p.port, 'cut.localhost', '/slow/5000').then(
      (a) => a.status,
      () => 'cut',
    );
    await waitFor('in flight', () => b.hits === 1, 5_000, 10);
    expect(await p.proxy.close(200)).toBe(1);
    expect(await slow).toBe('cut');
  });
});

describe('websocket', () => {
  it('passes upgrades through: echo both ways, retrying a dead instance first', async () => {
    const echo = await backend('ws-echo', { ws: true });
    await register('ws', await deadPort(), {}, 'passing', 't:ws-a-dead');
    await register('ws', echo.port, {}, 'passing', 't:ws-b');
    await routed(main, 'ws.localhost', 2);
    const dispatcher = new Agent({ connect: (_o, cb) => connectTo(main.port, cb as (err: Error | null, socket: net.Socket | null) => void) });
    const ws = new WebSocket(`ws://ws.localhost:${main.port}/chat`, { dispatcher });
    const messages: string[] = [];
    const got = new Promise<void>((resolve, reject) => {
      ws.onmessage = (e) => {
        messages.push(String(e.data));
        if (messages.length === 2) resolve();
      };
      ws.onerror = () => reject(new Error('websocket error'));
    });
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error('websocket did not open'));
    });
    ws.send('hello');
    ws.send('x'.repeat(70_000));
    await got;
    expect(messages[0]).toBe('ws-echo: hello');
    expect(messages[1]).toBe(`ws-echo: ${'x'.repeat(70_000)}`);
    ws.close();
    await dispatcher.close();
  });

  it('answers an upgrade for an unknown host with 404, and relays a refused upgrade', async () => {
    const noUpgrade = await backend('no-ws');
    await register('nows', noUpgrade.port);
    await routed(main, 'nows.localhost', 1);
    expect(await rawUpgrade(main.port, 'unknown.localhost')).toMatch(/^HTTP\/1\.1 404/);
    // A plain server without an upgrade handler answers 200 without switching.
    const answer = await rawUpgrade(main.port, 'nows.localhost');
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    expect(answer).toContain('no-ws');
  });
});

/** A TCP server that answers the n-th request with the given raw bytes, then closes. */
async function rawBackend(answer: (n: number) => string): Promise<{ port: number; close(): Promise<void> }> {
  let n = 0;
  const server = net.createServer((s) => {
    s.on('error', () => s.destroy());
    s.once('data', () => s.end(answer(n++)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

function connectTo(port: number, cb: (err: Error | null, socket: net.Socket | null) => void): void {
  const s = net.connect(port, '127.0.0.1');
  s.once('connect', () => cb(null, s));
  s.once('error', (err) => cb(err, null));
}

function connectRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(false)));
    s.once('error', () => resolve(true));
  });
}

/** An upgrade request on a raw socket; resolves with everything the proxy sent until it closed. */
function rawUpgrade(port: number, host: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let data = '';
    s.on('data', (d) => (data += d.toString()));
    s.on('end', () => resolve(data));
    s.on('error', reject);
    s.setTimeout(5_000, () => (s.destroy(), reject(new Error(`no answer: ${data}`))));
    s.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
  });
}
