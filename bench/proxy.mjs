// Throughput and tail latency of the built-in proxy (`harbormaster proxy`) next to nginx
// (1 worker, keep-alive upstream) and HAProxy (nbthread 1), all in front of the same backend on
// this machine, measured with wrk in one run, interleaved over a few rounds. A second table
// compares the two HTTP clients the proxy could use (node:http Agent vs undici Pool), each in a
// minimal forwarder with the same header handling. Traffic stays on 127.0.0.1; every process and
// registry key made here is removed.
// With --compare <dir>, the proxy built in another checkout (e.g. the commit before a change, from
// `git worktree add`) runs in the same rounds, so a change's cost is a ratio measured in one run.
//   node bench/proxy.mjs [--duration 10] [--rounds 3] [--connections 32] [--compare <dir> --compare-label <text>] [--out file.md]
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { createBackend } from '../dist/registry/index.js';

const exec = promisify(execFile);
const BIN = fileURLToPath(new URL('../bin/harbormaster.js', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ETCD = '127.0.0.1:2379';
const PORTS = { backend: 19760, builtin: 19761, nginx: 19762, haproxy: 19763, agent: 19764, undici: 19765, before: 19766 };
const HOST = 'bench.localhost';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Steps taken toward the target (≥ 0.5× nginx's requests/s, p99 ≤ 2× nginx's), each one run of
 * this script on this machine (2 vCPU, shared: the 1-minute load average is given per row).
 */
const HISTORY = [
  {
    change: 'First measurement, as written: undici Pool per instance, `dispatch` with the proxy as handler; a closure per response for its close event; eight `delete`s per response for hop-by-hop headers (`--duration 5 --rounds 1`)',
    rps: 19_849, p99: 13.14, nginxRps: 39_988, nginxP99: 3.71, load: '1.9–2.4',
  },
  {
    change: 'The same code, full run (3 rounds of 10 s): the first row was mostly noise in the tail',
    rps: 26_052, p99: 5.11, nginxRps: 37_244, nginxP99: 3.76, load: '2.5–5.7',
  },
  {
    change: 'Profiled (`node --cpu-prof`): 47 % of samples in the two socket writes per request (writev to the client, the request head to the instance), 38 % idle, 0.5 % in harbormaster code. Hop-by-hop headers now stripped in one pass over the keys present instead of eight deletes per response; one shared close listener per response instead of a closure',
    rps: 29_004, p99: 3.38, nginxRps: 51_220, nginxP99: 2.75, load: '1.8–2.5',
  },
  {
    change: 'Response head held until the first body byte, so that an instance dying between its head and its body is retried like a refused connection (a correctness change; no measurable cost)',
    rps: 29_277, p99: 2.69, nginxRps: 49_346, nginxP99: 2.6, load: '1.5–2.0',
  },
  {
    change: 'Small responses (announced ≤ 64 KiB) held whole so that a GET survives an instance dying mid-body; 204/304 with Content-Length pass',
    rps: 30_675, p99: 3.22, nginxRps: 51_770, nginxP99: 2.77, load: '1.6–2.2',
  },
  {
    change: 'Request checks (path rule, Host grammar, Transfer-Encoding, header size and time, pipelined requests after a refusal dropped), forwarding headers replaced unless the peer is trusted, only WebSocket upgrades tunnelled, response heads flushed at once, trailers passed, a connection limit per instance with requests sent where a connection is free, small request bodies read before a connection is taken, panic mode, balancer state kept across tables',
    rps: 30_157, p99: 2.81, nginxRps: 51_395, nginxP99: 2.84, load: '0.9–2.1',
  },
  {
    change: 'Request bodies of any size read whole before a connection is taken, slow readers spooled (memory, then a temp file), small responses held at most 100 ms, the table resolved again after a body, Host/authority and path rules tightened, X-Real-IP derived through trusted proxies; measured next to the build before them in the same run (`--compare`, 7 rounds; the machine was heavily shared: see the before/after line)',
    rps: 8_787, p99: 65.32, nginxRps: 18_107, nginxP99: 78.01, load: '6.5–42.6',
  },
];

/** Measured on the way but not adopted. */
const NOTES = [
  'Client choice, measured before the proxy was written (the same two forwarders, 6 s each, load average ~17): node:http Agent 12,098 and 14,101 req/s (p99 101 and 57 ms), undici Pool 17,642 and 18,797 req/s (p99 31 and 36 ms), nginx 29,466 and 34,262 req/s. undici was chosen and the comparison stays in every run (table above).',
  'A larger young generation (`node --max-semi-space-size=32`), A/B against the default in 3 alternating rounds of 6 s: 27,521 / 30,214 / 27,702 req/s vs 28,896 / 29,709 / 26,832, p99 2.8–3.9 ms vs 2.8–4.1 ms — within the noise, not adopted.',
  'Step 6 against the build before it (48c86f5), three runs of `--compare` on the same day, each with both builds next to nginx and HAProxy: requests/s ÷ nginx 0.451× vs 0.439× (+2.8 %, 5 rounds, load 5.5–24.3), 0.575× vs 0.409× (+40 %, 7 rounds, load 9.0–20.2), 0.485× vs 0.405× (+19.8 %, 7 rounds, load 6.5–42.6; median of the per-round ratios −2.4 %, CPU per request +5.7 % with per-round values from 56 to 107 µs). No run shows the 5 % loss the change was allowed; at that load the round-to-round spread (±15–50 %) is far larger than 5 %, so the runs bound the cost only loosely. What the change adds to a GET without a body: a timestamp and an array push per held response (one shared setImmediate per event-loop turn), a few more checks on Host, and a few more fields per exchange.',
];

async function waitFor(what, pred, limitMs = 20_000, everyMs = 50) {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const v = await pred().catch(() => false);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${limitMs / 1000} s waiting for ${what}`);
    await sleep(everyMs);
  }
}

function answers(port, host = HOST) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', headers: { host }, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(res.statusCode === 200 && body.includes('hello') ? body : false));
    });
    req.on('error', () => resolve(false));
    req.setTimeout(2000, () => req.destroy());
  });
}

function portFree(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A child process that is killed (and waited for) at the end. */
function daemon(cmd, args, opts = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], ...opts });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-2000)));
  const exited = new Promise((r) => child.once('exit', r));
  return {
    child,
    stderr: () => stderr,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

function nginxConf(dir, name, port, body) {
  const file = join(dir, `${name}.conf`);
  writeFileSync(
    file,
    `worker_processes 1;
daemon off;
pid ${dir}/${name}.pid;
error_log ${dir}/${name}-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path ${dir}/${name}-body;
  proxy_temp_path ${dir}/${name}-proxy;
  fastcgi_temp_path ${dir}/${name}-fastcgi;
  uwsgi_temp_path ${dir}/${name}-uwsgi;
  scgi_temp_path ${dir}/${name}-scgi;
${body}
}
`,
  );
  return file;
}

const BACKEND = (port) => `  server { listen 127.0.0.1:${port}; location / { return 200 "hello from the backend\\n"; } }`;
const NGINX_PROXY = (port, backend) => `  upstream be { server 127.0.0.1:${backend}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }
  }`;

function haproxyConf(dir, port, backend) {
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(
    file,
    `global
  nbthread 1
  maxconn 4096
  pidfile ${dir}/haproxy.pid
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:${port}
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend be
backend be
  server s1 127.0.0.1:${backend}
`,
  );
  return file;
}

/** Minimal forwarders that differ only in the HTTP client: what the proxy's client choice rests on. */
const FORWARDER = String.raw`
import http from 'node:http';
import { createRequire } from 'node:module';
const [mode, port, backend, root] = process.argv.slice(1);
const { Pool } = createRequire(root + '/package.json')('undici');
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'proxy-authenticate', 'expect']);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const pool = new Pool('http://127.0.0.1:' + backend, { pipelining: 1 });
function headers(req) {
  const h = {};
  for (const k in req.headers) if (!HOP.has(k)) h[k] = req.headers[k];
  h['x-forwarded-for'] = req.socket.remoteAddress;
  h['x-forwarded-proto'] = 'http';
  h['x-forwarded-host'] = req.headers.host;
  return h;
}
http.createServer((req, res) => {
  if (mode === 'agent') {
    const up = http.request({ host: '127.0.0.1', port: backend, method: req.method, path: req.url, headers: headers(req), agent }, (ur) => {
      for (const k of HOP) delete ur.headers[k];
      res.writeHead(ur.statusCode, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => { res.statusCode = 502; res.end(); });
    req.pipe(up);
  } else {
    pool.dispatch({ path: req.url, method: req.method, headers: headers(req), body: null }, {
      onRequestStart() {},
      onResponseStart(c, status, h) { for (const k of HOP) delete h[k]; res.writeHead(status, h); },
      onResponseData(c, chunk) { res.write(chunk); },
      onResponseEnd() { res.end(); },
      onResponseError() { if (!res.headersSent) { res.statusCode = 502; res.end(); } else res.destroy(); },
    });
  }
}).listen(Number(port), '127.0.0.1');
`;

const UNIT = { us: 1e-3, ms: 1, s: 1000 };
const toMs = (v) => {
  const m = /^([\d.]+)(us|ms|s)$/.exec(v);
  return m ? Number(m[1]) * UNIT[m[2]] : NaN;
};

async function wrk(port, seconds, connections) {
  const { stdout } = await exec('wrk', ['-t2', `-c${connections}`, `-d${seconds}s`, '--latency', '-H', `Host: ${HOST}`, `http://127.0.0.1:${port}/`], { timeout: (seconds + 30) * 1000 });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1]);
  const p50 = toMs(/\s50%\s+(\S+)/.exec(stdout)?.[1] ?? '');
  const p99 = toMs(/\s99%\s+(\S+)/.exec(stdout)?.[1] ?? '');
  const requests = Number(/(\d+) requests in/.exec(stdout)?.[1] ?? NaN);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout);
  const errors = non2xx + (sock ? sock.slice(1).reduce((n, x) => n + Number(x), 0) : 0);
  if (!Number.isFinite(rps)) throw new Error(`wrk output not understood:\n${stdout}`);
  return { rps, p50, p99, errors, requests };
}

/** CPU time (user + system) a process has used so far, in ms (Linux /proc; clock ticks of 10 ms). */
function cpuMs(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return NaN;
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function versions() {
  const v = async (cmd, args) => (await exec(cmd, args).then((r) => r.stdout + r.stderr, (e) => `${e.stdout ?? ''}${e.stderr ?? e.message}`)).split('\n')[0].trim();
  return {
    nginx: (await v('nginx', ['-v'])).replace(/^nginx version: /, ''),
    haproxy: (await v('haproxy', ['-v'])).replace(/ - https.*$/, ''),
    wrk: (await v('wrk', ['-v'])).replace(/ \[.*$/, ''),
  };
}

export async function run(opts = {}) {
  const seconds = opts.duration ?? 10;
  const rounds = opts.rounds ?? 3;
  const connections = opts.connections ?? 32;
  const command = opts.command ?? 'node bench/proxy.mjs';
  const compare = opts.compare;
  for (const [name, port] of Object.entries(PORTS)) if (!(await portFree(port))) throw new Error(`port ${port} (${name}) is in use`);
  const dir = mkdtempSync(join(os.tmpdir(), 'hm-bench-proxy-'));
  const prefix = `/hm-bench-proxy-${process.pid}`;
  const registryUri = `etcd://${ETCD}${prefix}`;
  const instance = { id: 'bench:backend:80', name: 'bench', address: '127.0.0.1', port: PORTS.backend, protocol: 'tcp', tags: [], meta: {}, host: 'bench', status: 'passing' };
  const procs = [];
  const registry = createBackend(registryUri, { ttl: 0 });
  try {
    procs.push(daemon('nginx', ['-p', dir, '-c', nginxConf(dir, 'backend', PORTS.backend, BACKEND(PORTS.backend))]));
    await waitFor('backend nginx', () => answers(PORTS.backend));
    await registry.register(instance);
    const targets = [
      { key: 'builtin', label: compare ? 'harbormaster proxy (this checkout)' : 'harbormaster proxy', start: () => daemon(process.execPath, [BIN, 'proxy', registryUri, '--listen', `127.0.0.1:${PORTS.builtin}`, '--api', 'off', '--log-level', 'warn']) },
      ...(compare
        ? [{ key: 'before', label: `harbormaster proxy (${opts.compareLabel ?? compare})`, start: () => daemon(process.execPath, [join(compare, 'bin/harbormaster.js'), 'proxy', registryUri, '--listen', `127.0.0.1:${PORTS.before}`, '--api', 'off', '--log-level', 'warn']) }]
        : []),
      { key: 'nginx', label: 'nginx (1 worker)', start: () => daemon('nginx', ['-p', dir, '-c', nginxConf(dir, 'proxy', PORTS.nginx, NGINX_PROXY(PORTS.nginx, PORTS.backend))]) },
      { key: 'haproxy', label: 'HAProxy (nbthread 1)', start: () => daemon('haproxy', ['-db', '-f', haproxyConf(dir, PORTS.haproxy, PORTS.backend)]) },
      { key: 'agent', label: 'forwarder on node:http Agent', start: () => daemon(process.execPath, ['--input-type=module', '-e', FORWARDER, 'agent', String(PORTS.agent), String(PORTS.backend), ROOT]) },
      { key: 'undici', label: 'forwarder on undici Pool', start: () => daemon(process.execPath, ['--input-type=module', '-e', FORWARDER, 'undici', String(PORTS.undici), String(PORTS.backend), ROOT]) },
    ];
    const results = Object.fromEntries(targets.map((t) => [t.key, []]));
    const load = [];
    // Warm the backend once: its first seconds should not count for whichever runs first.
    await wrk(PORTS.backend, 2, connections);
    const backendAlone = await wrk(PORTS.backend, seconds, connections);
    for (let r = 0; r < rounds; r++) {
      for (const t of targets) {
        const d = t.start();
        procs.push(d);
        try {
          await waitFor(`${t.label} answering`, () => answers(PORTS[t.key]), 20_000).catch((err) => {
            throw new Error(`${err.message}: ${d.stderr()}`);
          });
          await wrk(PORTS[t.key], 2, connections); // warm-up (JIT, pools)
          // The proxy's own CPU per request (one process for the built-in proxy): less sensitive
          // than requests/s to what else runs on a shared machine.
          const cpu0 = cpuMs(d.child.pid);
          const r = await wrk(PORTS[t.key], seconds, connections);
          r.cpuUsPerRequest = ((cpuMs(d.child.pid) - cpu0) * 1000) / r.requests;
          results[t.key].push(r);
          load.push(os.loadavg()[0]);
        } finally {
          await d.stop(t.key === 'nginx' ? 'SIGQUIT' : 'SIGTERM');
        }
      }
    }
    const med = (key, f) => median(results[key].map((x) => x[f]));
    const base = { rps: med('nginx', 'rps'), p99: med('nginx', 'p99') };
    const v = await versions();
    const cpu = os.cpus();
    const fmt = (n, d = 0) => n.toLocaleString('en', { maximumFractionDigits: d, minimumFractionDigits: d });
    const row = (t) => {
      const rps = med(t.key, 'rps');
      const p99 = med(t.key, 'p99');
      const errors = results[t.key].reduce((n, x) => n + x.errors, 0);
      return `| ${t.label} | ${fmt(rps)} | ${fmt(med(t.key, 'p50'), 2)} ms | ${fmt(p99, 2)} ms | ${fmt(rps / base.rps, 2)}× | ${fmt(p99 / base.p99, 2)}× | ${results[t.key].map((x) => fmt(x.rps)).join(' / ')} | ${errors} |`;
    };
    const builtin = { rps: med('builtin', 'rps') / base.rps, p99: med('builtin', 'p99') / base.p99 };
    const met = builtin.rps >= 0.5 && builtin.p99 <= 2;
    const proxies = targets.filter((t) => !['agent', 'undici'].includes(t.key));
    const before = compare ? { rps: med('before', 'rps') / base.rps, p99: med('before', 'p99') / base.p99 } : undefined;
    const cpuLine = (key) => `${fmt(med(key, 'cpuUsPerRequest'), 1)} µs (per round ${results[key].map((x) => fmt(x.cpuUsPerRequest, 1)).join(' / ')})`;
    // Per round, each build's requests/s over nginx's in that round: the spread of the ratio itself.
    const perRound = (key) => results[key].map((x, i) => x.rps / results.nginx[i].rps);
    return [
      '## Proxy throughput',
      '',
      `\`${command}\` — ${new Date().toISOString()} — ${cpu.length} × ${cpu[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}, Node ${process.version}, ${v.nginx}, ${v.haproxy}, ${v.wrk}; load average during the runs ${fmt(Math.min(...load), 1)}–${fmt(Math.max(...load), 1)}.`,
      '',
      `\`wrk -t2 -c${connections} -d${seconds}s --latency -H 'Host: ${HOST}'\` against each proxy in turn (${rounds} interleaved rounds after a 2 s warm-up each; medians). Every proxy forwards to the same backend, an nginx (1 worker) answering a 23-byte body with \`return 200\`, which alone serves ${fmt(backendAlone.rps)} req/s (p99 ${fmt(backendAlone.p99, 2)} ms) under the same wrk load, well above what any proxy in front of it reaches. All proxies keep upstream connections alive and add X-Forwarded-For/-Proto/-Host. wrk, the proxy and the backend share the same ${cpu.length} CPUs.`,
      '',
      '| proxy | req/s | p50 | p99 | req/s ÷ nginx | p99 ÷ nginx | req/s per round | errors |',
      '|---|---:|---:|---:|---:|---:|---:|---:|',
      ...proxies.map(row),
      '',
      `Target: at least 0.5× nginx's requests/s with p99 no worse than 2× nginx's. This run: ${fmt(builtin.rps, 2)}× the requests/s, ${fmt(builtin.p99, 2)}× the p99 — ${met ? 'met' : 'not met'}.`,
      '',
      ...(before
        ? [
            `Before/after in this run: the ratio to nginx's requests/s is ${fmt(builtin.rps, 3)}× for this checkout and ${fmt(before.rps, 3)}× for ${opts.compareLabel ?? compare}, a change of ${fmt((builtin.rps / before.rps - 1) * 100, 1)} % (per round: ${perRound('builtin').map((r) => fmt(r, 3)).join(' / ')} vs ${perRound('before').map((r) => fmt(r, 3)).join(' / ')}; median of the per-round ratios ${fmt(median(perRound('builtin')), 3)}× vs ${fmt(median(perRound('before')), 3)}×, ${fmt((median(perRound('builtin')) / median(perRound('before')) - 1) * 100, 1)} %; median of this checkout's requests/s over the other's, round by round, ${fmt((median(results.builtin.map((x, i) => x.rps / results.before[i].rps)) - 1) * 100, 1)} %); p99 ratio ${fmt(builtin.p99, 2)}× vs ${fmt(before.p99, 2)}×.`,
            '',
            `CPU time of the proxy process per request (user + system, from /proc, median of the rounds): this checkout ${cpuLine('builtin')}; ${opts.compareLabel ?? compare} ${cpuLine('before')}: ${fmt((med('builtin', 'cpuUsPerRequest') / med('before', 'cpuUsPerRequest') - 1) * 100, 1)} %.`,
            '',
          ]
        : []),
      '### Upstream client: node:http Agent vs undici Pool',
      '',
      'The same minimal forwarder (header copy, hop-by-hop removal, X-Forwarded-*), once on a keep-alive `http.Agent` with `http.request` + `pipe`, once on an undici `Pool` through `dispatch` with a raw handler; measured in the same rounds.',
      '',
      '| forwarder | req/s | p50 | p99 | req/s ÷ nginx | p99 ÷ nginx | req/s per round | errors |',
      '|---|---:|---:|---:|---:|---:|---:|---:|',
      ...targets.filter((t) => ['agent', 'undici'].includes(t.key)).map(row),
      '',
      ...(HISTORY.length
        ? [
            '### Steps toward the target',
            '',
            'Each row is one earlier run of this benchmark after the change it names (medians; the machine is shared, so compare the ratios). The table at the top is this run.',
            '',
            '| step | change | built-in req/s | nginx req/s | req/s ÷ nginx | built-in p99 | nginx p99 | p99 ÷ nginx | load |',
            '|---|---|---:|---:|---:|---:|---:|---:|---:|',
            ...HISTORY.map((h, i) => `| ${i} | ${h.change} | ${fmt(h.rps)} | ${fmt(h.nginxRps)} | ${fmt(h.rps / h.nginxRps, 2)}× | ${fmt(h.p99, 2)} ms | ${fmt(h.nginxP99, 2)} ms | ${fmt(h.p99 / h.nginxP99, 2)}× | ${h.load} |`),
            '',
            ...NOTES.map((n) => `- ${n}`),
            '',
          ]
        : []),
    ].join('\n');
  } finally {
    for (const d of procs) await d.stop();
    await registry.deregister(instance).catch(() => undefined);
    await registry.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const arg = (name, def) => (process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : def);
  const command = ['node', 'bench/proxy.mjs', ...process.argv.slice(2)].join(' ');
  run({ duration: Number(arg('duration', 10)), rounds: Number(arg('rounds', 3)), connections: Number(arg('connections', 32)), compare: arg('compare'), compareLabel: arg('compare-label'), command }).then(
    (md) => (process.stdout.write(`${md}\n`), arg('out') && writeFileSync(arg('out'), md), process.exit(0)),
    (err) => (console.error(`bench failed: ${err.stack ?? err}`), process.exit(1)),
  );
}
