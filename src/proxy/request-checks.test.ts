import type http from 'node:http';
import { describe, expect, it } from 'vitest';
import { headWithoutUpgrade, isWebSocketUpgrade, refusedRequest } from './request-checks.js';

/** The parts of an IncomingMessage the checks read, from raw header pairs as Node gives them. */
function req(method: string, url: string, version: string, raw: string[]): http.IncomingMessage {
  const headers: Record<string, string> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i].toLowerCase();
    headers[k] = k in headers && k !== 'host' ? `${headers[k]}, ${raw[i + 1]}` : (headers[k] ?? raw[i + 1]);
  }
  const [major, minor] = version.split('.').map(Number);
  return { method, url, httpVersion: version, httpVersionMajor: major, httpVersionMinor: minor, rawHeaders: raw, headers } as unknown as http.IncomingMessage;
}

describe('refusedRequest', () => {
  it('passes an ordinary request', () => {
    expect(refusedRequest(req('POST', '/x', '1.1', ['Host', 'a', 'Transfer-Encoding', 'Chunked']))).toBeUndefined();
  });

  it('refuses a second Host header, whatever its case', () => {
    expect(refusedRequest(req('GET', '/', '1.1', ['Host', 'a', 'HOST', 'b']))).toEqual({ status: 400, message: 'bad request: more than one Host header' });
  });

  it('refuses codings other than one chunked with 501, and Transfer-Encoding in HTTP/1.0 or with Content-Length with 400', () => {
    expect(refusedRequest(req('POST', '/', '1.1', ['Host', 'a', 'Transfer-Encoding', 'gzip, chunked']))?.status).toBe(501);
    expect(refusedRequest(req('POST', '/', '1.1', ['Host', 'a', 'Transfer-Encoding', 'gzip', 'Transfer-Encoding', 'chunked']))?.status).toBe(501);
    expect(refusedRequest(req('POST', '/', '1.1', ['Host', 'a', 'Transfer-Encoding', 'chunked, chunked']))?.status).toBe(501);
    expect(refusedRequest(req('POST', '/', '1.1', ['Host', 'a', 'Transfer-Encoding', 'identity']))?.status).toBe(501);
    expect(refusedRequest(req('POST', '/', '1.0', ['Host', 'a', 'Transfer-Encoding', 'chunked']))?.status).toBe(400);
    expect(refusedRequest(req('POST', '/', '1.1', ['Host', 'a', 'Transfer-Encoding', 'chunked', 'Content-Length', '3']))?.status).toBe(400);
  });

  it('answers TRACE itself with 405', () => {
    expect(refusedRequest(req('TRACE', '/', '1.1', ['Host', 'a']))).toEqual({ status: 405, message: 'method not allowed: TRACE' });
  });

  it('refuses a request whose header lines reach a header count cap (later ones would be unseen)', () => {
    const raw = ['Host', 'a', ...Array.from({ length: 9 }, (_, i) => [`a${i}`, '']).flat()];
    expect(refusedRequest(req('GET', '/', '1.1', raw), 10)?.status).toBe(431);
    expect(refusedRequest(req('GET', '/', '1.1', raw), 11)).toBeUndefined();
    expect(refusedRequest(req('GET', '/', '1.1', raw), 0)).toBeUndefined();
  });

  it('answers 505 for a major version other than 1', () => {
    expect(refusedRequest(req('GET', '/', '2.0', ['Host', 'a']))).toEqual({ status: 505, message: 'version not supported: HTTP/2.0' });
  });
});

describe('isWebSocketUpgrade', () => {
  it('is a GET over HTTP/1.1 asking for websocket, without a body', () => {
    expect(isWebSocketUpgrade(req('GET', '/', '1.1', ['Upgrade', ' WebSocket ']))).toBe(true);
    expect(isWebSocketUpgrade(req('GET', '/', '1.1', ['Upgrade', 'h2c']))).toBe(false);
    expect(isWebSocketUpgrade(req('POST', '/', '1.1', ['Upgrade', 'websocket']))).toBe(false);
    expect(isWebSocketUpgrade(req('GET', '/', '1.0', ['Upgrade', 'websocket']))).toBe(false);
    expect(isWebSocketUpgrade(req('GET', '/', '1.1', ['Upgrade', 'websocket', 'Content-Length', '5']))).toBe(false);
    expect(isWebSocketUpgrade(req('GET', '/', '1.1', ['Upgrade', 'websocket, h2c']))).toBe(false);
  });
});

describe('headWithoutUpgrade', () => {
  it('rebuilds the head without Upgrade and without the upgrade token, bytes as received', () => {
    const r = req('POST', '/a%20b?x', '1.1', ['Host', 'a.test', 'Connection', 'Upgrade, HTTP2-Settings', 'Upgrade', 'h2c', 'X-Latin', 'caf\u00e9', 'Content-Length', '2']);
    const head = headWithoutUpgrade(r);
    expect(head.toString('latin1')).toBe('POST /a%20b?x HTTP/1.1\r\nHost: a.test\r\nConnection: HTTP2-Settings\r\nX-Latin: caf\u00e9\r\nContent-Length: 2\r\n\r\n');
    expect(head.includes(Buffer.from([0xe9]))).toBe(true);
    expect(headWithoutUpgrade(req('GET', '/', '1.1', ['Host', 'a', 'Connection', 'upgrade', 'Upgrade', 'x'])).toString()).toBe('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
  });
});
