import { describe, expect, it } from 'vitest';
import { clientAddress, stripResponseHeaders, upstreamRequestHeaders } from './headers.js';

describe('upstreamRequestHeaders', () => {
  it('keeps end-to-end headers and Host, drops hop-by-hop ones', () => {
    const h = upstreamRequestHeaders(
      {
        host: 'web.localhost:8080',
        accept: 'text/plain',
        cookie: 'a=1',
        connection: 'keep-alive, X-Secret',
        'keep-alive': 'timeout=5',
        'x-secret': 'drop me',
        te: 'trailers',
        trailer: 'x',
        'transfer-encoding': 'chunked',
        upgrade: 'h2c',
        'proxy-authorization': 'Basic eA==',
        'proxy-connection': 'keep-alive',
        expect: '100-continue',
      },
      '127.0.0.1',
    );
    expect(h).toEqual({
      host: 'web.localhost:8080',
      accept: 'text/plain',
      cookie: 'a=1',
      'x-forwarded-for': '127.0.0.1',
      'x-forwarded-proto': 'http',
      'x-forwarded-host': 'web.localhost:8080',
    });
  });

  it('appends the client to X-Forwarded-For and replaces the client-supplied Proto and Host', () => {
    const h = upstreamRequestHeaders({ host: 'a.test', 'x-forwarded-for': '10.0.0.1', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil.test' }, '::ffff:127.0.0.1');
    expect(h['x-forwarded-for']).toBe('10.0.0.1, 127.0.0.1');
    expect(h['x-forwarded-proto']).toBe('http');
    expect(h['x-forwarded-host']).toBe('a.test');
  });

  it('passes Connection: upgrade and Upgrade on for an upgrade request', () => {
    const h = upstreamRequestHeaders({ host: 'a.test', connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'k' }, '127.0.0.1', true);
    expect(h).toMatchObject({ connection: 'upgrade', upgrade: 'websocket', 'sec-websocket-key': 'k' });
  });

  it('keeps repeated headers as they came', () => {
    const h = upstreamRequestHeaders({ host: 'a.test', 'set-cookie': ['a=1', 'b=2'] }, '127.0.0.1');
    expect(h['set-cookie']).toEqual(['a=1', 'b=2']);
  });
});

describe('stripResponseHeaders', () => {
  it('drops hop-by-hop headers and those the Connection header names', () => {
    const h = stripResponseHeaders({
      'content-type': 'text/plain',
      'content-length': '3',
      connection: 'keep-alive, x-internal',
      'keep-alive': 'timeout=5',
      'x-internal': '1',
      'transfer-encoding': 'chunked',
      'set-cookie': ['a=1', 'b=2'],
    });
    expect(h).toEqual({ 'content-type': 'text/plain', 'content-length': '3', 'set-cookie': ['a=1', 'b=2'] });
  });
});

describe('clientAddress', () => {
  it('unwraps IPv4-mapped addresses', () => {
    expect(clientAddress('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(clientAddress('::1')).toBe('::1');
    expect(clientAddress(undefined)).toBe('unknown');
  });
});
