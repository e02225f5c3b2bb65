// The built-in proxy's response side and balancing over real loopback sockets: the connection
// limit per instance, panic mode when every instance is ejected, WebSocket tunnels (half-close,
// in-flight count, idle timeout), response heads passed on at once (server-sent events), the body
// timeout, trailers, slow uploads, and weighted round robin across frequent table swaps.
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { CatalogWatch } from '../src/catalog/watch.js';
import { HEALTH_STATUSES, type ServiceInstance } from '../src/model/service-instance.js';
import type { ProxyOptions } from '../src/proxy/context.js';
import type { Upstream } from '../src/proxy/balancer.js';
import { probe } from '../src/proxy/health-checker.js';
import { ProxyServer } from '../src/proxy/proxy-server.js';
import { createBackend } from '../src/registry/index.js';
import { runCli } from './support/harbormaster.js';
import { get, startBackend } from './support/proxy.js';
import { sleep, waitFor } from './support/wait.js';

const REG = 'memory://proxy-streaming-test';
const registry = createBackend(REG, { ttl: 0 });
/** Fixed ports (this file's share of the loopback range) for instances that go down and come back. */
const PORT_PANIC = 23600;
const PORT_CHECKED = 23601;

interface LogLine {
  event?: string;
  msg: string;
  [k: string]: unknown;
}

interface TestProxy {
  proxy: ProxyServer;
  port: number;
  logs: LogLine[];
}

const cleanups: (() => Promise<void>)[] = [];
const registered: ServiceInstance[] = [];

async function startProxy(o: Partial<ProxyOptions> = {}): Promise<TestProxy> {
  const logs: LogLine[] = [];
  const log = pino({ level: 'info' }, new Writable({ write: (chunk: Buffer, _e, cb) => (logs.push(JSON.parse(chunk.toString()) as LogLine), cb()) }));
  const watch = CatalogWatch.forUri(REG, { statuses: [...HEALTH_STATUSES], log });
  const proxy = new ProxyServer({ domain: 'localhost', balance: 'round-robin', statuses: ['passing'], connectTimeoutMs: 2000, responseTimeoutMs: 10_000, idleTimeoutMs: 10_000, retries: 2, log, ...o });
  const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
  const off = watch.subscribe((c) => proxy.setCatalog(c));
  cleanups.push(async () => {
    off();
    await proxy.close(0);
    await watch.stop();
  });
  return { proxy, port, logs };
}

async function register(name: string, port: number, id: string, meta: Record<string, string> = {}): Promise<ServiceInstance> {
  const inst: ServiceInstance = { id, name, address: '127.0.0.1', port, protocol: 'tcp', tags: [], meta, host: 't', status: 'passing' };
  await registry.register(inst);
  registered.push(inst);
  return inst;
}

async function routed(p: TestProxy, host: string, n: number): Promise<void> {
  await waitFor(`${host} routed to ${n} instances`, () => p.proxy.table().match(host, '/')?.balancer.upstreams.length === n, 5_000, 10);
}

function activeOf(p: TestProxy, host: string): number[] {
  return p.proxy.table().match(host, '/')!.balancer.upstreams.map((u) => u.state.active);
}

afterEach(async () => {
  for (const i of registered.splice(0)) await registry.deregister(i);
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** An HTTP server on `port` (0: any) that counts requests and open connections (and their peak). */
async function instance(port: number, handler: (req: http.IncomingMessage, res: http.ServerResponse) => void) {
  const s = { port, hits: 0, open: 0, peak: 0, close: async () => undefined as void };
  const server = http.createServer((req, res) => {
    s.hits++;
    handler(req, res);
  });
  server.on('connection', (c: net.Socket) => {
    s.peak = Math.max(s.peak, ++s.open);
    c.once('close', () => s.open--);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  s.port = (server.address() as AddressInfo).port;
  s.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  cleanups.push(() => s.close());
  return s;
}

/** `/slow/<ms>`: the whole answer after a delay; `/hold/<ms>`: the head at once, the body after a delay; anything else: `ok`. */
function delays(req: http.IncomingMessage, res: http.ServerResponse): void {
  const m = /^\/(slow|hold)\/(\d+)/.exec(req.url ?? '');
  if (!m) return void res.end('ok');
  if (m[1] === 'hold') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.flushHeaders();
  }
  const t = setTimeout(() => res.end('done'), Number(m[2]));
  res.once('close', () => clearTimeout(t));
}

interface Timed {
  status: number;
  /** ms from the request to the response head, to each body chunk, to the end (or the error). */
  headMs: number;
  chunks: { ms: number; text: string }[];
  endMs: number;
  error?: string;
  headers: http.IncomingHttpHeaders;
  trailers: NodeJS.Dict<string>;
}

/** A GET that records when each part of the answer arrived. */
function timedGet(port: number, host: string, path: string, headers: http.OutgoingHttpHeaders = {}): Promise<Timed> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const out: Timed = { status: 0, headMs: -1, chunks: [], endMs: -1, headers: {}, trailers: {} };
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, headers: { host, ...headers } }, (res) => {
      out.status = res.statusCode ?? 0;
      out.headMs = Date.now() - t0;
      out.headers = res.headers;
      res.on('data', (d: Buffer) => out.chunks.push({ ms: Date.now() - t0, text: d.toString() }));
      res.on('end', () => {
        out.endMs = Date.now() - t0;
        out.trailers = res.trailers;
        resolve(out);
      });
      res.on('error', (err) => {
        out.endMs = Date.now() - t0;
        out.error = err.message;
        resolve(out);
      });
    });
    req.setTimeout(10_000, () => req.destroy(new Error('client timeout')));
    req.on('error', (err) => {
      if (out.endMs >= 0) return;
      out.endMs = Date.now() - t0;
      out.error = err.message;
      resolve(out);
    });
  });
}

describe('flags', () => {
  it('proxy and run refuse bad values of the new flags with exit 2 and one line naming the flag', async () => {
    const cases = [
      ['proxy', 'memory://', '--max-connections-per-instance', '0'],
      ['proxy', 'memory://', '--body-timeout', '1m'],
      ['run', '--tunnel-idle-timeout', '-1'],
    ];
    const results = await Promise.all(cases.map((args) => runCli(args)));
    results.forEach((r, i) => {
      expect(r.code, cases[i].join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(cases[i][cases[i].length - 2]);
    });
    console.log(`PROBE ${results.map((r) => r.stderr.trim()).join(' | ')}`);
  });
});

describe('connections per instance', () => {
  it('never opens more than --max-connections-per-instance to a slow instance; the rest wait, up to the response timeout', async () => {
    const [slow, other] = [await instance(0, delays), await instance(0, delays)];
    await register('conns', slow.port, 't:conns-1');
    await register('connsopen', other.port, 't:connsopen-1');
    const limited = await startProxy({ maxConnectionsPerInstance: 3, responseTimeoutMs: 3000 });
    const open = await startProxy();
    await routed(limited, 'conns.localhost', 1);
    await routed(open, 'connsopen.localhost', 1);

    const t0 = Date.now();
    const answers = await Promise.all(Array.from({ length: 12 }, () => get(limited.port, 'conns.localhost', '/slow/300')));
    const limitedMs = Date.now() - t0;
    expect(answers.map((a) => a.status)).toEqual(Array(12).fill(200));
    expect(slow.peak).toBe(3);
    // Without a limit below the load, every client gets its own connection to the instance.
    await Promise.all(Array.from({ length: 12 }, () => get(open.port, 'connsopen.localhost', '/slow/300')));
    console.log(`PROBE 12 concurrent GET /slow/300: limit 3 → instance saw at most ${slow.peak} connections, all 200 in ${limitedMs} ms; default limit (256) → ${other.peak} connections`);
    expect(other.peak).toBe(12);
  });

  it('answers 504 to a request that waited the whole response timeout for a connection, and drops one whose client left', async () => {
    const inst = await instance(0, delays);
    await register('queue', inst.port, 't:queue-1');
    const p = await startProxy({ maxConnectionsPerInstance: 1, responseTimeoutMs: 800, bodyTimeoutMs: 5000 });
    await routed(p, 'queue.localhost', 1);
    // The one connection is taken by a response whose body takes 2 s.
    const holder = timedGet(p.port, 'queue.localhost', '/hold/2000');
    await waitFor('holder on the instance', () => inst.hits === 1, 5_000, 10);
    const gone = get(p.port, 'queue.localhost', '/', { timeoutMs: 200 }).catch((err: Error) => err.message);
    const t0 = Date.now();
    const waited = await get(p.port, 'queue.localhost', '/');
    const waitedMs = Date.now() - t0;
    expect(waited.status).toBe(504);
    expect(waitedMs).toBeGreaterThanOrEqual(700);
    expect(waitedMs).toBeLessThan(1500);
    expect(await gone).toContain('timed out');
    expect((await holder).status).toBe(200);
    // The slot came back: the next request goes through; the abandoned one never reached the instance.
    expect((await get(p.port, 'queue.localhost', '/')).body).toBe('ok');
    expect(inst.hits).toBe(2);
    expect(inst.peak).toBe(1);
    expect(activeOf(p, 'queue.localhost')).toEqual([0]);
    console.log(`PROBE limit 1, response timeout 800 ms, connection held 2 s: waiting GET → ${waited.status} after ${waitedMs} ms; client gone while waiting → never sent; next GET → 200; in flight after: 0`);
  });
});

describe('every instance ejected (panic)', () => {
  it('a single instance that was down answers the first request after it is back', async () => {
    let inst = await instance(PORT_PANIC, delays);
    await register('panic', PORT_PANIC, 't:panic-1');
    const p = await startProxy({ ejection: { baseMs: 2000, maxMs: 30_000 } });
    await routed(p, 'panic.localhost', 1);
    expect((await get(p.port, 'panic.localhost')).status).toBe(200);
    await inst.close();
    // Down for 2.5 s with a request every 100 ms: each one tries the instance (502), none is a 503.
    const during: Record<number, number> = {};
    const downUntil = Date.now() + 2500;
    while (Date.now() < downUntil) {
      const s = (await get(p.port, 'panic.localhost')).status;
      during[s] = (during[s] ?? 0) + 1;
      await sleep(100);
    }
    const state = p.proxy.table().match('panic.localhost', '/')!.balancer.upstreams[0].state;
    const ejectedForMs = state.ejectedUntil - Date.now();
    inst = await instance(PORT_PANIC, delays);
    const first = await get(p.port, 'panic.localhost');
    expect(Object.keys(during)).toEqual(['502']);
    expect(ejectedForMs).toBeGreaterThan(0);
    expect(first).toMatchObject({ status: 200, body: 'ok' });
    expect(state.ejectedUntil).toBe(0);
    expect(p.logs.some((l) => l.event === 'ejection-ended')).toBe(true);
    console.log(`PROBE single instance down 2.5 s (${during[502]} requests, all 502, none 503); back while still ejected for ${ejectedForMs} ms: first GET → ${first.status}, ejection ended`);
  });

  it('a passing active check ends an ejection at once', async () => {
    let a = await instance(PORT_CHECKED, delays);
    const b = await startBackend('checked-b');
    cleanups.push(() => b.close());
    await register('checked', PORT_CHECKED, 't:checked-a');
    await register('checked', b.port, 't:checked-b');
    const p = await startProxy({ healthCheck: { path: '/healthz', intervalMs: 1000 }, ejection: { baseMs: 30_000, maxMs: 30_000 } });
    await routed(p, 'checked.localhost', 2);
    // Right after a round of checks, a goes down and the next requests meet its closed port before
    // the checker does: refused, retried on b, a ejected for 30 s.
    const checks = b.hits;
    await waitFor('a round of checks', () => b.hits > checks, 3_000, 5);
    await a.close();
    for (let i = 0; i < 2; i++) expect((await get(p.port, 'checked.localhost')).body).toBe('checked-b');
    const ua = p.proxy.table().match('checked.localhost', '/')!.balancer.upstreams[0];
    expect(ua.state.ejectedUntil - Date.now()).toBeGreaterThan(20_000);
    a = await instance(PORT_CHECKED, delays);
    const back = Date.now();
    await waitFor('a answering through the proxy', async () => (await get(p.port, 'checked.localhost')).body === 'ok', 5_000, 20);
    const backMs = Date.now() - back;
    expect(backMs).toBeLessThan(2500);
    expect(ua.state.ejectedUntil).toBe(0);
    console.log(`PROBE instance ejected for 30 s comes back: a passing check (every 1000 ms) puts it back in rotation after ${backMs} ms`);
    // Its checks would reach every instance the later tests register (the registry is shared).
    await p.proxy.close(0);
  });
});

/** An upgrade server whose sockets report what they saw; `/polite` answers a half-close with `bye` and its own end, `/deaf` ignores it, `/first` half-closes first. */
async function tunnelServer() {
  const seen: { ended: boolean; closed: boolean; data: string }[] = [];
  const sockets: net.Socket[] = [];
  const server = http.createServer((_req, res) => res.end('no upgrade'));
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
    const s = { ended: false, closed: false, data: '' };
    seen.push(s);
    sockets.push(socket);
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    socket.on('data', (d: Buffer) => {
      s.data += d.toString();
      if (!socket.writableEnded) socket.write(`echo:${d.toString()}`);
    });
    socket.on('end', () => {
      s.ended = true;
      if (req.url === '/polite') socket.end('bye');
    });
    socket.on('close', () => (s.closed = true));
    socket.on('error', () => undefined);
    if (req.url === '/first') socket.end('hi');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return { port: (server.address() as AddressInfo).port, seen };
}

/** A raw client socket through the proxy, upgraded; collects what arrives after the 101. */
async function tunnelClient(port: number, host: string, path: string) {
  const c = { socket: net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }), data: '', ended: false, closed: false, endedAt: 0, closedAt: 0 };
  let head = '';
  let upgraded = false;
  await new Promise<void>((resolve, reject) => {
    c.socket.on('data', (d: Buffer) => {
      if (upgraded) return void (c.data += d.toString());
      head += d.toString();
      const i = head.indexOf('\r\n\r\n');
      if (i < 0) return;
      if (!head.startsWith('HTTP/1.1 101')) return reject(new Error(`no upgrade: ${head}`));
      upgraded = true;
      c.data = head.slice(i + 4);
      resolve();
    });
    c.socket.on('error', reject);
    c.socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
  });
  cleanups.push(async () => void c.socket.destroy());
  c.socket.on('end', () => ((c.ended = true), (c.endedAt = Date.now())));
  c.socket.on('close', () => ((c.closed = true), (c.closedAt = Date.now())));
  return c;
}

describe('websocket tunnels', () => {
  it('pass a half-close on both ways, close both sockets when both sides are done, and count the tunnel out once', async () => {
    const up = await tunnelServer();
    await register('tun', up.port, 't:tun-1');
    const p = await startProxy({ tunnelIdleTimeoutMs: 60_000 });
    await routed(p, 'tun.localhost', 1);

    // The client half-closes: the instance sees the end, says bye and ends too.
    const c = await tunnelClient(p.port, 'tun.localhost', '/polite');
    c.socket.write('hello');
    await waitFor('echo', () => c.data === 'echo:hello', 5_000, 10);
    expect(activeOf(p, 'tun.localhost')).toEqual([1]);
    const t0 = Date.now();
    c.socket.end();
    await waitFor('both sides closed', () => c.closed && up.seen[0].closed, 5_000, 10);
    const politeMs = Date.now() - t0;
    expect(up.seen[0]).toMatchObject({ ended: true, data: 'hello' });
    expect(c.data).toBe('echo:hellobye');
    await waitFor('tunnel counted out', () => activeOf(p, 'tun.localhost')[0] === 0, 2_000, 10);

    // The instance half-closes first: the client still gets to send before it ends its side.
    const f = await tunnelClient(p.port, 'tun.localhost', '/first');
    await waitFor('instance end reaches the client', () => f.ended, 5_000, 10);
    expect(f.data).toBe('hi');
    f.socket.end('late');
    await waitFor('both closed', () => f.closed && up.seen[1].closed, 5_000, 10);
    expect(up.seen[1].data).toBe('late');
    await waitFor('tunnel counted out', () => activeOf(p, 'tun.localhost')[0] === 0, 2_000, 10);

    // An abrupt close (reset) of the client closes the proxy's socket to the instance as well.
    const r = await tunnelClient(p.port, 'tun.localhost', '/deaf');
    r.socket.resetAndDestroy();
    await waitFor('instance side ended', () => up.seen[2].ended, 5_000, 10);
    await waitFor('tunnel counted out', () => activeOf(p, 'tun.localhost')[0] === 0, 2_000, 10);
    console.log(`PROBE tunnel: client half-close → instance saw end, answered, both sockets closed in ${politeMs} ms; instance half-close first → client could still send ('late' arrived); client reset → proxy closed its instance socket; in flight after each: 0`);
  });

  it('closes a tunnel quiet for the tunnel idle timeout, half-closed or not, and keeps a busy one', async () => {
    const up = await tunnelServer();
    await register('idle', up.port, 't:idle-1');
    const p = await startProxy({ tunnelIdleTimeoutMs: 600 });
    await routed(p, 'idle.localhost', 1);
    // Traffic every 200 ms for 1.2 s keeps it open; then silence closes it.
    const c = await tunnelClient(p.port, 'idle.localhost', '/deaf');
    let lastByte = 0;
    for (let i = 0; i < 6; i++) {
      c.socket.write(`m${i}`);
      lastByte = Date.now();
      await sleep(200);
    }
    expect(c.closed).toBe(false);
    expect(c.data).toBe('echo:m0echo:m1echo:m2echo:m3echo:m4echo:m5');
    // The proxy closes both of its sockets: each peer gets an end (the test sockets stay half-open).
    await waitFor('idle tunnel closed', () => c.ended && up.seen[0].ended, 3_000, 10);
    const idleMs = c.endedAt - lastByte;
    await waitFor('tunnel counted out', () => activeOf(p, 'idle.localhost')[0] === 0, 2_000, 10);
    // Half-closed by the client, ignored by the instance: closed by the idle timeout as well.
    const h = await tunnelClient(p.port, 'idle.localhost', '/deaf');
    const t0 = Date.now();
    h.socket.end();
    await waitFor('instance saw the end', () => up.seen[1].ended, 2_000, 10);
    await waitFor('half-closed tunnel closed', () => h.closed, 3_000, 10);
    const halfMs = h.closedAt - t0;
    expect(idleMs).toBeGreaterThanOrEqual(500);
    expect(idleMs).toBeLessThan(1500);
    expect(halfMs).toBeLessThan(1500);
    await waitFor('tunnels counted out', () => activeOf(p, 'idle.localhost')[0] === 0, 2_000, 10);
    console.log(`PROBE tunnel idle timeout 600 ms: busy 1.2 s stayed open, closed ${idleMs} ms after the last byte; client half-close ignored by the instance → closed after ${halfMs} ms; in flight after: 0`);
  });
});

/** `/sse`: an event stream whose first event comes after 1.5 s; `/trailers`: a chunked body with trailer fields; `/echo`: the body length and trailers it got. */
function streams(req: http.IncomingMessage, res: http.ServerResponse): void {
  if (req.url === '/sse') {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.flushHeaders();
    const t = setTimeout(() => res.end('data: one\n\n'), 1500);
    res.once('close', () => clearTimeout(t));
    return;
  }
  if (req.url === '/trailers') {
    res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
    res.write('hello ');
    res.addTrailers({ 'x-checksum': 'abc123', host: 'elsewhere.test' });
    return void res.end('world');
  }
  let n = 0;
  req.on('data', (d: Buffer) => (n += d.length));
  req.on('end', () => res.end(`${n} ${JSON.stringify(req.trailers)}`));
}

describe('response streaming', () => {
  it('passes an event stream head on at once; the response timeout covers only the head, the body timeout the silences', async () => {
    const inst = await instance(0, streams);
    await register('sse', inst.port, 't:sse-1');
    const p = await startProxy({ responseTimeoutMs: 1000 });
    const strict = await startProxy({ responseTimeoutMs: 1000, bodyTimeoutMs: 600 });
    await routed(p, 'sse.localhost', 1);
    await routed(strict, 'sse.localhost', 1);
    const [sse, cut] = await Promise.all([timedGet(p.port, 'sse.localhost', '/sse'), timedGet(strict.port, 'sse.localhost', '/sse')]);
    expect(sse.status).toBe(200);
    expect(sse.headers['content-type']).toBe('text/event-stream');
    expect(sse.headMs).toBeLessThan(500);
    expect(sse.chunks.map((c) => c.text).join('')).toBe('data: one\n\n');
    expect(sse.chunks[0].ms).toBeGreaterThanOrEqual(1400);
    expect(sse.error).toBeUndefined();
    // With a 600 ms body timeout the quiet stream is cut after its head (no 504: the head is out).
    expect(cut.status).toBe(200);
    expect(cut.headMs).toBeLessThan(500);
    expect(cut.chunks).toEqual([]);
    expect(cut.error).toBeDefined();
    expect(cut.endMs).toBeGreaterThanOrEqual(550);
    expect(cut.endMs).toBeLessThan(1400);
    console.log(`PROBE SSE, response timeout 1000 ms, event after 1.5 s: head after ${sse.headMs} ms, event after ${sse.chunks[0].ms} ms, status ${sse.status}; with --body-timeout 600: head after ${cut.headMs} ms, cut after ${cut.endMs} ms (${cut.error ?? 'ended'})`);
  });

  it('forwards response trailers (not framing fields), still answers an HTTP/1.0 client, and does not pass request trailers', async () => {
    const inst = await instance(0, streams);
    await register('trailers', inst.port, 't:trailers-1');
    const p = await startProxy();
    await routed(p, 'trailers.localhost', 1);
    const plain = await timedGet(p.port, 'trailers.localhost', '/trailers');
    const asked = await timedGet(p.port, 'trailers.localhost', '/trailers', { te: 'trailers' });
    for (const r of [plain, asked]) {
      expect(r.status).toBe(200);
      expect(r.chunks.map((c) => c.text).join('')).toBe('hello world');
      expect(r.headers.trailer).toBe('x-checksum');
      expect(r.trailers).toEqual({ 'x-checksum': 'abc123' });
    }
    // HTTP/1.0 has no chunked encoding, so no trailers: the body still arrives whole.
    const old = await rawExchange(p.port, 'GET /trailers HTTP/1.0\r\nHost: trailers.localhost\r\n\r\n');
    expect(old).toMatch(/^HTTP\/1\.1 200 /);
    expect(old.endsWith('hello world')).toBe(true);
    expect(old.toLowerCase()).not.toContain('trailer:');
    // undici sends a request body without trailers: the instance gets the body only.
    const req = await rawExchange(p.port, 'POST /echo HTTP/1.1\r\nHost: trailers.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Req-Trailer: yes\r\n\r\n');
    expect(req).toMatch(/^HTTP\/1\.1 200 /);
    expect(req.endsWith('5 {}')).toBe(true);
    console.log(`PROBE chunked response with trailer x-checksum (and a host trailer): client got trailers ${JSON.stringify(plain.trailers)} with and without TE: trailers; HTTP/1.0 client → 200, body whole, no trailers; request trailer X-Req-Trailer → instance got ${req.slice(req.lastIndexOf('\n') + 1)}`);
  });

  it('answers 502 saying the answer cannot be passed on (a control character in a chunked answer header)', async () => {
    const raw = net.createServer((c) => {
      c.on('error', () => c.destroy());
      c.once('data', () => c.end('HTTP/1.1 200 OK\r\nX-Bad: a\u0001b\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'));
    });
    await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => raw.close(() => r())));
    await register('badhead', (raw.address() as AddressInfo).port, 't:badhead-1');
    const p = await startProxy();
    await routed(p, 'badhead.localhost', 1);
    const r = await get(p.port, 'badhead.localhost');
    expect(r).toMatchObject({ status: 502, body: 'bad gateway: badhead sent an answer that cannot be passed on\n' });
    console.log(`PROBE chunked answer with a control character in a header → ${r.status} ${r.body.trim()}`);
  });

  it('does not cut a slow upload that keeps making progress', async () => {
    const inst = await instance(0, streams);
    await register('upload', inst.port, 't:upload-1');
    const p = await startProxy({ responseTimeoutMs: 1000, bodyTimeoutMs: 1000 });
    await routed(p, 'upload.localhost', 1);
    const t0 = Date.now();
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: p.port, path: '/echo', method: 'POST', agent: false, headers: { host: 'upload.localhost', 'transfer-encoding': 'chunked' } }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      let sent = 0;
      const tick = setInterval(() => {
        req.write(Buffer.alloc(1000, 97));
        if (++sent === 10) {
          clearInterval(tick);
          req.end();
        }
      }, 250);
    });
    const ms = Date.now() - t0;
    expect(answer).toEqual({ status: 200, body: '10000 {}' });
    expect(ms).toBeGreaterThanOrEqual(2400);
    console.log(`PROBE upload of 10 × 1000 bytes every 250 ms (${ms} ms) with response and body timeouts of 1000 ms → ${answer.status}, instance got ${answer.body.split(' ')[0]} bytes`);
  });
});

describe('weighted round robin across table swaps', () => {
  it('keeps a 3:1 split exact with a routing change every 3 requests', async () => {
    const [a, b] = [await startBackend('wrr-a'), await startBackend('wrr-b')];
    cleanups.push(() => a.close(), () => b.close());
    const other = await startBackend('wrr-other');
    cleanups.push(() => other.close());
    await register('wrr', a.port, 't:wrr-a', { weight: '3' });
    await register('wrr', b.port, 't:wrr-b', { weight: '1' });
    const p = await startProxy();
    await routed(p, 'wrr.localhost', 2);
    const counts: Record<string, number> = {};
    const swapsBefore = p.proxy.swaps;
    const churn: ServiceInstance = { id: 't:wrr-churn', name: 'wrrchurn', address: '127.0.0.1', port: other.port, protocol: 'tcp', tags: [], meta: {}, host: 't', status: 'passing' };
    for (let i = 0; i < 120; i++) {
      if (i % 3 === 0) {
        const swaps = p.proxy.swaps;
        if (i % 6 === 0) await registry.register(churn);
        else await registry.deregister(churn);
        await waitFor('table swapped', () => p.proxy.swaps > swaps, 2_000, 2);
      }
      const r = await get(p.port, 'wrr.localhost');
      counts[r.body] = (counts[r.body] ?? 0) + 1;
    }
    await registry.deregister(churn);
    const swaps = p.proxy.swaps - swapsBefore;
    expect(swaps).toBeGreaterThanOrEqual(40);
    expect(counts).toEqual({ 'wrr-a': 90, 'wrr-b': 30 });
    console.log(`PROBE weights 3:1, 120 GETs with ${swaps} table swaps (one every 3 requests): wrr-a ${counts['wrr-a']}, wrr-b ${counts['wrr-b']}`);
  });
});

/** A raw TCP instance: `answer` gets each connection and the bytes of its first request. */
async function rawInstance(answer: (c: net.Socket, request: string) => void) {
  const conns: net.Socket[] = [];
  const server = net.createServer((c) => {
    conns.push(c);
    c.on('error', () => undefined);
    c.once('data', (d: Buffer) => answer(c, d.toString('latin1')));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const c of conns) c.destroy();
        server.close(() => r());
      }),
  );
  return { port: (server.address() as AddressInfo).port, conns, open: () => conns.filter((c) => !c.destroyed && !c.closed).length };
}

/**
 * A raw client that writes `payload` and then reads nothing (`read: false`) or everything. It
 * never closes by itself: after the proxy's end it keeps sending a byte every 50 ms, so `closed`
 * tells when the proxy really closed its socket (the next byte is refused).
 */
function rawClient(port: number, payload: string, read = true) {
  const c = { socket: net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }), data: '', closed: false, closedAt: 0, ended: false };
  let poke: NodeJS.Timeout | undefined;
  c.socket.on('data', (d: Buffer) => (c.data += d.toString('latin1')));
  c.socket.on('end', () => {
    c.ended = true;
    poke = setInterval(() => c.socket.write('x'), 50);
  });
  c.socket.on('error', () => undefined);
  c.socket.on('close', () => ((c.closed = true), (c.closedAt = Date.now()), clearInterval(poke)));
  c.socket.write(payload);
  if (!read) c.socket.pause();
  cleanups.push(async () => void c.socket.destroy());
  return c;
}

const UPGRADE = (host: string, path = '/') => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;

describe('slow and stuck peers', () => {
  it('cuts a client that stops reading after the body timeout, so its connection slot goes back', async () => {
    const b = await startBackend('stall');
    cleanups.push(() => b.close());
    await register('stall', b.port, 't:stall-1');
    const p = await startProxy({ maxConnectionsPerInstance: 1, responseTimeoutMs: 4000, bodyTimeoutMs: 600 });
    await routed(p, 'stall.localhost', 1);
    const t0 = Date.now();
    const stuck = rawClient(p.port, 'GET /big/200000000 HTTP/1.1\r\nHost: stall.localhost\r\n\r\n', false);
    await waitFor('big response started', () => b.hits === 1, 5_000, 10);
    const next = await get(p.port, 'stall.localhost', '/');
    const nextMs = Date.now() - t0;
    expect(next).toMatchObject({ status: 200, body: 'stall' });
    expect(nextMs).toBeLessThan(3000);
    await waitFor('slot back, nothing in flight', () => activeOf(p, 'stall.localhost')[0] === 0 && p.proxy.pending === 0, 2_000, 10);
    // The paused client only notices once it reads: what it got is a cut response.
    stuck.socket.resume();
    await waitFor('stuck client closed', () => stuck.closed, 5_000, 10);
    expect(stuck.data.length).toBeLessThan(200_000_000);
    console.log(`PROBE limit 1, body timeout 600 ms, client requests 200 MB and reads nothing: cut after ${(stuck.data.length / 1e6).toFixed(1)} MB buffered; next GET → ${next.status} after ${nextMs} ms`);
  });

  it('closes raw answers on upgrade requests: a client that never closes, and a refused upgrade whose body stalls or whose client stops reading', async () => {
    const up = await rawInstance((c, req) => {
      // A 403 announcing 100 bytes, sending 10 and then nothing; /big sends a large body.
      if (req.startsWith('GET /big')) {
        c.write(`HTTP/1.1 403 Forbidden\r\nContent-Length: 20000000\r\n\r\n`);
        const piece = Buffer.alloc(65_536, 120);
        const pump = () => {
          while (!c.destroyed && c.write(piece));
          if (!c.destroyed) c.once('drain', pump);
        };
        return pump();
      }
      c.write('HTTP/1.1 403 Forbidden\r\nContent-Length: 100\r\n\r\n0123456789');
    });
    await register('rawup', up.port, 't:rawup-1');
    const p = await startProxy({ bodyTimeoutMs: 600 });
    await routed(p, 'rawup.localhost', 1);
    const t0 = Date.now();
    const unknown = rawClient(p.port, UPGRADE('nowhere.localhost'));
    const stalled = rawClient(p.port, UPGRADE('rawup.localhost'));
    const deaf = rawClient(p.port, UPGRADE('rawup.localhost', '/big'), false);
    await waitFor('closed by the proxy', () => unknown.closed && stalled.closed && up.open() === 0, 5_000, 10);
    const cutMs = Date.now() - t0;
    deaf.socket.resume();
    await waitFor('deaf client closed', () => deaf.closed, 5_000, 10);
    expect(unknown.data).toMatch(/^HTTP\/1\.1 404 /);
    expect(stalled.data).toMatch(/^HTTP\/1\.1 403 [^]*0123456789$/);
    expect(unknown.closedAt - t0).toBeLessThan(3000);
    expect(stalled.closedAt - t0).toBeLessThan(2000);
    expect(cutMs).toBeLessThan(3000);
    expect(deaf.data.length).toBeLessThan(20_000_000);
    console.log(`PROBE upgrade to unknown host, client never closes → 404, closed after ${unknown.closedAt - t0} ms; refused upgrade (403, 10 of 100 bytes then silence) → closed after ${stalled.closedAt - t0} ms; refused upgrade with 20 MB body, client not reading → both sockets cut by ${cutMs} ms (client had ${(deaf.data.length / 1e6).toFixed(1)} MB); instance sockets open after: ${up.open()}`);
  });

  it('shuts down with upgrade answers, handshakes and tunnels open, and opens no tunnel after shutdown started', async () => {
    const up = await rawInstance((c, req) => {
      const answer = () => c.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      if (req.startsWith('GET /slow101')) setTimeout(answer, 800);
      else answer();
    });
    await register('shut', up.port, 't:shut-1');
    const p = await startProxy();
    await routed(p, 'shut.localhost', 1);
    const open = Array.from({ length: 5 }, () => rawClient(p.port, UPGRADE('nowhere.localhost')));
    const tunnel = rawClient(p.port, UPGRADE('shut.localhost'));
    const slow = rawClient(p.port, UPGRADE('shut.localhost', '/slow101'));
    await waitFor('answers and handshake under way', () => open.every((c) => c.data.includes('404')) && tunnel.data.startsWith('HTTP/1.1 101') && up.conns.length === 2, 5_000, 10);
    const t0 = Date.now();
    const cut = await p.proxy.close(300);
    const closeMs = Date.now() - t0;
    await waitFor('every client closed', () => [...open, tunnel, slow].every((c) => c.closed), 2_000, 10);
    await sleep(700);
    expect(closeMs).toBeLessThan(1500);
    expect(slow.data).not.toContain('101');
    expect(up.open()).toBe(0);
    console.log(`PROBE close(300) with 5 lingering 404 upgrade answers, 1 tunnel and 1 handshake whose 101 comes after 800 ms: resolved after ${closeMs} ms (cut ${cut}); slow handshake got ${JSON.stringify(slow.data.slice(0, 12))}; instance sockets open: ${up.open()}`);
  });

  it('holds a slow small request body before taking a connection, so other requests are not starved', async () => {
    const inst = await instance(0, streams);
    await register('slowbody', inst.port, 't:slowbody-1');
    const p = await startProxy({ maxConnectionsPerInstance: 1, responseTimeoutMs: 1000 });
    await routed(p, 'slowbody.localhost', 1);
    const slow = rawClient(p.port, 'POST /echo HTTP/1.1\r\nHost: slowbody.localhost\r\nContent-Length: 20\r\nConnection: close\r\n\r\n');
    const tick = setInterval(() => slow.socket.write('x'), 100);
    await sleep(200);
    const t0 = Date.now();
    const g = await get(p.port, 'slowbody.localhost', '/');
    const gMs = Date.now() - t0;
    await waitFor('slow body answered', () => slow.ended, 5_000, 10);
    clearInterval(tick);
    expect(g.status).toBe(200);
    expect(gMs).toBeLessThan(500);
    expect(slow.data).toMatch(/^HTTP\/1\.1 200 [^]*\r\n\r\n20 \{\}$/);
    console.log(`PROBE limit 1, POST with Content-Length 20 sent 1 byte / 100 ms: a GET meanwhile → ${g.status} after ${gMs} ms; the POST → ${slow.data.split('\r\n')[0]}, instance got ${slow.data.slice(slow.data.lastIndexOf('\n') + 1)}`);
  });
});

describe('waiting for a connection', () => {
  it('sends a request to an instance with a free connection rather than queue it behind a busy one, and caps the queue', async () => {
    // A stays busy past the last request even on a loaded machine, so a request never waits for A to free up
    const slowA = await instance(0, (_req, res) => void setTimeout(() => res.end('A'), 3000));
    const fastB = await instance(0, (_req, res) => void setTimeout(() => res.end('B'), 20));
    await register('roomy', slowA.port, 't:roomy-a');
    await register('roomy', fastB.port, 't:roomy-b');
    const p = await startProxy({ maxConnectionsPerInstance: 1, responseTimeoutMs: 6000 });
    await routed(p, 'roomy.localhost', 2);
    const t0 = Date.now();
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => sleep(i * 60).then(() => get(p.port, 'roomy.localhost', '/'))));
    const ms = Date.now() - t0;
    expect(slowA.hits).toBe(1);
    expect(answers.map((a) => a.status)).toEqual(Array(6).fill(200));
    // One instance, one connection: 1 running + 4 waiting; the sixth is answered 503 at once.
    const lone = await instance(0, (_req, res) => void setTimeout(() => res.end('L'), 2000));
    await register('lone', lone.port, 't:lone-1');
    const q = await startProxy({ maxConnectionsPerInstance: 1, responseTimeoutMs: 15000 });
    await routed(q, 'lone.localhost', 1);
    const loneAnswers = await Promise.all(Array.from({ length: 6 }, () => get(q.port, 'lone.localhost', '/')));
    const statuses = loneAnswers.map((a) => a.status).sort();
    expect(statuses).toEqual([200, 200, 200, 200, 200, 503]);
    console.log(`PROBE limit 1, A answers in 3000 ms, B in 20 ms, response timeout 6000 ms, 6 GETs 60 ms apart → ${answers.map((a) => a.status).join(',')} (A ${slowA.hits}, B ${fastB.hits}) in ${ms} ms; one instance, limit 1, 6 concurrent → ${statuses.join(',')}`);
  });

  it('sends a request waiting on an instance that left the table to the instances there now, at once', async () => {
    const a = await startBackend('moved-a');
    const b = await startBackend('moved-b');
    cleanups.push(() => a.close(), () => b.close());
    const ia = await register('moved', a.port, 't:moved-a');
    const p = await startProxy({ maxConnectionsPerInstance: 1, responseTimeoutMs: 5000 });
    await routed(p, 'moved.localhost', 1);
    const holder = get(p.port, 'moved.localhost', '/slow/2000');
    await waitFor('holder on a', () => a.hits === 1, 5_000, 10);
    const t0 = Date.now();
    const waiting = get(p.port, 'moved.localhost', '/');
    await sleep(100);
    await register('moved', b.port, 't:moved-b');
    await registry.deregister(ia);
    registered.splice(registered.indexOf(ia), 1);
    await waitFor('only b routed', () => p.proxy.table().match('moved.localhost', '/')?.balancer.upstreams.map((u) => u.id).join() === 't:moved-b', 5_000, 10);
    const w = await waiting;
    const wMs = Date.now() - t0;
    expect(w).toMatchObject({ status: 200, body: 'moved-b' });
    expect(wMs).toBeLessThan(1500);
    expect((await holder).body).toBe('moved-a');
    console.log(`PROBE limit 1, GET waiting behind a 2 s request on instance a; a leaves the table, b joins → ${w.status} from ${w.body} after ${wMs} ms (a hits ${a.hits})`);
  });
});

describe('malformed answers', () => {
  it('answers 502 without retrying or ejecting for a 101 to a plain request and a body shorter than its Content-Length; passes no Connection-listed trailers', async () => {
    let hits = 0;
    const bad = await rawInstance((c, req) => {
      hits++;
      if (req.startsWith('GET /upgrade')) return void c.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      if (req.startsWith('GET /short')) return void c.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello');
      c.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum, X-Hop\r\nConnection: x-hop, close\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 42\r\nX-Hop: 1\r\nProxy-Authenticate: Basic\r\n\r\n');
    });
    await register('malformed', bad.port, 't:malformed-1');
    const p = await startProxy();
    await routed(p, 'malformed.localhost', 1);
    const answers = [];
    for (const path of ['/upgrade', '/upgrade', '/short', '/short']) answers.push(await get(p.port, 'malformed.localhost', path));
    const state = p.proxy.table().match('malformed.localhost', '/')!.balancer.upstreams[0].state;
    expect(answers.map((a) => a.status)).toEqual([502, 502, 502, 502]);
    expect(hits).toBe(4);
    expect(state.ejectedUntil).toBe(0);
    const seen = hits;
    const t = await timedGet(p.port, 'malformed.localhost', '/trailers');
    expect(t.chunks.map((c) => c.text).join('')).toBe('hello');
    expect(t.trailers).toEqual({ 'x-sum': '42' });
    // An active check answered 101 settles at once (it used to wait forever and hold up shutdown).
    const p0 = Date.now();
    const checked = await probe({ address: '127.0.0.1', port: bad.port } as Upstream, '/upgrade', 2000);
    const checkMs = Date.now() - p0;
    expect(checked).toBe('GET /upgrade answered 101');
    expect(checkMs).toBeLessThan(1000);
    console.log(`PROBE 2 × GET answered 101, 2 × GET with 5 of 10 bytes → ${answers.map((a) => a.status).join(',')}, instance saw ${seen} requests, ejected: ${state.ejectedUntil !== 0}; trailers X-Sum, X-Hop (in Connection), Proxy-Authenticate → client got ${JSON.stringify(t.trailers)}; health check answered 101 → "${checked}" after ${checkMs} ms`);
  });
});

describe('an instance dying mid-answer', () => {
  it('sends a GET whose held answer stopped short of its Content-Length to another instance, without ejecting the first; a POST gets the 502', async () => {
    let cutHits = 0;
    let goodHits = 0;
    // What busybox httpd killed with SIGKILL after its head leaves behind: half a body, then close.
    const cut = await rawInstance((c) => {
      cutHits++;
      c.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello');
    });
    const good = await rawInstance((c) => {
      goodHits++;
      c.end('HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ngood');
    });
    await register('dying', cut.port, 't:dying-1');
    await register('dying', good.port, 't:dying-2');
    const p = await startProxy();
    await routed(p, 'dying.localhost', 2);
    const gets = [];
    for (let i = 0; i < 6; i++) gets.push(await get(p.port, 'dying.localhost', '/'));
    expect(gets.map((a) => `${a.status} ${a.body}`)).toEqual(Array(6).fill('200 good'));
    expect(cutHits).toBeGreaterThanOrEqual(3);
    const state = p.proxy.table().match('dying.localhost', '/')!.balancer.upstreams.find((u) => u.port === cut.port)!.state;
    expect(state.ejectedUntil).toBe(0);
    const posts = [];
    for (let i = 0; i < 2; i++) posts.push(await get(p.port, 'dying.localhost', '/', { method: 'POST' }));
    expect(posts.map((a) => a.status).sort()).toEqual([200, 502]);
    console.log(`PROBE 6 GETs over an instance answering 5 of 10 bytes then closing and a good one → ${gets.map((a) => a.status).join(',')} (cut instance saw ${cutHits}, good ${goodHits}, ejected: ${state.ejectedUntil !== 0}); 2 POSTs → ${posts.map((a) => a.status).join(',')}`);
  });
});

/** Send raw bytes, resolve with everything the proxy sent until it closed. */
function rawExchange(port: number, payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let data = '';
    s.on('data', (d: Buffer) => (data += d.toString()));
    s.on('end', () => resolve(data));
    s.on('error', reject);
    s.setTimeout(5_000, () => (s.destroy(), reject(new Error(`no end: ${data}`))));
    s.write(payload);
  });
}
