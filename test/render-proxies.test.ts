// The whole read side against real engines: containers registered by a real `harbormaster
// register` into Consul and into etcd show up in the shipped nginx and HAProxy configs that
// `harbormaster render` keeps current, and requests through both proxies reach every container.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { docker, removeContainers, run } from './support/docker.js';
import { Hm, runCli } from './support/harbormaster.js';
import { ETCD_ENDPOINT, privateConsul } from './support/registries.js';
import { uniq, waitFor } from './support/wait.js';
import { copyTemplates, countLines, get, Haproxy, haproxyCheck, Nginx, nginxTest, tempDir, templateEnv, waitForBodies } from './support/render.js';

const consul = privateConsul(19420);

interface Setup {
  name: string;
  uri: () => string;
  nginxPort: number;
  haproxyPort: number;
  /** Held by the test: a config that binds it passes haproxy -c but cannot be loaded. */
  blockedPort: number;
}

const SETUPS: Setup[] = [
  { name: 'consul', uri: () => consul.uri, nginxPort: 19410, haproxyPort: 19411, blockedPort: 19414 },
  { name: 'etcd', uri: () => `etcd://${ETCD_ENDPOINT}/${uniq('hmrx')}`, nginxPort: 19412, haproxyPort: 19413, blockedPort: 19415 },
];

beforeAll(async () => {
  await consul.start();
});
afterAll(async () => {
  await consul.kill('SIGTERM');
});

describe.each(SETUPS)('register → $name → render → nginx and HAProxy', (setup) => {
  const HOSTNAME = uniq(`hmr${setup.name}`);
  const P = `${HOSTNAME}-`; // container name prefix
  const SVC = uniq('web');
  const API = uniq('api');
  const DIR = tempDir('hm-rx-');
  const T = copyTemplates(DIR);
  const ENV = templateEnv(DIR, setup.nginxPort, setup.haproxyPort);
  const NGINX_CONF = join(DIR, 'nginx.conf');
  const HAPROXY_CFG = join(DIR, 'haproxy.cfg');
  const NGINX_RELOADS = join(DIR, 'nginx-reloads');
  const HAPROXY_RELOADS = join(DIR, 'haproxy-reloads');
  let uri: string;
  let register: Hm;
  let render: Hm;
  let nginx: Nginx;
  let haproxy: Haproxy;

  beforeAll(async () => {
    uri = setup.uri();
    register = new Hm(['register', '--explicit', '--hostname', HOSTNAME, '--ttl', '10', '--resync', '5', uri]);
    await register.waitForLog('register startup', (l) => l.event === 'start');
    // First configs (no instance yet), then the proxies start on them.
    const once = await runCli(['render', uri, '--once', '--template', `${T.nginx}:${NGINX_CONF}`, '--template', `${T.haproxy}:${HAPROXY_CFG}`], ENV);
    expect(once.code, once.stdout + once.stderr).toBe(0);
    nginx = new Nginx(NGINX_CONF, ENV.HM_NGINX_PID);
    await nginx.start();
    haproxy = new Haproxy(HAPROXY_CFG, DIR);
    await haproxy.start();
    render = new Hm(
      [
        'render', uri,
        '--template', `${T.nginx}:${NGINX_CONF}:echo r >> ${NGINX_RELOADS}; kill -HUP $(cat ${ENV.HM_NGINX_PID})`,
        '--check', 'nginx -t -q -c {{src}}',
        '--verify', `nginx:${ENV.HM_NGINX_PID}`,
        '--template', `${T.haproxy}:${HAPROXY_CFG}:echo r >> ${HAPROXY_RELOADS}; kill -USR2 $(cat ${ENV.HM_HAPROXY_PIDFILE})`,
        '--check', 'haproxy -q -c -f {{src}}',
        '--verify', `haproxy:${haproxy.masterSocket}`,
        '--wait', '200ms:1s',
        '--timeout', '10s',
      ],
      ENV,
    );
    await render.waitForLog('render startup', (l) => l.event === 'start');
  });

  afterAll(async () => {
    await render?.stop();
    await register?.stop();
    await nginx?.stop();
    await haproxy?.stop();
    await removeContainers(P);
    rmSync(DIR, { recursive: true, force: true });
  });

  it('containers appear in both configs and requests through nginx and HAProxy reach every one', async () => {
    const names = ['a', 'b', 'c'].map((x) => `${P}${x}`);
    await Promise.all(names.map((n) => run(n, { env: { NAME: n }, labels: { SERVICE_NAME: SVC } })));
    await waitForBodies(setup.nginxPort, `${SVC}.localhost`, names);
    await waitForBodies(setup.haproxyPort, `${SVC}.localhost`, names);
    // upper case and a port in the Host header are matched too
    await waitForBodies(setup.haproxyPort, `${SVC.toUpperCase()}.LOCALHOST:${setup.haproxyPort}`, names);
    await waitForBodies(setup.nginxPort, `${SVC.toUpperCase()}.LOCALHOST:${setup.nginxPort}`, names);
    const ngx = readFileSync(NGINX_CONF, 'utf8');
    const hap = readFileSync(HAPROXY_CFG, 'utf8');
    expect(ngx).toContain(`upstream ${SVC} {`);
    expect(ngx).toContain(`server_name ${SVC}.localhost;`);
    expect(hap).toContain(`backend ${SVC}\n`);
    expect(hap.match(new RegExp(`server s\\d 127\\.0\\.0\\.1:\\d+ check`, 'g'))?.length).toBeGreaterThanOrEqual(3);
    expect((await nginxTest(NGINX_CONF)).ok).toBe(true);
    expect((await haproxyCheck(HAPROXY_CFG)).ok).toBe(true);
    expect(countLines(NGINX_RELOADS)).toBeGreaterThanOrEqual(1);
    expect(render.logs.filter((l) => l.event === 'reload' && l.result === 'failed')).toEqual([]);
  });

  it('routes SERVICE_HTTP_HOST and SERVICE_HTTP_PATH', async () => {
    const name = `${P}api`;
    await run(name, {
      env: { NAME: name },
      labels: { SERVICE_NAME: API, SERVICE_HTTP_HOST: `${API}.example.test`, SERVICE_HTTP_PATH: '/api' },
      extra: ['--entrypoint', 'sh'],
      cmd: ['-c', 'mkdir -p /www/api && echo "api:$NAME" > /www/api/index.html && exec /bin/serve'],
    });
    await waitForBodies(setup.nginxPort, `${API}.example.test`, [`api:${name}`], 30_000, '/api/');
    await waitForBodies(setup.haproxyPort, `${API}.example.test`, [`api:${name}`], 30_000, '/api/');
    // outside the path, and unknown hosts: nobody's
    expect((await get(setup.nginxPort, `${API}.example.test`, '/')).status).toBe(404);
    expect((await get(setup.haproxyPort, `${API}.example.test`, '/apix')).status).toBe(404);
    expect((await get(setup.nginxPort, 'nobody.example.test')).status).toBe(404);
    expect((await get(setup.haproxyPort, 'nobody.example.test')).status).toBe(404);
  });

  it('a removed container leaves both proxies after one reload each', async () => {
    const nBefore = countLines(NGINX_RELOADS);
    const hBefore = countLines(HAPROXY_RELOADS);
    const n = render.logs.length;
    await docker('rm', '-f', `${P}c`);
    await waitForBodies(setup.nginxPort, `${SVC}.localhost`, [`${P}a`, `${P}b`]);
    await waitForBodies(setup.haproxyPort, `${SVC}.localhost`, [`${P}a`, `${P}b`]);
    await waitFor('both reloads confirmed', () => render.logs.slice(n).filter((l) => l.event === 'reload' && l.result === 'ok').length >= 2, 15_000);
    expect(countLines(NGINX_RELOADS)).toBe(nBefore + 1);
    expect(countLines(HAPROXY_RELOADS)).toBe(hBefore + 1);
  });

  it('a reload the HAProxy master refuses is rolled back; nginx is left alone and both keep serving', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(setup.blockedPort, '127.0.0.1', () => r()));
    try {
      const original = readFileSync(T.haproxy, 'utf8');
      const live = readFileSync(HAPROXY_CFG, 'utf8');
      const nBefore = countLines(NGINX_RELOADS);
      const n = render.logs.length;
      writeFileSync(T.haproxy, original.replace('frontend hm_http\n', `frontend hm_http\n    bind 127.0.0.1:${setup.blockedPort}\n`));
      const rollback = await render.waitForLog('rollback', (l) => render.logs.indexOf(l) >= n && l.event === 'rollback' && l.result === undefined, 30_000);
      expect(rollback.msg).toContain(`rolled back ${HAPROXY_CFG}`);
      const failed = render.logs.slice(n).find((l) => l.event === 'reload' && l.result === 'failed');
      expect(failed?.msg).toContain('refused the new configuration');
      await render.waitForLog('previous config reloaded', (l) => render.logs.indexOf(l) > render.logs.indexOf(rollback) && l.event === 'reload' && l.result === 'ok');
      expect(readFileSync(HAPROXY_CFG, 'utf8')).toBe(live);
      expect(countLines(NGINX_RELOADS)).toBe(nBefore);
      writeFileSync(T.haproxy, original);
      await waitForBodies(setup.haproxyPort, `${SVC}.localhost`, [`${P}a`, `${P}b`]);
      await waitForBodies(setup.nginxPort, `${SVC}.localhost`, [`${P}a`, `${P}b`]);
    } finally {
      blocker.close();
    }
  });
});
