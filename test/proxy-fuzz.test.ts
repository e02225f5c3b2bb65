// Property-based test of the built-in proxy as a child process (`harbormaster proxy` following the
// shared etcd): generated raw requests — dot segments and encodings, duplicate and odd headers,
// bodies, Transfer-Encoding / Content-Length combinations, absolute-form targets, upgrades — over
// TCP, with /api → instance A and / → instance B. Every request is either answered 4xx/5xx by
// the proxy or reaches exactly the instance whose prefix its decoded path matches, with the path
// as sent; nothing the path rule refuses reaches an instance; the process survives.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refusedPath } from '../src/catalog/path-rule.js';
import type { ServiceInstance } from '../src/model/service-instance.js';
import { createBackend } from '../src/registry/index.js';
import { Hm, runCli } from './support/harbormaster.js';
import { rawRequest, recordingBackend, type Received, type RecordingBackend } from './support/raw-http.js';
import { ETCD_ENDPOINT } from './support/registries.js';
import { uniq, waitFor } from './support/wait.js';

const PORTS = { proxy: 23150, a: 23160, b: 23161 };
const HOST = 'fuzz.test';
const URI = `etcd://${ETCD_ENDPOINT}/${uniq('hmfz')}`;
const RUNS = 2_000;

const INSTANCES: ServiceInstance[] = [
  { id: 'fz:api:1', name: 'fzapi', address: '127.0.0.1', port: PORTS.a, protocol: 'tcp', tags: [], meta: { http_host: HOST, http_path: '/api' }, host: 'fz', status: 'passing' },
  { id: 'fz:web:1', name: 'fzweb', address: '127.0.0.1', port: PORTS.b, protocol: 'tcp', tags: [], meta: { http_host: HOST }, host: 'fz', status: 'passing' },
];

let a: RecordingBackend;
let b: RecordingBackend;
let hm: Hm;
const writer = createBackend(URI, { ttl: 0 });

beforeAll(async () => {
  a = await recordingBackend('A', PORTS.a);
  b = await recordingBackend('B', PORTS.b);
  for (const i of INSTANCES) await writer.register(i);
  hm = new Hm(['proxy', URI, '--listen', `127.0.0.1:${PORTS.proxy}`, '--api', 'off', '--max-header-size', '12288', '--header-timeout', '1000', '--trusted-proxies', '10.0.0.0/8']);
  await hm.waitForLog('proxy listening', (l) => l.event === 'listen' && l.component === 'proxy');
  await waitFor('both routes', async () => {
    const [x, y] = await Promise.all([rawRequest(PORTS.proxy, plain('/api/ready')), rawRequest(PORTS.proxy, plain('/ready'))]);
    return x.headers['x-backend'] === 'A' && y.headers['x-backend'] === 'B';
  }, 20_000, 100);
});

afterAll(async () => {
  await hm?.stop('SIGKILL');
  for (const i of INSTANCES) await writer.deregister(i).catch(() => undefined);
  await writer.close();
  await a?.close();
  await b?.close();
});

function plain(path: string, extra: string[] = []): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\n${extra.map((h) => `${h}\r\n`).join('')}Connection: close\r\n\r\n`;
}

// ---- generators -------------------------------------------------------------------------

// Segments a path may hold: plain and encoded ones that route, and the ones the path rule refuses.
const ROUTED = ['api', 'api', 'x', 'admin', 'API', 'apix', '%61pi', '%41PI', 'ap%69', 'a%20b', '%25', '%2541', '%20x', 'x%0d', '~', '%7e', '@', ':', "a'b", '%C3%A9', '%E0%A0%80', '*', '+', 'a..b', '...', '.x', 'x.', '..%20x', '%3f', '%2525', '100%2525', '%252541'];
const REFUSED = ['.', '..', '..;', '..;x', '.;', '', '%2e', '%2E%2e', '.%2e', '%2f', '%2F', '%5c', '%5C', '%00', '%', '%4', '%zz', '\\', 'x#y', '#', ';', 'a;b', 'api;v=1', '%3B', '%3bx', '..%3b', '%c0%ae%c0%ae', '%C0%AF', '%e0%80%ae', '%f0%80%80%ae', '..%20', '.%09', '..%0d', '.%0a', '%20..', '%09%20.', '..%7f', '%c2%a0..', '%252e', '%252e%252e', '%252F', '%255c', '%25c0%25ae', '%25%32%65%25%32%65', '%252%65', '%2520..', '..%2509', '%25%35c', '%2525252e'];
const segment = fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...ROUTED) }, { weight: 1, arbitrary: fc.constantFrom(...REFUSED) });
const first = fc.oneof({ weight: 3, arbitrary: fc.constantFrom('api', '%61pi', 'ap%69', '%61%70%69', 'API', 'apix') }, { weight: 2, arbitrary: segment });
const QUERIES = ['', '', '', '', '?a=1', '?next=/../admin', '?%2e%2e/%2f', '?x=%zz', '?', '??/api', '?a=1#frag'];

const originForm = fc
  .tuple(first, fc.array(segment, { minLength: 0, maxLength: 4 }), fc.boolean(), fc.constantFrom(...QUERIES))
  .map(([head, segs, slash, q]) => `/${[head, ...segs].join('/')}${slash ? '/' : ''}${q}`);

const target = fc.oneof(
  { weight: 7, arbitrary: originForm },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom('http://fuzz.test', 'HTTP://FUZZ.TEST:80', 'http://other.test', 'https://fuzz.test', 'http://u@fuzz.test', 'http://', 'ftp://fuzz.test', 'http://[::1]', 'http://fuzz.test.'), fc.oneof(originForm, fc.constantFrom('', '?q=1')))
      .map(([authority, rest]) => `${authority}${rest}`),
  },
  { weight: 1, arbitrary: fc.constantFrom('*', 'fuzz.test:80', 'api/x', '/api/x y') },
);

const hostHeaders = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(['Host: fuzz.test'], ['host: FUZZ.Test:80'], ['HOST: fuzz.test.']) },
  { weight: 2, arbitrary: fc.array(fc.tuple(fc.constantFrom('Host', 'host', 'HOST'), fc.constantFrom('fuzz.test', 'other.test', '', 'fuzz.test:x', '[::1]', 'bad host')), { minLength: 0, maxLength: 2 }).map((hs) => hs.map(([n, v]) => `${n}: ${v}`)) },
);

/** Headers the proxy passes on or replaces (no effect on the answer). */
const HARMLESS = ['X-Original-URL: /admin', 'X-Rewrite-URL: /admin', 'Proxy: http://evil.test', 'True-Client-IP: 6.6.6.6', 'X-Forwarded-Prefix: /evil', 'Accept: */*', 'Connection: keep-alive', 'Connection: host', 'Connection: x-forwarded-for, x-real-ip, content-length', 'X-Forwarded-For: 1.2.3.4', 'X-Real-IP: 6.6.6.6', 'Forwarded: for=6.6.6.6', 'X_Forwarded_For: 9.9.9.9', 'X-Forwarded-Host: evil.test', 'Keep-Alive: timeout=5', 'TE: trailers', 'X-Odd:\tvalue\t', 'X-Empty:'];
/** Headers that change the framing, ask for an upgrade, or break a limit. */
const EXTRA = [
  'Connection: keep-alive',
  'Connection: host',
  'Connection: x-forwarded-for, x-real-ip, content-length',
  'Connection: Upgrade',
  'Connection: Upgrade, HTTP2-Settings',
  'Upgrade: h2c',
  'Upgrade: websocket',
  'Upgrade: WebSocket',
  'Upgrade: foo/1',
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
  'Sec-WebSocket-Version: 13',
  'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA',
  'X-Forwarded-For: 1.2.3.4',
  'X-Real-IP: 6.6.6.6',
  'Forwarded: for=6.6.6.6',
  'X_Forwarded_For: 9.9.9.9',
  'X-Forwarded-Host: evil.test',
  'Transfer-Encoding: gzip, chunked',
  'Transfer-Encoding: identity',
  'Transfer-Encoding: chunked, chunked',
  'Transfer-Encoding: xchunked',
  'Transfer-Encoding : chunked',
  ' Transfer-Encoding: chunked',
  'Content-Length: 0',
  'Content-Length: 3, 3',
  'Content-Length: -1',
  'Content-Length: +5',
  'Expect: 100-continue',
  'Expect: foo',
  'Keep-Alive: timeout=5',
  'Proxy-Connection: keep-alive',
  'TE: trailers',
  'X-Odd:\tvalue\t',
  'X-Empty:',
  `X-Long: ${'l'.repeat(9000)}`,
  `X-Too-Long: ${'l'.repeat(13000)}`,
];

const BODIES = ['', 'hello', 'x'.repeat(300), 'GET /api/smuggled HTTP/1.1\r\nHost: fuzz.test\r\n\r\n', 'GET /x/../api/smuggled HTTP/1.1\r\nHost: fuzz.test\r\n\r\n'];
/** How the body is framed: not at all, by a right Content-Length, by chunked, both, a short Content-Length (the rest is a second request), broken chunks. */
const FRAMINGS = ['none', 'none', 'none', 'none', 'none', 'cl', 'cl', 'cl', 'chunked', 'chunked', 'chunked', 'both', 'cl-short', 'chunked-bad'] as const;

const request = fc.record({
  method: fc.oneof({ weight: 9, arbitrary: fc.constantFrom('GET', 'GET', 'POST') }, { weight: 4, arbitrary: fc.constantFrom('PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH') }, { weight: 1, arbitrary: fc.constant('BREW') }),
  target,
  version: fc.oneof({ weight: 14, arbitrary: fc.constant('HTTP/1.1') }, { weight: 1, arbitrary: fc.constantFrom('HTTP/1.0', 'HTTP/2.0') }),
  hosts: hostHeaders,
  extra: fc.uniqueArray(fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...HARMLESS) }, { weight: 1, arbitrary: fc.constantFrom(...EXTRA) }), { maxLength: 3 }),
  /** Filler header lines before the framing: past 1000, Node's default cap would hide what follows. */
  filler: fc.oneof({ weight: 9, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constantFrom(1010, 1100) }),
  body: fc.constantFrom(...BODIES),
  framing: fc.constantFrom(...FRAMINGS),
  /** A request pipelined behind this one on the same connection (its own id, checked like the rest). */
  pipelined: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constantFrom('/api/after', '/after', '/x/../api/after', '/api;x/after') }),
});

type Generated = fc.Arbitrary<typeof request extends fc.Arbitrary<infer T> ? T : never> extends fc.Arbitrary<infer U> ? U : never;

let seq = 0;

/** The bytes of a generated request, with an id header the instances record; the target path of every request in it by id. */
function render(g: Generated): { bytes: string; sent: Map<string, string> } {
  const id = `f${++seq}`;
  const sent = new Map<string, string>([[id, g.target]]);
  let body = g.body;
  // A smuggled second request gets an id of its own, so where it lands can be checked too.
  if (body.startsWith('GET ')) {
    const sid = `${id}s`;
    sent.set(sid, body.split(' ')[1]);
    body = body.replace('\r\n\r\n', `\r\nX-Fuzz-Id: ${sid}\r\n\r\n`);
  }
  const framing: string[] = [];
  let payload = '';
  switch (g.framing) {
    case 'none':
      break;
    case 'cl':
      framing.push(`Content-Length: ${body.length}`);
      payload = body;
      break;
    case 'chunked':
      framing.push('Transfer-Encoding: chunked');
      payload = body ? `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n` : '0\r\n\r\n';
      break;
    case 'both':
      framing.push('Transfer-Encoding: chunked', `Content-Length: ${body.length}`);
      payload = body ? `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n` : '0\r\n\r\n';
      break;
    case 'cl-short':
      framing.push('Content-Length: 0');
      payload = body;
      break;
    case 'chunked-bad':
      framing.push('Transfer-Encoding: chunked');
      payload = `zz\r\n${body}\r\n0\r\n\r\n`;
      break;
  }
  const filler = Array.from({ length: g.filler }, (_, i) => `f${i}:`);
  const headers = [`X-Fuzz-Id: ${id}`, ...g.hosts, ...g.extra, ...filler, ...framing];
  let next = '';
  if (g.pipelined) {
    const pid = `${id}p`;
    sent.set(pid, g.pipelined);
    next = `GET ${g.pipelined} HTTP/1.1\r\nHost: ${HOST}\r\nX-Fuzz-Id: ${pid}\r\nConnection: close\r\n\r\n`;
  }
  return { bytes: `${g.method} ${g.target} ${g.version}\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n${payload}${next}`, sent };
}

/** The path part of a target as an instance must receive it: origin form as is, absolute form's path and query. */
function forwardedTarget(t: string): string {
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*(.*)$/i.exec(t);
  if (!m) return t;
  return m[1] === '' ? '/' : m[1].startsWith('?') ? `/${m[1]}` : m[1];
}

const decoded = (path: string) => path.replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
const pathOf = (url: string) => url.split('?', 1)[0];
const routeOf = (url: string) => {
  const p = decoded(pathOf(url));
  return p === '/api' || p.startsWith('/api/') ? 'A' : 'B';
};

describe('built-in proxy under generated raw requests', () => {
  it(`routes ${RUNS} generated requests only where their decoded path says, forwards the path as sent, and keeps running`, async () => {
    const outcomes = new Map<string, number>();
    const tally = (k: string) => outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
    const sentById = new Map<string, string>();
    const started = Date.now();
    let reached = 0;
    let refusedByRule = 0;
    const behindRefusal: string[] = [];
    const refusalInfo = new Map<string, string>();
    const shown = (b: string) => b.replace(/(f\d+:\r\n)+/, '<filler>').slice(0, 400);
    await fc.assert(
      fc.asyncProperty(request, async (g) => {
        const { bytes, sent } = render(g);
        for (const [k, v] of sent) sentById.set(k, v);
        const id = [...sent.keys()][0];
        const r = await rawRequest(PORTS.proxy, bytes, { method: g.method, timeoutMs: 3_000 });
        const from = r.headers['x-backend'];
        tally(r.end === 'response' ? `${r.status}${from ? ` ${from}` : ''}` : r.end);
        const got = [...a.received, ...b.received].filter((x) => x.headers['x-fuzz-id'] === id);
        if (refusedPath(pathOf(forwardedTarget(g.target))) !== undefined) {
          refusedByRule++;
          expect(got, 'a path the rule refuses reached an instance').toEqual([]);
        }
        if (r.end === 'response' && !from) expect(r.status, `proxy answer ${r.raw.slice(0, 120)}`).toBeGreaterThanOrEqual(400);
        if (r.end === 'response' && r.status >= 400 && !from) expect(got.map((x) => x.url), 'refused by the proxy but reached an instance').toEqual([]);
        // A refusal closes the connection: what was pipelined behind it must never be routed (checked at the end).
        if (g.pipelined && r.end === 'response' && r.status >= 400 && r.status !== 404 && !from) behindRefusal.push(`${id}p`), refusalInfo.set(`${id}p`, `${r.status} ${JSON.stringify(shown(bytes))}`);
        if (from) {
          expect(got.map((x) => x.backend)).toEqual([from]);
          reached++;
        }
        expect(got.length).toBeLessThanOrEqual(1);
        expect(r.end, 'no answer within 3 s').not.toBe('timeout');
      }),
      { numRuns: RUNS },
    );
    await new Promise((res) => setTimeout(res, 300));
    const routedBehind = [...a.received, ...b.received].filter((x) => behindRefusal.includes(String(x.headers['x-fuzz-id'])));
    expect(routedBehind.map((x) => `${x.headers['x-fuzz-id']} ${x.url} ${refusalInfo.get(String(x.headers['x-fuzz-id']))}`), 'routed behind a refusal').toEqual([]);
    // Every request any instance received (smuggled ones included): the right instance, the path as sent.
    const all: Received[] = [...a.received, ...b.received].filter((x) => x.headers['x-fuzz-id'] !== undefined);
    for (const x of all) {
      const fid = String(x.headers['x-fuzz-id']);
      expect(sentById.has(fid), `unknown id ${fid}`).toBe(true);
      expect(x.url, fid).toBe(forwardedTarget(sentById.get(fid)!));
      expect(x.backend, `${fid} ${x.url}`).toBe(routeOf(x.url));
      expect(refusedPath(pathOf(x.url)), x.url).toBeUndefined();
    }
    const ms = Date.now() - started;
    // Still up: a plain request is answered, the process has not exited.
    const after = await rawRequest(PORTS.proxy, plain('/api/after-fuzz'));
    expect(after.body).toBe('A /api/after-fuzz');
    expect(hm.logs.filter((l) => l.level >= 50)).toEqual([]);
    const summary = [...outcomes].sort((x, y) => y[1] - x[1]).map(([k, n]) => `${k}:${n}`).join(' ');
    console.log(`PROBE fuzz: ${RUNS} requests in ${ms} ms; reached an instance ${reached} (+${all.length - reached} smuggled/pipelined), path rule refusals ${refusedByRule}, pipelined behind a refusal ${behindRefusal.length} (routed 0); outcomes ${summary}`);
  });

  it('takes --max-header-size and --header-timeout from the command line', async () => {
    const fits = await rawRequest(PORTS.proxy, plain('/api/h', [`X-Big: ${'b'.repeat(11_000)}`]));
    const over = await rawRequest(PORTS.proxy, plain('/api/h', [`X-Big: ${'b'.repeat(12_500)}`]));
    const t0 = Date.now();
    const slow = await rawRequest(PORTS.proxy, [`GET /api/h HTTP/1.1\r\nHost: ${HOST}\r\n`, 'X-A: 1\r\n', 'X-B: 2\r\n', 'X-C: 3\r\n', 'X-D: 4\r\n', 'X-E: 5\r\n', 'X-F: 6\r\n', 'X-G: 7\r\n'], { pauseMs: 300, timeoutMs: 5_000 });
    const slowMs = Date.now() - t0;
    expect([fits.status, over.status, slow.status]).toEqual([200, 431, 408]);
    expect(slowMs).toBeLessThan(2_000);
    console.log(`PROBE CLI --max-header-size 12288: 11 KB header → ${fits.status}, 12.5 KB → ${over.status}; --header-timeout 1000: headers trickled every 300 ms → ${slow.status} after ${slowMs} ms`);
  });

  it('refuses bad values of the new flags with exit 2 and one line naming the flag', async () => {
    for (const [flag, value, text] of [
      ['--trusted-proxies', '10.0.0.0/8,proxy.internal', '--trusted-proxies 10.0.0.0/8,proxy.internal: "proxy.internal" is not an IPv4/IPv6 address or CIDR'],
      ['--trusted-proxies', '10.0.0.0/40', '--trusted-proxies 10.0.0.0/40: "10.0.0.0/40": the prefix length must be 0 to 32'],
      ['--max-header-size', '64', '--max-header-size 64: must be between 1024 and 1048576'],
      ['--header-timeout', 'soon', '--header-timeout soon: not a whole number'],
    ]) {
      const r = await runCli(['proxy', 'memory://', flag, value]);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(text);
    }
    const help = await runCli(['proxy', '--help']);
    for (const flag of ['--trusted-proxies', '--max-header-size', '--header-timeout']) expect(help.stdout).toContain(flag);
  });
});
