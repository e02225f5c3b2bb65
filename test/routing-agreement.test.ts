// One routing truth, measured: the same generated catalogs (hosts with wildcards, nested path
// prefixes with and without trailing slashes, weights including 0 and "00", services with no
// passing instance) are fed through a memory registry to the built-in proxy (in-process) and,
// rendered with the shipped templates by the real render pipeline, to a real nginx and a real
// HAProxy on loopback. The same requests go to all three; each must give what the routing
// table says: the service's name (every instance is a loopback HTTP server answering its
// service's name), 404, 503, or 400 for a path the path rule refuses.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Catalog } from '../src/catalog/catalog.js';
import { refusedPath, routingPath } from '../src/catalog/path-rule.js';
import { buildRoutes, instanceWeight, matchRoute } from '../src/catalog/routes.js';
import { CatalogWatch } from '../src/catalog/watch.js';
import { HEALTH_STATUSES, type HealthStatus, type ServiceInstance } from '../src/model/service-instance.js';
import { ProxyServer } from '../src/proxy/proxy-server.js';
import { requestHost } from '../src/proxy/route-table.js';
import { createBackend } from '../src/registry/index.js';
import { RENDER_WATCH_STATUSES, renderOnce } from '../src/render/index.js';
import { rawRequest } from './support/raw-http.js';
import { copyTemplates, get, Haproxy, Nginx, tempDir, templateEnv } from './support/render.js';
import { uniq, waitFor } from './support/wait.js';

const NGINX_PORT = 24500;
const HAPROXY_PORT = 24501;
const PROXY_PORT = 24502;
let nextBackendPort = 24600; // instance servers: 24600–24899

const SERVICES = ['adm', 'api', 'auth', 'img', 'shop', 'web'];
const HOSTS = ['a.x.localhost', 'x.localhost', 'b.localhost', '*.x.localhost', '*.localhost', '*.b.localhost'];
const PATHS = ['/', '/api', '/api/', '/api/v1', '/api/v1/', '/admin/', '/a', '/a/b/', '/a/b/c', '/s+t'];
const WEIGHTS = [undefined, '0', '00', '1', '3', '1000'];

interface InstanceSpec {
  hosts?: string[];
  path?: string;
  weight?: string;
  status: HealthStatus;
}
type CatalogSpec = InstanceSpec[][]; // services (named SERVICES[i]) → instances

/** The cases by hand, then generated ones. */
const HAND: CatalogSpec = [
  // adm: an exact host with /admin/ only, api: a wildcard catching everything else on *.x.localhost
  [{ hosts: ['a.x.localhost'], path: '/admin/', status: 'passing' }],
  [{ hosts: ['*.x.localhost'], status: 'passing' }, { hosts: ['x.localhost'], path: '/api', weight: '3', status: 'passing' }],
  // auth: every instance drained with "00" and "0"
  [{ hosts: ['b.localhost'], path: '/api/v1/', weight: '00', status: 'passing' }, { hosts: ['b.localhost'], path: '/api/v1/', weight: '0', status: 'passing' }],
  // img: no passing instance
  [{ hosts: ['b.localhost'], path: '/api', status: 'critical' }],
  // shop: nested prefixes with and without trailing slashes
  [{ hosts: ['*.b.localhost'], path: '/a', status: 'passing' }],
  [{ hosts: ['*.b.localhost'], path: '/a/b/', weight: '1000', status: 'passing' }, { path: '/s+t', status: 'passing' }],
];

/** Requests quoted by the issue, sent to the hand-written catalog. */
const PROBES: Array<[string, string, string]> = [
  ['x.localhost', '/api/../admin', 'dot segment'],
  ['x.localhost', '/api/%2e%2e/x', 'encoded dot segment'],
  ['x.localhost', '/api/%25%32%65%25%32%65/admin', 'double encoding, the second level itself encoded'],
  ['x.localhost', '/api/%252%65%252%65/admin', 'double encoding, half encoded'],
  ['x.localhost', '/api/%2520../admin', 'double-encoded blank before a dot segment'],
  ['x.localhost', '/api/100%2525', 'an encoded %25: a plain % after two decodings'],
  ['x.localhost', '/api//x', 'empty segment'],
  ['x.localhost', '/%61pi/x', 'encoded unreserved character'],
  ['a.x.localhost', '/other', 'exact host, no matching path, a wildcard host matches'],
  ['b.localhost', '/api/v1/x', 'all instances weight "00" or "0"'],
  ['b.localhost', '/api', 'no passing instance'],
  ['q.b.localhost', '/a/b', 'bare form of /a/b/ under /a'],
  ['evil.test,a.x.localhost', '/admin/', 'Host with a comma'],
  ['a.x.localhost:abc', '/admin/', 'Host with a bad port'],
];

/** Host headers outside the grammar: asked on every catalog with a few paths. */
const BAD_HOSTS = ['evil.test,a.x.localhost', 'a.x.localhost,evil.test', 'x.localhost, x.localhost', 'a.x.localhost:abc', 'a.x.localhost:123456', 'a.x.localhost:', 'a/b.localhost', '[::1]x', 'a.x.localhost:0', 'a.x.localhost:99999', 'a.x.localhost:65536', 'q..w.x.localhost', '.x.localhost', 'a.x.localhost..'];

type Output = 'nginx' | 'haproxy' | 'proxy';
const OUTPUTS: Output[] = ['nginx', 'haproxy', 'proxy'];

/**
 * Requests only a raw socket can send, to the hand-written catalog: each must get `want` on all
 * three outputs, or, where the outputs cannot agree, exactly `differs` (each such case is in the
 * README's list of remaining differences). A 200 names the service and the request target the
 * instance received.
 */
const TWO_MIB = 'x'.repeat(2 * 1024 * 1024);
const ODD: Array<{ name: string; request: string; want: string; differs?: Partial<Record<Output, string>> }> = [
  // HAProxy's parser merges Host lines with equal values (any case of the name or value) into one, before any rule sees them.
  { name: 'two identical Host lines', request: 'GET /admin/ HTTP/1.1\r\nHost: a.x.localhost\r\nHost: a.x.localhost\r\n', want: '400', differs: { haproxy: '200 adm /admin/' } },
  { name: 'host: and HOST: differing in case', request: 'GET /admin/ HTTP/1.1\r\nhost: a.x.localhost\r\nHOST: A.X.localhost\r\n', want: '400', differs: { haproxy: '200 adm /admin/' } },
  { name: 'two different Host lines', request: 'GET /admin/ HTTP/1.1\r\nHost: a.x.localhost\r\nHost: b.localhost\r\n', want: '400' },
  { name: 'Host port 0', request: 'GET /admin/ HTTP/1.1\r\nHost: a.x.localhost:0\r\n', want: '400' },
  { name: 'Host port 99999', request: 'GET /admin/ HTTP/1.1\r\nHost: a.x.localhost:99999\r\n', want: '400' },
  { name: 'Host port 65535', request: 'GET /admin/ HTTP/1.1\r\nHost: a.x.localhost:65535\r\n', want: '200 adm /admin/' },
  { name: 'absolute form naming another host than Host', request: 'GET http://a.x.localhost/admin/ HTTP/1.1\r\nHost: x.localhost\r\n', want: '400' },
  { name: 'absolute form naming another port than Host', request: 'GET http://a.x.localhost:81/admin/ HTTP/1.1\r\nHost: a.x.localhost\r\n', want: '400' },
  { name: 'absolute form, same host in another case and with :80', request: 'GET http://A.X.LOCALHOST:80/admin/?q=1 HTTP/1.1\r\nHost: a.x.localhost\r\n', want: '200 adm /admin/?q=1' },
  { name: 'absolute form, scheme in capitals', request: 'GET HTTP://X.LOCALHOST/api/ HTTP/1.1\r\nHost: x.localhost\r\n', want: '200 api /api/' },
  { name: 'absolute form, https', request: 'GET https://x.localhost/api/ HTTP/1.1\r\nHost: x.localhost\r\n', want: '400' },
  { name: 'absolute form, https with Host :443', request: 'GET https://x.localhost/api/ HTTP/1.1\r\nHost: x.localhost:443\r\n', want: '400' },
  { name: 'absolute form, wss', request: 'GET wss://x.localhost/api/ HTTP/1.1\r\nHost: x.localhost\r\n', want: '400' },
  { name: 'absolute form, ftp', request: 'GET ftp://x.localhost/api/ HTTP/1.1\r\nHost: x.localhost\r\n', want: '400' },
  { name: 'absolute form with userinfo', request: 'GET http://user@x.localhost/api/ HTTP/1.1\r\nHost: x.localhost\r\n', want: '400' },
  // An empty port is the default one (RFC 3986 §6.2.3): nginx reads it so, HAProxy drops it from the target, and from Host when both have it.
  { name: 'absolute form with an empty port', request: 'GET http://x.localhost:/api/ HTTP/1.1\r\nHost: x.localhost\r\n', want: '200 api /api/' },
  { name: 'absolute form and Host both with an empty port', request: 'GET http://x.localhost:/api/ HTTP/1.1\r\nHost: x.localhost:\r\n', want: '400', differs: { haproxy: '200 api /api/' } },
  { name: 'target neither a path nor a URL', request: 'GET x.localhost/api/ HTTP/1.1\r\nHost: x.localhost\r\n', want: '400' },
  { name: 'absolute form without Host', request: 'GET http://a.x.localhost/admin/ HTTP/1.1\r\n', want: '400' },
  { name: 'absolute form with an empty path', request: 'GET http://q.x.localhost HTTP/1.1\r\nHost: q.x.localhost\r\n', want: '200 api /' },
  { name: 'absolute form with a query and no path', request: 'GET http://q.x.localhost?q=1 HTTP/1.1\r\nHost: q.x.localhost\r\n', want: '400' },
  { name: 'absolute form with a refused path', request: 'GET http://a.x.localhost/x/../admin/ HTTP/1.1\r\nHost: a.x.localhost\r\n', want: '400' },
  { name: 'OPTIONS *', request: 'OPTIONS * HTTP/1.1\r\nHost: a.x.localhost\r\n', want: '400' },
  { name: 'Host q..w', request: 'GET / HTTP/1.1\r\nHost: q..w.x.localhost\r\n', want: '400' },
  { name: 'Host with an empty first label', request: 'GET / HTTP/1.1\r\nHost: .x.localhost\r\n', want: '400' },
  { name: 'HTTP/1.0 without Host', request: 'GET /admin/ HTTP/1.0\r\n', want: '400' },
  { name: '2 MiB POST', request: `POST /admin/ HTTP/1.1\r\nHost: a.x.localhost\r\nContent-Length: ${TWO_MIB.length}\r\n\r\n${TWO_MIB}`, want: '200 adm /admin/' },
  { name: '2 MiB chunked POST', request: `POST /admin/ HTTP/1.1\r\nHost: a.x.localhost\r\nTransfer-Encoding: chunked\r\n\r\n${(TWO_MIB.length / 2).toString(16)}\r\n${TWO_MIB.slice(0, TWO_MIB.length / 2)}\r\n${(TWO_MIB.length / 2).toString(16)}\r\n${TWO_MIB.slice(0, TWO_MIB.length / 2)}\r\n0\r\n\r\n`, want: '200 adm /admin/' },
  // Answered once the head is in: nothing of the body needs to be sent.
  { name: 'a body announced larger than the 3m limit', request: `POST /admin/ HTTP/1.1\r\nHost: a.x.localhost\r\nContent-Length: ${4 * 1024 * 1024}\r\n\r\n`, want: '413' },
  // HAProxy's parser drops Content-Length beside Transfer-Encoding and merges equal Content-Length lines before any rule sees them.
  { name: 'Content-Length beside Transfer-Encoding: chunked', request: 'POST /admin/ HTTP/1.1\r\nHost: a.x.localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', want: '400', differs: { haproxy: '200 adm /admin/' } },
  { name: 'two Content-Length: 0 lines', request: 'POST /admin/ HTTP/1.1\r\nHost: a.x.localhost\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n', want: '400', differs: { haproxy: '200 adm /admin/' } },
];

const oddResults: Array<{ name: string; want: string; differs?: Partial<Record<Output, string>>; got: Record<Output, string> }> = [];

/** One raw request (Connection: close added to the head) → "200 <service>" or the status. */
async function rawAnswer(port: number, request: string): Promise<string> {
  const headEnd = request.indexOf('\r\n\r\n');
  const full = headEnd < 0 ? `${request}Connection: close\r\n\r\n` : `${request.slice(0, headEnd)}\r\nConnection: close${request.slice(headEnd)}`;
  const r = await rawRequest(port, full, { timeoutMs: 10_000 });
  return r.status === 200 ? `200 ${r.body.trim()} ${r.headers['x-url']}` : String(r.status);
}

const instanceArb: fc.Arbitrary<InstanceSpec> = fc.record({
  hosts: fc.option(fc.subarray(HOSTS, { minLength: 1, maxLength: 2 }), { nil: undefined, freq: 4 }),
  path: fc.option(fc.constantFrom(...PATHS), { nil: undefined, freq: 3 }),
  weight: fc.constantFrom(...WEIGHTS),
  status: fc.constantFrom<HealthStatus>('passing', 'passing', 'passing', 'critical'),
});
const catalogArb: fc.Arbitrary<CatalogSpec> = fc.array(fc.array(instanceArb, { minLength: 1, maxLength: 3 }), { minLength: 3, maxLength: SERVICES.length });

const SEED = Number(process.env.HM_AGREEMENT_SEED ?? Math.floor(Math.random() * 2 ** 31));
const GENERATED = 4;

type Answer = string; // "200 <service>" | "404" | "503" | "400"

/** What the routing table says a request gets. */
function expected(catalog: Catalog, host: string, path: string): Answer {
  if (refusedPath(path)) return '400';
  // The Host grammar: a comma list, a bad port, an empty Host is refused.
  const h = requestHost(host);
  if (h === undefined) return '400';
  const route = matchRoute(buildRoutes(catalog, 'localhost'), h, routingPath(path));
  if (!route) return '404';
  return route.instances.some((i) => i.status === 'passing' && instanceWeight(i) > 0) ? `200 ${route.service}` : '503';
}

/** Hosts and paths to ask for: every route's own, near misses, other hosts, and the path rule's cases. */
function requestsFor(catalog: Catalog): Array<{ host: string; path: string; rule: boolean }> {
  const table = buildRoutes(catalog, 'localhost');
  const hosts = new Set(['nomatch.test', 'nomatch.localhost', 'localhost', 'x.localhost', 'zz.b.localhost', 'q.a.x.localhost']);
  for (const v of table.vhosts) {
    if (v.host.startsWith('*.')) {
      hosts.add(`q${v.host.slice(1)}`);
      hosts.add(`q.r${v.host.slice(1)}`.toUpperCase());
    } else {
      hosts.add(v.host);
      hosts.add(`${v.host.toUpperCase()}:80`);
      hosts.add(`${v.host}.`);
    }
  }
  const paths = new Set(['/', '/zzz', '/api/..;x', '/api\\x', '/%zz', '/api/%5c', '/api/%00', '/./api', '/api/%2F', '/a%2fb/c', '/%2e%2e/api', '/api;x', '/a%3Bb', '/x/%c0%ae%c0%ae/y', '/x/%e0%80%af', '/x/..%20/y']);
  for (const p of new Set(table.vhosts.flatMap((v) => v.routes.map((r) => r.path)))) {
    if (p === '/') continue;
    const bare = p.endsWith('/') ? p.slice(0, -1) : p;
    paths.add(p);
    paths.add(bare);
    paths.add(`${bare}/`);
    paths.add(`${bare}x`);
    paths.add(`${bare}/z?q=1//..`);
    // the path rule
    paths.add(`/x/..${p}`);
    paths.add(`${bare}//x`);
    paths.add(`${bare};x/y`);
    paths.add(`${bare}%3bx/y`);
    paths.add(`${bare}/..#x`);
    paths.add(`${bare}#x`);
    paths.add(`${bare}/z?q=1#x`);
    paths.add(`${bare}/%2e%2e/x`);
    paths.add(`${bare}/x/%2E`);
    paths.add(`${bare}/..%0d/x`);
    paths.add(`${bare}/.%0a/x`);
    paths.add(`/%20..${p}`);
    paths.add(`${bare}/%252e%252e/x`);
    paths.add(`${bare}/%25%32%65%25%32%65/x`);
    paths.add(`${bare}/%252%65%252%65/x`);
    paths.add(`/%2520..${p}`);
    paths.add(`${bare}/100%2525`);
    paths.add(`${bare}/%2541`);
    paths.add(`/%${bare.charCodeAt(1).toString(16)}${bare.slice(2)}/x`); // /%61pi/x: an unreserved character encoded
    paths.add(bare.replace(/\+/g, '%2B'));
  }
  const out: Array<{ host: string; path: string; rule: boolean }> = [];
  for (const host of hosts) for (const path of paths) out.push({ host, path, rule: refusedPath(path.split('?')[0]) !== undefined || path.includes('#') || routingPath(path) !== path });
  for (const host of BAD_HOSTS) for (const path of ['/', '/api', '/admin/']) out.push({ host, path, rule: false });
  return out;
}

async function answer(port: number, host: string, path: string): Promise<Answer> {
  const r = await get(port, host, path).catch((err: Error) => ({ status: 0, body: err.message }));
  return r.status === 200 ? `200 ${r.body}` : String(r.status);
}

interface Mismatch {
  catalog: number;
  host: string;
  path: string;
  want: Answer;
  got: Answer;
}
const mismatches: Record<'nginx' | 'haproxy' | 'proxy', { plain: Mismatch[]; rule: Mismatch[] }> = {
  nginx: { plain: [], rule: [] },
  haproxy: { plain: [], rule: [] },
  proxy: { plain: [], rule: [] },
};
const totals = { catalogs: 0, requests: 0, rule: 0, byAnswer: new Map<string, number>() };
const servers: http.Server[] = [];
const logLines: string[] = [];
const log = pino({ level: 'warn' }, new Writable({ write: (c: Buffer, _e, cb) => (logLines.push(c.toString()), cb()) }));

async function instanceServer(service: string): Promise<number> {
  const s = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.setHeader('x-url', req.url ?? '').end(service));
  });
  servers.push(s);
  for (;;) {
    const port = nextBackendPort++;
    if (port > 24899) throw new Error('out of instance ports');
    const ok = await new Promise<boolean>((resolve) => {
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (ok) return (s.address() as AddressInfo).port;
  }
}

async function runCatalog(k: number, spec: CatalogSpec): Promise<void> {
  const uri = `memory://${uniq('agree')}`;
  const registry = createBackend(uri, { ttl: 0 });
  let n = 0;
  for (const [si, instances] of spec.entries()) {
    const name = SERVICES[si];
    for (const [ii, s] of instances.entries()) {
      const meta: Record<string, string> = {};
      if (s.hosts) meta.http_host = s.hosts.join(',');
      if (s.path) meta.http_path = s.path;
      if (s.weight !== undefined) meta.weight = s.weight;
      const inst: ServiceInstance = { id: `agree:${name}-${ii}`, name, address: '127.0.0.1', port: await instanceServer(name), protocol: 'tcp', tags: [], meta, host: 'agree', status: s.status };
      await registry.register(inst);
      n++;
    }
  }
  const watch = CatalogWatch.forUri(uri, { statuses: [...HEALTH_STATUSES], log });
  const proxy = new ProxyServer({ domain: 'localhost', balance: 'round-robin', statuses: ['passing'], connectTimeoutMs: 2000, responseTimeoutMs: 5000, idleTimeoutMs: 5000, retries: 2, maxBodySize: 3 * 1024 ** 2, log });
  await proxy.listen({ host: '127.0.0.1', port: PROXY_PORT });
  const off = watch.subscribe((c) => proxy.setCatalog(c));
  const dir = tempDir('hm-agree-');
  const T = copyTemplates(dir);
  // A body limit above the 2 MiB rows and below the announced 4 MiB one, the same on all three.
  const tenv: Record<string, string> = { ...templateEnv(dir, NGINX_PORT, HAPROXY_PORT), HM_MAX_BODY_SIZE: '3m' };
  const env = { ...process.env, ...tenv };
  const nginx = new Nginx(join(dir, 'nginx.conf'), tenv.HM_NGINX_PID);
  const haproxy = new Haproxy(join(dir, 'haproxy.cfg'), dir);
  try {
    const catalog = await waitFor('the whole catalog', () => (watch.catalog && watch.catalog.services.reduce((m, s) => m + s.instances.length, 0) === n ? watch.catalog : undefined), 5000, 10);
    expect(proxy.table().fingerprint).toBe(catalog.fingerprint);
    const rendered = await renderOnce(
      {
        templates: [
          { source: T.nginx, destination: join(dir, 'nginx.conf'), check: 'nginx -t -q -c {{src}}', verify: { kind: 'plain' }, backup: false },
          { source: T.haproxy, destination: join(dir, 'haproxy.cfg'), check: 'haproxy -q -c -f {{src}}', verify: { kind: 'plain' }, backup: false },
        ],
        wait: { minMs: 0, maxMs: 0 },
        statuses: ['passing'],
        domain: 'localhost',
        timeoutMs: 10_000,
        once: true,
        dry: false,
      },
      watch,
      log,
      { env },
    );
    expect(rendered.ok, logLines.join('')).toBe(true);
    expect(rendered.dropped).toEqual([]);
    await nginx.start();
    await haproxy.start();
    await waitFor('nginx and HAProxy answering', async () => (await answer(NGINX_PORT, 'nomatch.test', '/')) === '404' && (await answer(HAPROXY_PORT, 'nomatch.test', '/')) === '404', 10_000, 50);

    const requests = requestsFor(catalog);
    const before = totals.requests;
    const started = Date.now();
    const queue = [...requests];
    const worker = async () => {
      for (let r = queue.shift(); r; r = queue.shift()) {
        const want = r.path.includes('#') ? '400' : expected(catalog, r.host, r.path.split('?')[0]);
        const [ng, hp, px] = await Promise.all([answer(NGINX_PORT, r.host, r.path), answer(HAPROXY_PORT, r.host, r.path), answer(PROXY_PORT, r.host, r.path)]);
        totals.requests++;
        if (r.rule) totals.rule++;
        totals.byAnswer.set(want.split(' ')[0], (totals.byAnswer.get(want.split(' ')[0]) ?? 0) + 1);
        for (const [name, got] of [['nginx', ng], ['haproxy', hp], ['proxy', px]] as const) {
          if (got !== want) mismatches[name][r.rule ? 'rule' : 'plain'].push({ catalog: k, host: r.host, path: r.path, want, got });
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    if (spec === HAND) {
      for (const odd of ODD) {
        const got = Object.fromEntries(await Promise.all(OUTPUTS.map(async (o) => [o, await rawAnswer({ nginx: NGINX_PORT, haproxy: HAPROXY_PORT, proxy: PROXY_PORT }[o], odd.request)] as const))) as Record<Output, string>;
        oddResults.push({ ...odd, got });
        console.log(`PROBE agreement, raw request "${odd.name}" → nginx ${got.nginx}, HAProxy ${got.haproxy}, built-in proxy ${got.proxy}${odd.differs ? ' (a documented difference)' : ''}`);
      }
      for (const [host, path, why] of PROBES) {
        const got = await Promise.all([NGINX_PORT, HAPROXY_PORT, PROXY_PORT].map((port) => answer(port, host, path)));
        console.log(`PROBE agreement: ${host} ${path} (${why}) → nginx ${got[0]}, HAProxy ${got[1]}, built-in proxy ${got[2]}; the table says ${expected(catalog, host, path.split('?')[0])}`);
      }
    }
    totals.catalogs++;
    const services = catalog.services.length;
    const routes = buildRoutes(catalog, 'localhost').vhosts.reduce((m, v) => m + v.routes.length, 0);
    console.log(`PROBE agreement catalog ${k}: ${services} services, ${n} instances, ${routes} routes; ${totals.requests - before} requests to each of nginx, HAProxy and the built-in proxy in ${Date.now() - started} ms`);
  } finally {
    off();
    await proxy.close(0);
    await watch.stop();
    await nginx.stop();
    await haproxy.stop();
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => (s.closeAllConnections(), s.close(r)))));
  }
}

beforeAll(async () => {
  const generated = fc.sample(catalogArb, { numRuns: GENERATED, seed: SEED });
  console.log(`PROBE agreement: seed ${SEED} (HM_AGREEMENT_SEED=${SEED} repeats it)`);
  for (const [k, spec] of [HAND, ...generated].entries()) await runCatalog(k, spec);
  const count = (m: Mismatch[]) => m.length;
  const answers = [...totals.byAnswer].map(([a, c]) => `${a}:${c}`).join(' ');
  console.log(
    `PROBE agreement: ${totals.catalogs} catalogs, ${totals.requests} requests per output (${totals.rule} path-rule cases; expected ${answers}); ` +
      `disagreeing with the routing table: nginx ${count(mismatches.nginx.plain) + count(mismatches.nginx.rule)}, HAProxy ${count(mismatches.haproxy.plain) + count(mismatches.haproxy.rule)}, ` +
      `built-in proxy ${count(mismatches.proxy.plain)} + ${count(mismatches.proxy.rule)} path-rule cases`,
  );
  const refused = mismatches.proxy.rule.filter((m) => m.want === '400');
  console.log(
    `PROBE agreement: built-in proxy path-rule cases: ${refused.length} refused paths answered ${[...new Set(refused.map((m) => m.got.split(' ')[0]))].join('/')} instead of 400, ` +
      `${mismatches.proxy.rule.length - refused.length} percent-encoded paths not routed on their decoded form`,
  );
  const shown = new Set<string>();
  for (const m of mismatches.proxy.rule) {
    const key = `${m.path.replace(/[a-z]+/g, 'w')} ${m.want.split(' ')[0]}→${m.got.split(' ')[0]}`;
    if (shown.has(key) || shown.size >= 12) continue;
    shown.add(key);
    console.log(`PROBE agreement: built-in proxy, path-rule case: ${m.host} ${m.path} → ${m.got}, the table says ${m.want}`);
  }
}, 300_000);

afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

const show = (m: Mismatch[]) => m.slice(0, 10).map((x) => `catalog ${x.catalog}: ${x.host} ${x.path} → ${x.got}, want ${x.want}`);

describe('one routing truth: nginx, HAProxy and the built-in proxy answer as the routing table says', () => {
  it('nginx, on every request, path-rule cases included', () => {
    expect(totals.requests).toBeGreaterThan(1000);
    expect(show([...mismatches.nginx.plain, ...mismatches.nginx.rule])).toEqual([]);
  });

  it('HAProxy, on every request, path-rule cases included', () => {
    expect(show([...mismatches.haproxy.plain, ...mismatches.haproxy.rule])).toEqual([]);
  });

  it('the built-in proxy, on every request the path rule does not concern', () => {
    expect(show(mismatches.proxy.plain)).toEqual([]);
  });

  it('all three, on requests only a raw socket sends (duplicate and odd Host, ports, absolute form and its schemes, empty path, OPTIONS *, 2 MiB bodies, odd framing), with the target the instance received, or as documented where they cannot agree', () => {
    expect(oddResults).toHaveLength(ODD.length);
    const off = oddResults.flatMap((r) => OUTPUTS.filter((o) => r.got[o] !== (r.differs?.[o] ?? r.want)).map((o) => `${r.name}: ${o} ${r.got[o]}, want ${r.differs?.[o] ?? r.want}`));
    expect(off).toEqual([]);
  });

  it('the built-in proxy, on the path-rule cases (refused paths, routing on the decoded path)', () => {
    expect(totals.rule).toBeGreaterThan(100);
    expect(show(mismatches.proxy.rule)).toEqual([]);
  });
});
