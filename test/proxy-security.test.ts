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
const PORTS = { main: 23100, trusted: 23101, otherTrust: 23102, slow: 23103, v6Trust: 23104, a: 23110, b: 23111 };
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

async function noneCount(status: number): Promise<number> {
  return (await metrics.proxyRequests.get()).values.find((v) => v.labels.service === 'none' && v.labels.status === String(status))?.value ?? 0;
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

  it('routes an absolute-form target naming the Host header\'s host (case and :80 aside); another host or port, or no Host, is 400', async () => {
    const routed = await rawRequest(PORTS.main, req(`GET http://${HOST.toUpperCase()}:80/api/x HTTP/1.1`, [`Host: ${HOST}`]));
    expect(routed.body).toBe('A /api/x');
    const other = await rawRequest(PORTS.main, req(`GET http://${HOST}/api/x HTTP/1.1`, ['Host: other.test']));
    const port = await rawRequest(PORTS.main, req(`GET http://${HOST}:9/api/x HTTP/1.1`, [`Host: ${HOST}`]));
    const none = await rawRequest(PORTS.main, `GET http://${HOST}/api/x HTTP/1.1\r\n\r\n`);
    expect([other.status, port.status, none.status]).toEqual([400, 400, 400]);
    expect(other.body).toBe('bad request: the request target names another host than Host\n');
    expect((await rawRequest(PORTS.main, req(`GET http://u@${HOST}/ HTTP/1.1`))).status).toBe(400);
    expect(hits()).toEqual(['A GET /api/x']);
    console.log(`PROBE absolute form http://${HOST.toUpperCase()}:80/api/x with Host ${HOST} → ${routed.status} from A; with Host other.test → ${other.status}; http://${HOST}:9/… → ${port.status}; no Host → ${none.status}`);
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

describe('header count', () => {
  // 1100 empty headers, then the framing: Node's default cap (1000) would hide what follows.
  const many = Array.from({ length: 1100 }, (_, i) => `a${i}:`);
  const smuggled = `GET /x/SMUGGLED HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`;

  it('an Upgrade replay keeps a Content-Length that comes after 1100 headers: its body is not a second request', async () => {
    const bytes = `POST /api/a HTTP/1.1\r\nHost: ${HOST}\r\nConnection: upgrade\r\nUpgrade: foo\r\n${many.map((h) => `${h}\r\n`).join('')}Content-Length: ${smuggled.length}\r\n\r\n${smuggled}`;
    const r = await rawRequest(PORTS.main, bytes, { untilClose: true, timeoutMs: 3_000 });
    await new Promise((res) => setTimeout(res, 200));
    expect(r.status).toBe(200);
    expect(hits()).toEqual(['A POST /api/a']);
    expect(a.received[0].bodyBytes).toBe(smuggled.length);
    console.log(`PROBE Upgrade: foo POST with 1100 headers then Content-Length ${smuggled.length} (${bytes.length} bytes) → ${r.status}, instances got ${JSON.stringify(hits())} with a ${a.received[0].bodyBytes}-byte body`);
  });

  it('checks headers past the 1000th: a second Host, Transfer-Encoding, and a Content-Length body', async () => {
    const after = (line: string, extra: string[], body = '') => `${line}\r\nHost: ${HOST}\r\n${[...many, ...extra].map((h) => `${h}\r\n`).join('')}Connection: close\r\n\r\n${body}`;
    const host2 = await rawRequest(PORTS.main, after('GET /api/h HTTP/1.1', ['Host: other.test']));
    const te = await rawRequest(PORTS.main, after('POST /api/t HTTP/1.1', ['Transfer-Encoding: gzip'], '0\r\n\r\n'));
    const te10 = await rawRequest(PORTS.main, after('POST /api/t HTTP/1.0', ['Transfer-Encoding: chunked'], '0\r\n\r\n'));
    const cl = await rawRequest(PORTS.main, after('POST /api/cl HTTP/1.1', ['Content-Length: 5'], 'hello'));
    expect([host2.status, te.status, te10.status, cl.status]).toEqual([400, 501, 400, 200]);
    expect(hits()).toEqual(['A POST /api/cl']);
    expect(a.received[0].bodyBytes).toBe(5);
    console.log(`PROBE after 1100 headers: second Host → ${host2.status}, TE gzip → ${te.status}, TE in HTTP/1.0 → ${te10.status}, Content-Length: 5 → ${cl.status} with ${a.received[0].bodyBytes} body bytes upstream`);
  });
});

describe('requests pipelined after a refusal', () => {
  const after = `GET /AFTER-REFUSAL HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`;
  const line = (l: string, headers: string[], body = '') => `${l}\r\nHost: ${HOST}\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n${body}`;
  const ws = ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='];
  const cases: [string, string, number][] = [
    ['HTTP/1.0 with Transfer-Encoding', line('POST /api/x HTTP/1.0', ['Transfer-Encoding: chunked'], '0\r\n\r\n'), 400],
    ['Transfer-Encoding: gzip', line('POST /api/x HTTP/1.1', ['Transfer-Encoding: gzip'], '0\r\n\r\n'), 501],
    ['duplicate Host', line('GET /api/x HTTP/1.1', ['Host: other.test']), 400],
    ['no Host', 'GET /api/x HTTP/1.1\r\n\r\n', 400],
    ['/api/../admin', line('GET /api/../admin HTTP/1.1', []), 400],
    ['OPTIONS *', line('OPTIONS * HTTP/1.1', []), 400],
    ['/api/%2e%2e/admin with a body', line('POST /api/%2e%2e/admin HTTP/1.1', ['Content-Length: 4'], 'abcd'), 400],
    ['/admin;x/users', line('GET /admin;x/users HTTP/1.1', []), 400],
    ['TRACE', line('TRACE /api/x HTTP/1.1', []), 405],
    ['Expect: foo', line('GET /api/x HTTP/1.1', ['Expect: foo']), 417],
    ['WebSocket upgrade on /x/../api', line('GET /x/../api/ws HTTP/1.1', ws), 400],
  ];

  it('answers the refusal, closes, and routes nothing pipelined behind it (also behind a good request)', async () => {
    const seen: string[] = [];
    for (const [name, bytes, status] of cases) {
      const r = await rawRequest(PORTS.main, `${bytes}${after}${after}`, { untilClose: true, timeoutMs: 3_000 });
      seen.push(`${name} → ${r.status}, ${(r.raw.match(/HTTP\/1\.1 \d+/g) ?? []).length} answer(s)`);
      // untilClose: 'response' is a response and then the proxy closing.
      expect(r.end, name).toBe('response');
      expect(r.status, name).toBe(status);
      // Nothing behind the refusal is answered as routed (Node may still refuse bytes it cannot parse).
      expect(r.raw.match(/HTTP\/1\.1 \d+/g)?.slice(1).filter((x) => !/ [45]\d\d$/.test(x)), name).toEqual([]);
    }
    // A good request first: it is answered, the refusal after it too, nothing behind the refusal is routed.
    const mixed = await rawRequest(PORTS.main, `${line('GET /api/first HTTP/1.1', [])}${cases[2][1]}${after}`, { untilClose: true, timeoutMs: 3_000 });
    expect(mixed.raw.match(/HTTP\/1\.1 \d+/g)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 400']);
    await new Promise((res) => setTimeout(res, 200));
    expect(hits()).toEqual(['A GET /api/first']);
    console.log(`PROBE each refusal + 2 × GET /AFTER-REFUSAL pipelined: ${seen.join('; ')}; instances got ${JSON.stringify(hits())}`);
  });
});

describe('paths with ; and overlong encodings', () => {
  it('answers 400 for ; and %3b anywhere in the path and for overlong UTF-8 dots and slashes', async () => {
    const paths = ['/admin;x/users', '/api;v=1/x', '/admin%3bx/users', '/api/..%3b/admin', '/api/%c0%ae%c0%ae/admin', '/api/%e0%80%ae%e0%80%ae/admin', '/api%c0%afadmin', '/api/..%20/admin'];
    const seen: string[] = [];
    for (const p of paths) {
      const r = await rawRequest(PORTS.main, req(`GET ${p} HTTP/1.1`));
      seen.push(`${p} → ${r.status}`);
      expect(r.status, p).toBe(400);
    }
    expect(hits()).toEqual([]);
    const ok = await rawRequest(PORTS.main, req('GET /api/x?a=1;b=2 HTTP/1.1'));
    expect(ok.body).toBe('A /api/x?a=1;b=2');
    console.log(`PROBE ${seen.join('; ')}; /api/x?a=1;b=2 → ${ok.status} from ${ok.headers['x-backend']}`);
  });
});

describe('override and client-address headers', () => {
  const OVERRIDE = ['X-Original-URL: /admin', 'X-Rewrite-URL: /admin', 'X-Forwarded-Prefix: /evil', 'X-Forwarded-Scheme: https', 'X-Forwarded-Ssl: on', 'Front-End-Https: on', 'X-Forwarded-Server: evil', 'X-Forwarded-Protocol: https', 'X-Url-Scheme: https', 'True-Client-IP: 6.6.6.6', 'X-Client-IP: 6.6.6.6', 'Client-IP: 6.6.6.6', 'X-Cluster-Client-IP: 6.6.6.6', 'Proxy: http://evil.test', 'Proxy-Foo: 1', 'X-Kept: 1'];
  const names = OVERRIDE.map((h) => h.split(':')[0].toLowerCase());

  it('drops them from an untrusted client; from a trusted peer only the URL overrides and Proxy', async () => {
    await rawRequest(PORTS.main, req('GET /api/o HTTP/1.1', [`Host: ${HOST}`, ...OVERRIDE]));
    await rawRequest(PORTS.trusted, req('GET /api/o HTTP/1.1', [`Host: ${HOST}`, ...OVERRIDE]));
    const [untrusted, trusted] = a.received;
    expect(names.filter((n) => untrusted.headers[n] !== undefined)).toEqual(['x-kept']);
    expect(names.filter((n) => trusted.headers[n] === undefined)).toEqual(['x-original-url', 'x-rewrite-url', 'proxy', 'proxy-foo']);
    console.log(`PROBE ${OVERRIDE.length} override/client headers: untrusted client → passed ${names.filter((n) => untrusted.headers[n] !== undefined).join(',')}; trusted peer → dropped ${names.filter((n) => trusted.headers[n] === undefined).join(',')}`);
  });

  it('takes X-Real-IP behind a trusted peer from X-Forwarded-For when the peer\'s X-Real-IP is repeated', async () => {
    await rawRequest(PORTS.trusted, req('GET /api/r HTTP/1.1', [`Host: ${HOST}`, 'X-Forwarded-For: 203.0.113.7, 127.0.0.9', 'X-Real-IP: 1.1.1.1', 'X-Real-IP: 2.2.2.2']));
    await rawRequest(PORTS.trusted, req('GET /api/r HTTP/1.1', [`Host: ${HOST}`, 'X-Forwarded-For: 203.0.113.7', 'X-Forwarded-Host: a.test', 'X-Forwarded-Host: b.test']));
    const [repeated, listed] = a.received;
    expect(repeated.headers['x-real-ip']).toBe('203.0.113.7');
    expect(listed.headers['x-forwarded-host']).toBe(HOST);
    console.log(`PROBE trusted peer, X-Forwarded-For "203.0.113.7, 127.0.0.9" and X-Real-IP sent twice → X-Real-IP ${repeated.headers['x-real-ip']}; X-Forwarded-Host sent twice → ${listed.headers['x-forwarded-host']}`);
  });

  it('an IPv6 trusted block does not trust IPv4 peers, and says so; host bits are warned about', async () => {
    const { logs } = await startProxy(PORTS.v6Trust, { trustedProxies: ['::/0', '10.0.0.1/8'] });
    await rawRequest(PORTS.v6Trust, req('GET /api/v6 HTTP/1.1', [`Host: ${HOST}`, 'X-Forwarded-For: 203.0.113.7', 'X-Real-IP: 203.0.113.7']));
    expect(a.received[0].headers).toMatchObject({ 'x-forwarded-for': '127.0.0.1', 'x-real-ip': '127.0.0.1' });
    const warnings = logs.filter((l) => l.event === 'trusted-proxies').map((l) => l.msg);
    expect(warnings).toHaveLength(2);
    console.log(`PROBE --trusted-proxies ::/0,10.0.0.1/8, peer 127.0.0.1 with X-Forwarded-For 203.0.113.7 → X-Forwarded-For ${a.received[0].headers['x-forwarded-for']}; warnings: ${warnings.join(' | ')}`);
  });
});

describe('methods and Host the proxy answers itself', () => {
  it('answers CONNECT 405, an unknown Expect 417, TRACE 405, a Host port out of range 400, each counted', async () => {
    const before = [await noneCount(405), await noneCount(417), await noneCount(400)];
    const connect = await rawRequest(PORTS.main, `CONNECT ${HOST}:80 HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`, { untilClose: true, timeoutMs: 3_000 });
    const expect417 = await rawRequest(PORTS.main, req('GET /api/e HTTP/1.1', [`Host: ${HOST}`, 'Expect: foo']));
    const trace = await rawRequest(PORTS.main, req('TRACE /api/t HTTP/1.1'));
    const port = await rawRequest(PORTS.main, req('GET /api/p HTTP/1.1', [`Host: ${HOST}:99999`]));
    const after = [await noneCount(405), await noneCount(417), await noneCount(400)];
    expect([connect.status, expect417.status, trace.status, port.status]).toEqual([405, 417, 405, 400]);
    expect(after.map((n, i) => n - before[i])).toEqual([2, 1, 1]);
    expect(hits()).toEqual([]);
    console.log(`PROBE CONNECT → ${connect.status}, Expect: foo → ${expect417.status}, TRACE → ${trace.status}, Host ${HOST}:99999 → ${port.status}; counted +${after.map((n, i) => n - before[i]).join('/+')}`);
  });
});

describe('upgrade replays', () => {
  it('add one error listener to a connection however many h2c requests it carries', async () => {
    const server = (main as unknown as { server: import('node:http').Server }).server;
    const sockets: import('node:net').Socket[] = [];
    const grab = (s: import('node:net').Socket) => sockets.push(s);
    server.on('connection', grab);
    const h2c = (i: number, last: boolean) => `GET /x/${i} HTTP/1.1\r\nHost: ${HOST}\r\nConnection: Upgrade, HTTP2-Settings${last ? ', close' : ''}\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`;
    const N = 300;
    const r = await rawRequest(PORTS.main, Array.from({ length: N }, (_, i) => h2c(i, i === N - 1)).join(''), { untilClose: true, timeoutMs: 10_000 });
    server.off('connection', grab);
    const answers = (r.raw.match(/HTTP\/1\.1 200/g) ?? []).length;
    const listeners = sockets[0].listenerCount('error');
    expect(answers).toBe(N);
    expect(listeners).toBeLessThanOrEqual(3);
    console.log(`PROBE ${N} pipelined h2c requests on one connection → ${answers} answers from B, 'error' listeners on the socket ${listeners}`);
  });
});
