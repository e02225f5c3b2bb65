// Records and reloads the proxies refuse, against a real nginx and a real HAProxy kept current by
// the render loop (in-process, memory registry): a record the proxies would reject never
// freezes the configuration of the other services (a 248-character host, an address that does
// not resolve, an IPv6 zone id, and, with templates that write instance ids, an id with a
// newline, found by re-checking and left out with one line naming the field); a reload the
// proxy refuses is rolled back and retried with backoff until it takes, without any catalog
// change; a brand-new destination whose reload fails because no proxy runs yet stays, so the
// proxy can start from it, and the reload is retried.
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CatalogWatch } from '../src/catalog/watch.js';
import type { ServiceInstance } from '../src/model/service-instance.js';
import { createBackend } from '../src/registry/index.js';
import { RENDER_WATCH_STATUSES, type RenderConfig, type RenderHandle, renderOnce, startRender } from '../src/render/index.js';
import { copyTemplates, get, Haproxy, haproxyCheck, Nginx, nginxTest, tempDir, templateEnv, waitForBodies } from './support/render.js';
import { uniq, waitFor } from './support/wait.js';

const NGINX_PORT = 24510;
const HAPROXY_PORT = 24511;
const BLOCKED_PORT = 24512; // held by the test: nginx -t passes, the reload cannot bind it
const LATE_NGINX_PORT = 24513;
let nextPort = 24700; // instance servers

const DIR = tempDir('hm-rf-');
const T = copyTemplates(DIR);
const SHIPPED_NGINX = readFileSync(T.nginx, 'utf8');
// Custom templates that also write a free-form meta value unquoted (as custom templates may), so
// these templates can be broken by one record; the checks must find and leave out that record.
const CUSTOM_NGINX = SHIPPED_NGINX.replace('{{/each}}\n    keepalive 16;', '{{#if meta.kr}}\n    keepalive_requests {{meta.kr}};\n{{/if}}\n{{/each}}\n    keepalive 16;');
const CUSTOM_HAPROXY = readFileSync(T.haproxy, 'utf8').replace(/( {4}server s\{\{@index\}\}[^\n]*\n)/, '$1{{#if meta.kr}}\n    timeout server {{meta.kr}}\n{{/if}}\n');
writeFileSync(T.nginx, CUSTOM_NGINX);
writeFileSync(T.haproxy, CUSTOM_HAPROXY);
const TENV = templateEnv(DIR, NGINX_PORT, HAPROXY_PORT);
const ENV = { ...process.env, ...TENV };
const NGINX_CONF = join(DIR, 'nginx.conf');
const HAPROXY_CFG = join(DIR, 'haproxy.cfg');
const URI = `memory://${uniq('rf')}`;
const registry = createBackend(URI, { ttl: 0 });

interface Line {
  event?: string;
  result?: string;
  instance?: string;
  field?: string;
  msg: string;
}
const lines: Line[] = [];
const log = pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString()) as Line), cb()) }));
const after = (n: number, pred: (l: Line) => boolean) => lines.slice(n).filter(pred);
/** Names in this test's registry never reach a DNS server: only localhost resolves. */
const resolver = async (h: string) => {
  if (h === 'localhost') return [{ address: '127.0.0.1', family: 4 }];
  throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
};

const servers: http.Server[] = [];
async function instanceServer(body: string): Promise<number> {
  const s = http.createServer((_req, res) => res.end(body));
  servers.push(s);
  for (;;) {
    const port = nextPort++;
    const ok = await new Promise<boolean>((resolve) => {
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (ok) return (s.address() as AddressInfo).port;
  }
}

async function register(name: string, over: Partial<ServiceInstance> = {}): Promise<ServiceInstance> {
  const inst: ServiceInstance = { id: `rf:${name}`, name, address: '127.0.0.1', port: await instanceServer(name), protocol: 'tcp', tags: [], meta: {}, host: 'rf', status: 'passing', ...over };
  await registry.register(inst);
  return inst;
}

const config = (templates: RenderConfig['templates']): RenderConfig => ({
  templates,
  wait: { minMs: 50, maxMs: 300 },
  retry: { minMs: 300, maxMs: 2000 },
  statuses: ['passing'],
  domain: 'localhost',
  timeoutMs: 3000, // also how long a refused nginx reload takes to be noticed
  once: false,
  dry: false,
});

let watch: CatalogWatch;
let render: RenderHandle;
let nginx: Nginx;
let haproxy: Haproxy;

beforeAll(async () => {
  await register('one');
  watch = CatalogWatch.forUri(URI, { statuses: RENDER_WATCH_STATUSES, log });
  // First configs, then the proxies start on them, then the loop keeps them current.
  const first = await renderOnce(config([{ source: T.nginx, destination: NGINX_CONF, verify: { kind: 'plain' }, backup: false }, { source: T.haproxy, destination: HAPROXY_CFG, verify: { kind: 'plain' }, backup: false }]), watch, log, { env: ENV, resolver });
  expect(first.ok).toBe(true);
  nginx = new Nginx(NGINX_CONF, TENV.HM_NGINX_PID);
  await nginx.start();
  haproxy = new Haproxy(HAPROXY_CFG, DIR);
  await haproxy.start();
  render = await startRender(
    config([
      { source: T.nginx, destination: NGINX_CONF, command: `kill -HUP $(cat ${TENV.HM_NGINX_PID})`, check: 'nginx -t -q -c {{src}}', verify: { kind: 'nginx', pidFile: TENV.HM_NGINX_PID }, backup: false },
      { source: T.haproxy, destination: HAPROXY_CFG, command: `kill -USR2 $(cat ${TENV.HM_HAPROXY_PIDFILE})`, check: 'haproxy -q -c -f {{src}}', verify: { kind: 'haproxy', masterSocket: haproxy.masterSocket }, backup: false },
    ]),
    watch,
    log,
    { env: ENV, resolver },
  );
  await waitForBodies(NGINX_PORT, 'one.localhost', ['one']);
  await waitForBodies(HAPROXY_PORT, 'one.localhost', ['one']);
}, 60_000);

afterAll(async () => {
  await render?.stop();
  await watch?.stop();
  await nginx?.stop();
  await haproxy?.stop();
  await Promise.all(servers.map((s) => new Promise((r) => (s.closeAllConnections(), s.close(r)))));
  rmSync(DIR, { recursive: true, force: true });
});

describe('records the proxies would reject', () => {
  it('a 248-character host is served; an unresolvable name, an IPv6 zone id and an id that breaks the templates are left out with one line each; the others keep updating', async () => {
    const n = lines.length;
    const longHost = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(46)}.localhost`;
    expect(longHost).toHaveLength(248);
    await register('long', { meta: { http_host: longHost } });
    await register('lost', { address: 'gone.hm-test' });
    await register('zone', { address: 'fe80::1%lo' });
    await register('broken', { meta: { kr: 'x}' } });
    const t = Date.now();
    await register('two');
    await waitForBodies(NGINX_PORT, 'two.localhost', ['two'], 20_000);
    await waitForBodies(HAPROXY_PORT, 'two.localhost', ['two'], 20_000);
    const ms = Date.now() - t;
    await waitForBodies(NGINX_PORT, longHost, ['long']);
    await waitForBodies(HAPROXY_PORT, longHost, ['long']);
    await render.idle();

    const skipped = after(n, (l) => l.event === 'instance-skipped');
    const rejected = after(n, (l) => l.event === 'instance-rejected');
    expect(skipped.map((l) => [l.instance, l.field]).sort()).toEqual([['rf:lost', 'address'], ['rf:zone', 'address']]);
    expect(skipped.find((l) => l.instance === 'rf:lost')!.msg).toBe('service lost instance rf:lost: address "gone.hm-test" does not resolve (ENOTFOUND); instance left out of the rendered configurations');
    // the broken id: found by re-checking, once for each template
    expect(rejected.map((l) => [l.instance, l.field])).toEqual([['rf:broken', 'meta'], ['rf:broken', 'meta']]);
    expect(rejected.map((l) => l.msg.split(': meta rejected')[0]).sort()).toEqual([`${HAPROXY_CFG}: service broken instance rf:broken`, `${NGINX_CONF}: service broken instance rf:broken`]);
    expect(after(n, (l) => l.event === 'check-failed' || l.event === 'rollback' || (l.event === 'reload' && l.result === 'failed'))).toEqual([]);
    const ngx = readFileSync(NGINX_CONF, 'utf8');
    expect(ngx).toContain(`server_name ${longHost};`);
    expect(ngx).toMatch(/server_names_hash_bucket_size 1024;/);
    expect(ngx).not.toContain('gone.hm-test');
    expect(ngx).not.toContain('keepalive_requests x');
    expect(readFileSync(HAPROXY_CFG, 'utf8')).not.toContain('timeout server x');
    expect((await nginxTest(NGINX_CONF)).ok).toBe(true);
    expect((await haproxyCheck(HAPROXY_CFG)).ok).toBe(true);
    console.log(
      `PROBE render faults: 248-char host served by nginx and HAProxy; left out: ${skipped.map((l) => `${l.instance} (${l.field})`).join(', ')} before rendering, ` +
        `${rejected.length} × rf:broken (meta) by re-checking; service registered after them served by both in ${ms} ms`,
    );
  });

  it('a reload nginx refuses is rolled back, then retried with backoff until it takes, without any catalog change', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(BLOCKED_PORT, '127.0.0.1', () => r()));
    const n = lines.length;
    try {
      writeFileSync(T.nginx, CUSTOM_NGINX.replace('server_name _;', `server_name _;\n    listen 127.0.0.1:${BLOCKED_PORT};`));
      await waitFor('a refused reload, rolled back', () => after(n, (l) => l.event === 'rollback' && l.result === undefined).length >= 1, 20_000, 20);
      expect(readFileSync(NGINX_CONF, 'utf8')).not.toContain(`${BLOCKED_PORT}`);
      await waitForBodies(NGINX_PORT, 'two.localhost', ['two']);
    } finally {
      await new Promise((r) => blocker.close(r));
    }
    const freed = Date.now();
    const m = lines.length;
    // nginx itself answers on the freed port once a retry's reload took
    await waitFor('a retry that takes', async () => (await get(BLOCKED_PORT, 'nobody.example').catch(() => undefined))?.status === 404, 20_000, 20);
    const ms = Date.now() - freed;
    expect(readFileSync(NGINX_CONF, 'utf8')).toContain(`listen 127.0.0.1:${BLOCKED_PORT};`);
    await waitForBodies(NGINX_PORT, 'two.localhost', ['two']);
    const retries = after(n, (l) => l.event === 'retry').length;
    console.log(`PROBE render faults: refused nginx reload rolled back ${after(n, (l) => l.event === 'rollback' && l.result === undefined).length}×, ${retries} retries scheduled; nginx served the new config ${ms} ms after the port was free, with no catalog change`);
    expect(after(m, (l) => l.event === 'template')).toEqual([]);
    writeFileSync(T.nginx, CUSTOM_NGINX);
    await waitFor('template restored', () => !readFileSync(NGINX_CONF, 'utf8').includes(`${BLOCKED_PORT}`), 20_000, 20);
  });
});

describe('a brand-new destination whose reload fails because no proxy runs yet', () => {
  it('stays (the proxy starts from it) and its reload is retried until the proxy confirms it', async () => {
    const dir = tempDir('hm-rf-late-');
    const tenv = templateEnv(dir, LATE_NGINX_PORT, 24514);
    const conf = join(dir, 'nginx.conf');
    const tpl = join(dir, 'nginx.conf.hbs');
    writeFileSync(tpl, SHIPPED_NGINX);
    const n = lines.length;
    const late = await startRender(
      config([{ source: tpl, destination: conf, command: `kill -HUP $(cat ${tenv.HM_NGINX_PID})`, check: 'nginx -t -q -c {{src}}', verify: { kind: 'nginx', pidFile: tenv.HM_NGINX_PID }, backup: false }]),
      watch,
      log,
      { env: { ...process.env, ...tenv }, resolver },
    );
    const lateNginx = new Nginx(conf, tenv.HM_NGINX_PID);
    try {
      await waitFor('the failed first reload', () => after(n, (l) => l.event === 'rollback' && l.result === 'skipped').length > 0, 15_000, 20);
      expect(existsSync(conf)).toBe(true);
      expect(after(n, (l) => l.event === 'rollback' && l.result === undefined)).toEqual([]);
      // a supervisor starts nginx from the file that was kept
      await lateNginx.start();
      const started = Date.now();
      const m = lines.length;
      await waitFor('the retried reload confirmed', () => after(m, (l) => l.event === 'reload' && l.result === 'ok').length > 0, 15_000, 20);
      const ms = Date.now() - started;
      await waitForBodies(LATE_NGINX_PORT, 'two.localhost', ['two']);
      console.log(`PROBE render faults: new destination kept after its reload failed with no nginx running (${after(n, (l) => l.event === 'rollback' && l.result === 'skipped').length} skipped rollbacks); nginx started from it; the retried reload was confirmed ${ms} ms later`);
    } finally {
      await late.stop();
      await lateNginx.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
