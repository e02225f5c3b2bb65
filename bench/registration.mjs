// Registration latency of `harbormaster register` against the real registries (Consul, etcd v3,
// etcd v2), plus an in-process memory:// run as the no-op baseline. What a user waits for is the
// time from Docker starting a container until clients can discover it, so each sample runs from
// Docker's own `start` event (its timeNano) to the moment the entry shows up in the registry,
// seen through the registry's change feed (Consul blocking health query with ?passing, etcd v3
// watch, etcd v2 recursive wait). Then a burst of 200 starts shows how the registrator keeps up
// when Docker is busy. Traffic stays on 127.0.0.1; every container made here is removed.
//   node bench/registration.mjs [--seq 50] [--burst 200] [--out file.md]
import { execFile, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { Etcd3 } from 'etcd3';

const exec = promisify(execFile);
const BIN = fileURLToPath(new URL('../bin/harbormaster.js', import.meta.url));
const IMAGE = 'hm-test:2';
const CONSUL = 'http://127.0.0.1:8500';
const ETCD = 'http://127.0.0.1:2379';
const LIMIT_MS = 120_000; // no single wait runs longer
const POOL = 16; // concurrent `docker run -d` in the burst
/** Wall-clock milliseconds with sub-ms resolution, comparable with Docker's timeNano. */
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let aborted = false; // set by ^C: waits throw, the finally blocks clean up

async function waitFor(what, pred, limitMs = LIMIT_MS, extra = () => '') {
  const deadline = Date.now() + limitMs;
  while (!pred()) {
    if (aborted) throw new Error(`interrupted while waiting for ${what}`);
    if (Date.now() > deadline) throw new Error(`timed out after ${limitMs / 1000} s waiting for ${what}${extra()}`);
    await sleep(2);
  }
}

const docker = async (...args) => (await exec('docker', args, { timeout: 60_000, maxBuffer: 8 << 20 })).stdout.trim();
const dockerRun = (name, svc) => docker('run', '-d', '--name', name, '-e', `SERVICE_NAME=${svc}`, '-p', '127.0.0.1::80', IMAGE);
async function removeContainers(prefix) {
  const ids = (await docker('ps', '-aq', '--filter', `name=^${prefix}`)).split('\n').filter(Boolean);
  for (let i = 0; i < ids.length; i += 100) await docker('rm', '-f', ...ids.slice(i, i + 100)).catch(() => undefined);
}

/** Docker `start` events: container name → ms. The stream is open once this resolves. */
async function dockerStarts(starts) {
  const stream = await new Docker().getEvents({ filters: { type: ['container'], event: ['start'] } });
  let buf = '';
  stream.on('data', (d) => {
    buf += d.toString();
    for (let nl; (nl = buf.indexOf('\n')) >= 0; buf = buf.slice(nl + 1)) {
      try {
        const ev = JSON.parse(buf.slice(0, nl));
        if (ev.Actor?.Attributes?.name) starts.set(ev.Actor.Attributes.name, ev.timeNano / 1e6);
      } catch { /* not an event */ }
    }
  });
  stream.on('error', () => undefined);
  return () => stream.destroy();
}

function startHm(host, uri, onLine) {
  const child = spawn(process.execPath, [BIN, 'register', '--hostname', host, '--ttl', '30', uri], { stdio: ['ignore', 'pipe', 'pipe'] });
  const hm = { child, tail: [], started: false, exited: new Promise((r) => child.on('exit', r)) };
  let buf = '';
  const keep = (s) => hm.tail.push(s) > 20 && hm.tail.shift();
  child.stdout.on('data', (d) => {
    buf += d.toString();
    for (let nl; (nl = buf.indexOf('\n')) >= 0; buf = buf.slice(nl + 1)) {
      const line = buf.slice(0, nl);
      keep(line);
      try {
        const l = JSON.parse(line);
        if (l.event === 'start') hm.started = true;
        onLine(l, now());
      } catch { /* not JSON */ }
    }
  });
  child.stderr.on('data', (d) => keep(d.toString().trim()));
  hm.log = () => `\n--- harbormaster ${uri} (last lines):\n${hm.tail.join('\n')}`;
  return hm;
}

async function stopHm(hm) {
  if (hm.child.exitCode !== null || hm.child.signalCode !== null) return;
  hm.child.kill('SIGTERM'); // withdraws its services
  const timer = setTimeout(() => hm.child.kill('SIGKILL'), 30_000);
  await hm.exited.finally(() => clearTimeout(timer));
}

/** A loop over long-polls until close(); errors are retried (the phase deadline bounds it all). */
function longPoll(step) {
  const ac = new AbortController();
  const loop = (async () => {
    while (!ac.signal.aborted) await step(ac.signal).catch(() => !ac.signal.aborted && sleep(20));
  })();
  return async () => (ac.abort(), loop);
}

// Each registry: the URI harbormaster gets, a change feed that calls mark(text holding a service ID, ms), and a cleanup.
const REGISTRIES = [
  // memory://: its `registered` log lines are the feed (see phase)
  { label: 'memory:// (no-op baseline)', key: 'mem', uri: () => 'memory://', watch: async () => async () => undefined, cleanup: async () => undefined },
  {
    label: 'Consul', key: 'consul', uri: () => 'consul://127.0.0.1:8500',
    watch: async ({ svc }, mark) => {
      let index = 0;
      return longPoll(async (signal) => {
        const res = await fetch(`${CONSUL}/v1/health/service/${svc}?passing=1&wait=30s&index=${index}`, { signal });
        const t = now();
        const next = Number(res.headers.get('x-consul-index')) || 0;
        index = next < index ? 0 : Math.max(next, 1);
        for (const e of await res.json()) mark(e.Service.ID, t);
      });
    },
    cleanup: async ({ host }) => {
      const all = await (await fetch(`${CONSUL}/v1/agent/services`)).json();
      for (const s of Object.values(all)) if (s.Meta?.hm_host === host) await fetch(`${CONSUL}/v1/agent/service/deregister/${encodeURIComponent(s.ID)}`, { method: 'PUT' });
    },
  },
  {
    label: 'etcd v3', key: 'etcd3', uri: ({ prefix }) => `etcd://127.0.0.1:2379${prefix}`,
    watch: async ({ prefix }, mark) => {
      const client = new Etcd3({ hosts: ETCD });
      const watcher = await client.watch().prefix(`${prefix}/`).create();
      watcher.on('put', (kv) => mark(kv.key.toString(), now()));
      return () => watcher.cancel().finally(() => client.close());
    },
    cleanup: async ({ prefix }) => {
      const client = new Etcd3({ hosts: ETCD });
      await client.delete().prefix(`${prefix}/`).exec().finally(() => client.close());
    },
  },
  {
    label: 'etcd v2', key: 'etcd2', uri: ({ prefix }) => `etcd2://127.0.0.1:2379${prefix}`,
    watch: async ({ prefix }, mark) => {
      let index = Number((await fetch(`${ETCD}/v2/keys/`)).headers.get('x-etcd-index'));
      const walk = (n, t) => (n.dir ? (n.nodes ?? []).forEach((c) => walk(c, t)) : mark(n.key, t));
      return longPoll(async (signal) => {
        const res = await fetch(`${ETCD}/v2/keys${prefix}?wait=true&recursive=true&waitIndex=${index + 1}`, { signal });
        const body = await res.json();
        const t = now();
        if (body.errorCode === 401) { // event history cleared: take the current state instead
          const cur = await fetch(`${ETCD}/v2/keys${prefix}?recursive=true`, { signal });
          index = Number(cur.headers.get('x-etcd-index'));
          return walk((await cur.json()).node ?? { dir: true }, now());
        }
        index = body.node?.modifiedIndex ?? index;
        if (['set', 'create', 'update'].includes(body.action)) mark(body.node.key, t);
      });
    },
    cleanup: async ({ prefix }) => fetch(`${ETCD}/v2/keys${prefix}?recursive=true&dir=true`, { method: 'DELETE' }),
  },
];

/** One registry: a warm-up container, `seq` starts one after another, then `burst` at once. */
async function phase(reg, { seq, burst, run, starts }) {
  const host = `hmb-${run}-${reg.key}`; // harbormaster's --hostname and the container name prefix
  const ctx = { host, svc: `${host}-svc`, prefix: `/${host}` };
  const seen = new Map(); // container name → ms when the registry first showed it
  const idRe = new RegExp(`(?:^|/)${host}:([^:/]+):80$`); // our own registrations only
  const mark = (text, t) => {
    const m = idRe.exec(decodeURIComponent(text));
    if (m && !seen.has(m[1])) seen.set(m[1], t);
  };
  const closeWatch = await reg.watch(ctx, mark);
  const hm = startHm(host, reg.uri(ctx), (l, t) => reg.key === 'mem' && l.event === 'registered' && mark(String(l.id), t));
  const ready = (name) => seen.has(name) && starts.has(name);
  try {
    await waitFor(`harbormaster ${reg.key} to start`, () => hm.started || hm.child.exitCode !== null, 30_000, hm.log);
    if (hm.child.exitCode !== null) throw new Error(`harbormaster exited with code ${hm.child.exitCode}${hm.log()}`);
    await dockerRun(`${host}-warm`, ctx.svc); // not measured: the first one also waits for the event stream
    await waitFor(`${host}-warm registered`, () => ready(`${host}-warm`), 30_000, hm.log);
    const lat = [];
    for (let i = 0; i < seq; i++) {
      const name = `${host}-s${i}`;
      await dockerRun(name, ctx.svc);
      const why = () => ` (start event ${starts.has(name) ? 'seen' : 'missing'}, registry entry ${seen.has(name) ? 'seen' : 'missing'})${hm.log()}`;
      await waitFor(`${name} registered`, () => ready(name), 30_000, why);
      lat.push(seen.get(name) - starts.get(name));
    }
    const names = Array.from({ length: burst }, (_, i) => `${host}-b${i}`);
    let next = 0;
    let failed; // the first failed `docker run` stops the pool (no run left in flight behind the cleanup)
    const t0 = now();
    await Promise.all(Array.from({ length: POOL }, async () => {
      while (next < names.length && !aborted && !failed) await dockerRun(names[next++], ctx.svc).catch((err) => (failed ??= err));
    }));
    if (failed) throw failed;
    const count = () => names.filter(ready).length;
    await waitFor(`${burst} burst containers registered`, () => count() === burst, LIMIT_MS, () => ` (${count()} so far)${hm.log()}`);
    const total = Math.max(...names.map((n) => seen.get(n))) - t0;
    const dockerMs = Math.max(...names.map((n) => starts.get(n))) - t0;
    return { label: reg.label, lat, total, dockerMs, burstLat: names.map((n) => seen.get(n) - starts.get(n)) };
  } finally {
    await stopHm(hm);
    await closeWatch().catch(() => undefined);
    await removeContainers(`${host}-`);
    await reg.cleanup(ctx).catch(() => undefined);
  }
}

/** Linear-interpolated percentile (with 50 samples p99 lies between the two largest). */
function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  const r = (p / 100) * (s.length - 1);
  const lo = Math.floor(r);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (r - lo);
}

async function machine() {
  const get = (url, f) => fetch(url).then((r) => r.json()).then(f, () => '?');
  const dockerd = await docker('version', '--format', '{{.Server.Version}}').catch(() => '?');
  const consul = await get(`${CONSUL}/v1/agent/self`, (j) => j.Config.Version);
  const etcd = await get(`${ETCD}/version`, (j) => j.etcdserver);
  return `${os.availableParallelism()} CPUs (${os.cpus()[0]?.model ?? '?'}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Node ${process.version}, dockerd ${dockerd}, Consul ${consul}, etcd ${etcd}`;
}

export async function run({ seq = 50, burst = 200, command = 'node bench/registration.mjs' } = {}) {
  const runId = Math.random().toString(36).slice(2, 8);
  const loadBefore = os.loadavg()[0];
  const starts = new Map();
  const stopEvents = await dockerStarts(starts);
  const rows = [];
  try {
    for (const reg of REGISTRIES) rows.push(await phase(reg, { seq, burst, run: runId, starts }));
  } finally {
    stopEvents();
    await removeContainers(`hmb-${runId}-`).catch(() => undefined); // anything a failed phase left
  }
  const foreign = [...starts.keys()].filter((n) => !n.startsWith(`hmb-${runId}-`)).length;
  const [ms, s] = [(x) => `${x.toFixed(1)} ms`, (x) => `${(x / 1000).toFixed(2)} s`];
  const base = rows.find((r) => r.label.startsWith('memory'));
  const table = rows.map((r) => `| ${r.label} | ${ms(pct(r.lat, 50))} | ${ms(pct(r.lat, 99))} | ${ms(Math.max(...r.lat))} | ${s(r.total)} | ${s(r.dockerMs)} | ${ms(r.total - r.dockerMs)} | ${ms(pct(r.burstLat, 99))} |`);
  const vsBase = rows.filter((r) => r !== base).map((r) => `${r.label} +${(pct(r.lat, 50) - pct(base.lat, 50)).toFixed(1)} ms`);
  return [
    '## Registration latency',
    '',
    `Command: \`${command}\`  `,
    `Date: ${new Date().toISOString()}  `,
    `Machine: ${await machine()}  `,
    `Quiet host? ${foreign} container start(s) by others on this dockerd during the run${foreign ? ' (they compete for CPU and dockerd: numbers are skewed)' : ''}; 1-min load average ${loadBefore.toFixed(2)} before the run.`,
    '',
    `Latency runs from Docker's \`start\` event (its \`timeNano\`) to the entry becoming visible in the registry: Consul = passing in a blocking \`/v1/health/service/<name>?passing=1\` query, etcd v3 = watch \`put\`, etcd v2 = recursive \`?wait=true\`. Sequential: ${seq} containers (\`${IMAGE}\`, one published port), each started once the previous one was registered. Burst: ${burst} \`docker run -d\` by ${POOL} workers, timed from the first call; "docker" is the last \`start\` event, overhead = total − docker; "burst p99" is the start → registered latency of the ${burst} during the burst. One fresh harbormaster (\`register --hostname <unique> --ttl 30\`) per registry.`,
    '',
    `| Registry | p50 | p99 | max | ${burst} at once: total | docker | registrator overhead | burst p99 |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...table,
    '',
    `No-op baseline: memory:// keeps registrations in process, so its latency (start event → its \`registered\` log line on stdout) is harbormaster's own path (event, inspect, registrar). p50 above it: ${vsBase.join(', ')}.`,
    '',
  ].join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const arg = (name, def) => (process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : def);
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => (aborted ? process.exit(130) : (aborted = true))); // twice: exit at once
  const command = ['node', 'bench/registration.mjs', ...process.argv.slice(2)].join(' ');
  run({ seq: Number(arg('seq', 50)), burst: Number(arg('burst', 200)), command }).then(
    (md) => (process.stdout.write(md), arg('out') && writeFileSync(arg('out'), md), process.exit(0)),
    (err) => (console.error(`bench failed: ${err.stack ?? err}`), process.exit(1)),
  );
}
