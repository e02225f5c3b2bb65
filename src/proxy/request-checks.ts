// What the proxy refuses before routing, beyond what Node's parser already refuses (bad syntax,
// Transfer-Encoding with Content-Length, conflicting lengths: 400; headers too large: 431;
// headers too slow: 408). Answers follow nginx: framing another hop could read differently is
// not passed on.
import type http from 'node:http';

export interface Refusal {
  status: number;
  /** One line for the response body. */
  message: string;
}

/** A refusal for a request whose line and headers Node accepted, or undefined. */
export function refusedRequest(req: http.IncomingMessage, maxHeadersCount = 0): Refusal | undefined {
  if (req.httpVersionMajor !== 1) return { status: 505, message: `version not supported: HTTP/${req.httpVersion}` };
  const raw = req.rawHeaders;
  // At the parser's cap, headers past it were framed by Node but are not in rawHeaders: nothing
  // here could see them (the server lifts the cap; this is for a parser that kept one).
  if (maxHeadersCount > 0 && raw.length >= 2 * maxHeadersCount) return { status: 431, message: `request header fields too large: ${maxHeadersCount} or more header lines` };
  // nginx answers TRACE itself; an instance echoing it would reflect whatever the client sent.
  if (req.method === 'TRACE') return { status: 405, message: 'method not allowed: TRACE' };
  // Node keeps the first of several Host headers; the next hop might take another one.
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name.length === 4 && name.toLowerCase() === 'host' && ++hosts > 1) return { status: 400, message: 'bad request: more than one Host header' };
  }
  const te = req.headers['transfer-encoding'];
  if (te !== undefined) {
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    if (req.httpVersionMinor === 0) return { status: 400, message: 'bad request: Transfer-Encoding in an HTTP/1.0 request' };
    // Node decodes only the chunked framing and would pass gzip (or a repeated chunked) on as if absent.
    if (te.trim().toLowerCase() !== 'chunked') return { status: 501, message: `not implemented: Transfer-Encoding "${te.slice(0, 60)}" (only chunked)` };
    if (req.headers['content-length'] !== undefined) return { status: 400, message: 'bad request: Transfer-Encoding together with Content-Length' };
  }
  return undefined;
}

/** The request announces a body (chunked, or a non-zero length). */
export function hasBody(req: http.IncomingMessage): boolean {
  const h = req.headers;
  return h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0');
}

/**
 * An upgrade the proxy tunnels: a WebSocket handshake (RFC 6455 §4.1: GET, HTTP/1.1, no body).
 * Any other Upgrade (h2c, or one on a request with a body) would open a raw tunnel to the
 * instance past every later request's routing, so it goes on as a plain request instead.
 */
export function isWebSocketUpgrade(req: http.IncomingMessage): boolean {
  return req.method === 'GET' && req.httpVersion === '1.1' && req.headers.upgrade?.trim().toLowerCase() === 'websocket' && !hasBody(req);
}

/**
 * The request head again, without the Upgrade header and without `upgrade` in Connection, for
 * Node's parser to read as a plain request. Header bytes are latin1 strings in Node, so they
 * round-trip.
 */
export function headWithoutUpgrade(req: http.IncomingMessage): Buffer {
  let head = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const lower = name.toLowerCase();
    if (lower === 'upgrade') continue;
    if (lower === 'connection') {
      const rest = raw[i + 1]
        .split(',')
        .map((t) => t.trim())
        .filter((t) => t && t.toLowerCase() !== 'upgrade');
      if (rest.length > 0) head += `${name}: ${rest.join(', ')}\r\n`;
      continue;
    }
    head += `${name}: ${raw[i + 1]}\r\n`;
  }
  return Buffer.from(`${head}\r\n`, 'latin1');
}
