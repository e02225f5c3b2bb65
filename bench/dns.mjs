// DNS answers per second and latency, measured with dnsperf (Debian package) against
// `harbormaster dns` and, in the same run, against Consul's own DNS interface over the same
// catalog: a private Consul dev agent holds the services (written through harbormaster's Consul
// backend), Consul answers from it directly, harbormaster answers from its watch of it. The two
// servers are measured in turn, twice each (A B A B), with the same query file; the better of
// each pair is kept. Everything on 127.0.0.1; both servers are stopped at the end.
//   node bench/dns.mjs [--services 50] [--instances 4] [--seconds 8] [--out file.md]
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const BIN = fileURLToPath(new URL('../bin/harbormaster.js', import.meta.url));
const CONSUL_HTTP = 47100;
const CONSUL_DNS = 47101;
const HM_DNS = 47110;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function arg(name, def) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
}

async function waitFor(what, pred, limitMs = 60_000) {
  const deadline = Date.now() + limitMs;
  for (;;) {
    if (await pred().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

function consulBinary() {
  try {
    return readFileSync(join(process.env.HM_TEST_STATE ?? '/tmp/harbormaster-test', 'consul-path'), 'utf8').trim();
  } catch {
    return 'consul';
  }
}

async function digCount(port, name, type) {
  const { stdout } = await exec('dig', ['+short', '+tries=1', '+time=2', '@127.0.0.1', '-p', String(port), name, type]);
  return stdout.split('\n').filter(Boolean).length;
}

/** One dnsperf run: queries per second, average and p99 latency (from the per-query lines of -v). */
async function dnsperf(port, file, seconds) {
  const { stdout } = await exec('dnsperf', ['-s', '127.0.0.1', '-p', String(port), '-d', file, '-l', String(seconds), '-c', '4', '-q', '200', '-v'], { maxBuffer: 1 << 30 });
  const lat = [];
  for (const line of stdout.split('\n')) {
    // "> NOERROR web-1.service.consul A 0.000123"
    const m = /^> (\S+) \S+ \S+ ([\d.]+)$/.exec(line.trim());
    if (m) lat.push(Number(m[2]) * 1000);
  }
  lat.sort((a, b) => a - b);
  const qps = Number(/Queries per second:\s+([\d.]+)/.exec(stdout)?.[1] ?? 0);
  const lost = Number(/Queries lost:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
  const completed = Number(/Queries completed:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
  const pct = (p) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] ?? NaN;
  return { qps, completed, lost, avg: lat.reduce((s, x) => s + x, 0) / (lat.length || 1), p50: pct(50), p99: pct(99) };
}

export async function run() {
  const services = Number(arg('services', '50'));
  const instances = Number(arg('instances', '4'));
  const seconds = Number(arg('seconds', '8'));
  const dir = mkdtempSync(join(os.tmpdir(), 'hm-bench-dns-'));
  const consul = spawn(consulBinary(), ['agent', '-dev', '-client', '127.0.0.1', '-bind', '127.0.0.1', '-http-port', String(CONSUL_HTTP), '-dns-port', String(CONSUL_DNS),
    '-serf-lan-port', '47102', '-serf-wan-port', '47103', '-server-port', '47104', '-grpc-port', '47105', '-node', 'hm-bench-dns'], { stdio: 'ignore' });
  let hm;
  try {
    await waitFor('consul', async () => (await (await fetch(`http://127.0.0.1:${CONSUL_HTTP}/v1/status/leader`)).text()).includes(':'));
    const { createBackend } = await import(pathToFileURL(fileURLToPath(new URL('../dist/registry/index.js', import.meta.url))).href);
    const b = createBackend(`consul://127.0.0.1:${CONSUL_HTTP}`, { ttl: 0 });
    for (let s = 0; s < services; s++) {
      for (let i = 0; i < instances; i++) {
        await b.register({ id: `bench:svc-${s}:${i}`, name: `svc-${s}`, address: `127.0.${s}.${i + 1}`, port: 8000 + i, protocol: 'tcp', tags: [`t${i}`], meta: { version: '1' }, host: 'hm-bench-dns', status: 'passing' });
      }
    }
    await b.close();
    hm = spawn(process.execPath, [BIN, 'dns', `consul://127.0.0.1:${CONSUL_HTTP}`, '--listen', `127.0.0.1:${HM_DNS}`, '--log-level', 'warn'], { stdio: 'ignore' });
    const last = `svc-${services - 1}.service.consul`;
    await waitFor('Consul DNS', async () => (await digCount(CONSUL_DNS, last, 'A')) === instances);
    await waitFor('harbormaster DNS', async () => (await digCount(HM_DNS, last, 'A')) === instances);

    const file = join(dir, 'queries.txt');
    const lines = [];
    for (let s = 0; s < services; s++) lines.push(`svc-${s}.service.consul A`, `svc-${s}.service.consul SRV`);
    writeFileSync(file, `${lines.join('\n')}\n`);

    const runs = { consul: [], harbormaster: [] };
    for (let round = 0; round < 2; round++) {
      runs.consul.push(await dnsperf(CONSUL_DNS, file, seconds));
      runs.harbormaster.push(await dnsperf(HM_DNS, file, seconds));
    }
    const best = (rs) => rs.reduce((a, r) => (r.qps > a.qps ? r : a));
    const c = best(runs.consul);
    const h = best(runs.harbormaster);
    const { stdout: consulVersion } = await exec(consulBinary(), ['version']);
    const f = (x) => x.toFixed(2);
    const cmd = `node bench/dns.mjs --services ${services} --instances ${instances} --seconds ${seconds}`;
    return [
      '## DNS',
      '',
      `Command: \`${cmd}\` (part of \`npm run bench\`). dnsperf 2.10 (4 clients, 200 queries outstanding, ${seconds} s per run), ` +
        `${services} services × ${instances} instances in a private ${consulVersion.split('\n')[0]} dev agent; the query file asks A and SRV of every service in turn. ` +
        'Each server measured twice, alternating; the better run of each is shown. Latency is per query as dnsperf reports it.',
      '',
      '| server | queries/s | lost | avg ms | p50 ms | p99 ms |',
      '| --- | ---: | ---: | ---: | ---: | ---: |',
      `| Consul DNS (127.0.0.1:${CONSUL_DNS}) | ${Math.round(c.qps)} | ${c.lost} | ${f(c.avg)} | ${f(c.p50)} | ${f(c.p99)} |`,
      `| harbormaster dns (consul:// watch) | ${Math.round(h.qps)} | ${h.lost} | ${f(h.avg)} | ${f(h.p50)} | ${f(h.p99)} |`,
      '',
      `harbormaster / Consul: ${f(h.qps / c.qps)}× the queries per second, ${f(h.p99 / c.p99)}× the p99 latency. ` +
        `All runs (qps): Consul ${runs.consul.map((r) => Math.round(r.qps)).join(', ')}; harbormaster ${runs.harbormaster.map((r) => Math.round(r.qps)).join(', ')}.`,
      '',
    ].join('\n');
  } finally {
    hm?.kill('SIGKILL');
    consul.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const md = await run();
  const out = arg('out', undefined);
  if (out) writeFileSync(out, md);
  console.log(md);
  process.exit(0);
}
