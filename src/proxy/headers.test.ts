import { describe, expect, it } from 'vitest';
import { CLAIM_HEADERS, clientAddress, forwardedAddress, stripResponseHeaders, upstreamRequestHeaders } from './headers.js';

const UNTRUSTED = { trusted: false, port: 8080 };
const TRUSTED = { trusted: true, port: 8080 };

describe('upstreamRequestHeaders', () => {
  it('keeps end-to-end headers and Host, drops hop-by-hop ones, sets the forwarding headers', () => {
    const h = upstreamRequestHeaders(
      {
        host: 'web.localhost:8080',
        accept: 'text/plain',
        cookie: 'a=1',
        connection: 'keep-alive, X-Secret',
        'keep-alive': 'timeout=5',
        'x-secret': 'drop me',
        te: 'gzip',
        trailer: 'x',
        'transfer-encoding': 'chunked',
        upgrade: 'h2c',
        'proxy-authorization': 'Basic eA==',
        'proxy-connection': 'keep-alive',
        expect: '100-continue',
      },
      '127.0.0.1',
      UNTRUSTED,
    );
    expect(h).toEqual({
      host: 'web.localhost:8080',
      accept: 'text/plain',
      cookie: 'a=1',
      'x-forwarded-for': '127.0.0.1',
      'x-forwarded-proto': 'http',
      'x-forwarded-host': 'web.localhost:8080',
      'x-forwarded-port': '8080',
      'x-real-ip': '127.0.0.1',
    });
  });

  it('replaces every forwarding header an untrusted client sent, and drops every name with an underscore (as nginx does)', () => {
    const h = upstreamRequestHeaders(
      {
        host: 'a.test',
        'x-forwarded-for': '10.0.0.1',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'evil.test',
        'x-forwarded-port': '443',
        'x-real-ip': '6.6.6.6',
        forwarded: 'for=6.6.6.6',
        x_forwarded_for: '7.7.7.7',
        'x_real-ip': '7.7.7.7',
        x_custom: 'dropped',
      },
      '::ffff:127.0.0.1',
      UNTRUSTED,
    );
    expect(h).toEqual({
      host: 'a.test',
      'x-forwarded-for': '127.0.0.1',
      'x-forwarded-proto': 'http',
      'x-forwarded-host': 'a.test',
      'x-forwarded-port': '8080',
      'x-real-ip': '127.0.0.1',
    });
  });

  it('keeps a trusted peer\'s forwarding headers, appending this hop to X-Forwarded-For and Forwarded', () => {
    const h = upstreamRequestHeaders(
      { host: 'a.test', 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'www.a.test', 'x-forwarded-port': '443', 'x-real-ip': '203.0.113.9', forwarded: 'for=203.0.113.9;proto=https' },
      '::1',
      TRUSTED,
    );
    expect(h).toMatchObject({
      'x-forwarded-for': '203.0.113.9, ::1',
      'x-forwarded-proto': 'https',
      'x-forwarded-host': 'www.a.test',
      'x-forwarded-port': '443',
      'x-real-ip': '203.0.113.9',
      forwarded: 'for=203.0.113.9;proto=https, for="[::1]";host=a.test;proto=http',
    });
    // A trusted peer that sent none gets this proxy's own values, and no Forwarded is invented.
    const bare = upstreamRequestHeaders({ host: 'a.test:81' }, '10.0.0.2', TRUSTED);
    expect(bare).toEqual({ host: 'a.test:81', 'x-forwarded-for': '10.0.0.2', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'a.test:81', 'x-forwarded-port': '8080', 'x-real-ip': '10.0.0.2' });
  });

  it('does not let Connection remove Host, Content-Length or the forwarding headers', () => {
    const h = upstreamRequestHeaders(
      { host: 'a.test', 'content-length': '3', 'x-forwarded-for': '10.0.0.1', connection: 'host, content-length, x-forwarded-for, x-real-ip, forwarded, x-other', 'x-other': '1' },
      '10.0.0.2',
      TRUSTED,
    );
    expect(h).toEqual({ host: 'a.test', 'content-length': '3', 'x-forwarded-for': '10.0.0.1, 10.0.0.2', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'a.test', 'x-forwarded-port': '8080', 'x-real-ip': '10.0.0.1' });
  });

  it('drops every X-Forwarded-* and named claim from an untrusted client, the names the templates list included', () => {
    const sent: Record<string, string> = { host: 'a.test', 'x-forwarded-anything': '1' };
    for (const name of CLAIM_HEADERS) sent[name.toLowerCase()] = 'claimed';
    const h = upstreamRequestHeaders(sent, '127.0.0.1', UNTRUSTED);
    expect(Object.keys(h).sort()).toEqual(['host', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-port', 'x-forwarded-proto', 'x-real-ip']);
  });

  it('drops URL overrides and Proxy always, other client claims unless the peer is trusted', () => {
    const sent = {
      host: 'a.test',
      'x-original-url': '/admin',
      'x-rewrite-url': '/admin',
      proxy: 'http://evil.test',
      'proxy-foo': '1',
      x_original_url: '/admin',
      'x-forwarded-prefix': '/evil',
      'x-forwarded-scheme': 'https',
      'x-forwarded-ssl': 'on',
      'x-forwarded-server': 'evil',
      'x-forwarded-protocol': 'https',
      x_forwarded_prefix: '/evil',
      'front-end-https': 'on',
      'x-url-scheme': 'https',
      'true-client-ip': '6.6.6.6',
      'x-client-ip': '6.6.6.6',
      'client-ip': '6.6.6.6',
      'x-cluster-client-ip': '6.6.6.6',
      'x-kept': '1',
    };
    const untrusted = upstreamRequestHeaders(sent, '127.0.0.1', UNTRUSTED);
    expect(Object.keys(untrusted).sort()).toEqual(['host', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-port', 'x-forwarded-proto', 'x-kept', 'x-real-ip']);
    const trusted = upstreamRequestHeaders(sent, '127.0.0.1', TRUSTED);
    for (const gone of ['x-original-url', 'x-rewrite-url', 'proxy', 'proxy-foo', 'x_original_url']) expect(trusted[gone], gone).toBeUndefined();
    expect(trusted).toMatchObject({ 'x-forwarded-prefix': '/evil', 'true-client-ip': '6.6.6.6', 'x-kept': '1' });
  });

  it('never takes a trusted peer\'s X-Real-IP: walks X-Forwarded-For through trusted proxies as nginx realip_recursive does', () => {
    const isTrusted = (a: string) => a.startsWith('10.');
    const fwd = { ...TRUSTED, isTrusted };
    const real = (xff: string | string[] | undefined, extra: Record<string, string> = {}) => upstreamRequestHeaders({ ...(xff === undefined ? {} : { 'x-forwarded-for': xff }), ...extra }, '10.0.0.9', fwd)['x-real-ip'];
    expect(real('1.1.1.1, 2.2.2.2, 10.0.0.5')).toBe('2.2.2.2');
    expect(real('10.0.0.4, 10.0.0.5')).toBe('10.0.0.4');
    // An entry that is not an address stops the walk at the last trusted address found.
    expect(real('junk, 10.0.0.5')).toBe('10.0.0.5');
    expect(real('1.1.1.1, junk')).toBe('10.0.0.9');
    // Ports, brackets, blanks and empty entries as nginx's parser takes them.
    expect(real('1.2.3.4:55, , 10.0.0.2')).toBe('1.2.3.4');
    expect(real('9.9.9.9, [::1]:80')).toBe('::1');
    expect(real('0:0::1')).toBe('::1');
    expect(real(['1.2.3.4', '10.0.0.3, 10.0.0.4:9'])).toBe('1.2.3.4');
    expect(real('1.2.3.4:0')).toBe('10.0.0.9');
    expect(real(undefined, { 'x-real-ip': '3.3.3.3' })).toBe('10.0.0.9');
    expect(real('2.2.2.2', { 'x-real-ip': '3.3.3.3' })).toBe('2.2.2.2');
    const listed = upstreamRequestHeaders({ host: 'a.test', 'x-forwarded-host': 'x.test, y.test', 'x-forwarded-proto': ['https', 'http'], 'x-forwarded-port': '1, 2' }, '10.0.0.9', fwd);
    expect(listed).toMatchObject({ 'x-forwarded-host': 'a.test', 'x-forwarded-proto': 'http', 'x-forwarded-port': '8080' });
  });

  it('sends the authority of an absolute-form target as Host', () => {
    const h = upstreamRequestHeaders({ host: 'other.test' }, '127.0.0.1', { ...UNTRUSTED, host: 'a.test:8080' });
    expect(h).toMatchObject({ host: 'a.test:8080', 'x-forwarded-host': 'a.test:8080' });
  });

  it('passes Connection: upgrade and Upgrade on for an upgrade request', () => {
    const h = upstreamRequestHeaders({ host: 'a.test', connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'k' }, '127.0.0.1', UNTRUSTED, true);
    expect(h).toMatchObject({ connection: 'upgrade', upgrade: 'websocket', 'sec-websocket-key': 'k' });
  });

  it('keeps repeated headers as they came', () => {
    const h = upstreamRequestHeaders({ host: 'a.test', 'set-cookie': ['a=1', 'b=2'] }, '127.0.0.1', UNTRUSTED);
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

describe('TE towards the instance', () => {
  it('passes only the trailers token of a client\'s TE', () => {
    const fwd = UNTRUSTED;
    expect(upstreamRequestHeaders({ te: 'gzip, trailers' }, '127.0.0.1', fwd).te).toBe('trailers');
    expect(upstreamRequestHeaders({ te: 'gzip;q=0.5' }, '127.0.0.1', fwd).te).toBeUndefined();
    expect(upstreamRequestHeaders({}, '127.0.0.1', fwd).te).toBeUndefined();
  });
});

describe('forwardedAddress (X-Forwarded-For entries as nginx reads them)', () => {
  it('reads leading zeros as decimal, keeps IPv4-mapped and -compatible addresses dotted, and brackets only with a port', () => {
    const cases: Array<[string, string | undefined]> = [
      ['010.0.0.1', '10.0.0.1'],
      ['0198.051.100.007:80', '198.51.100.7'],
      ['10.0.0.08', '10.0.0.8'],
      ['10.0.0.256', undefined],
      ['10.0.1', undefined],
      ['::ffff:10.0.0.1', '::ffff:10.0.0.1'],
      ['::FFFF:a00:1', '::ffff:10.0.0.1'],
      ['::198.51.100.12', '::198.51.100.12'],
      ['::1', '::1'],
      ['::', '::'],
      ['2001:DB8:0:0::1', '2001:db8::1'],
      ['[2001:db8::2]', undefined],
      ['[::ffff:198.51.100.11]:80', '::ffff:198.51.100.11'],
      ['junk', undefined],
    ];
    expect(cases.map(([e]) => forwardedAddress(e))).toEqual(cases.map(([, a]) => a));
  });
});
