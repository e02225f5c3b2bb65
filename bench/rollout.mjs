// `harbormaster rollout` against real engines: how long a full rollout of 3 and of 20 replicas of
// a fast keep-alive app takes (and how much of it is waiting for readiness), how many requests each
// consumer path loses under ≥ 2,000 keep-alive + ≥ 300 new-connection requests/s, and the p99
// latency during the rollout next to the p99 before it, in the same run. Loopback only; every
// process, container and file made here is removed.
//   node bench/rollout.mjs
import { execFile, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { register } from 'tsx/esm/api';

register();
const { startLoad } = await import('../test/support/load-gen.ts');

const exec = promisify(execFile);
const BIN = fileURLToPath(new URL('../bin/harbormaster.js', import.meta.url));
const TEMPLATES = fileURLToPath(new URL('../templates/', import.meta.url));
const FAST = 'hm-fast:1';
const TAG = Math.random().toString(36).slice(2, 8);
const HOST = `hmbr-${TAG}`;
const P = `${HOST}-`;
const CONSUL = 'consul://127.0.0.1:8500';
const ETCD = `etcd://127.0.0.1:2379/hm-bench-rollout-${TAG}`;
const PORT = { run: 19470, runApi: 19471, consulApi: 19472, consulProxy: 19473, etcdApi: 19474, etcdProxy: 19475, nginx: 19476, haproxy: 19477, haproxyRt: 19478 };
const PACE = ['--drain-timeout', '2s', '--monitor', '500ms', '--stop-timeout', '5', '--health-timeout', '60s'];
const HEALTH = ['--health-cmd', 'wget -q -O /dev/null http://127.0.0.1/health', '--health-interval', '500ms', '--health-retries', '2'];
const LOAD = { keepalive: { connections: 16, rate: 3000 }, fresh: { concurrency: 8, rate: 450 } };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const docker = async (...args) => (await exec('docker', args, { maxBuffer: 16 << 20 })).stdout;
const procs = [];

/** A harbormaster child; resolves `ready` on its first ready/start log line. */
function hm(args, env = {}) {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs = [];
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        logs.push(JSON.parse(line));
      } catch {
        logs.push({ msg: line });
      }
    }
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((r) => child.on('exit', (code) => r(code)));
  const h = { child, logs, exited, stderr: () => stderr };
  procs.push(h);
  return h;
}

async function until(what, pred, ms = 60_000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function replicas(svc, n) {
  const names = Array.from({ length: n }, (_, i) => `${P}${svc}-${i + 1}`);
  for (let i = 0; i < n; i += 5) {
    await Promise.all(names.slice(i, i + 5).map((name, j) => docker('run', '-d', '--name', name, '-e', `SERVICE_NAME=${svc}`, '-e', `NAME=${svc}-${i + j + 1}`, '-p', '127.0.0.1::80', ...HEALTH, FAST)));
  }
  return names;
}

/** Every replica answers through the port. */
async function reaches(port, svc, n) {
  const seen = new Set();
  await until(`${svc} through ${port}`, async () => {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/`, { headers: { host: `${svc}.localhost` } });
      if (res.ok) seen.add((await res.text()).trim());
    } catch {
      // not yet
    }
    return seen.size >= n;
  });
}

/** 3 s of load before the rollout (the baseline p99), then load for the whole rollout. */
async function measure(port, svc, rolloutArgs) {
  const url = `http://127.0.0.1:${port}/`;
  const before = await startLoad({ url, host: `${svc}.localhost`, durationMs: 3000, ...LOAD }).done;
  const lg = startLoad({ url, host: `${svc}.localhost`, durationMs: 600_000, ...LOAD });
  const r = hm(['rollout', svc, '--json', ...PACE, '--hostname', HOST, ...rolloutArgs]);
  const code = await r.exited;
  const during = await lg.stop();
  const result = r.logs.find((l) => l.event === 'result') ?? {};
  if (code !== 0) throw new Error(`rollout of ${svc} exited ${code}: ${r.stderr()}`);
  return { before, during, result };
}

function row(path, m, extra = '') {
  const lost = m.during.keepalive.failures + m.during.fresh.failures;
  const ka = m.during.keepalive;
  const fr = m.during.fresh;
  return `| ${path} | ${(m.result.totalMs / 1000).toFixed(1)} s | ${(m.result.readyWaitMs / 1000).toFixed(1)} s | ${lost} (${ka.failures} keep-alive, ${fr.failures} new-conn) of ${ka.requests + fr.requests} | ${Math.round(ka.rate)}/s + ${Math.round(fr.rate)}/s | ${m.before.keepalive.p99Ms.toFixed(1)} → ${ka.p99Ms.toFixed(1)} ms | ${m.before.fresh.p99Ms.toFixed(1)} → ${fr.p99Ms.toFixed(1)} ms | ${Math.round(Math.max(ka.longestGapMs, fr.longestGapMs))} ms |${extra}`;
}

function templateEnv(dir, nginxPort, haproxyPort) {
  return {
    HM_NGINX_LISTEN: `127.0.0.1:${nginxPort}`,
    HM_NGINX_PID: join(dir, 'nginx.pid'),
    HM_NGINX_ERROR_LOG: join(dir, 'nginx-error.log'),
    HM_NGINX_ACCESS_LOG: 'off',
    HM_NGINX_TEMP_DIR: dir,
    HM_NGINX_WORKERS: '1',
    HM_HAPROXY_BIND: `127.0.0.1:${haproxyPort}`,
    HM_HAPROXY_PIDFILE: join(dir, 'haproxy.pid'),
    HM_HAPROXY_SOCKET: join(dir, 'haproxy-admin.sock'),
  };
}

/** A rendered consumer: `render --once`, the proxy started on it, then `render` keeping it current. */
async function consumer(kind, dir, port, runtime = false) {
  mkdirSync(dir, { recursive: true });
  const tpl = join(dir, `${kind}.hbs`);
  copyFileSync(join(TEMPLATES, kind === 'nginx' ? 'nginx.conf.hbs' : 'haproxy.cfg.hbs'), tpl);
  const env = templateEnv(dir, port, port);
  const dest = join(dir, kind === 'nginx' ? 'nginx.conf' : 'haproxy.cfg');
  const rt = runtime ? ['--haproxy-runtime', env.HM_HAPROXY_SOCKET] : [];
  const once = hm(['render', CONSUL, '--once', '--template', `${tpl}:${dest}`, ...rt], env);
  if ((await once.exited) !== 0) throw new Error(`render --once ${kind}: ${once.stderr()}`);
  let args;
  if (kind === 'nginx') {
    await exec('nginx', ['-c', dest]);
    args = ['--template', `${tpl}:${dest}:kill -HUP $(cat ${env.HM_NGINX_PID})`, '--check', 'nginx -t -q -c {{src}}', '--verify', `nginx:${env.HM_NGINX_PID}`];
  } else {
    const master = join(dir, 'haproxy-master.sock');
    procs.push({ child: spawn('haproxy', ['-W', '-S', master, '-f', dest], { stdio: 'ignore' }), logs: [] });
    await until('haproxy master socket', async () => (await exec('test', ['-S', master]).then(() => true, () => false)));
    args = ['--template', `${tpl}:${dest}:kill -USR2 $(cat ${env.HM_HAPROXY_PIDFILE})`, ...rt, '--check', 'haproxy -q -c -f {{src}}', '--verify', `haproxy:${master}`];
  }
  const r = hm(['render', CONSUL, ...args, '--wait', '100ms:500ms'], env);
  await until(`render ${kind}`, () => r.logs.some((l) => l.event === 'start'));
  return { env, render: r };
}

export async function run() {
  const dir = mkdtempSync(join(os.tmpdir(), 'hm-bench-rollout-'));
  const started = new Date().toISOString();
  const load1 = os.loadavg()[0];
  const rows = [];
  let twenty = [];
  try {
    hm(['run', '--listen', `127.0.0.1:${PORT.run}`, '--api', `127.0.0.1:${PORT.runApi}`, '--hostname', HOST]);
    hm(['register', '--explicit', '--hostname', HOST, '--ttl', '10', '--api', `127.0.0.1:${PORT.consulApi}`, CONSUL]);
    hm(['proxy', CONSUL, '--listen', `127.0.0.1:${PORT.consulProxy}`, '--api', 'off']);
    hm(['register', '--explicit', '--hostname', HOST, '--ttl', '10', '--api', `127.0.0.1:${PORT.etcdApi}`, ETCD]);
    hm(['proxy', ETCD, '--listen', `127.0.0.1:${PORT.etcdProxy}`, '--api', 'off']);
    await until('harbormaster processes', () => procs.every((p) => p.logs.some((l) => l.event === 'ready' || l.event === 'start')));
    const nginx = await consumer('nginx', join(dir, 'nginx'), PORT.nginx);
    const hap = await consumer('haproxy', join(dir, 'haproxy'), PORT.haproxy);
    const hrt = await consumer('haproxy', join(dir, 'haproxy-rt'), PORT.haproxyRt, true);
    const consul = ['--registry', CONSUL, '--api', `http://127.0.0.1:${PORT.consulApi}`];
    const paths = [
      ['built-in proxy (`run`, memory://)', PORT.run, ['--api', `http://127.0.0.1:${PORT.runApi}`]],
      ['built-in proxy (`proxy` on Consul)', PORT.consulProxy, consul],
      ['built-in proxy (`proxy` on etcd v3)', PORT.etcdProxy, ['--registry', ETCD, '--api', `http://127.0.0.1:${PORT.etcdApi}`]],
      ['nginx rendered (reload per change)', PORT.nginx, consul, nginx.render],
      ['HAProxy rendered (reload per change)', PORT.haproxy, consul, hap.render],
      ['HAProxy runtime mode', PORT.haproxyRt, consul, hrt.render],
    ];
    for (const [i, [name, port, args, render]] of paths.entries()) {
      const svc = `r${i}-${TAG}`;
      await replicas(svc, 3);
      await reaches(port, svc, 3);
      const reloadsBefore = render?.logs.filter((l) => l.event === 'reload' && l.result !== 'failed').length ?? 0;
      const m = await measure(port, svc, args);
      const reloads = render ? render.logs.filter((l) => l.event === 'reload' && l.result !== 'failed').length - reloadsBefore : undefined;
      rows.push(row(name, m, ` ${reloads ?? '–'} |`));
      console.error(`bench rollout: ${rows.at(-1)}`);
    }
    for (const batch of ['1', '25%']) {
      const svc = `r20-${batch.replace('%', 'p')}-${TAG}`;
      await replicas(svc, 20);
      await reaches(PORT.run, svc, 20);
      const m = await measure(PORT.run, svc, ['--api', `http://127.0.0.1:${PORT.runApi}`, '--batch', batch]);
      twenty.push(row(`20 replicas, --batch ${batch} (\`run\`)`, m, ' – |'));
      console.error(`bench rollout: ${twenty.at(-1)}`);
    }
  } finally {
    for (const p of procs) p.child.kill('SIGKILL');
    await exec('sh', ['-c', `kill $(cat ${join(dir, 'nginx', 'nginx.pid')}) 2>/dev/null; true`]);
    const ids = (await docker('ps', '-aq', '--filter', `name=${P}`)).split('\n').filter(Boolean);
    if (ids.length) await docker('rm', '-f', ...ids);
    rmSync(dir, { recursive: true, force: true });
  }
  return [
    '## Rollout',
    '',
    'Command: `npm run bench -- rollout`  ',
    `Date: ${started}  `,
    `Machine: ${os.cpus().length} CPUs, Node ${process.version}; 1-min load average before the run: ${load1.toFixed(2)}`,
    '',
    `Replicas of \`${FAST}\` (the C keep-alive test app; HEALTHCHECK every 500 ms), rolled with \`harbormaster rollout <svc> ${PACE.join(' ')}\` (start-first, batch 1) while the load generator of the tests (test/support/load-gen.ts) sends up to 3,000 requests/s on 16 keep-alive connections and up to 450/s on a new connection each, through the consumer named. "p99 before → during": the same load for 3 s just before the rollout, then during it. "Ready wait" is the part of the rollout spent waiting for replacements to be healthy, passing in the registry and watched (the rest is mostly the 2 s drains and the stops). One \`run\`, one \`register\` + \`proxy\` per registry, and one \`render\` per rendered consumer on this machine.`,
    '',
    '| path (3 replicas) | rollout | ready wait | requests lost | load held | keep-alive p99 before → during | new-conn p99 before → during | longest gap | reloads |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows,
    ...twenty,
    '',
    'nginx: a reload closes idle keep-alive connections; a request a client sends on one as it closes fails (the test allows one reload\'s worth per step). The others lose nothing: the old container is withdrawn and drained before it is stopped, and the proxies retry idempotent requests whose connection failed.',
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(await run());
