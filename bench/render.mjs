// `harbormaster render` against real engines: how long from a registry change until the reloaded
// nginx and HAProxy serve the new instance, and what rendering plus checking costs for large
// catalogs (1,000 and 10,000 instances) next to nginx's own `nginx -t` on the same file, plus the
// peak RSS of a render process at 10,000 instances. Traffic stays on 127.0.0.1; every process,
// registration and file made here is removed.
//   node bench/render.mjs [--changes 30] [--out file.md]
import { execFile, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { buildCatalog } from '../dist/catalog/catalog.js';
import { silentLogger } from '../dist/log/logger.js';
import { Renderer } from '../dist/render/renderer.js';
import { templateData } from '../dist/render/template-data.js';
import { loadTemplate } from '../dist/render/template-file.js';
import { createBackend } from '../dist/registry/index.js';

const exec = promisify(execFile);
const BIN = fileURLToPath(new URL('../bin/harbormaster.js', import.meta.url));
const TEMPLATES = fileURLToPath(new URL('../templates/', import.meta.url));
const CONSUL = 'consul://127.0.0.1:8500';
const ETCD = '127.0.0.1:2379';
const NGINX_PORT = 19450;
const HAPROXY_PORT = 19451;
const WAIT = '50ms:1s';
const SPACING_MS = 1500; // > the --wait max, so the one-run-per-max rule does not add to a sample
const LIMIT_MS = 30_000; // no single wait runs longer
const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  const r = (p / 100) * (s.length - 1);
  const lo = Math.floor(r);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (r - lo);
}
const median = (xs) => pct(xs, 50);

async function waitFor(what, pred, limitMs = LIMIT_MS, everyMs = 20) {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${limitMs / 1000} s waiting for ${what}`);
    await sleep(everyMs);
  }
}

function templateEnv(dir) {
  return {
    HM_NGINX_LISTEN: `127.0.0.1:${NGINX_PORT}`,
    HM_NGINX_PID: join(dir, 'nginx.pid'),
    HM_NGINX_ERROR_LOG: join(dir, 'nginx-error.log'),
    HM_NGINX_ACCESS_LOG: 'off',
    HM_NGINX_TEMP_DIR: dir,
    HM_NGINX_WORKERS: '1',
    HM_HAPROXY_BIND: `127.0.0.1:${HAPROXY_PORT}`,
    HM_HAPROXY_PIDFILE: join(dir, 'haproxy.pid'),
    HM_HAPROXY_SOCKET: join(dir, 'haproxy-admin.sock'),
  };
}

/** A harbormaster child process whose JSON log lines are kept. */
function startHm(args, env) {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const hm = { child, logs: [], tail: [], exited: new Promise((r) => child.on('exit', r)) };
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d.toString();
    for (let nl; (nl = buf.indexOf('\n')) >= 0; buf = buf.slice(nl + 1)) {
      const line = buf.slice(0, nl);
      hm.tail.push(line);
      if (hm.tail.length > 30) hm.tail.shift();
      try {
        hm.logs.push({ ...JSON.parse(line), at: now() });
      } catch { /* not JSON */ }
    }
  });
  child.stderr.on('data', (d) => hm.tail.push(d.toString().trim()));
  hm.dump = () => `\n--- harbormaster ${args.slice(0, 2).join(' ')} (last lines):\n${hm.tail.join('\n')}`;
  return hm;
}

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

/** Poll a proxy until it answers the new instance's body; ms since `t0`. */
async function servedAfter(port, host, body, t0) {
  const deadline = t0 + LIMIT_MS;
  while (now() < deadline) {
    const r = await get(port, host);
    if (r.status === 200 && r.body === body) return now() - t0;
    await sleep(2);
  }
  throw new Error(`${host} via 127.0.0.1:${port} did not answer "${body}" within ${LIMIT_MS / 1000} s`);
}

/** Change → served, through nginx and HAProxy reloaded by one `harbormaster render`. */
async function reloadLatency(changes, run) {
  const dir = mkdtempSync(join(os.tmpdir(), 'hm-bench-render-'));
  chmodSync(dir, 0o755);
  const env = templateEnv(dir);
  const nginxConf = join(dir, 'nginx.conf');
  const haproxyCfg = join(dir, 'haproxy.cfg');
  const master = join(dir, 'haproxy-master.sock');
  const backend = createBackend(CONSUL, { ttl: 0 });
  const servers = [];
  const registered = [];
  let render;
  let haproxy;
  try {
    const once = startHm(['render', CONSUL, '--once', '--template', `${TEMPLATES}nginx.conf.hbs:${nginxConf}`, '--template', `${TEMPLATES}haproxy.cfg.hbs:${haproxyCfg}`], env);
    if ((await once.exited) !== 0) throw new Error(`render --once failed${once.dump()}`);
    await exec('nginx', ['-c', nginxConf]);
    haproxy = spawn('haproxy', ['-W', '-S', master, '-f', haproxyCfg], { stdio: 'ignore' });
    await waitFor('haproxy master socket', async () => (await exec('test', ['-S', master]).then(() => true, () => false)), 10_000);
    render = startHm(
      [
        'render', CONSUL,
        '--template', `${TEMPLATES}nginx.conf.hbs:${nginxConf}:kill -HUP $(cat ${env.HM_NGINX_PID})`, '--check', 'nginx -t -q -c {{src}}', '--verify', `nginx:${env.HM_NGINX_PID}`,
        '--template', `${TEMPLATES}haproxy.cfg.hbs:${haproxyCfg}:kill -USR2 $(cat ${env.HM_HAPROXY_PIDFILE})`, '--check', 'haproxy -q -c -f {{src}}', '--verify', `haproxy:${master}`,
        '--wait', WAIT,
      ],
      env,
    );
    await waitFor('render to start', () => render.logs.some((l) => l.event === 'render'), LIMIT_MS).catch((e) => {
      throw new Error(`${e.message}${render.dump()}`);
    });
    await sleep(SPACING_MS);
    const nginx = [];
    const hap = [];
    for (let k = 0; k < changes; k++) {
      const name = `hmbr-${run}-s${k}`;
      const srv = http.createServer((_q, res) => res.end(`${name}\n`));
      servers.push(srv);
      await new Promise((r) => srv.listen(0, '127.0.0.1', r));
      const inst = { id: `${name}:1`, name, address: '127.0.0.1', port: srv.address().port, protocol: 'tcp', tags: [], meta: {}, host: 'bench', status: 'passing' };
      const t0 = now();
      await backend.register(inst);
      registered.push(inst);
      const [a, b] = await Promise.all([servedAfter(NGINX_PORT, `${name}.localhost`, name, t0), servedAfter(HAPROXY_PORT, `${name}.localhost`, name, t0)]);
      nginx.push(a);
      hap.push(b);
      await sleep(Math.max(0, SPACING_MS - (now() - t0)));
    }
    const reloads = render.logs.filter((l) => l.event === 'reload');
    const failed = reloads.filter((l) => l.result !== 'ok').length;
    const reloadMs = (word) => reloads.filter((l) => l.result === 'ok' && String(l.command).includes(word)).map((l) => l.ms);
    return { nginx, hap, failed, nginxReload: reloadMs('HUP'), haproxyReload: reloadMs('USR2'), runs: render.logs.filter((l) => l.event === 'render' && l.destination === nginxConf).length };
  } finally {
    if (render) {
      render.child.kill('SIGTERM');
      await render.exited;
    }
    await exec('nginx', ['-s', 'quit', '-c', nginxConf]).catch(() => undefined);
    if (haproxy) {
      haproxy.kill('SIGTERM');
      await new Promise((r) => (haproxy.exitCode !== null ? r() : haproxy.once('exit', r)));
    }
    for (const i of registered) await backend.deregister(i).catch(() => undefined);
    await backend.close();
    for (const s of servers) s.close();
    await sleep(300); // nginx -s quit is asynchronous: let it leave the folder
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `n` instances, 10 per service, every one on its own address:port. */
function syntheticInstances(n, tag = 'syn') {
  const out = [];
  for (let k = 0; k < n; k++) {
    const svc = Math.floor(k / 10);
    out.push({ id: `bench:${tag}-${svc}-${k}:80`, name: `${tag}-${svc}`, address: `10.${(k >> 16) & 255}.${(k >> 8) & 255}.${k & 255}`, port: 10000 + (k % 50000), protocol: 'tcp', tags: ['bench'], meta: {}, host: 'bench', status: 'passing' });
  }
  return out;
}

const timeCmd = async (cmd, args) => {
  const t0 = now();
  await exec(cmd, args, { maxBuffer: 1 << 20 });
  return now() - t0;
};

/** Render, nginx -t and haproxy -c for a synthetic catalog, in process; best of `reps`. */
async function renderCost(n, reps = 3) {
  const dir = mkdtempSync(join(os.tmpdir(), 'hm-bench-size-'));
  chmodSync(dir, 0o755);
  const env = templateEnv(dir);
  try {
    const nginxT = await loadTemplate(`${TEMPLATES}nginx.conf.hbs`);
    const haproxyT = await loadTemplate(`${TEMPLATES}haproxy.cfg.hbs`);
    const raw = syntheticInstances(n);
    const cat = [];
    const render = { nginx: [], haproxy: [] };
    const check = { nginx: [], haproxy: [] };
    const pipeline = [];
    let bytes = 0;
    for (let r = 0; r < reps; r++) {
      let t0 = now();
      const catalog = buildCatalog(raw, ['passing']);
      cat.push(now() - t0);
      t0 = now();
      const data = templateData(catalog, { statuses: ['passing'], domain: 'localhost', env });
      const text = nginxT.render(data);
      render.nginx.push(now() - t0);
      bytes = Buffer.byteLength(text);
      t0 = now();
      const htext = haproxyT.render(data);
      render.haproxy.push(now() - t0);
      writeFileSync(join(dir, 'nginx.conf'), text);
      writeFileSync(join(dir, 'haproxy.cfg'), htext);
      check.nginx.push(await timeCmd('nginx', ['-t', '-q', '-c', join(dir, 'nginx.conf')]));
      check.haproxy.push(await timeCmd('haproxy', ['-q', '-c', '-f', join(dir, 'haproxy.cfg')]));
      // The whole pipeline on a new destination: render, compare, stage + fsync, nginx -t, rename.
      const dest = join(dir, `pipeline-${r}.conf`);
      const renderer = new Renderer({ timeoutMs: 60_000, dry: false, out: () => undefined }, silentLogger());
      t0 = now();
      const res = await renderer.run(
        [{ spec: { source: 'nginx.conf.hbs', destination: dest, check: 'nginx -t -q -c {{src}}', verify: { kind: 'plain' }, backup: false }, template: nginxT }],
        templateData(buildCatalog(raw, ['passing']), { statuses: ['passing'], domain: 'localhost', env }),
      );
      pipeline.push(now() - t0);
      if (!res.ok) throw new Error(`pipeline at ${n} instances failed`);
    }
    const best = (xs) => Math.min(...xs);
    return { n, services: n / 10, bytes, catalog: best(cat), render: { nginx: best(render.nginx), haproxy: best(render.haproxy) }, check: { nginx: best(check.nginx), haproxy: best(check.haproxy) }, pipeline: best(pipeline) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Peak RSS (VmHWM) of `render --once` with a check, reading `n` instances from etcd. */
async function peakRss(n, run) {
  const prefix = `/hmbr-${run}-${n}`;
  const uri = `etcd://${ETCD}${prefix}`;
  const dir = mkdtempSync(join(os.tmpdir(), 'hm-bench-rss-'));
  const backend = createBackend(uri, { ttl: 0 });
  try {
    const raw = syntheticInstances(n, 'rss');
    for (let k = 0; k < raw.length; k += 200) await Promise.all(raw.slice(k, k + 200).map((i) => backend.register(i)));
    const args = ['render', uri, '--once', '--template', `${TEMPLATES}nginx.conf.hbs:${join(dir, 'nginx.conf')}`, '--check', 'nginx -t -q -c {{src}}'];
    const t0 = now();
    const hm = startHm(args, templateEnv(dir));
    let peak = 0;
    let done = false;
    hm.exited.then(() => (done = true));
    while (!done) {
      const status = await new Promise((r) => execFile('cat', [`/proc/${hm.child.pid}/status`], (err, out) => r(err ? '' : out)));
      const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
      peak = Math.max(peak, kb);
      await sleep(5);
    }
    const code = await hm.exited;
    if (code !== 0) throw new Error(`render --once with ${n} instances exited ${code}${hm.dump()}`);
    const size = readFileSync(join(dir, 'nginx.conf')).length;
    return { n, peakMiB: peak / 1024, wallMs: now() - t0, bytes: size };
  } finally {
    await backend.close();
    const client = new Etcd3({ hosts: `http://${ETCD}` });
    await client.delete().prefix(`${prefix}/`).catch(() => undefined);
    client.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function machine() {
  const v = async (cmd, args) => (await exec(cmd, args).then((r) => r.stdout + r.stderr, () => '?')).split('\n')[0].trim();
  const consul = await fetch('http://127.0.0.1:8500/v1/agent/self').then((r) => r.json()).then((j) => j.Config.Version, () => '?');
  return `${os.availableParallelism()} CPUs (${os.cpus()[0]?.model ?? '?'}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Node ${process.version}, ${await v('nginx', ['-v'])}, ${await v('haproxy', ['-v'])}, Consul ${consul}`;
}

export async function run({ changes = 30, command = 'npm run bench -- render' } = {}) {
  const runId = Math.random().toString(36).slice(2, 8);
  const load = os.loadavg()[0];
  const lat = await reloadLatency(changes, runId);
  const sizes = [await renderCost(1000), await renderCost(10_000)];
  const rss = [await peakRss(0, runId), await peakRss(10_000, runId)];
  const ms = (x) => `${x.toFixed(0)} ms`;
  const ms1 = (x) => `${x.toFixed(1)} ms`;
  const row = (label, xs) => `| ${label} | ${ms(pct(xs, 50))} | ${ms(pct(xs, 90))} | ${ms(pct(xs, 99))} | ${ms(Math.max(...xs))} |`;
  return [
    '## Render and reload',
    '',
    `Command: \`${command}\`  `,
    `Date: ${new Date().toISOString()}  `,
    `Machine: ${await machine()}  `,
    `1-min load average before the run: ${load.toFixed(2)} (the machine is shared: compare ratios measured in the same run).`,
    '',
    `### Registry change → reloaded proxy serving the new instance`,
    '',
    `One \`harbormaster render consul://127.0.0.1:8500 --wait ${WAIT}\` keeps the shipped nginx.conf.hbs and haproxy.cfg.hbs current, each with its check (\`nginx -t\`, \`haproxy -c\`), reload (\`kill -HUP\` / \`kill -USR2\` to the master) and confirmation (\`--verify nginx:<pid>\`: a new worker generation; \`--verify haproxy:<master socket>\`: \`show proc\` lists a new worker). Each of ${changes} samples registers a new service in Consul through harbormaster's Consul backend, then requests \`<service>.localhost\` through nginx (1 worker) and HAProxy (master-worker) on new connections every 2 ms until the new backend (a Node HTTP server on loopback) answers. Samples are ${SPACING_MS / 1000} s apart, more than the --wait max, so the one-reload-per-max rule never delays them; the 50 ms quiet time is included.`,
    '',
    '| change → served | p50 | p90 | p99 | max |',
    '|---|---:|---:|---:|---:|',
    row('nginx', lat.nginx),
    row('HAProxy', lat.hap),
    row('(reload + confirm, nginx)', lat.nginxReload),
    row('(reload + confirm, HAProxy)', lat.haproxyReload),
    '',
    `Failed reloads: ${lat.failed}. The second pair of rows is what harbormaster logs for the reload command plus its confirmation; the rest is the Consul blocking query, the quiet time, rendering both templates and running both checks.`,
    '',
    '### Render + check for large catalogs',
    '',
    'Synthetic catalogs (10 instances per service, each service one upstream/backend and one server/host), rendered in process with the shipped templates; best of 3. "Pipeline" is one whole change on a new destination: build the catalog snapshot and the template data, render, compare, stage + fsync, `nginx -t` on the staged file, rename. The ratio compares it with `nginx -t` alone on the same file, which the machine\'s noise affects the same way.',
    '',
    '| instances | services | nginx.conf | catalog build | render nginx | render HAProxy | `nginx -t` | `haproxy -c` | pipeline (nginx) | pipeline ÷ `nginx -t` |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...sizes.map((s) => `| ${s.n.toLocaleString('en')} | ${s.services} | ${(s.bytes / 1024).toFixed(0)} KiB | ${ms1(s.catalog)} | ${ms1(s.render.nginx)} | ${ms1(s.render.haproxy)} | ${ms1(s.check.nginx)} | ${ms1(s.check.haproxy)} | ${ms1(s.pipeline)} | ${(s.pipeline / s.check.nginx).toFixed(2)}× |`),
    '',
    '### Peak memory of a render process',
    '',
    '`harbormaster render etcd://127.0.0.1:2379/<prefix> --once --template nginx.conf.hbs:… --check "nginx -t -q -c {{src}}"` as a child process, its peak RSS (VmHWM from /proc, polled every 5 ms) and wall time including start-up, the etcd read, render, check and write.',
    '',
    '| instances in etcd | peak RSS | wall time | nginx.conf |',
    '|---:|---:|---:|---:|',
    ...rss.map((r) => `| ${r.n.toLocaleString('en')} | ${r.peakMiB.toFixed(0)} MiB | ${ms(r.wallMs)} | ${(r.bytes / 1024).toFixed(0)} KiB |`),
    '',
  ].join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const arg = (name, def) => (process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : def);
  const command = ['node', 'bench/render.mjs', ...process.argv.slice(2)].join(' ');
  run({ changes: Number(arg('changes', 30)), command }).then(
    (md) => (process.stdout.write(md), arg('out') && writeFileSync(arg('out'), md), process.exit(0)),
    (err) => (console.error(`bench failed: ${err.stack ?? err}`), process.exit(1)),
  );
}
