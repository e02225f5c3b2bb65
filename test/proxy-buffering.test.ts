// Slow peers against the built proxy process (`harbormaster proxy` following the shared etcd),
// with one connection per instance: request bodies are read whole before a connection to the
// instance is taken (chunked, or announced larger than what is kept in memory: a temp file), and
// a response the client does not read is taken whole from the instance, so that neither a slow
// sender nor a slow reader keeps other requests from that instance. A body that arrives across a
// routing change goes to the instances routed now; a small announced response whose body stalls
// is passed on after a short hold instead of being held until complete.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServiceInstance } from '../src/model/service-instance.js';
import { createBackend } from '../src/registry/index.js';
import { Hm } from './support/harbormaster.js';
import { rawRequest } from './support/raw-http.js';
import { ETCD_ENDPOINT } from './support/registries.js';
import { sleep, uniq, waitFor } from './support/wait.js';

const PROXY_PORT = 23300;
const URI = `etcd://${ETCD_ENDPOINT}/${uniq('hmbuf')}`;
const writer = createBackend(URI, { ttl: 0 });
const registered: ServiceInstance[] = [];
const closers: Array<() => Promise<void>> = [];
let hm: Hm;

/** An instance: POST → `<name>:<bytes of the body>`; GET /big/<n> → n bytes (counted when its last byte is written); else its name. */
async function instance(name: string) {
  const s = { name, port: 0, bigDone: 0, conns: 0 };
  const server = http.createServer((req, res) => {
    const big = /^\/big\/(\d+)/.exec(req.url ?? '');
    if (big) {
      const n = Number(big[1]);
      res.writeHead(200, { 'content-length': n });
      const piece = Buffer.alloc(65_536, 'abcdefgh');
      let left = n;
      const pump = () => {
        while (left > 0) {
          const k = Math.min(left, piece.length);
          left -= k;
          if (!res.write(piece.subarray(0, k))) return void res.once('drain', pump);
        }
        res.end(() => s.bigDone++);
      };
      return pump();
    }
    let bytes = 0;
    req.on('data', (d: Buffer) => (bytes += d.length));
    req.on('end', () => res.end(req.method === 'POST' ? `${name}:${bytes}` : name));
  });
  server.on('connection', () => s.conns++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  s.port = (server.address() as AddressInfo).port;
  closers.push(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  return s;
}

async function register(service: string, port: number, id: string): Promise<ServiceInstance> {
  const inst: ServiceInstance = { id, name: service, address: '127.0.0.1', port, protocol: 'tcp', tags: [], meta: { http_host: `${service}.buf.test` }, host: 'buf', status: 'passing' };
  await writer.register(inst);
  registered.push(inst);
  return inst;
}

/** GET through the proxy: status, body, ms. */
async function timedGet(host: string, path = '/'): Promise<{ status: number; body: string; ms: number }> {
  const t0 = Date.now();
  const r = await rawRequest(PROXY_PORT, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`, { timeoutMs: 10_000 });
  return { status: r.status, body: r.body, ms: Date.now() - t0 };
}

/** A raw client socket with the request head written; collects what comes back. */
function openClient(head: string) {
  return openClientTo(PROXY_PORT, head);
}

beforeAll(async () => {
  hm = new Hm(['proxy', URI, '--listen', `127.0.0.1:${PROXY_PORT}`, '--api', 'off', '--max-connections-per-instance', '1', '--idle-timeout', '3000', '--response-timeout', '3000', '--body-timeout', '5000', '--log-level', 'warn']);
  await waitFor('proxy listening', async () => (await rawRequest(PROXY_PORT, 'GET / HTTP/1.1\r\nHost: none.test\r\nConnection: close\r\n\r\n', { timeoutMs: 500 })).status === 404, 20_000, 100);
});

afterAll(async () => {
  await hm?.stop('SIGKILL');
  for (const i of registered) await writer.deregister(i).catch(() => undefined);
  await writer.close();
  for (const c of closers) await c();
});

describe('slow clients cannot take up an instance\'s connections (limit 1 per instance)', () => {
  it('a GET is answered at once while chunked and large uploads trickle in; each upload then arrives whole', async () => {
    const inst = await instance('up');
    await register('up', inst.port, 'buf:up-1');
    await waitFor('routed', async () => (await timedGet('up.buf.test')).status === 200, 10_000, 50);
    // Two chunked POSTs and one announcing 200,000 bytes (more than is kept in memory), each sending
    // a piece every 1,500 ms (half the idle timeout) four times.
    const big = 200_000;
    const uploads = [
      openClient('POST /u HTTP/1.1\r\nHost: up.buf.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n'),
      openClient('POST /u HTTP/1.1\r\nHost: up.buf.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n'),
      openClient(`POST /u HTTP/1.1\r\nHost: up.buf.test\r\nContent-Length: ${big}\r\nConnection: close\r\n\r\n`),
    ];
    const piece = 'y'.repeat(big / 4);
    const send = (k: number) => {
      uploads[0].socket.write(`1\r\nx\r\n${k === 3 ? '0\r\n\r\n' : ''}`);
      uploads[1].socket.write(`3\r\nabc\r\n${k === 3 ? '0\r\n\r\n' : ''}`);
      uploads[2].socket.write(piece);
    };
    send(0);
    await sleep(300);
    const gets = [];
    for (let k = 1; k <= 3; k++) {
      gets.push(await timedGet('up.buf.test'));
      await sleep(1_200);
      send(k);
    }
    await waitFor('uploads answered', () => uploads.every((u) => u.closed), 10_000, 20);
    const answers = uploads.map((u) => u.data.toString('latin1').split('\r\n\r\n')[1] ?? u.data.toString('latin1').split('\r\n')[0]);
    console.log(`PROBE limit 1, two chunked POSTs and a ${big}-byte POST sending a piece every 1,500 ms (idle timeout 3,000): GETs meanwhile → ${gets.map((g) => `${g.status} in ${g.ms} ms`).join(', ')}; uploads → ${answers.join(', ')}; instance connections opened: ${inst.conns}`);
    expect(gets.map((g) => g.status)).toEqual([200, 200, 200]);
    for (const g of gets) expect(g.ms).toBeLessThan(500);
    expect(answers).toEqual(['up:4', 'up:12', `up:${big}`]);
  });

  it('a GET is answered at once while another client leaves an 8 MB response unread; the reader later gets every byte', async () => {
    const inst = await instance('down');
    await register('down', inst.port, 'buf:down-1');
    await waitFor('routed', async () => (await timedGet('down.buf.test')).status === 200, 10_000, 50);
    const size = 8_000_000;
    const reader = openClient(`GET /big/${size} HTTP/1.1\r\nHost: down.buf.test\r\nConnection: close\r\n\r\n`);
    reader.socket.pause();
    const t0 = Date.now();
    // The instance gets its whole answer out although the client reads nothing.
    await waitFor('the instance sent it all', () => inst.bigDone === 1, 3_000, 10);
    const doneMs = Date.now() - t0;
    const g = await timedGet('down.buf.test');
    await sleep(Math.max(0, 2_000 - (Date.now() - t0)));
    reader.socket.resume();
    await waitFor('reader has it all', () => reader.closed, 10_000, 20);
    const raw = reader.data;
    const body = raw.subarray(raw.indexOf('\r\n\r\n') + 4);
    const intact = body.length === size && body.every((b, i) => b === 'abcdefgh'.charCodeAt(i % 65_536 % 8));
    console.log(`PROBE limit 1, a client leaves GET /big/${size} unread for 2 s: instance done sending after ${doneMs} ms; a GET meanwhile → ${g.status} in ${g.ms} ms; the reader then got ${body.length} bytes, intact: ${intact}`);
    expect(g).toMatchObject({ status: 200, body: 'down' });
    expect(g.ms).toBeLessThan(500);
    expect(intact).toBe(true);
  });
});

describe('a body that arrives across a routing change', () => {
  it('goes to the instance routed when the body is complete, not to the one removed meanwhile', async () => {
    const a = await instance('swap-a');
    const b = await instance('swap-b');
    const ia = await register('swap', a.port, 'buf:swap-a');
    await waitFor('a routed', async () => (await timedGet('swap.buf.test')).body === 'swap-a', 10_000, 50);
    const post = openClient('POST /s HTTP/1.1\r\nHost: swap.buf.test\r\nContent-Length: 10\r\nConnection: close\r\n\r\n12345');
    await sleep(100);
    const t0 = Date.now();
    await register('swap', b.port, 'buf:swap-b');
    await writer.deregister(ia);
    registered.splice(registered.indexOf(ia), 1);
    await waitFor('only b routed', async () => (await timedGet('swap.buf.test')).body === 'swap-b' && (await timedGet('swap.buf.test')).body === 'swap-b', 10_000, 20);
    const swapMs = Date.now() - t0;
    post.socket.write('67890');
    await waitFor('post answered', () => post.closed, 5_000, 10);
    const answer = post.data.toString('latin1').split('\r\n\r\n')[1];
    console.log(`PROBE POST of 10 bytes, 5 sent, A replaced by B in the routing table (${swapMs} ms), then the other 5 → answered by ${answer} (A is still running: it got ${a.conns} connections)`);
    expect(answer).toBe('swap-b:10');
  });
});

describe('a small announced response whose body stalls', () => {
  it('passes the head and the bytes that came on after a short hold, not when the body is complete', async () => {
    const server = net.createServer((c) => {
      c.on('error', () => undefined);
      c.on('data', (d: Buffer) => {
        if (d.toString('latin1').startsWith('GET /ready')) return void c.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nready');
        c.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Type: text/plain\r\n\r\n12345');
        const t = setTimeout(() => c.end('67890'), 2_500);
        c.once('close', () => clearTimeout(t));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise<void>((r) => server.close(() => r())));
    await register('stall', (server.address() as AddressInfo).port, 'buf:stall-1');
    await waitFor('routed', async () => (await timedGet('stall.buf.test', '/ready')).body === 'ready', 10_000, 50);
    const t0 = Date.now();
    const seen: Array<{ ms: number; text: string }> = [];
    const c = openClient('GET / HTTP/1.1\r\nHost: stall.buf.test\r\nConnection: close\r\n\r\n');
    c.socket.on('data', (d: Buffer) => seen.push({ ms: Date.now() - t0, text: d.toString('latin1') }));
    await waitFor('response complete', () => c.closed, 6_000, 10);
    const all = seen.map((s) => s.text).join('');
    const firstMs = seen[0]?.ms ?? -1;
    const fiveMs = seen.find((_, i) => seen.slice(0, i + 1).map((s) => s.text).join('').includes('\r\n\r\n12345'))?.ms ?? -1;
    console.log(`PROBE instance sends Content-Length 10 with 5 bytes, the other 5 after 2,500 ms: client got the head after ${firstMs} ms, the first 5 bytes after ${fiveMs} ms, the rest after ${seen.at(-1)?.ms} ms`);
    expect(fiveMs).toBeGreaterThanOrEqual(0);
    expect(fiveMs).toBeLessThan(1_000);
    expect(all.endsWith('\r\n\r\n1234567890')).toBe(true);
  });
});

describe('without a usable TMPDIR, and with --max-body-size 2m', () => {
  const PORT = 23301;
  let bare: Hm;
  const get = (host: string) => rawRequest(PORT, `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`, { timeoutMs: 10_000 });
  const rssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);

  beforeAll(async () => {
    bare = new Hm(['proxy', URI, '--listen', `127.0.0.1:${PORT}`, '--api', 'off', '--max-connections-per-instance', '1', '--body-timeout', '5000', '--max-body-size', '2m', '--log-level', 'warn'], { TMPDIR: '/nonexistent-hm-tmp' });
    await waitFor('proxy listening', async () => (await rawRequest(PORT, 'GET / HTTP/1.1\r\nHost: none.test\r\nConnection: close\r\n\r\n', { timeoutMs: 500 })).status === 404, 20_000, 100);
  });
  afterAll(async () => {
    await bare?.stop('SIGKILL');
  });

  it('says so once at start, streams a 200 kB upload, and gives a slow reader 40 MB at its pace with memory bounded', async () => {
    const inst = await instance('bare');
    await register('bare', inst.port, 'buf:bare-1');
    await waitFor('routed', async () => (await get('bare.buf.test')).status === 200, 10_000, 50);
    expect(bare.logs.filter((l) => l.event === 'temp-files-failed')).toHaveLength(1);
    const body = 'u'.repeat(200_000);
    const post = await rawRequest(PORT, `POST / HTTP/1.1\r\nHost: bare.buf.test\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`, { timeoutMs: 10_000 });
    expect(post).toMatchObject({ status: 200, body: 'bare:200000' });
    const pid = bare.pid;
    const before = rssKb(pid);
    const size = 40_000_000;
    const reader = openClientTo(PORT, `GET /big/${size} HTTP/1.1\r\nHost: bare.buf.test\r\nConnection: close\r\n\r\n`);
    reader.socket.pause();
    await sleep(1_500);
    const whilePaused = rssKb(pid);
    reader.socket.resume();
    await waitFor('reader has it all', () => reader.closed, 30_000, 20);
    const raw = reader.data;
    const got = raw.length - (raw.indexOf('\r\n\r\n') + 4);
    console.log(`PROBE TMPDIR missing: 200 kB POST → ${post.status}; a client leaving GET /big/${size} unread for 1.5 s: proxy RSS ${Math.round(before / 1024)} → ${Math.round(whilePaused / 1024)} MB, the instance done after: ${inst.bigDone === 1}; the reader then got ${got} bytes`);
    expect(got).toBe(size);
    // The instance is paused instead: far less than the 40 MB waits in the proxy.
    expect(whilePaused - before).toBeLessThan(24 * 1024);
  });

  it('answers 413 to a body announced or trickled past 2m (a streamed body holds the instance\'s one connection meanwhile), and serves the next request', async () => {
    const announced = await rawRequest(PORT, `POST / HTTP/1.1\r\nHost: bare.buf.test\r\nContent-Length: ${3 * 1024 * 1024}\r\nConnection: close\r\n\r\n`, { timeoutMs: 10_000 });
    expect(announced.status).toBe(413);
    const c = openClientTo(PORT, 'POST / HTTP/1.1\r\nHost: bare.buf.test\r\nTransfer-Encoding: chunked\r\n\r\n');
    const piece = `${(256 * 1024).toString(16)}\r\n${'t'.repeat(256 * 1024)}\r\n`;
    const t0 = Date.now();
    let sent = 0;
    while (!c.closed && sent < 4 * 1024 * 1024 && Date.now() - t0 < 10_000) {
      c.socket.write(piece);
      sent += 256 * 1024;
      await sleep(50);
    }
    await waitFor('the connection closes', () => c.closed || c.data.length > 0, 5_000, 20);
    const status = c.data.toString('latin1').split('\r\n')[0];
    console.log(`PROBE --max-body-size 2m: announced 3 MiB → ${announced.status}; chunked upload trickled 256 KiB every 50 ms → "${status}" after ${sent} bytes sent`);
    expect(status).toMatch(/^HTTP\/1\.1 413/);
    expect(sent).toBeLessThanOrEqual(3 * 1024 * 1024);
    expect(await get('bare.buf.test')).toMatchObject({ status: 200, body: 'bare' });
  });
});

/** A raw client socket to `port` with the request head written; collects what comes back. */
function openClientTo(port: number, head: string) {
  const c = { socket: net.connect(port, '127.0.0.1'), data: Buffer.alloc(0), closed: false };
  c.socket.on('data', (d: Buffer) => (c.data = Buffer.concat([c.data, d])));
  c.socket.on('close', () => (c.closed = true));
  c.socket.on('error', () => undefined);
  c.socket.write(head);
  return c;
}

describe('a streamed body past --max-body-size while its request waits for a connection', () => {
  it('is answered 413 at once, and the process lives on (temp budget 100k spent, limit 150k, 1 connection per instance)', async () => {
    const PORT = 23302;
    const p = new Hm(['proxy', URI, '--listen', `127.0.0.1:${PORT}`, '--api', 'off', '--max-connections-per-instance', '1', '--max-temp-size', '100k', '--max-body-size', '150k', '--log-level', 'warn']);
    try {
      await waitFor('proxy listening', async () => (await rawRequest(PORT, 'GET / HTTP/1.1\r\nHost: none.test\r\nConnection: close\r\n\r\n', { timeoutMs: 500 })).status === 404, 20_000, 100);
      const server = http.createServer((req, res) => {
        if (req.url === '/hold') return void setTimeout(() => res.end('held'), 3_000);
        let n = 0;
        req.on('data', (d: Buffer) => (n += d.length));
        req.on('end', () => res.end(`got ${n}`));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      closers.push(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
      await register('queued', (server.address() as AddressInfo).port, 'buf:queued-1');
      await waitFor('routed', async () => (await rawRequest(PORT, 'GET / HTTP/1.1\r\nHost: queued.buf.test\r\nConnection: close\r\n\r\n', { timeoutMs: 2_000 })).status === 200, 10_000, 50);
      // The instance's one connection is held for 3 s.
      const holder = openClientTo(PORT, 'GET /hold HTTP/1.1\r\nHost: queued.buf.test\r\nConnection: close\r\n\r\n');
      await sleep(200);
      const up = openClientTo(PORT, 'POST / HTTP/1.1\r\nHost: queued.buf.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n');
      const piece = `${(16 * 1024).toString(16)}\r\n${'t'.repeat(16 * 1024)}\r\n`;
      const t0 = Date.now();
      for (let i = 0; i < 20 && !up.closed && up.data.length === 0; i++) {
        up.socket.write(piece);
        await sleep(20);
      }
      await waitFor('413', () => up.data.length > 0, 2_500, 10);
      const ms = Date.now() - t0;
      await waitFor('the held GET answered', () => holder.closed, 6_000, 20);
      console.log(`PROBE streamed body past the limit while queued: "${up.data.toString('latin1').split('\r\n')[0]}" after ${ms} ms (the connection was held 3 s); held GET → "${holder.data.toString('latin1').split('\r\n')[0]}"`);
      expect(up.data.toString('latin1')).toMatch(/^HTTP\/1\.1 413/);
      expect(ms).toBeLessThan(2_500);
      expect(holder.data.toString('latin1')).toMatch(/^HTTP\/1\.1 200[\s\S]*held$/);
      expect(p.stderr.join('')).not.toMatch(/uncaught|HM_BODY_TOO_LARGE/i);
      expect((await rawRequest(PORT, 'GET / HTTP/1.1\r\nHost: queued.buf.test\r\nConnection: close\r\n\r\n', { timeoutMs: 2_000 })).status).toBe(200);
    } finally {
      await p.stop('SIGKILL');
    }
  });
});
