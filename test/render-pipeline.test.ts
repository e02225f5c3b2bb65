// `harbormaster render` driving a real nginx from a real etcd: no write and no reload for an
// unchanged config, a broken template or a failing check leaves the live config alone while
// nginx keeps serving, a reload nginx refuses is rolled back, and a burst of 50 changes within
// the quiet time gives one reload. Backends are plain HTTP servers on loopback ports.
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServiceInstance } from '../src/model/service-instance.js';
import { createBackend } from '../src/registry/index.js';
import type { RegistryBackend } from '../src/registry/types.js';
import { Hm, runCli } from './support/harbormaster.js';
import { ETCD_ENDPOINT } from './support/registries.js';
import { sleep, uniq, waitFor } from './support/wait.js';
import { copyTemplates, countLines, get, Nginx, tempDir, templateEnv, waitForBodies } from './support/render.js';

const NGINX_PORT = 19430;
const BLOCKED_PORT = 19431; // held by another process: nginx -t passes, the reload cannot bind it
const DIR = tempDir('hm-rp-');
const T = copyTemplates(DIR);
const ORIGINAL = readFileSync(T.nginx, 'utf8');
const ENV = templateEnv(DIR, NGINX_PORT, 19439);
const CONF = join(DIR, 'nginx.conf');
const COUNTER = join(DIR, 'reloads');
const PID = ENV.HM_NGINX_PID;
const URI = `etcd://${ETCD_ENDPOINT}/${uniq('hmrp')}`;
const SVC = uniq('rp');
const HOST = `${SVC}.localhost`;

const servers: http.Server[] = [];
const registered: ServiceInstance[] = [];
let backend: RegistryBackend;
let nginx: Nginx;
let hm: Hm;
let blocker: net.Server;

/** A real HTTP backend that answers its own name. */
async function backendServer(name: string): Promise<number> {
  const s = http.createServer((_req, res) => res.end(`${name}\n`));
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  return (s.address() as net.AddressInfo).port;
}

const instance = (name: string, id: string, port: number, tags: string[] = []): ServiceInstance => ({
  id,
  name,
  address: '127.0.0.1',
  port,
  protocol: 'tcp',
  tags,
  meta: {},
  host: 'render-pipeline',
  status: 'passing',
});

async function register(i: ServiceInstance): Promise<void> {
  await backend.register(i);
  registered.push(i);
}

const conf = () => readFileSync(CONF, 'utf8');
/** Staged files left behind in the destination folder. */
const leftovers = () => readdirSync(DIR).filter((f) => f.endsWith('.tmp'));
const logsAfter = (n: number, pred: (l: Hm['logs'][number]) => boolean) => hm.logs.slice(n).filter(pred);

beforeAll(async () => {
  backend = createBackend(URI, { ttl: 0 });
  await register(instance(SVC, `${SVC}:a`, await backendServer('a')));
  await register(instance(SVC, `${SVC}:b`, await backendServer('b')));
  // The first config comes from --once; nginx starts on it.
  const once = await runCli(['render', URI, '--once', '--template', `${T.nginx}:${CONF}`, '--check', 'nginx -t -q -c {{src}}'], ENV);
  expect(once.code, once.stdout + once.stderr).toBe(0);
  nginx = new Nginx(CONF, PID);
  await nginx.start();
  await waitForBodies(NGINX_PORT, HOST, ['a', 'b']);
  hm = new Hm(
    ['render', URI, '--template', `${T.nginx}:${CONF}:echo r >> ${COUNTER} && kill -HUP $(cat ${PID})`, '--check', 'nginx -t -q -c {{src}}', '--verify', `nginx:${PID}`, '--wait', '300ms:1s', '--timeout', '8s'],
    ENV,
  );
  await hm.waitForLog('first render', (l) => l.event === 'render');
  // The first run after a start reloads once (the proxy may never have loaded the file on disk);
  // the reload counter starts after it.
  await hm.waitForLog('start-up reload', (l) => l.event === 'reload');
  writeFileSync(COUNTER, '');
});

afterAll(async () => {
  await hm?.stop();
  await nginx?.stop();
  blocker?.close();
  for (const i of registered) await backend.deregister(i).catch(() => undefined);
  await backend?.close();
  for (const s of servers) s.close();
  rmSync(DIR, { recursive: true, force: true });
});

describe('render → nginx', () => {
  it('an unchanged config is not written; reloaded once after a start, then never', async () => {
    // --once already wrote exactly this: the first run finds equal bytes, not yet confirmed loaded by this process.
    expect(hm.logs.find((l) => l.event === 'render')).toMatchObject({ result: 'unchanged', destination: CONF });
    expect(hm.logs.filter((l) => l.event === 'reload').map((l) => l.result)).toEqual(['ok']);
    const before = statSync(CONF);
    const reloadsBefore = hm.logs.filter((l) => l.event === 'reload').length;
    // A registry change that the template does not show (a tag): rendered, equal, skipped.
    const n = hm.logs.length;
    await register(instance(SVC, `${SVC}:a`, registered[0].port, ['blue']));
    await hm.waitForLog('second unchanged render', (l) => hm.logs.indexOf(l) >= n && l.event === 'render' && l.result === 'unchanged');
    await sleep(1500);
    expect(countLines(COUNTER)).toBe(0);
    expect(logsAfter(0, (l) => l.event === 'reload' || l.result === 'written')).toHaveLength(reloadsBefore);
    const after = statSync(CONF);
    expect(after.ino).toBe(before.ino);
    expect(after.mtimeMs).toBe(before.mtimeMs);
  });

  it('a registry change is written once, reloaded once, and served', async () => {
    const n = hm.logs.length;
    await register(instance(SVC, `${SVC}:c`, await backendServer('c')));
    await waitForBodies(NGINX_PORT, HOST, ['a', 'b', 'c']);
    await hm.waitForLog('reload confirmed', (l) => hm.logs.indexOf(l) >= n && l.event === 'reload');
    await sleep(1500);
    expect(countLines(COUNTER)).toBe(1);
    const reload = logsAfter(n, (l) => l.event === 'reload');
    expect(reload).toHaveLength(1);
    expect(reload[0]).toMatchObject({ result: 'ok' });
    expect(reload[0].msg).toMatch(/^reloaded \(\d+ ms\)/);
    expect(logsAfter(n, (l) => l.event === 'render' && l.result === 'written')).toHaveLength(1);
  });

  it('a broken template leaves the live config alone (file:line reported) and nginx keeps serving', async () => {
    const live = conf();
    const n = hm.logs.length;
    // an {{#if}} closed by {{/each}}, on the line after the header comment
    const lines = ORIGINAL.split('\n');
    const at = lines.findIndex((l) => l.startsWith('# Rendered by harbormaster')) + 1;
    lines.splice(at, 0, '{{#if env.X}}{{/each}}');
    writeFileSync(T.nginx, lines.join('\n'));
    const err = await hm.waitForLog('template error', (l) => hm.logs.indexOf(l) >= n && l.event === 'template-error');
    expect(err.msg).toContain(`${T.nginx}:${at + 1}: if doesn't match each`);
    // a registry change while the template is broken: still nothing written
    await backend.deregister(registered.find((i) => i.id === `${SVC}:c`)!);
    await hm.waitForLog('render skipped', (l) => hm.logs.indexOf(l) > hm.logs.indexOf(err) && l.event === 'template-error' && String(l.msg).includes('left as it is'));
    expect(conf()).toBe(live);
    expect(countLines(COUNTER)).toBe(1);
    expect((await get(NGINX_PORT, HOST)).status).toBe(200);
    // fixed: the pending change goes through
    writeFileSync(T.nginx, ORIGINAL);
    await waitForBodies(NGINX_PORT, HOST, ['a', 'b']);
    expect(countLines(COUNTER)).toBe(2);
  });

  it('a failing check leaves the live config alone, logs the check output, and nginx keeps serving', async () => {
    const live = conf();
    const n = hm.logs.length;
    writeFileSync(T.nginx, ORIGINAL.replace('  server_tokens off;', '  server_tokens off;\n  bogus_directive_zz on;'));
    const failed = await hm.waitForLog('check failure', (l) => hm.logs.indexOf(l) >= n && l.event === 'check-failed');
    expect(failed.msg).toContain(`check failed for ${CONF}`);
    expect(failed.msg).toContain('unknown directive "bogus_directive_zz"');
    expect(conf()).toBe(live);
    expect(countLines(COUNTER)).toBe(2);
    expect(await waitForBodies(NGINX_PORT, HOST, ['a', 'b'])).toBeUndefined();
    writeFileSync(T.nginx, ORIGINAL);
    await hm.waitForLog('back to unchanged', (l) => hm.logs.indexOf(l) > hm.logs.indexOf(failed) && l.event === 'render' && l.result === 'unchanged');
    expect(leftovers()).toEqual([]);
  });

  it('a reload nginx refuses is detected and rolled back, and nginx keeps serving', async () => {
    blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(BLOCKED_PORT, '127.0.0.1', () => r()));
    const live = conf();
    const n = hm.logs.length;
    writeFileSync(T.nginx, ORIGINAL.replace('default_server;', `default_server;\n    listen 127.0.0.1:${BLOCKED_PORT};`));
    const rollback = await hm.waitForLog('rollback', (l) => hm.logs.indexOf(l) >= n && l.event === 'rollback' && l.result === undefined, 20_000);
    expect(rollback.msg).toContain(`rolled back ${CONF}`);
    const failed = logsAfter(n, (l) => l.event === 'reload' && l.result === 'failed');
    expect(failed).toHaveLength(1);
    expect(failed[0].msg).toContain('started no new workers');
    await hm.waitForLog('previous config reloaded', (l) => hm.logs.indexOf(l) > hm.logs.indexOf(rollback) && l.event === 'reload' && l.result === 'ok');
    expect(conf()).toBe(live);
    expect(countLines(COUNTER)).toBe(4); // the refused reload and the reload of the previous file
    expect(readFileSync(join(DIR, 'nginx-error.log'), 'utf8')).toContain(`bind() to 127.0.0.1:${BLOCKED_PORT} failed`);
    await waitForBodies(NGINX_PORT, HOST, ['a', 'b']);
    writeFileSync(T.nginx, ORIGINAL);
  });

  it('50 services changing within the quiet time give one reload', async () => {
    const dest = join(DIR, 'burst.conf');
    const counter = join(DIR, 'burst-reloads');
    const burst = new Hm(['render', URI, '--template', `${T.nginx}:${dest}:echo r >> ${counter}`, '--check', 'nginx -t -q -c {{src}}', '--wait', '2500ms:10s'], ENV);
    try {
      await waitFor('first burst render', () => countLines(counter) === 1, 20_000);
      const port = registered[0].port;
      const started = Date.now();
      await Promise.all(Array.from({ length: 50 }, (_, k) => register(instance(`${SVC}-s${k}`, `${SVC}-s${k}:1`, port))));
      const took = Date.now() - started;
      expect(took).toBeLessThan(2000); // the burst fits in the quiet time
      await waitFor('all 50 rendered', () => readFileSync(dest, 'utf8').includes(`server_name ${SVC}-s49.localhost;`), 20_000);
      await sleep(4000);
      expect(countLines(counter)).toBe(2);
      const config = readFileSync(dest, 'utf8');
      for (let k = 0; k < 50; k++) expect(config).toContain(`upstream ${SVC}-s${k} {`);
      expect(burst.logs.filter((l) => l.event === 'reload')).toHaveLength(2);
    } finally {
      await burst.stop();
    }
  });
});
