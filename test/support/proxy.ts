// Real loopback servers and clients for the proxy tests: small HTTP backends that identify
// themselves, a WebSocket echo server (RFC 6455 handshake and framing), a Host-aware HTTP client
// and a bounded keep-alive load generator.
import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';

export interface Backend {
  name: string;
  port: number;
  /** Requests received. */
  hits: number;
  /** Requests whose client went away before the answer. */
  aborted: number;
  /** Behaviour switch for tests: an HTTP status for /healthz. */
  health: number;
  close(): Promise<void>;
}

/**
 * An HTTP server that answers its name. Paths: /slow/<ms> answers after a delay; /headers
 * answers the request headers as JSON; /echo answers `<name>:<bytes of the body>`; /big/<n>
 * answers n bytes; /reset
 * destroys the connection without answering; /healthz answers `health`.
 */
export async function startBackend(name: string, opts: { ws?: boolean } = {}): Promise<Backend> {
  const b: Backend = { name, port: 0, hits: 0, aborted: 0, health: 200, close: async () => undefined };
  const server = http.createServer((req, res) => {
    b.hits++;
    const url = req.url ?? '/';
    if (url === '/reset') {
      req.socket.destroy();
      return;
    }
    if (url === '/healthz') {
      res.writeHead(b.health, { 'content-type': 'text/plain' });
      return res.end(`${b.health}`);
    }
    if (url === '/headers') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify(req.headers));
    }
    const big = /^\/big\/(\d+)/.exec(url);
    if (big) {
      // Written in 64 KiB pieces, honouring backpressure: the proxy has to pause and resume.
      let left = Number(big[1]);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': left });
      const piece = Buffer.alloc(65_536, 120);
      const pump = () => {
        while (left > 0) {
          const n = Math.min(left, piece.length);
          left -= n;
          if (!res.write(n === piece.length ? piece : piece.subarray(0, n))) return void res.once('drain', pump);
        }
        res.end();
      };
      return pump();
    }
    const slow = /^\/slow\/(\d+)/.exec(url);
    if (slow) {
      const timer = setTimeout(() => res.end(name), Number(slow[1]));
      res.once('close', () => {
        if (!res.writableFinished) {
          b.aborted++;
          clearTimeout(timer);
        }
      });
      return;
    }
    if (url.startsWith('/echo')) {
      let n = 0;
      req.on('data', (d: Buffer) => (n += d.length));
      req.on('end', () => res.end(`${name}:${n}`));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'x-backend': name });
    res.end(name);
  });
  if (opts.ws) server.on('upgrade', (req, socket: Duplex) => wsEcho(req, socket, name));
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  b.port = (server.address() as AddressInfo).port;
  b.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return b;
}

/** A port nothing listens on (bound, then released). */
export async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** Server side of RFC 6455: the handshake, then every data frame is sent back unmasked, prefixed by the server name. */
function wsEcho(req: http.IncomingMessage, socket: Duplex, name: string): void {
  const key = req.headers['sec-websocket-key'];
  if (typeof key !== 'string' || req.headers.upgrade?.toLowerCase() !== 'websocket') {
    socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    return;
  }
  const accept = createHash('sha1').update(key + WS_GUID).digest('base64');
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  let buf = Buffer.alloc(0);
  socket.on('error', () => socket.destroy());
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      if (buf.length < 2) return;
      const opcode = buf[0] & 0x0f;
      const masked = (buf[1] & 0x80) !== 0;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      const maskOff = off;
      if (masked) off += 4;
      if (buf.length < off + len) return;
      const payload = Buffer.from(buf.subarray(off, off + len));
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= buf[maskOff + (i % 4)];
      buf = buf.subarray(off + len);
      if (opcode === 0x8) {
        socket.end(frame(0x8, payload.subarray(0, 2)));
        return;
      }
      if (opcode === 0x9) socket.write(frame(0xa, payload));
      else if (opcode === 0x1 || opcode === 0x2) socket.write(frame(opcode, opcode === 0x1 ? Buffer.from(`${name}: ${payload.toString()}`) : payload));
    }
  });
}

function frame(opcode: number, payload: Buffer): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : n < 65536 ? Buffer.from([0x80 | opcode, 126, n >> 8, n & 0xff]) : Buffer.concat([Buffer.from([0x80 | opcode, 127]), bigLen(n)]);
  return Buffer.concat([head, payload]);
}

function bigLen(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

export interface Answer {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

/** One request to 127.0.0.1:port with the given Host header. */
export function get(port: number, host: string, path = '/', o: { method?: string; body?: string; agent?: http.Agent; headers?: http.OutgoingHttpHeaders; timeoutMs?: number } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: o.method ?? 'GET', agent: o.agent ?? false, headers: { host, ...o.headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }));
      res.on('error', reject);
    });
    req.setTimeout(o.timeoutMs ?? 15_000, () => req.destroy(new Error(`request ${host}${path} timed out`)));
    req.on('error', reject);
    req.end(o.body);
  });
}

/**
 * `concurrency` keep-alive clients sending GETs back to back until stop() or `maxMs`: every
 * answer is tallied by status and body, every failure (error or non-200) is kept.
 */
export class Load {
  readonly bodies = new Map<string, number>();
  readonly failures: string[] = [];
  ok = 0;
  private stopped = false;
  private readonly agent: http.Agent;
  private readonly workers: Promise<void>[] = [];

  constructor(
    private readonly port: number,
    private readonly host: string,
    private readonly path = '/',
    private readonly concurrency = 4,
    private readonly maxMs = 30_000,
  ) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  }

  get total(): number {
    return this.ok + this.failures.length;
  }

  start(): this {
    const deadline = Date.now() + this.maxMs;
    for (let i = 0; i < this.concurrency; i++) {
      this.workers.push(
        (async () => {
          while (!this.stopped && Date.now() < deadline) {
            try {
              // Slow is not lost: on 2 shared cores a busybox instance can take seconds; an instance
              // that never answers still fails here (the proxies' own response timeouts are longer).
              const a = await get(this.port, this.host, this.path, { agent: this.agent, timeoutMs: 30_000 });
              if (a.status === 200) {
                this.ok++;
                this.bodies.set(a.body, (this.bodies.get(a.body) ?? 0) + 1);
              } else this.failures.push(`${a.status} ${a.body.trim()}`);
            } catch (err) {
              this.failures.push((err as Error).message);
            }
          }
        })(),
      );
    }
    return this;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.workers);
    this.agent.destroy();
  }
}

/** Resolves once the load has made `n` more requests (bounded by `timeoutMs`). */
export async function afterRequests(load: Load, n: number, timeoutMs = 20_000): Promise<void> {
  const target = load.total + n;
  const deadline = Date.now() + timeoutMs;
  while (load.total < target) {
    if (Date.now() > deadline) throw new Error(`load made ${load.total} requests, expected ${target} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
