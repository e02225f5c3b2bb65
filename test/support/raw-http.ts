// HTTP/1.1 over raw sockets, so that malformed, duplicated and odd requests reach the server as
// written; and a loopback backend that records every request (and upgrade) it receives.
import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';

export interface RawAnswer {
  /** 0 when the server closed (or the time ran out) before a whole response head. */
  status: number;
  headers: Record<string, string>;
  body: string;
  /** Everything received, as latin1. */
  raw: string;
  /** How the exchange ended: a complete response, the server closing, or our timeout. */
  end: 'response' | 'closed' | 'timeout';
}

/**
 * Parses one response from bytes received so far: undefined until it is complete. A response
 * to HEAD, a 1xx other than 101, 204 and 304 have no body; 101 ends at its head.
 */
function parseResponse(buf: Buffer, method: string, closed = false): { status: number; headers: Record<string, string>; body: string; rest: Buffer } | undefined {
  let start = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', start);
    if (end < 0) return undefined;
    const head = buf.subarray(start, end).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0])?.[1] ?? 0);
    const headers: Record<string, string> = {};
    for (const line of head.slice(1)) {
      const colon = line.indexOf(':');
      if (colon > 0) {
        const k = line.slice(0, colon).trim().toLowerCase();
        const v = line.slice(colon + 1).trim();
        headers[k] = k in headers ? `${headers[k]}, ${v}` : v;
      }
    }
    const bodyStart = end + 4;
    if (status >= 100 && status < 200 && status !== 101) {
      start = bodyStart;
      continue;
    }
    if (status === 101 || method === 'HEAD' || status === 204 || status === 304) return { status, headers, body: '', rest: buf.subarray(bodyStart) };
    if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (buf.length - bodyStart < n) return undefined;
      return { status, headers, body: buf.subarray(bodyStart, bodyStart + n).toString('latin1'), rest: buf.subarray(bodyStart + n) };
    }
    if (headers['transfer-encoding']?.toLowerCase() === 'chunked') {
      let pos = bodyStart;
      let body = '';
      for (;;) {
        const nl = buf.indexOf('\r\n', pos);
        if (nl < 0) return undefined;
        const size = parseInt(buf.subarray(pos, nl).toString('latin1'), 16);
        if (size === 0) {
          const fin = buf.indexOf('\r\n\r\n', nl);
          return fin < 0 ? undefined : { status, headers, body, rest: buf.subarray(fin + 4) };
        }
        if (buf.length < nl + 2 + size + 2) return undefined;
        body += buf.subarray(nl + 2, nl + 2 + size).toString('latin1');
        pos = nl + 2 + size + 2;
      }
    }
    // Delimited by the end of the connection.
    return closed ? { status, headers, body: buf.subarray(bodyStart).toString('latin1'), rest: Buffer.alloc(0) } : undefined;
  }
}

/**
 * Writes `request` (latin1) to 127.0.0.1:port — in pieces with `pauseMs` between them when given
 * several — and resolves with the first response (or what came before a close or the timeout);
 * with `untilClose`, once the server has closed (`raw` then holds every response).
 */
export function rawRequest(port: number, request: string | string[], o: { method?: string; timeoutMs?: number; pauseMs?: number; keepOpen?: boolean; untilClose?: boolean } = {}): Promise<RawAnswer & { socket?: net.Socket }> {
  const method = o.method ?? (typeof request === 'string' ? request : request[0]).split(' ', 1)[0];
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let done = false;
    let closed = false;
    const finish = (end: RawAnswer['end']) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const r = parseResponse(buf, method, closed);
      const answer: RawAnswer = r ? { status: r.status, headers: r.headers, body: r.body, raw: buf.toString('latin1'), end } : { status: 0, headers: {}, body: '', raw: buf.toString('latin1'), end };
      if (o.keepOpen && end === 'response') resolve({ ...answer, socket: s });
      else {
        s.destroy();
        resolve(answer);
      }
    };
    const timer = setTimeout(() => finish('timeout'), o.timeoutMs ?? 5_000);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!o.untilClose && parseResponse(buf, method)) finish('response');
    });
    s.on('close', () => {
      closed = true;
      finish(parseResponse(buf, method, true) ? 'response' : 'closed');
    });
    s.on('error', () => undefined);
    const pieces = typeof request === 'string' ? [request] : request;
    let i = 0;
    const next = () => {
      if (done || s.destroyed) return;
      s.write(Buffer.from(pieces[i++], 'latin1'));
      if (i < pieces.length) setTimeout(next, o.pauseMs ?? 0);
    };
    s.once('connect', next);
  });
}

/** Sends another request on a socket kept open by rawRequest and resolves with its response. */
export function nextRequest(s: net.Socket, request: string, timeoutMs = 5_000): Promise<RawAnswer> {
  const method = request.split(' ', 1)[0];
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    let closed = false;
    const finish = (end: RawAnswer['end']) => {
      clearTimeout(timer);
      s.off('data', onData);
      const r = parseResponse(buf, method, closed);
      resolve(r ? { status: r.status, headers: r.headers, body: r.body, raw: buf.toString('latin1'), end } : { status: 0, headers: {}, body: '', raw: buf.toString('latin1'), end });
    };
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (parseResponse(buf, method)) finish('response');
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    s.on('data', onData);
    s.once('close', () => {
      closed = true;
      finish(parseResponse(buf, method, true) ? 'response' : 'closed');
    });
    s.write(Buffer.from(request, 'latin1'));
  });
}

export interface Received {
  backend: string;
  method: string;
  /** The request target as the backend's parser got it. */
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  bodyBytes: number;
  upgrade: boolean;
}

export interface RecordingBackend {
  name: string;
  port: number;
  received: Received[];
  close(): Promise<void>;
}

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/**
 * An HTTP server that records every request and answers 200 `<name> <url>` with an
 * `x-backend` header; an upgrade is recorded too and answered 101 (a WebSocket handshake when it
 * asks for one), then closed.
 */
export async function recordingBackend(name: string, port: number): Promise<RecordingBackend> {
  const received: Received[] = [];
  const server = http.createServer((req, res) => {
    let n = 0;
    req.on('data', (d: Buffer) => (n += d.length));
    req.on('end', () => {
      received.push({ backend: name, method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, bodyBytes: n, upgrade: false });
      res.writeHead(200, { 'content-type': 'text/plain', 'x-backend': name });
      res.end(`${name} ${req.url}`);
    });
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex) => {
    received.push({ backend: name, method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, bodyBytes: 0, upgrade: true });
    socket.on('error', () => socket.destroy());
    const key = req.headers['sec-websocket-key'];
    const accept = typeof key === 'string' ? `Sec-WebSocket-Accept: ${createHash('sha1').update(key + WS_GUID).digest('base64')}\r\n` : '';
    socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${req.headers.upgrade}\r\nConnection: Upgrade\r\nx-backend: ${name}\r\n${accept}\r\n`);
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    name,
    port,
    received,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
