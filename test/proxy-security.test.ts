// The built-in proxy's request side against raw requests over loopback sockets: the path rule,
// forwarding headers and trusted proxies, Host handling, which upgrades are tunnelled,
// Transfer-Encoding, header size and header time limits, and slow request bodies. Two routes on
// one host: /api → instance A, / → instance B, both recording what they receive.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CatalogWatch } from '../src/catalog/watch.js';
import { metrics } from '../src/metrics/metrics.js';
import { HEALTH_STATUSES, type ServiceInstance } from '../src/model/service-instance.js';
import type { ProxyOptions } from '../src/proxy/context.js';
import { ProxyServer } from '../src/proxy/proxy-server.js';
import { createBackend } from '../src/registry/index.js';
import { nextRequest, rawRequest, recordingBackend, type RecordingBackend } from './support/raw-http.js';
import { waitFor } from './support/wait.js';

const REG = 'memory://proxy-security-test';
const HOST = 'sec.test';
const PORTS = { main: 23100, trusted: 23101, otherTrust: 23102, slow: 23103, a: 23110, b: 23111 };
const registry = createBackend(REG, { ttl: 0 });

interface LogLine {
  event?: string;
  msg: string;
  [k: string]: unknown;
}

const proxies: { proxy: ProxyServer; stop(): Promise<void> }[] = [];
let a: RecordingBackend;
let b: RecordingBackend;

async function startProxy(port: number, o: Partial<ProxyOptions> = {}): Promise<{ proxy: ProxyServer; logs: LogLine[] }> {
  const logs: LogLine[] = [];
  const log = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _e, cb) => (logs.push(JSON.parse(chunk.toString()) as LogLine), cb()) }));
  const watch = CatalogWatch.forUri(REG, { statuses: [...HEALTH_STATUSES], log });
  const proxy = new ProxyServer({ domain: 'localhost', balance: 'round-robin', statuses: ['passing'], connectTimeoutMs: 2000, responseTimeoutMs: 10_000, idleTimeoutMs: 10_000, retries: 2, log, ...o });
  await proxy.listen({ host: '127.0.0.1', port });
  const off = watch.subscribe((c) => proxy.setCatalog(c));
  proxies.push({
    proxy,
    stop: async () => {
      off();
      await proxy.close(0);
      await watch.stop();
    },
  });
  await waitFor('routes installed', () => proxy.table().match(HOST, '/api')?.service === 'secapi' && proxy.table().match(HOST, '/')?.service === 'secweb', 5_000, 10);
  return { proxy, logs };
}

function inst(name: string, port: number, meta: Record<string, string>): ServiceInstance {
  return { id: `sec:${name}:${port}`, name, address: '127.0.0.1', port, protocol: 'tcp', tags: [], meta, host: 'sec', status: 'passing' };
}

const INSTANCES = () => [inst('secapi', PORTS.a, { http_host: HOST, http_path: '/api' }), inst('secweb', PORTS.b, { http_host: HOST })];

/** A request head (and body) with CRLF line ends; `Connection: close` unless the headers say otherwise. */
function req(line: string, headers: string[] = [`Host: ${HOST}`], body = ''): string {
  const close = headers.some((h) => /^connection:/i.test(h)) ? [] : ['Connection: close'];
  return `${line}\r\n${[...headers, ...close].map((h) => `${h}\r\n`).join('')}\r\n${body}`;
}

function hits(): string[] {
  return [...a.received, ...b.received].map((r) => `${r.backend}${r.upgrade ? ' upgrade' : ''} ${r.method} ${r.url}`);
}

async function upstreamErrors(): Promise<number> {
  return (await metrics.upstreamErrors.get()).values.reduce((n, v) => n + v.value, 0);
}

let main: ProxyServer;

beforeAll(async () => {
  a = await recordingBackend('A', PORTS.a);
  b = await recordingBackend('B', PORTS.b);
  for (const i of INSTANCES()) await registry.register(i);
  main = (await startProxy(PORTS.main)).proxy;
});

beforeEach(() => {
  a.received.length = 0;
  b.received.length = 0;
});

afterAll(async () => {
  for (const p of proxies) await p.stop();
  for (const i of INSTANCES()) await registry.deregister(i);
  await a?.close();
  await b?.close();
});

describe('the path rule', () => {
  it('answers 400 for paths a backend could resolve elsewhere, routes on the decoded path, forwards the target as received', async () => {
    const refused = ['/x/../api/y', '/api//../admin', '/api/..%2fadmin', '/api/..;/admin', '/api/%2e%2e/admin', '/api/.', '/a\\b', '/api/%zz', '/x#/../api'];
    const answers: string[] = [];
    for (const path of refused) {
      const r = await rawRequest(PORTS.main, req(`GET ${path} HTTP/1.1`));
      answers.push(`${path} → ${r.status}`);
      expect(r.status, path).toBe(400);
      expect(r.body).toMatch(/^bad request: /);
    }
    expect(hits()).toEqual([]);
    for (const [path, backend] of [
      ['/%61pi/x', 'A'],
      ['/api/x%20y?next=/../admin%2f', 'A'],
      ['/apix', 'B'],
      ['/API/x', 'B'],
      ['/x/api', 'B'],
    ]) {
      const r = await rawRequest(PORTS.main, req(`GET ${path} HTTP/1.1`));
      answers.push(`${path} → ${r.status} ${r.headers['x-backend']}`);
      expect(r.headers['x-backend'], path).toBe(backend);
      expect(r.body).toBe(`${backend} ${path}`);
    }
    console.log(`PROBE path rule: ${answers.join('; ')}`);
  });

  it('applies the same rule to absolute-form targets and to WebSocket upgrades', async () => {
    expect((await rawRequest(PORTS.main, req(`GET http://${HOST}/x/../api/y HTTP/1.1`))).status).toBe(400);
    expect((await rawRequest(PORTS.main, req(`GET http://${HOST}//api HTTP/1.1`))).status).toBe(400);
    const ws = ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='];
    const up = await rawRequest(PORTS.main, req('GET /x/../api/ws HTTP/1.1', [`Host: ${HOST}`, ...ws]));
    expect(up.status).toBe(400);
    expect(hits()).toEqual([]);
    const ok = await rawRequest(PORTS.main, req(`GET http://${HOST}/api/%7Eme?x=1 HTTP/1.1`));
    expect(ok.body).toBe('A /api/%7Eme?x=1');
    const tunnel = await rawRequest(PORTS.main, req('GET /api/ws HTTP/1.1', [`Host: ${HOST}`, ...ws]));
    expect(tunnel.status).toBe(101);
    expect(tunnel.headers['x-backend']).toBe('A');
    console.log(`PROBE absolute form and upgrades: GET http://${HOST}/x/../api/y → 400; upgrade /x/../api/ws → ${up.status}; upgrade /api/ws → ${tunnel.status} from ${tunnel.headers['x-backend']}`);
  });

  it('answers OPTIONS * itself with 400 (as nginx does), not as an upstream error', async () => {
    const before = await upstreamErrors();
    const r = await rawRequest(PORTS.main, req('OPTIONS * HTTP/1.1'));
    expect(r.status).toBe(400);
    expect(r.body).toBe('bad request: the target * is not served by this proxy\n');
    expect(r.headers.connection).toBe('close');
    expect(await upstreamErrors()).toBe(before);
    expect(hits()).toEqual([]);
    console.log(`PROBE OPTIONS * → ${r.status} "${r.body.trim()}", upstream errors +0`);
  });
});

describe('forwarding headers', () => {
  const SPOOF = ['X-Forwarded-For: 203.0.113.7', 'X-Real-IP: 203.0.113.7', 'X-Forwarded-Proto: https', 'X-Forwarded-Host: evil.test', 'X-Forwarded-Port: 443', 'Forwarded: for=203.0.113.7;proto=https', 'X_Forwarded_For: 203.0.113.8'];

  it('replaces what an untrusted client says about itself, on plain requests and upgrades', async () => {
    await rawRequest(PORTS.main, req('GET /api/h HTTP/1.1', [`Host: ${HOST}:8080`, ...SPOOF]));
    await rawRequest(PORTS.main, req('GET /api/ws HTTP/1.1', [`Host: ${HOST}`, 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', ...SPOOF]));
    const [plain, upgrade] = a.received;
    expect(plain.headers).toMatchObject({ host: `${HOST}:8080`, 'x-forwarded-for': '127.0.0.1', 'x-real-ip': '127.0.0.1', 'x-forwarded-proto': 'http', 'x-forwarded-host': `${HOST}:8080`, 'x-forwarded-port': String(PORTS.main) });
    expect(plain.headers.forwarded).toBeUndefined();
    expect(plain.headers.x_forwarded_for).toBeUndefined();
    expect(upgrade.upgrade).toBe(true);
    expect(upgrade.headers).toMatchObject({ 'x-forwarded-for': '127.0.0.1', 'x-real-ip': '127.0.0.1', 'x-forwarded-port': String(PORTS.main), upgrade: 'websocket' });
    expect(upgrade.headers.forwarded).toBeUndefined();
    console.log(`PROBE untrusted client: X-Forwarded-For ${plain.headers['x-forwarded-for']}, X-Real-IP ${plain.headers['x-real-ip']}, X-Forwarded-Port ${plain.headers['x-forwarded-port']}, Forwarded ${plain.headers.forwarded ?? 'removed'}`);
  });

  it('keeps a trusted proxy\'s headers (X-Forwarded-For and Forwarded appended to), and only a trusted one\'s', async () => {
    await startProxy(PORTS.trusted, { trustedProxies: ['127.0.0.0/8'] });
    await startProxy(PORTS.otherTrust, { trustedProxies: ['10.0.0.0/8', '::1/128'] });
    await rawRequest(PORTS.trusted, req('GET /api/h HTTP/1.1', [`Host: ${HOST}`, ...SPOOF]));
    await rawRequest(PORTS.otherTrust, req('GET /api/h HTTP/1.1', [`Host: ${HOST}`, ...SPOOF]));
    const [trusted, other] = a.received;
    expect(trusted.headers).toMatchObject({
      'x-forwarded-for': '203.0.113.7, 127.0.0.1',
      'x-real-ip': '203.0.113.7',
      'x-forwarded-proto': 'https',
      'x-forwarded-host': 'evil.test',
      'x-forwarded-port': '443',
      forwarded: `for=203.0.113.7;proto=https, for=127.0.0.1;host=${HOST};proto=http`,
    });
    expect(trusted.headers.x_forwarded_for).toBeUndefined();
    expect(other.headers).toMatchObject({ 'x-forwarded-for': '127.0.0.1', 'x-real-ip': '127.0.0.1', 'x-forwarded-proto': 'http', 'x-forwarded-port': String(PORTS.otherTrust) });
    console.log(`PROBE trusted peer 127.0.0.1: X-Forwarded-For "${trusted.headers['x-forwarded-for']}", Forwarded "${trusted.headers.forwarded}"; peer outside 10.0.0.0/8,::1: X-Forwarded-For "${other.headers['x-forwarded-for']}"`);
  });
});

describe('Host', () => {
  it('answers 400 for a second Host header, in any case, before routing', async () => {
    const r1 = await rawRequest(PORTS.main, req('GET /api/x HTTP/1.1', [`Host: ${HOST}`, 'Host: other.test']));
    const r2 = await rawRequest(PORTS.main, req('GET /api/x HTTP/1.1', ['host: other.test', `HOST: ${HOST}`]));
    expect([r1.status, r2.status]).toEqual([400, 400]);
    expect(r1.body).toBe('bad request: more than one Host header\n');
    expect(hits()).toEqual([]);
    console.log(`PROBE duplicate Host → ${r1.status}, ${r2.status}`);
  });

  it('routes an absolute-form target by its own authority and sends that authority as Host', async () => {
    const routed = await rawRequest(PORTS.main, req(`GET http://${HOST}:9/api/x HTTP/1.1`, ['Host: other.test']));
    expect(routed.body).toBe('A /api/x');
    expect(a.received[0].headers).toMatchObject({ host: `${HOST}:9`, 'x-forwarded-host': `${HOST}:9` });
    const unknown = await rawRequest(PORTS.main, req('GET http://other.test/api/x HTTP/1.1', [`Host: ${HOST}`]));
    expect(unknown.status).toBe(404);
    expect(unknown.body).toBe('no route for other.test/api/x\n');
    expect((await rawRequest(PORTS.main, req(`GET http://u@${HOST}/ HTTP/1.1`))).status).toBe(400);
    expect(hits()).toEqual(['A GET /api/x']);
    console.log(`PROBE absolute form http://${HOST}:9/api/x with Host other.test → ${routed.status} from A, Host sent ${a.received[0].headers.host}; http://other.test/api/x with Host ${HOST} → ${unknown.status}`);
  });

  it('does not let Connection remove Host, Content-Length or the forwarding headers', async () => {
    const r = await rawRequest(PORTS.main, req('POST /api/c HTTP/1.1', [`Host: ${HOST}`, 'Content-Length: 5', 'X-Other: 1', 'Connection: close, host, content-length, x-forwarded-for, x-real-ip, x-forwarded-host, x-other'], 'hello'));
    expect(r.status).toBe(200);
    const got = a.received[0];
    expect(got.headers).toMatchObject({ host: HOST, 'content-length': '5', 'x-forwarded-for': '127.0.0.1', 'x-real-ip': '127.0.0.1', 'x-forwarded-host': HOST });
    expect(got.headers['x-other']).toBeUndefined();
    expect(got.bodyBytes).toBe(5);
  });
});

describe('upgrades', () => {
  it('passes h2c (or any Upgrade other than WebSocket) on as a plain request; the connection keeps routing by path', async () => {
    const first = await rawRequest(PORTS.main, req('GET /x HTTP/1.1', [`Host: ${HOST}`, 'Connection: Upgrade, HTTP2-Settings', 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA']), { keepOpen: true });
    expect(first.status).toBe(200);
    expect(first.body).toBe('B /x');
    const got = b.received[0];
    expect(got.upgrade).toBe(false);
    expect(got.headers.upgrade).toBeUndefined();
    expect(got.headers.connection).not.toMatch(/upgrade/i);
    // What an h2c tunnel would have carried to B: a second request for /api, which now goes to A.
    const second = await nextRequest(first.socket!, req('GET /api/after HTTP/1.1', [`Host: ${HOST}`]));
    first.socket!.destroy();
    expect(second.body).toBe('A /api/after');
    // Upgrade: websocket on a POST with a body is not a WebSocket handshake either.
    const post = await rawRequest(PORTS.main, req('POST /api/p HTTP/1.1', [`Host: ${HOST}`, 'Connection: Upgrade, close', 'Upgrade: websocket', 'Content-Length: 4'], 'body'));
    expect(post.body).toBe('A /api/p');
    expect(hits().sort()).toEqual(['A GET /api/after', 'A POST /api/p', 'B GET /x']);
    expect(a.received[1].bodyBytes).toBe(4);
    console.log(`PROBE Upgrade: h2c on GET /x → ${first.status} plain from B (no Upgrade header upstream), next request /api/after on that connection → A; Upgrade: websocket on POST → plain`);
  });
});

describe('framing and limits', () => {
  it('answers 501 for a transfer coding other than chunked, 400 for Transfer-Encoding with Content-Length or in HTTP/1.0', async () => {
    const chunked = '3\r\nabc\r\n0\r\n\r\n';
    const cases: [string, string[], number][] = [
      ['POST /api/te HTTP/1.1', ['Transfer-Encoding: gzip, chunked'], 501],
      ['POST /api/te HTTP/1.1', ['Transfer-Encoding: gzip', 'Transfer-Encoding: chunked'], 501],
      // Node's parser refuses a repeated chunked itself (nginx: 501).
      ['POST /api/te HTTP/1.1', ['Transfer-Encoding: chunked, chunked'], 400],
      ['POST /api/te HTTP/1.1', ['Transfer-Encoding: identity'], 501],
      ['POST /api/te HTTP/1.1', ['Transfer-Encoding: chunked', 'Content-Length: 3'], 400],
      ['POST /api/te HTTP/1.0', ['Transfer-Encoding: chunked'], 400],
      ['GET /api/te HTTP/2.0', [], 505],
    ];
    const seen: string[] = [];
    for (const [line, headers, status] of cases) {
      const r = await rawRequest(PORTS.main, req(line, [`Host: ${HOST}`, ...headers], chunked));
      seen.push(`${line.split(' ')[2]} ${headers.join(' + ')} → ${r.status}`);
      expect(r.status, headers.join(' + ')).toBe(status);
    }
    expect(hits()).toEqual([]);
    const ok = await rawRequest(PORTS.main, req('POST /api/te HTTP/1.1', [`Host: ${HOST}`, 'Transfer-Encoding: chunked'], chunked));
    expect(ok.body).toBe('A /api/te');
    expect(a.received[0].bodyBytes).toBe(3);
    console.log(`PROBE Transfer-Encoding: ${seen.join('; ')}`);
  });

  it('answers a good request before the 400 for unparsable bytes pipelined after it', async () => {
    const r = await rawRequest(PORTS.main, `${req('GET /api/first HTTP/1.1', [`Host: ${HOST}`, 'Connection: keep-alive'])}NOT HTTP AT ALL\r\n\r\n`, { untilClose: true });
    expect(r.end).toBe('response');
    expect(r.body).toBe('A /api/first');
    const second = /\r\n0\r\n\r\n(HTTP\/1\.1 \d+ [^\r]*)\r\n[^]*$/.exec(r.raw)?.[1];
    expect(second).toBe('HTTP/1.1 400 Bad Request');
    console.log(`PROBE good request + garbage on one connection → ${r.status} from A, then "${second}" and close`);
  });

  it('answers 431 above the header size limit and counts it', async () => {
    const filler = (n: number) => Array.from({ length: n }, (_, i) => `X-Fill-${i}: ${'f'.repeat(1000)}`);
    const before = (await metrics.proxyRequests.get()).values.find((v) => v.labels.service === 'none' && v.labels.status === '431')?.value ?? 0;
    const small = await rawRequest(PORTS.main, req('GET /api/h HTTP/1.1', [`Host: ${HOST}`, ...filler(14)]));
    const big = await rawRequest(PORTS.main, req('GET /api/h HTTP/1.1', [`Host: ${HOST}`, ...filler(20)]));
    expect(small.status).toBe(200);
    expect(big.status).toBe(431);
    const after = (await metrics.proxyRequests.get()).values.find((v) => v.labels.service === 'none' && v.labels.status === '431')?.value ?? 0;
    expect(after - before).toBe(1);
    console.log(`PROBE headers ~14.5 KB → ${small.status}, ~20.5 KB → ${big.status}`);
  });

  it('answers 408 to headers that take too long, and lets a slow body through as long as it keeps moving', async () => {
    const { proxy: slow, logs } = await startProxy(PORTS.slow, { headerTimeoutMs: 600, idleTimeoutMs: 800 });
    expect((slow as unknown as { server: { requestTimeout: number } }).server.requestTimeout).toBe(0);
    // Slowloris: a header line every 150 ms, never the end.
    const started = Date.now();
    const trickle = Array.from({ length: 40 }, (_, i) => (i === 0 ? `GET /api/slow HTTP/1.1\r\nHost: ${HOST}\r\n` : `X-${i}: y\r\n`));
    const loris = await rawRequest(PORTS.slow, trickle, { pauseMs: 150, timeoutMs: 5_000 });
    const lorisMs = Date.now() - started;
    expect(loris.status).toBe(408);
    expect(lorisMs).toBeGreaterThanOrEqual(550);
    expect(lorisMs).toBeLessThan(1_500);
    // A 12-byte body over ~2.4 s, a byte every 200 ms: longer than the header timeout and the idle timeout together.
    const t0 = Date.now();
    const body = Array.from({ length: 12 }, () => 'x');
    const upload = await rawRequest(PORTS.slow, [req('POST /api/upload HTTP/1.1', [`Host: ${HOST}`, 'Content-Length: 12']), ...body], { pauseMs: 200, timeoutMs: 8_000 });
    const uploadMs = Date.now() - t0;
    expect(upload.body).toBe('A /api/upload');
    expect(a.received.at(-1)!.bodyBytes).toBe(12);
    // A body that stops moving for longer than the idle timeout is cut.
    const t1 = Date.now();
    const stalled = await rawRequest(PORTS.slow, [req('POST /api/stall HTTP/1.1', [`Host: ${HOST}`, 'Content-Length: 10']) + 'abc', 'def'], { pauseMs: 3_000, timeoutMs: 5_000 });
    const stalledMs = Date.now() - t1;
    expect(stalled.end).toBe('closed');
    expect(stalledMs).toBeLessThan(2_000);
    await waitFor('body-timeout logged', () => logs.some((l) => l.event === 'body-timeout'), 2_000, 20);
    console.log(`PROBE header timeout 600 ms: slowloris → ${loris.status} after ${lorisMs} ms; 12-byte body over ${uploadMs} ms → ${upload.status}; body idle > 800 ms → closed after ${stalledMs} ms`);
  });
});
