// Forwarding headers and upgrades, measured on the three outputs: the shipped nginx and HAProxy
// templates, rendered by the real render pipeline and run by real nginx and HAProxy on loopback,
// and the built-in proxy in-process. One recording backend sees what each passes on: a client's
// spoofed X-Forwarded-*, X-Real-IP and Forwarded are replaced unless the client is a trusted
// proxy (HM_TRUSTED_PROXIES / --trusted-proxies), Upgrade: h2c arrives as a plain request and a
// WebSocket handshake still gets 101.
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HEALTH_STATUSES } from '../src/model/service-instance.js';
import { CatalogWatch } from '../src/catalog/watch.js';
import { ProxyServer } from '../src/proxy/proxy-server.js';
import { parseTrustedProxies } from '../src/proxy/trusted-proxies.js';
import { createBackend } from '../src/registry/index.js';
import { renderOnce } from '../src/render/index.js';
import type { RunResult } from '../src/render/renderer.js';
import { rawRequest, type RawAnswer, type Received, recordingBackend, type RecordingBackend } from './support/raw-http.js';
import { copyTemplates, Haproxy, haproxyCheck, Nginx, nginxTest, tempDir, templateEnv } from './support/render.js';
import { uniq, waitFor } from './support/wait.js';

const BACKEND_PORT = 26020;
const HOST = 'echo.localhost';
const OUTPUTS = ['nginx', 'haproxy', 'proxy'] as const;
type Output = (typeof OUTPUTS)[number];

interface Side {
  name: 'untrusted' | 'trusted';
  trusted: string | undefined;
  ports: Record<Output, number>;
}
const SIDES: Side[] = [
  { name: 'untrusted', trusted: undefined, ports: { nginx: 26000, haproxy: 26001, proxy: 26002 } },
  // 100 entries: more than HAProxy reads on one line (64 words), so the template splits its acl.
  { name: 'trusted', trusted: [...Array.from({ length: 99 }, (_, i) => `10.${i}.0.0/16`), '127.0.0.1'].join(','), ports: { nginx: 26010, haproxy: 26011, proxy: 26012 } },
];

/** Client claims only a trusted peer may pass on, and underscore spellings nobody passes on. */
const CLAIMS = ['True-Client-IP: 203.0.113.11', 'X-Forwarded-Prefix: /evil', 'X-Forwarded-Server: evil', 'X-Forwarded-Ssl: on', 'Front-End-Https: on', 'X-Forwarded-User: admin', 'X-Client-IP: 203.0.113.12'];
const UNDERSCORED = ['X_Original_URL: /admin', 'X_Custom: 1'];
/**
 * X-Forwarded-For chains for X-Real-IP (10.0.0.0/16 and 10.1.0.0/16 are trusted on the trusted
 * side) → the client each output must find, and where HAProxy finds another (README, remaining
 * differences).
 */
const CHAINS: Array<[string, string, string, string?]> = [
  ['chain', '198.51.100.1, 10.1.2.3', '198.51.100.1'],
  ['chain-deep', '198.51.100.2, 10.0.0.1, 10.1.0.1, 10.0.0.2', '198.51.100.2'],
  ['chain-untrusted-middle', '10.0.0.1, 198.51.100.3, 10.1.0.1', '198.51.100.3'],
  ['chain-junk', '198.51.100.4, junk, 10.1.2.3', '10.1.2.3'],
  ['chain-port', '198.51.100.5:5555', '198.51.100.5'],
  ['chain-all-trusted', '10.0.0.7, 10.1.0.8', '10.0.0.7'],
  // Leading zeros are decimal (nginx's ngx_inet_addr, HAProxy's req.hdr_ip), IPv4-mapped and -compatible addresses printed dotted (inet_ntop).
  ['chain-leading-zero', '198.51.100.6, 010.0.0.1', '198.51.100.6'],
  ['chain-leading-zero-client', '0198.051.100.007', '198.51.100.7'],
  ['chain-zero-port', '198.51.100.10, 010.000.0.1:80', '198.51.100.10'],
  ['chain-octal-like', '198.51.100.13, 10.0.0.08', '198.51.100.13'],
  ['chain-256', '198.51.100.14, 10.0.0.256', '127.0.0.1'],
  ['chain-mapped', '::ffff:198.51.100.8', '::ffff:198.51.100.8'],
  ['chain-mapped-trusted', '198.51.100.9, ::FFFF:10.0.0.1', '198.51.100.9'],
  ['chain-compat', '::198.51.100.12', '::198.51.100.12'],
  ['chain-v6', '2001:DB8:0:0::1', '2001:db8::1'],
  // A bracketed IPv6 address counts only with a port after it (nginx); HAProxy's req.hdr_ip reads none.
  ['chain-v6-brackets', '[2001:db8::2]', '127.0.0.1'],
  ['chain-v6-brackets-port', '[::FFFF:198.51.100.11]:80', '::ffff:198.51.100.11', '127.0.0.1'],
];

const SPOOF = [
  'X-Forwarded-For: 203.0.113.7',
  'X-Real-IP: 203.0.113.8',
  'Forwarded: for=203.0.113.9;proto=https',
  'X-Forwarded-Proto: https',
  'X-Forwarded-Host: evil.test',
  'X-Forwarded-Port: 443',
  'X_Forwarded_For: 203.0.113.10',
];
const WS = ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='];
const H2C = ['Connection: Upgrade, HTTP2-Settings', 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA'];

const req = (line: string, headers: string[], body = '') => `${line}\r\nHost: ${HOST}\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n${body}`;

const logLines: string[] = [];
const log = pino({ level: 'warn' }, new Writable({ write: (c: Buffer, _e, cb) => (logLines.push(c.toString()), cb()) }));

let backend: RecordingBackend;
let watch: CatalogWatch;
const dir = tempDir('hm-hdr-');
const T = copyTemplates(dir);
const started: Array<{ stop(): Promise<unknown> }> = [];

/** Renders both shipped templates into `sub` with the given environment. */
async function render(sub: string, ports: { nginx: number; haproxy: number }, extra: Record<string, string>): Promise<{ result: RunResult; env: Record<string, string>; nginxConf: string; haproxyCfg: string }> {
  const out = join(dir, sub);
  mkdirSync(out);
  chmodSync(out, 0o755);
  const env = { ...templateEnv(out, ports.nginx, ports.haproxy), ...extra };
  const nginxConf = join(out, 'nginx.conf');
  const haproxyCfg = join(out, 'haproxy.cfg');
  const result = await renderOnce(
    {
      templates: [
        { source: T.nginx, destination: nginxConf, check: 'nginx -t -q -c {{src}}', verify: { kind: 'plain' }, backup: false },
        { source: T.haproxy, destination: haproxyCfg, check: 'haproxy -q -c -f {{src}}', verify: { kind: 'plain' }, backup: false },
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
    { env: { ...process.env, ...env } },
  );
  return { result, env, nginxConf, haproxyCfg };
}

interface Seen {
  status: number;
  received?: Received;
}
const seen = new Map<string, Seen>(); // `${side}/${output}/${case}` → what came back and what the backend got

async function send(side: Side, output: Output, kase: string, line: (path: string) => string, headers: string[], body = ''): Promise<void> {
  const path = `/${side.name}-${output}/${kase}`;
  const a: RawAnswer = await rawRequest(side.ports[output], req(line(path), [...headers, ...(headers.some((h) => h.startsWith('Connection:')) ? [] : ['Connection: close'])], body));
  seen.set(`${side.name}/${output}/${kase}`, { status: a.status, received: backend.received.find((r) => r.url === path) });
}

const get = (s: Side, o: Output, k: string): Seen => {
  const v = seen.get(`${s.name}/${o}/${k}`);
  if (!v) throw new Error(`no answer for ${s.name}/${o}/${k}`);
  return v;
};
const h = (s: Seen, name: string) => s.received?.headers[name];
/** Field lines of a header as the backend received them (a list split over lines counts each). */
const lines = (s: Seen, name: string) => (s.received?.rawHeaders ?? []).filter((_, i, a) => i % 2 === 0 && a[i].toLowerCase() === name).length;

beforeAll(async () => {
  backend = await recordingBackend('echo', BACKEND_PORT);
  const uri = `memory://${uniq('hdr')}`;
  const registry = createBackend(uri, { ttl: 0 });
  await registry.register({ id: 'hdr:echo', name: 'echo', address: '127.0.0.1', port: BACKEND_PORT, protocol: 'tcp', tags: [], meta: {}, host: 'hdr', status: 'passing' });
  watch = CatalogWatch.forUri(uri, { statuses: [...HEALTH_STATUSES], log });
  watch.start();
  await waitFor("the catalog", () => (watch.catalog?.services.length === 1 ? true : undefined), 5000, 10);

  for (const side of SIDES) {
    const r = await render(side.name, side.ports, side.trusted ? { HM_TRUSTED_PROXIES: side.trusted } : {});
    expect(r.result.ok, logLines.join('')).toBe(true);
    const nginx = new Nginx(r.nginxConf, r.env.HM_NGINX_PID);
    await nginx.start();
    started.push(nginx);
    const haproxy = new Haproxy(r.haproxyCfg, join(dir, side.name));
    await haproxy.start();
    started.push(haproxy);
    const proxy = new ProxyServer({ domain: 'localhost', balance: 'round-robin', statuses: ['passing'], connectTimeoutMs: 2000, responseTimeoutMs: 5000, idleTimeoutMs: 5000, retries: 2, log, trustedProxies: side.trusted ? parseTrustedProxies(side.trusted) : [] });
    await proxy.listen({ host: '127.0.0.1', port: side.ports.proxy });
    const off = watch.subscribe((c) => proxy.setCatalog(c));
    started.push({ stop: async () => (off(), proxy.close(0)) });
    for (const output of OUTPUTS) {
      await waitFor(`${side.name} ${output} answering`, async () => (await rawRequest(side.ports[output], req('GET /ready HTTP/1.1', ['Connection: close']))).status === 200, 10_000, 50);
    }
  }

  for (const side of SIDES) {
    for (const output of OUTPUTS) {
      await send(side, output, 'spoof', (p) => `GET ${p} HTTP/1.1`, [...SPOOF, ...CLAIMS, ...UNDERSCORED]);
      for (const [kase, xff] of CHAINS) await send(side, output, kase, (p) => `GET ${p} HTTP/1.1`, [`X-Forwarded-For: ${xff}`, 'X-Real-IP: 203.0.113.8']);
      await send(side, output, 'bare', (p) => `GET ${p} HTTP/1.1`, []);
      await send(side, output, 'h2c', (p) => `GET ${p} HTTP/1.1`, H2C);
      await send(side, output, 'ws', (p) => `GET ${p} HTTP/1.1`, WS);
      await send(side, output, 'wspost', (p) => `POST ${p} HTTP/1.1`, ['Connection: Upgrade', 'Upgrade: websocket', 'Content-Length: 4'], 'body');
      const s = get(side, output, 'spoof');
      const f = (n: string) => (h(s, n) === undefined ? 'none' : `"${h(s, n)}"`);
      const h2 = get(side, output, 'h2c');
      const post = get(side, output, 'wspost');
      console.log(
        `PROBE headers ${output} (${side.name === 'trusted' ? 'HM_TRUSTED_PROXIES=<100 entries, 127.0.0.1 among them>' : 'untrusted client'}): claims passed on ${CLAIMS.filter((c) => h(s, c.split(':')[0].toLowerCase()) !== undefined).length}/${CLAIMS.length}, underscore names ${UNDERSCORED.filter((c) => h(s, c.split(':')[0].toLowerCase()) !== undefined).length}/${UNDERSCORED.length}; ` +
          `X-Real-IP for ${CHAINS.map(([k]) => `${k} "${h(get(side, output, k), 'x-real-ip')}"`).join(', ')}; spoofed request → X-Forwarded-For ${f('x-forwarded-for')} (${lines(s, 'x-forwarded-for')} line), X-Real-IP ${f('x-real-ip')}, ` +
          `Forwarded ${f('forwarded')}, X-Forwarded-Proto ${f('x-forwarded-proto')}, X-Forwarded-Host ${f('x-forwarded-host')}, X-Forwarded-Port ${f('x-forwarded-port')}, X_Forwarded_For ${f('x_forwarded_for')}; ` +
          `Upgrade: h2c → ${h2.status}, backend got Upgrade ${h(h2, 'upgrade') ?? 'none'}, Connection ${h(h2, 'connection') ?? 'none'}; ` +
          `WebSocket → ${get(side, output, 'ws').status}; websocket on POST → ${post.status}, backend got Upgrade ${h(post, 'upgrade') ?? 'none'}`,
      );
    }
  }
}, 60_000);

afterAll(async () => {
  for (const s of started.reverse()) await s.stop().catch(() => undefined);
  await watch?.stop();
  await backend?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe.each(OUTPUTS)('%s', (output) => {
  const [untrusted, trusted] = SIDES;

  it('replaces an untrusted client\'s forwarding headers and removes Forwarded and underscore spellings', () => {
    for (const kase of ['spoof', 'bare']) {
      const s = get(untrusted, output, kase);
      expect(s.status).toBe(200);
      expect(s.received, kase).toBeDefined();
      expect(h(s, 'x-forwarded-for')).toBe('127.0.0.1');
      expect(lines(s, 'x-forwarded-for')).toBe(1);
      expect(h(s, 'x-real-ip')).toBe('127.0.0.1');
      expect(h(s, 'forwarded')).toBeUndefined();
      expect(h(s, 'x-forwarded-proto')).toBe('http');
      expect(h(s, 'x-forwarded-host')).toBe(HOST);
      expect(h(s, 'x-forwarded-port')).toBe(String(untrusted.ports[output]));
      expect(h(s, 'x_forwarded_for')).toBeUndefined();
    }
    const s = get(untrusted, output, 'spoof');
    for (const c of [...CLAIMS, ...UNDERSCORED]) expect(h(s, c.split(':')[0].toLowerCase()), c).toBeUndefined();
    for (const [kase] of CHAINS) expect(h(get(untrusted, output, kase), 'x-real-ip'), kase).toBe('127.0.0.1');
  });

  it('derives X-Real-IP behind a trusted peer from X-Forwarded-For through the trusted proxies, never from the peer\'s X-Real-IP', () => {
    for (const [kase, , client, haproxy] of CHAINS) expect(h(get(trusted, output, kase), 'x-real-ip'), kase).toBe(output === 'haproxy' ? (haproxy ?? client) : client);
    const s = get(trusted, output, 'spoof');
    for (const c of CLAIMS) expect(h(s, c.split(':')[0].toLowerCase()), c).toBe(c.slice(c.indexOf(':') + 2));
    for (const c of UNDERSCORED) expect(h(s, c.split(':')[0].toLowerCase()), c).toBeUndefined();
  });

  it('keeps a trusted peer\'s headers, X-Forwarded-For appended to on one line, and fills in the ones it did not send', () => {
    const s = get(trusted, output, 'spoof');
    expect(s.status).toBe(200);
    expect(h(s, 'x-forwarded-for')).toBe('203.0.113.7, 127.0.0.1');
    expect(lines(s, 'x-forwarded-for')).toBe(1);
    expect(h(s, 'x-real-ip')).toBe('203.0.113.7');
    // The templates keep it; the built-in proxy also appends its own hop.
    expect(h(s, 'forwarded')).toMatch(/^for=203\.0\.113\.9;proto=https(, for=127\.0\.0\.1;host=echo\.localhost;proto=http)?$/);
    expect(h(s, 'x-forwarded-proto')).toBe('https');
    expect(h(s, 'x-forwarded-host')).toBe('evil.test');
    expect(h(s, 'x-forwarded-port')).toBe('443');
    expect(h(s, 'x_forwarded_for')).toBeUndefined();
    const b = get(trusted, output, 'bare');
    expect([h(b, 'x-forwarded-for'), h(b, 'x-real-ip'), h(b, 'forwarded'), h(b, 'x-forwarded-proto'), h(b, 'x-forwarded-host'), h(b, 'x-forwarded-port')]).toEqual(['127.0.0.1', '127.0.0.1', undefined, 'http', HOST, String(trusted.ports[output])]);
  });

  it('agrees with the built-in proxy on every forwarding header but a trusted Forwarded', () => {
    if (output === 'proxy') return expect(get(untrusted, 'proxy', 'spoof').received).toBeDefined();
    const names = ['x-forwarded-for', 'x-real-ip', 'x-forwarded-proto', 'x-forwarded-host', 'x_forwarded_for', ...[...CLAIMS, ...UNDERSCORED].map((c) => c.split(':')[0].toLowerCase())];
    for (const side of SIDES) {
      // The chains where HAProxy reads X-Forwarded-For otherwise are compared above, with the expected values.
      for (const kase of ['spoof', 'bare', ...CHAINS.filter((c) => output !== 'haproxy' || side.name !== 'trusted' || c[3] === undefined).map(([k]) => k)]) {
        const mine = get(side, output, kase);
        const theirs = get(side, 'proxy', kase);
        expect(names.map((n) => h(mine, n)), `${side.name} ${kase}`).toEqual(names.map((n) => h(theirs, n)));
      }
    }
    expect(h(get(untrusted, output, 'spoof'), 'forwarded')).toBe(h(get(untrusted, 'proxy', 'spoof'), 'forwarded'));
  });

  it('passes Upgrade: h2c, and websocket on a POST, on as plain requests; a WebSocket handshake gets 101', () => {
    for (const side of SIDES) {
      const h2 = get(side, output, 'h2c');
      expect(h2.status).toBe(200);
      expect(h2.received?.upgrade).toBe(false);
      expect(h(h2, 'upgrade')).toBeUndefined();
      expect(String(h(h2, 'connection') ?? '')).not.toMatch(/upgrade/i);
      const post = get(side, output, 'wspost');
      expect(post.status).toBe(200);
      expect(post.received?.upgrade).toBe(false);
      expect(h(post, 'upgrade')).toBeUndefined();
      expect(post.received?.bodyBytes).toBe(4);
      const ws = get(side, output, 'ws');
      expect(ws.status).toBe(101);
      expect(ws.received?.upgrade).toBe(true);
      expect(h(ws, 'upgrade')).toBe('websocket');
    }
  });
});

describe('HM_TRUSTED_PROXIES', () => {
  it('a bad value fails the render with one line naming the variable, and nothing is written', async () => {
    const n = logLines.length;
    const r = await render('bad', { nginx: 26030, haproxy: 26031 }, { HM_TRUSTED_PROXIES: '10.0.0.0/8,10.0.0.1;include /etc/passwd' });
    expect(r.result.ok).toBe(false);
    const errors = logLines.slice(n).map((l) => JSON.parse(l) as { msg: string; event: string });
    const msgs = errors.filter((e) => e.event === 'template-error').map((e) => e.msg);
    expect(msgs).toHaveLength(2);
    for (const m of msgs) {
      expect(m).toMatch(/\.hbs:\d+: HM_TRUSTED_PROXIES: "10\.0\.0\.1;include \/etc\/passwd" is not an IPv4\/IPv6 address or CIDR; /);
      expect(m).not.toContain('\n');
    }
    expect(existsSync(r.nginxConf)).toBe(false);
    expect(existsSync(r.haproxyCfg)).toBe(false);
    console.log(`PROBE HM_TRUSTED_PROXIES="10.0.0.0/8,10.0.0.1;include /etc/passwd" → render failed: ${msgs[0]}`);
  });

  it('addresses and CIDRs of both families, host bits and duplicates are written as networks both proxies load', async () => {
    const r = await render('mixed', { nginx: 26032, haproxy: 26033 }, { HM_TRUSTED_PROXIES: ' 10.1.2.3/8, 10.0.0.0/8 ,::1, fd00::1/8,192.168.1.7' });
    expect(r.result.ok, logLines.join('')).toBe(true);
    const ngx = readFileSync(r.nginxConf, 'utf8');
    const hap = readFileSync(r.haproxyCfg, 'utf8');
    for (const net of ['10.0.0.0/8', '0:0:0:0:0:0:0:1/128', 'fd00:0:0:0:0:0:0:0/8', '192.168.1.7/32']) expect(ngx).toContain(`    ${net} 1;\n`);
    expect(hap).toContain('acl hm_trusted src 10.0.0.0/8 0:0:0:0:0:0:0:1/128 fd00:0:0:0:0:0:0:0/8 192.168.1.7/32\n');
    // 100 entries: two acl lines (HAProxy reads at most 64 words on one), and the trusted side above ran on them.
    const hundred = readFileSync(join(dir, 'trusted', 'haproxy.cfg'), 'utf8');
    expect(hundred.match(/^ *acl hm_trusted src /gm)).toHaveLength(2);
    const checks = [await nginxTest(r.nginxConf), await haproxyCheck(r.haproxyCfg)];
    expect(checks.map((c) => c.ok)).toEqual([true, true]);
    expect(checks[0].output).not.toContain('[warn]');
    // Without the variable, HAProxy's acl matches nothing.
    expect(readFileSync(join(dir, 'untrusted', 'haproxy.cfg'), 'utf8')).toContain('acl hm_trusted always_false\n');
  });
});
