// `harbormaster rollout` against real engines: how long a full rollout of 3 and of 20 replicas of
// a fast keep-alive app takes (and how much of it is waiting for readiness), how many requests each
// consumer path loses under ≥ 2,000 keep-alive + ≥ 300 new-connection requests/s, and the p99
// latency during the rollout next to the p99 before it; and, in the same run, an instance change →
// HAProxy serving it, with reloads and in runtime mode. Loopback only; every process, container
// and file made here is removed.
//   node bench/rollout.mjs        (DOCKER_HOST names the engine)
import { execFile, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { register } from 'tsx/esm/api';

register();
const { startLoad } = await import('../test/support/load-gen.ts');
const { createBackend } = await import('../src/registry/index.ts');

const exec = promisify(execFile);
const BIN = fileURLToPath(new URL('../bin/harbormaster.js', import.meta.url));
const TEMPLATES = fileURLToPath(new URL('../templates/', import.meta.url));
const FAST = 'hm-fast:1';
const TAG = Math.random().toString(36).slice(2, 8);
const HOST = `hmbr-${TAG}`;
const P = `${HOST}-`;
const CONSUL = 'consul://127.0.0.1:8500';
const ETCD = `etcd://127.0.0.1:2379/hm-bench-rollout-${TAG}`;
const PORT = { run: 19470, runApi: 19471, consulApi: 19472, consulProxy: 19473, etcdApi: 19474, etcdProxy: 19475, nginx: 19476, haproxy: 19477, haproxyRt: 19478, latHaproxy: 19481, latHaproxyRt: 19482 };
const RENDER_WAIT = '100ms:500ms';
const PACE = ['--drain-timeout', '2s', '--monitor', '500ms', '--stop-timeout', '5', '--health-timeout', '60s'];
const HEALTH = ['--health-cmd', 'wget -q -O /dev/null http://127.0.0.1/health', '--health-interval', '500ms', '--health-retries', '2'];
const LOAD = { keepalive: { connections: 16, rate: 3000 }, fresh: { concurrency: 8, rate: 450 } };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();
/** Change → served samples: with reloads (spaced more than the --wait max apart), and in runtime mode back to back. */
const LATENCY = { spaced: 40, spacingMs: 1_000, backToBack: 500 };
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
  const h = { child, logs, exited, stderr: () => stderr, args };
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

/** The replicas of a service go, so that the next measurement runs on a quiet engine. */
async function removeService(svc) {
  const ids = (await docker('ps', '-aq', '--filter', `name=${P}${svc}-`)).split('\n').filter(Boolean);
  if (ids.length) await docker('rm', '-f', ...ids);
}

/** Every replica answers through the port (http.request: fetch() does not send a Host header of one's own). */
async function reaches(port, svc, n) {
  const seen = new Set();
  await until(`${svc} through ${port}`, async () => {
    const res = await get(port, `${svc}.localhost`);
    if (res.status === 200) seen.add(res.body);
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
  const share = Math.round((m.result.readyWaitMs / m.result.totalMs) * 100);
  return `| ${path} | ${m.load === undefined ? '' : `${m.load.toFixed(1)} | `}${(m.result.totalMs / 1000).toFixed(1)} s | ${(m.result.readyWaitMs / 1000).toFixed(1)} s (${share} %) | ${(m.result.drainMs / 1000).toFixed(1)} s | ${lost} (${ka.failures} keep-alive, ${fr.failures} new-conn) of ${ka.requests + fr.requests} | ${Math.round(ka.rate)}/s + ${Math.round(fr.rate)}/s (lowest second ${ka.minWindowRate} + ${fr.minWindowRate}) | ${m.before.keepalive.p99Ms.toFixed(1)} → ${ka.p99Ms.toFixed(1)} ms | ${m.before.fresh.p99Ms.toFixed(1)} → ${fr.p99Ms.toFixed(1)} ms | ${Math.round(Math.max(ka.longestGapMs, fr.longestGapMs))} ms |${extra}`;
}

function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
}

/** GET through a proxy on a new connection: status and body. */
function get(port, host) {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', headers: { Host: host }, agent: false, timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body: body.trim() }));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.end();
  });
}

/** Requests back to back until the proxy answers `body`; ms since `t0`. */
async function servedAfter(port, host, body, t0, limitMs = 10_000) {
  for (;;) {
    const r = await get(port, host);
    if (r.status === 200 && r.body === body) return now() - t0;
    if (now() - t0 > limitMs) throw new Error(`${host} via 127.0.0.1:${port} did not answer "${body}" within ${limitMs / 1000} s`);
  }
}

/**
 * Instance change → HAProxy serving the new instance, through a consumer on its own registry
 * prefix (so that nothing else changes for it meanwhile): an instance of one service replaced (the
 * new one registered, then the old one deregistered), timed from the registration until a request
 * on a new connection gets the new instance's answer. `spaced` replacements `LATENCY.spacingMs`
 * apart, then `backToBack` more one after the other.
 */
async function changeLatency(registry, consumer, spaced, backToBack) {
  const name = `lat-${TAG}`;
  const host = `${name}.localhost`;
  const backend = createBackend(registry, { ttl: 0 });
  const servers = [];
  for (let i = 0; i < 8; i++) {
    const srv = http.createServer((_q, res) => res.end(`b${i}\n`));
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    servers.push(srv);
  }
  // Another host name than the sidecars': a sidecar's resync removes what its own host does not run.
  const inst = (n) => ({ id: `${HOST}-lat:lat:${n}`, name, address: '127.0.0.1', port: servers[n % servers.length].address().port, protocol: 'tcp', tags: [], meta: {}, host: `${HOST}-lat`, status: 'passing' });
  const reloads = () => consumer.render.logs.filter((l) => l.event === 'reload' && l.result === 'ok').length;
  let current = inst(0);
  const replace = async (n) => {
    const next = inst(n);
    const t0 = now();
    await backend.register(next);
    await backend.deregister(current);
    current = next;
    return servedAfter(consumer.port, host, `b${n % servers.length}`, t0);
  };
  try {
    await backend.register(current);
    await until(`${host} through ${consumer.port}`, async () => (await get(consumer.port, host)).body === 'b0');
    // A new service is a new backend (a reload in either mode): settled before the changes.
    await sleep(1_500);
    const out = { spaced: [], fast: [] };
    const r0 = reloads();
    for (let n = 1; n <= spaced; n++) {
      const t0 = now();
      out.spaced.push(await replace(n));
      await sleep(Math.max(0, LATENCY.spacingMs - (now() - t0)));
    }
    out.spacedReloads = reloads() - r0;
    const r1 = reloads();
    for (let n = spaced + 1; n <= spaced + backToBack; n++) out.fast.push(await replace(n));
    out.fastReloads = reloads() - r1;
    return out;
  } finally {
    await backend.deregister(current).catch(() => undefined);
    await backend.close();
    for (const s of servers) s.close();
  }
}

function latencyRow(label, ms, reloads, changes) {
  const f = (x) => `${x.toFixed(1)} ms`;
  return `| ${label} | ${ms.length} | ${f(pct(ms, 0.5))} | ${f(pct(ms, 0.9))} | ${f(pct(ms, 0.99))} | ${f(Math.max(...ms))} | ${reloads} (${((reloads / changes) * 1000).toFixed(0)} per 1,000 changes) |`;
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
async function consumer(kind, dir, port, runtime = false, registry = CONSUL) {
  mkdirSync(dir, { recursive: true });
  const tpl = join(dir, `${kind}.hbs`);
  copyFileSync(join(TEMPLATES, kind === 'nginx' ? 'nginx.conf.hbs' : 'haproxy.cfg.hbs'), tpl);
  const env = templateEnv(dir, port, port);
  const dest = join(dir, kind === 'nginx' ? 'nginx.conf' : 'haproxy.cfg');
  const rt = runtime ? ['--haproxy-runtime', env.HM_HAPROXY_SOCKET] : [];
  const once = hm(['render', registry, '--once', '--template', `${tpl}:${dest}`, ...rt], env);
  if ((await once.exited) !== 0) throw new Error(`render --once ${kind}: ${once.stderr()}`);
  let args;
  let proxy;
  if (kind === 'nginx') {
    await exec('nginx', ['-c', dest]);
    args = ['--template', `${tpl}:${dest}:kill -HUP $(cat ${env.HM_NGINX_PID})`, '--check', 'nginx -t -q -c {{src}}', '--verify', `nginx:${env.HM_NGINX_PID}`];
  } else {
    const master = join(dir, 'haproxy-master.sock');
    proxy = { child: spawn('haproxy', ['-W', '-S', master, '-f', dest], { stdio: 'ignore' }), logs: [] };
    procs.push(proxy);
    await until('haproxy master socket', async () => (await exec('test', ['-S', master]).then(() => true, () => false)));
    args = ['--template', `${tpl}:${dest}:kill -USR2 $(cat ${env.HM_HAPROXY_PIDFILE})`, ...rt, '--check', 'haproxy -q -c -f {{src}}', '--verify', `haproxy:${master}`];
  }
  const r = hm(['render', registry, ...args, '--wait', RENDER_WAIT], env);
  await until(`render ${kind}`, () => r.logs.some((l) => l.event === 'start'));
  return { env, render: r, port, stop: () => [r, proxy].forEach((p) => p?.child.kill('SIGKILL')) };
}

export async function run() {
  const dir = mkdtempSync(join(os.tmpdir(), 'hm-bench-rollout-'));
  const started = new Date().toISOString();
  const load1 = os.loadavg()[0];
  const haproxyVersion = (await exec('haproxy', ['-v'])).stdout.split('\n')[0].replace(/ - https?:.*$/, '');
  const measured = [];
  let latency;
  try {
    hm(['run', '--listen', `127.0.0.1:${PORT.run}`, '--api', `127.0.0.1:${PORT.runApi}`, '--hostname', HOST]);
    hm(['register', '--explicit', '--hostname', HOST, '--ttl', '10', '--api', `127.0.0.1:${PORT.consulApi}`, CONSUL]);
    hm(['proxy', CONSUL, '--listen', `127.0.0.1:${PORT.consulProxy}`, '--api', 'off']);
    hm(['register', '--explicit', '--hostname', HOST, '--ttl', '10', '--api', `127.0.0.1:${PORT.etcdApi}`, ETCD]);
    hm(['proxy', ETCD, '--listen', `127.0.0.1:${PORT.etcdProxy}`, '--api', 'off']);
    await until('harbormaster processes', () => procs.every((p) => p.logs.some((l) => l.event === 'ready' || l.event === 'start')));
    // The rendered consumers follow this run's etcd prefix: the shared Consul holds services of
    // other runs, whose comings and goings would reload them too.
    const nginx = await consumer('nginx', join(dir, 'nginx'), PORT.nginx, false, ETCD);
    const hap = await consumer('haproxy', join(dir, 'haproxy'), PORT.haproxy, false, ETCD);
    const hrt = await consumer('haproxy', join(dir, 'haproxy-rt'), PORT.haproxyRt, true, ETCD);
    // Change → served, each HAProxy consumer on an etcd v3 prefix of its own.
    const latHap = await consumer('haproxy', join(dir, 'lat-haproxy'), PORT.latHaproxy, false, `etcd://127.0.0.1:2379/hm-bench-lat-reload-${TAG}`);
    const latHrt = await consumer('haproxy', join(dir, 'lat-haproxy-rt'), PORT.latHaproxyRt, true, `etcd://127.0.0.1:2379/hm-bench-lat-runtime-${TAG}`);
    latency = {
      reload: await changeLatency(`etcd://127.0.0.1:2379/hm-bench-lat-reload-${TAG}`, latHap, LATENCY.spaced, 0),
      runtime: await changeLatency(`etcd://127.0.0.1:2379/hm-bench-lat-runtime-${TAG}`, latHrt, LATENCY.spaced, LATENCY.backToBack),
      load: os.loadavg()[0],
    };
    latHap.stop();
    latHrt.stop();
    const p5099 = (xs) => `${pct(xs, 0.5).toFixed(1)}/${pct(xs, 0.99).toFixed(1)} ms`;
    console.error(`bench rollout: change → served p50/p99, reloads ${p5099(latency.reload.spaced)}, runtime ${p5099(latency.runtime.spaced)} (spaced), ${p5099(latency.runtime.fast)} back to back, ${latency.runtime.spacedReloads + latency.runtime.fastReloads} reloads`);
    const consul = ['--registry', CONSUL, '--api', `http://127.0.0.1:${PORT.consulApi}`];
    const etcd = ['--registry', ETCD, '--api', `http://127.0.0.1:${PORT.etcdApi}`];
    const paths = [
      ['built-in proxy (`run`, memory://)', PORT.run, ['--api', `http://127.0.0.1:${PORT.runApi}`]],
      ['built-in proxy (`proxy` on Consul)', PORT.consulProxy, consul],
      ['built-in proxy (`proxy` on etcd v3)', PORT.etcdProxy, etcd],
      ['nginx rendered from etcd v3 (reload per change)', PORT.nginx, etcd, nginx.render],
      ['HAProxy rendered from etcd v3 (reload per change)', PORT.haproxy, etcd, hap.render],
      ['HAProxy runtime mode (etcd v3)', PORT.haproxyRt, etcd, hrt.render],
    ];
    for (const [i, [name, port, args, render]] of paths.entries()) {
      const svc = `r${i}-${TAG}`;
      await replicas(svc, 3);
      await reaches(port, svc, 3);
      const reloadsBefore = render?.logs.filter((l) => l.event === 'reload' && l.result !== 'failed').length ?? 0;
      const m = await measure(port, svc, args);
      m.load = os.loadavg()[0];
      m.reloads = render ? render.logs.filter((l) => l.event === 'reload' && l.result !== 'failed').length - reloadsBefore : undefined;
      measured.push({ name, replicas: 3, m });
      console.error(`bench rollout: ${row(name, m, ` ${m.reloads ?? '–'} |`)}`);
      await removeService(svc);
    }
    for (const batch of ['1', '25%']) {
      const svc = `r20-${batch.replace('%', 'p')}-${TAG}`;
      await replicas(svc, 20);
      await reaches(PORT.run, svc, 20);
      const m = await measure(PORT.run, svc, ['--api', `http://127.0.0.1:${PORT.runApi}`, '--batch', batch]);
      m.load = os.loadavg()[0];
      measured.push({ name: `20 replicas, --batch ${batch} (\`run\`)`, replicas: 20, batch, m });
      console.error(`bench rollout: ${row(measured.at(-1).name, m, ' – |')}`);
      await removeService(svc);
    }
  } catch (err) {
    for (const p of procs.filter((x) => x.args)) console.error(`--- ${p.args.slice(0, 2).join(' ')}: ${p.logs.slice(-8).map((l) => l.msg).join('\n')}${p.stderr()}`);
    throw err;
  } finally {
    for (const p of procs) p.child.kill('SIGKILL');
    await exec('sh', ['-c', `kill $(cat ${join(dir, 'nginx', 'nginx.pid')}) 2>/dev/null; true`]);
    const ids = (await docker('ps', '-aq', '--filter', `name=${P}`)).split('\n').filter(Boolean);
    if (ids.length) await docker('rm', '-f', ...ids);
    rmSync(dir, { recursive: true, force: true });
  }
  const threes = measured.filter((x) => x.replicas === 3);
  const twenties = measured.filter((x) => x.replicas === 20);
  const lost = (x) => x.m.during.keepalive.failures + x.m.during.fresh.failures;
  const ratio = (x) => (x.m.during.keepalive.p99Ms / Math.max(x.m.before.keepalive.p99Ms, 0.01)).toFixed(1);
  const L = latency;
  const p99 = { reload: pct(L.reload.spaced, 0.99), runtime: pct(L.runtime.spaced, 0.99), fast: pct(L.runtime.fast, 0.99) };
  return [
    '## Rollout',
    '',
    'Command: `DOCKER_HOST=<engine> npm run bench -- rollout` (or `node bench/rollout.mjs`)  ',
    `Date: ${started}  `,
    `Machine: ${os.cpus().length} CPUs, Node ${process.version}, ${haproxyVersion}; 1-min load average before the run: ${load1.toFixed(2)}, and after each measurement in the tables (the machine is shared: other runs' load shows in the latencies and the rates held)`,
    '',
    '### Instance change → HAProxy serving it: reloads and runtime mode, same run',
    '',
    `Two HAProxy consumers, each kept by its own \`harbormaster render etcd://127.0.0.1:2379/<prefix> --wait ${RENDER_WAIT}\` (an etcd v3 prefix each, so that nothing else changes for either) with the shipped template, \`--check 'haproxy -q -c -f {{src}}'\`, reload \`kill -USR2\` and \`--verify haproxy:<master socket>\`; the second also with \`--haproxy-runtime <admin socket>\`. A change is one instance of a service replaced (the new one registered, then the old one deregistered, through harbormaster's etcd backend: 2 instance changes), timed from the registration until a request on a new connection gets the new instance's answer (requests back to back; Node HTTP servers on loopback as instances). ${LATENCY.spaced} replacements ${LATENCY.spacingMs / 1000} s apart (more than the --wait max) through each, one consumer after the other, then ${LATENCY.backToBack} replacements back to back through runtime mode.`,
    '',
    `| change → served (1-min load average after: ${L.load.toFixed(1)}) | samples | p50 | p90 | p99 | max | reloads |`,
    '|---|---:|---:|---:|---:|---:|---:|',
    latencyRow(`HAProxy reloaded per change, ${LATENCY.spacingMs / 1000} s apart`, L.reload.spaced, L.reload.spacedReloads, 2 * LATENCY.spaced),
    latencyRow(`HAProxy runtime mode, ${LATENCY.spacingMs / 1000} s apart`, L.runtime.spaced, L.runtime.spacedReloads, 2 * LATENCY.spaced),
    latencyRow('HAProxy runtime mode, back to back', L.runtime.fast, L.runtime.fastReloads, 2 * LATENCY.backToBack),
    '',
    `Runtime mode's p50/p99 was ${pct(L.runtime.spaced, 0.5).toFixed(1)}/${p99.runtime.toFixed(1)} ms against ${pct(L.reload.spaced, 0.5).toFixed(1)}/${p99.reload.toFixed(1)} ms with reloads (p99 ${(p99.reload / p99.runtime).toFixed(0)}× lower), and ${pct(L.runtime.fast, 0.5).toFixed(1)}/${p99.fast.toFixed(1)} ms back to back. The goal of at most 20 ms p99 is ${p99.fast <= 20 && p99.runtime <= 20 ? 'met' : 'not met'} in this run (${p99.runtime.toFixed(1)} ms spaced, ${p99.fast.toFixed(1)} ms back to back); runtime mode reloaded ${L.runtime.spacedReloads + L.runtime.fastReloads} times in ${2 * (LATENCY.spaced + LATENCY.backToBack)} instance changes (goal 0 per 1,000: ${L.runtime.spacedReloads + L.runtime.fastReloads === 0 ? 'met' : 'not met'}).`,
    '',
    '### Rollouts under load',
    '',
    `Replicas of \`${FAST}\` (the C keep-alive test app; HEALTHCHECK every 500 ms), rolled with \`harbormaster rollout <svc> ${PACE.join(' ')}\` (start-first, batch 1 unless said) while the load generator of the tests (test/support/load-gen.ts) sends up to 3,000 requests/s on 16 keep-alive connections and up to 450/s on a new connection each, through the consumer named. "p99 before → during": the same load for 3 s just before the rollout, then during it. "Ready wait": the part of the rollout spent waiting for replacements to be healthy, passing in the registry and watched (share of the rollout in brackets); "drains": the time spent in \`--drain-timeout\`. "Load held": the average rates, and the fewest requests finished in any whole second. One \`run\`, one \`register\` + \`proxy\` per registry, and one \`render\` per rendered consumer on this machine.`,
    '',
    '| path | load avg | rollout | ready wait | drains | requests lost | load held | keep-alive p99 before → during | new-conn p99 before → during | longest gap | reloads |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...measured.map((x) => row(x.replicas === 3 ? `${x.name}, 3 replicas` : x.name, x.m, ` ${x.m.reloads ?? '–'} |`)),
    '',
    `Requests lost per path (3 replicas): ${threes.map((x) => `${x.name} ${lost(x)}${x.m.reloads ? ` (${x.m.reloads} reloads)` : ''}`).join('; ')}. With 20 replicas: ${twenties.map((x) => `--batch ${x.batch} ${lost(x)}`).join(', ')}.`,
    '',
    `A full rollout of 3 replicas took ${Math.min(...threes.map((x) => x.m.result.totalMs / 1000)).toFixed(1)}–${Math.max(...threes.map((x) => x.m.result.totalMs / 1000)).toFixed(1)} s, ${Math.min(...threes.map((x) => Math.round((x.m.result.readyWaitMs / x.m.result.totalMs) * 100)))}–${Math.max(...threes.map((x) => Math.round((x.m.result.readyWaitMs / x.m.result.totalMs) * 100)))} % of it waiting for readiness; 20 replicas took ${twenties.map((x) => `${(x.m.result.totalMs / 1000).toFixed(1)} s with --batch ${x.batch} (${Math.round((x.m.result.readyWaitMs / x.m.result.totalMs) * 100)} % waiting for readiness, ${(x.m.result.drainMs / 1000).toFixed(1)} s in drains)`).join(' and ')}.`,
    '',
    `Keep-alive p99 during the rollout ÷ before it: ${measured.map((x) => `${x.replicas === 3 ? x.name : `20 replicas --batch ${x.batch}`} ${ratio(x)}×`).join(', ')}.`,
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(await run());
