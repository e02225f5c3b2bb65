// --haproxy-runtime against a real HAProxy 2.6 (master-worker, admin socket, loopback backends):
// instance changes are applied through the runtime API with no reload, a structural change or a
// full backend reloads with the servers' state carried over, and a dead socket falls back to a
// reload.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Catalog } from '../src/catalog/catalog.js';
import type { ServiceInstance } from '../src/model/service-instance.js';
import { AdminSocket } from '../src/render/haproxy-runtime/admin-socket.js';
import { HaproxyRuntime, type RuntimeOutcome } from '../src/render/haproxy-runtime/runtime.js';
import { templateData } from '../src/render/template-data.js';
import { compileTemplate } from '../src/render/template-file.js';
import { createBackend } from '../src/registry/index.js';
import { BIN, Hm, runCli } from './support/harbormaster.js';
import { ETCD_ENDPOINT } from './support/registries.js';
import { countLines, get, Haproxy, haproxyCheck, TEMPLATES, tempDir, templateEnv, waitForBodies } from './support/render.js';
import { uniq, waitFor } from './support/wait.js';

const HAPROXY_PORT = 28000;
const BACKEND_PORTS = Array.from({ length: 24 }, (_, n) => 28010 + n);
/** A backend on the IPv6 loopback. */
const V6_PORT = 28034;
const DIR = tempDir('hm-hrt-');
const ENV = templateEnv(DIR, 0, HAPROXY_PORT);
const CFG = join(DIR, 'haproxy.cfg');
const STATE = join(DIR, 'server-state');
const template = compileTemplate('haproxy.cfg.hbs', readFileSync(join(TEMPLATES, 'haproxy.cfg.hbs'), 'utf8'));
const servers: http.Server[] = [];
let haproxy: Haproxy;
let runtime: HaproxyRuntime;
let reloads = 0;

const inst = (name: string, port: number, id = `h:${name}:${port}`, meta: Record<string, string> = {}): ServiceInstance => ({
  id, name, address: '127.0.0.1', port, protocol: 'tcp', tags: [], meta, host: 'h', status: 'passing',
});

const dataOf = (instances: ServiceInstance[]) => {
  const names = [...new Set(instances.map((i) => i.name))].sort();
  const catalog: Catalog = {
    services: names.map((name) => ({ name, tags: [], instances: instances.filter((i) => i.name === name) })),
    fingerprint: JSON.stringify(instances),
  };
  return templateData(catalog, { statuses: ['passing'], domain: 'localhost', env: ENV });
};

/** What `render` does with an outcome: always write the file, reload only when asked. */
async function apply(rt: HaproxyRuntime, instances: ServiceInstance[]): Promise<RuntimeOutcome> {
  const out = await rt.apply(dataOf(instances));
  writeFileSync(CFG, template.render(out.data));
  if (out.reload && haproxy) {
    reloads++;
    process.kill(Number(readFileSync(ENV.HM_HAPROXY_PIDFILE, 'utf8').trim()), 'SIGUSR2');
  }
  return out;
}

/** The servers of `backend` in service (running, not in maintenance) as sorted `port:weight`. */
const inService = async (socket: string, backend: string): Promise<string> =>
  (await new AdminSocket(socket).raw(`show servers state ${backend}`))
    .split('\n')
    .map((l) => l.split(' '))
    // be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight … srv_port (19th)
    .filter((f) => f.length > 18 && f[1] === backend && f[5] === '2' && (Number(f[6]) & 0x63) === 0)
    .map((f) => `${f[18]}:${f[7]}`)
    .sort()
    .join(',');

const adminState = async (server: string): Promise<number> => {
  const [backend, name] = server.split('/');
  const dump = await new AdminSocket(ENV.HM_HAPROXY_SOCKET).raw(`show servers state ${backend}`);
  const line = dump.split('\n').find((l) => l.split(' ')[3] === name);
  return Number(line?.split(' ')[6]);
};

beforeAll(async () => {
  for (const port of BACKEND_PORTS) {
    const s = http.createServer((_req, res) => res.end(`b${port}`));
    await new Promise<void>((r) => s.listen(port, '127.0.0.1', r));
    servers.push(s);
  }
  const v6 = http.createServer((_req, res) => res.end(`v6-${V6_PORT}`));
  await new Promise<void>((r) => v6.listen(V6_PORT, '::1', r));
  servers.push(v6);
  runtime = new HaproxyRuntime({ socket: ENV.HM_HAPROXY_SOCKET, stateFile: STATE });
  const first = await apply(runtime, [inst('web', BACKEND_PORTS[0])]);
  expect(first).toMatchObject({ reload: true, reason: 'first load' });
  const check = await haproxyCheck(CFG);
  expect(check.ok, check.output).toBe(true);
  haproxy = new Haproxy(CFG, DIR);
  await haproxy.start();
  await waitForBodies(HAPROXY_PORT, 'web.localhost', [`b${BACKEND_PORTS[0]}`], 10_000);
});

afterAll(async () => {
  await haproxy?.stop();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

describe('HAProxy runtime API', () => {
  it('serves each of 200 replaced instances without a reload', async () => {
    const before = reloads;
    const ms: number[] = [];
    let commands = 0;
    for (let n = 1; n <= 200; n++) {
      const port = BACKEND_PORTS[n % 20];
      const t0 = performance.now();
      const out = await apply(runtime, [inst('web', port, `web-${n}`)]);
      expect(out.reload, out.reload ? out.reason : '').toBe(false);
      if (!out.reload) commands += out.commands;
      // Every new connection must reach the new instance: the old one is in maintenance.
      for (;;) {
        const r = await get(HAPROXY_PORT, 'web.localhost');
        if (r.status === 200 && r.body === `b${port}`) break;
        if (performance.now() - t0 > 5000) throw new Error(`change ${n}: still ${r.status} ${r.body}`);
      }
      ms.push(performance.now() - t0);
      // The next request too: not one lucky answer from a server on its way out.
      expect((await get(HAPROXY_PORT, 'web.localhost')).body).toBe(`b${port}`);
    }
    ms.sort((a, b) => a - b);
    const p = (q: number) => ms[Math.min(ms.length - 1, Math.floor(q * ms.length))].toFixed(1);
    console.log(`PROBE haproxy runtime: 200 instance replacements (${commands} runtime commands), change → HAProxy serving the new instance p50 ${p(0.5)} ms, p99 ${p(0.99)} ms, max ${p(1)} ms; reloads ${reloads - before}`);
    expect(reloads - before).toBe(0);
    // The proof is no reload; times are bounded loosely, as the test shares 2 cores with the
    // other lanes (quiet: p99 ~10 ms; loaded, 270 ms seen; a reload per change: ~700 ms quiet).
    expect(Number(p(0.5))).toBeLessThan(100);
    expect(Number(p(0.99))).toBeLessThan(1_000);
  });

  it('takes 300 mixed changes (add, remove, weight, drain, health) without a reload', async () => {
    // A fixed pseudo-random sequence, so that a failure can be replayed.
    let seed = 12345;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), Math.floor(seed / 65536) % n);
    type Live = { port: number; id: string; weight: number; status: ServiceInstance['status'] };
    let pool: Live[] = [{ port: BACKEND_PORTS[0], id: 'mix-0', weight: 1, status: 'passing' }];
    const catalog = () => pool.map((l) => ({ ...inst('web', l.port, l.id, l.weight === 1 ? {} : { weight: String(l.weight) }), status: l.status }));
    const expected = () => [...new Set(pool.filter((l) => l.status === 'passing' && l.weight > 0).map((l) => `b${l.port}`))].sort();
    const before = reloads;
    const ms: number[] = [];
    const kinds: Record<string, number> = {};
    for (let n = 1; n <= 300; n++) {
      const free = BACKEND_PORTS.slice(0, 20).filter((p) => !pool.some((l) => l.port === p));
      const op = ['add', 'remove', 'weight', 'drain', 'fail', 'recover'][rnd(6)];
      const pick = pool[rnd(pool.length)];
      if (op === 'add' && pool.length < 6) pool.push({ port: free[rnd(free.length)], id: `mix-${n}`, weight: 1, status: 'passing' });
      else if (op === 'remove' && pool.length > 1) pool = pool.filter((l) => l !== pick);
      else if (op === 'weight') pick.weight = 1 + rnd(2);
      else if (op === 'drain') pick.weight = 0;
      else if (op === 'fail') pick.status = 'critical';
      else pick.status = 'passing';
      // Something must stay reachable to tell "serving" from "nothing to serve".
      if (expected().length === 0) Object.assign(pool[0], { weight: 1, status: 'passing' });
      kinds[op] = (kinds[op] ?? 0) + 1;
      const want = expected().join(',');
      const t0 = performance.now();
      const out = await apply(runtime, catalog());
      expect(out.reload, out.reload ? out.reason : '').toBe(false);
      // Weights are at most 2 and there are at most 6 instances: 13 requests visit every live one.
      let seen = '';
      while (seen !== want) {
        if (performance.now() - t0 > 3000) throw new Error(`change ${n} (${op}): serving ${seen}, expected ${want}`);
        const got = new Set<string>();
        for (let i = 0; i < 13; i++) got.add((await get(HAPROXY_PORT, 'web.localhost')).body);
        seen = [...got].sort().join(',');
      }
      ms.push(performance.now() - t0);
    }
    ms.sort((a, b) => a - b);
    const p = (q: number) => ms[Math.min(ms.length - 1, Math.floor(q * ms.length))].toFixed(1);
    console.log(`PROBE haproxy runtime: 300 mixed changes ${JSON.stringify(kinds)}, change → every live instance served and no other p50 ${p(0.5)} ms, p99 ${p(0.99)} ms (13 requests per round); reloads ${reloads - before}`);
    expect(reloads - before).toBe(0);
    // Back to one instance for the tests below.
    expect((await apply(runtime, [inst('web', BACKEND_PORTS[0])])).reload).toBe(false);
  });

  it('drains an instance with weight 0 and brings it back, without a reload', async () => {
    const [a, b] = [BACKEND_PORTS[20], BACKEND_PORTS[21]];
    expect((await apply(runtime, [inst('web', a), inst('web', b)])).reload).toBe(false);
    await waitForBodies(HAPROXY_PORT, 'web.localhost', [`b${a}`, `b${b}`], 5000);
    expect((await apply(runtime, [inst('web', a, undefined, { weight: '0' }), inst('web', b)])).reload).toBe(false);
    await waitForBodies(HAPROXY_PORT, 'web.localhost', [`b${b}`], 5000);
    expect((await apply(runtime, [inst('web', a), inst('web', b)])).reload).toBe(false);
    await waitForBodies(HAPROXY_PORT, 'web.localhost', [`b${a}`, `b${b}`], 5000);
  });

  it('reloads for a new backend and keeps the servers state across the reload', async () => {
    const [a, b, c] = [BACKEND_PORTS[20], BACKEND_PORTS[21], BACKEND_PORTS[22]];
    // Drained by an operator: only the state file can carry that over.
    const slot = dataOf([inst('web', a), inst('web', b)]);
    expect(slot.upstreams[0].instances).toHaveLength(2);
    await new AdminSocket(ENV.HM_HAPROXY_SOCKET).run('set server web/s1 state drain');
    expect((await adminState('web/s1')) & 8).toBe(8);
    const before = reloads;
    const out = await apply(runtime, [inst('web', a), inst('web', b), inst('api', c)]);
    expect(out).toMatchObject({ reload: true, reason: 'backends or routes changed' });
    await waitForBodies(HAPROXY_PORT, 'api.localhost', [`b${c}`], 10_000);
    expect(reloads - before).toBe(1);
    expect((await adminState('web/s1')) & 8).toBe(8);
    await new AdminSocket(ENV.HM_HAPROXY_SOCKET).run('set server web/s1 state ready');
  });

  it('reloads with twice the slots when a backend runs out, then goes on at runtime', async () => {
    const api = inst('api', BACKEND_PORTS[22]);
    const many = BACKEND_PORTS.slice(0, 9).map((p) => inst('web', p));
    const out = await apply(runtime, [...many, api]);
    expect(out).toMatchObject({ reload: true, reason: 'backend web has no free slot' });
    expect(out.data.upstreams.find((u) => u.name === 'web')!.slots).toHaveLength(18);
    await waitForBodies(HAPROXY_PORT, 'web.localhost', many.map((i) => `b${i.port}`), 10_000);
    const more = [...many, inst('web', BACKEND_PORTS[9])];
    expect((await apply(runtime, [...more, api])).reload).toBe(false);
    await waitForBodies(HAPROXY_PORT, 'web.localhost', more.map((i) => `b${i.port}`), 5000);
  });

  it('moves a slot to an IPv6 address (::1) and back at runtime, without a reload', async () => {
    const before = reloads;
    const keep = [inst('web', BACKEND_PORTS[0]), inst('api', BACKEND_PORTS[22])];
    const v6 = { ...inst('web', V6_PORT, 'web-v6'), address: '::1' };
    const t0 = performance.now();
    expect((await apply(runtime, [...keep, v6])).reload).toBe(false);
    await waitForBodies(HAPROXY_PORT, 'web.localhost', [`b${BACKEND_PORTS[0]}`, `v6-${V6_PORT}`], 5000);
    const ms = performance.now() - t0;
    const line = (await new AdminSocket(ENV.HM_HAPROXY_SOCKET).raw('show servers state web')).split('\n').find((l) => l.split(' ')[4] === '::1');
    expect(line?.split(' ')[18]).toBe(String(V6_PORT));
    // The file holds the same, and HAProxy loads it.
    expect(readFileSync(CFG, 'utf8')).toContain(`[::1]:${V6_PORT} check weight 1`);
    const check = await haproxyCheck(CFG);
    expect(check.ok, check.output).toBe(true);
    // The same instance moves to IPv4 and back.
    expect((await apply(runtime, [...keep, { ...v6, address: '127.0.0.1', port: BACKEND_PORTS[1] }])).reload).toBe(false);
    await waitForBodies(HAPROXY_PORT, 'web.localhost', [`b${BACKEND_PORTS[0]}`, `b${BACKEND_PORTS[1]}`], 5000);
    expect((await apply(runtime, [...keep, v6])).reload).toBe(false);
    await waitForBodies(HAPROXY_PORT, 'web.localhost', [`b${BACKEND_PORTS[0]}`, `v6-${V6_PORT}`], 5000);
    expect(reloads - before).toBe(0);
    console.log(`PROBE haproxy runtime: instance at [::1]:${V6_PORT} set at runtime (set server … addr ::1), served with the IPv4 one in ${ms.toFixed(1)} ms (both seen); IPv6 → IPv4 → IPv6 for the same instance; reloads 0`);
  });

  it('after runtime changes, a reload or a restart it did not start serves what the catalog holds (no stale server state)', async () => {
    const [a, b, c] = [BACKEND_PORTS[2], BACKEND_PORTS[3], BACKEND_PORTS[22]];
    await apply(runtime, [inst('web', a, 'web-a'), inst('api', c)]);
    // A reload of its own (a new backend) writes the state file for that reload, web's free slots in it.
    const first = await apply(runtime, [inst('web', a, 'web-a'), inst('api', c), inst('ext', c)]);
    expect(first.reload).toBe(true);
    await waitForBodies(HAPROXY_PORT, 'ext.localhost', [`b${c}`], 10_000);
    await waitForBodies(HAPROXY_PORT, 'web.localhost', [`b${a}`], 10_000);
    // Then instances move at runtime: web-b comes (into a slot that was free at the reload), web-a goes.
    expect((await apply(runtime, [inst('web', a, 'web-a'), inst('web', b, 'web-b'), inst('api', c), inst('ext', c)])).reload).toBe(false);
    expect((await apply(runtime, [inst('web', b, 'web-b'), inst('api', c), inst('ext', c)])).reload).toBe(false);
    await waitForBodies(HAPROXY_PORT, 'web.localhost', [`b${b}`], 5000);
    const pid = () => Number(readFileSync(ENV.HM_HAPROXY_PIDFILE, 'utf8').trim());
    // The worker answering the stats socket (a reload hands the socket to the new one).
    const worker = async () => /^Pid: (\d+)$/m.exec(await new AdminSocket(ENV.HM_HAPROXY_SOCKET).raw('show info').catch(() => ''))?.[1];
    const served = async (n: number) => {
      const seen: Record<string, number> = {};
      for (let i = 0; i < n; i++) {
        const r = await get(HAPROXY_PORT, 'web.localhost').catch((e: Error) => ({ status: 0, body: e.message }));
        const k = `${r.status} ${r.body}`;
        seen[k] = (seen[k] ?? 0) + 1;
      }
      return seen;
    };
    // An operator's reload (SIGUSR2 to the master), not harbormaster's.
    const before = await worker();
    const t0 = performance.now();
    process.kill(pid(), 'SIGUSR2');
    await waitFor('a new worker', async () => ((await worker()) ?? before) !== before, 10_000, 50);
    const afterReload = await served(20);
    const reloadMs = performance.now() - t0;
    // A restart: the master stopped and started again from the same file.
    await haproxy.stop();
    await haproxy.start();
    await waitFor('haproxy listening again', async () => (await get(HAPROXY_PORT, 'web.localhost').catch(() => undefined)) !== undefined, 10_000, 50);
    const afterRestart = await served(20);
    console.log(`PROBE haproxy runtime, stale server state: after web-a → web-b at runtime, an outside reload served ${JSON.stringify(afterReload)} (${reloadMs.toFixed(0)} ms until the 20 requests were answered), a restart served ${JSON.stringify(afterRestart)} over 20 requests each`);
    expect(afterReload).toEqual({ [`200 b${b}`]: 20 });
    expect(afterRestart).toEqual({ [`200 b${b}`]: 20 });
    // The state file of the reload went with the first change made at runtime.
    expect(existsSync(STATE)).toBe(false);
    // Back to what the tests below expect; HAProxy restarted, so the runtime reloads once.
    runtime.reloadFailed();
    expect((await apply(runtime, [inst('web', BACKEND_PORTS[0]), inst('api', c)])).reload).toBe(true);
    await waitForBodies(HAPROXY_PORT, 'web.localhost', [`b${BACKEND_PORTS[0]}`], 30_000);
  });

  it('falls back to a reload when the admin socket fails, and says why', async () => {
    const dead = new HaproxyRuntime({ socket: join(DIR, 'no-such.sock'), stateFile: join(DIR, 'dead-state') });
    await dead.apply(dataOf([inst('web', BACKEND_PORTS[0])]));
    const out = await dead.apply(dataOf([inst('web', BACKEND_PORTS[1])]));
    expect(out).toMatchObject({ reload: true });
    expect(out.reload && out.reason).toMatch(/^runtime API failed, falling back to a reload: haproxy admin socket .*no-such\.sock: set server web\/s0: ENOENT$/);
    expect(existsSync(join(DIR, 'dead-state'))).toBe(false);
    expect(out.data.upstreams[0].slots[0].instance).toMatchObject({ port: BACKEND_PORTS[1] });
  });
});

describe('harbormaster render --haproxy-runtime', () => {
  const DIR2 = tempDir('hm-hrt-cli-');
  const ENV2 = templateEnv(DIR2, 0, HAPROXY_PORT + 1);
  const CFG2 = join(DIR2, 'haproxy.cfg');
  const RELOADS = join(DIR2, 'reloads');
  const URI = `etcd://${ETCD_ENDPOINT}/${uniq('hmhrt')}`;
  const SVC = uniq('web');
  const HOST = `${SVC}.localhost`;
  const registry = createBackend(URI, { ttl: 0 });
  const API = `127.0.0.1:${HAPROXY_PORT + 2}`;
  let proxy: Haproxy;
  let render: Hm;
  /** What HAProxy serves after the first test. */
  let live: string[] = [];
  /** A sample of the render process's /metrics, 0 when absent. */
  const metric = async (name: string): Promise<number> => {
    const text = await (await fetch(`http://${API}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
    return line ? Number(line.split(' ').pop()) : 0;
  };

  afterAll(async () => {
    await render?.stop();
    await proxy?.stop();
    await registry.close();
  });

  const pct = (ms: number[], q: number) => [...ms].sort((a, b) => a - b)[Math.min(ms.length - 1, Math.floor(q * ms.length))].toFixed(1);
  const spread = (ms: number[]) => `p50 ${pct(ms, 0.5)} ms, p99 ${pct(ms, 0.99)} ms, max ${pct(ms, 1)} ms`;

  it('applies 1,000 instance changes from the registry without a reload, after one reload into slots', async () => {
    let current = inst(SVC, BACKEND_PORTS[0], `${SVC}-0`);
    await registry.register(current);
    const once = await runCli(['render', URI, '--once', '--template', `${join(TEMPLATES, 'haproxy.cfg.hbs')}:${CFG2}`], ENV2);
    expect(once.code, once.stdout + once.stderr).toBe(0);
    proxy = new Haproxy(CFG2, DIR2);
    await proxy.start();
    render = new Hm(
      [
        'render', URI,
        '--template', `${join(TEMPLATES, 'haproxy.cfg.hbs')}:${CFG2}:echo r >> ${RELOADS}; kill -USR2 $(cat ${ENV2.HM_HAPROXY_PIDFILE})`,
        '--check', 'haproxy -q -c -f {{src}}',
        '--verify', `haproxy:${proxy.masterSocket}`,
        '--haproxy-runtime', ENV2.HM_HAPROXY_SOCKET,
        // The default quiet time: changes taken at runtime do not wait for it.
        '--wait', '500ms:3s',
        '--api', API,
      ],
      ENV2,
    );
    // The first run reloads into the slot layout (the running config has none).
    await render.waitForLog('first reload', (l) => l.event === 'reload' && l.result === 'ok', 20_000);
    expect(readFileSync(CFG2, 'utf8')).toContain('server s7 127.0.0.1:1 check disabled');
    expect(countLines(RELOADS)).toBe(1);
    await waitForBodies(HAPROXY_PORT + 1, HOST, [`b${BACKEND_PORTS[0]}`], 10_000);

    // 250 replacements (500 changes): register the new instance, deregister the old one; timed
    // until a request reaches the new one.
    const fromWrite: number[] = [];
    const fromAck: number[] = [];
    for (let n = 1; n <= 250; n++) {
      const next = inst(SVC, BACKEND_PORTS[n % 20], `${SVC}-${n}`);
      const t0 = performance.now();
      await registry.register(next);
      const acked = performance.now();
      await registry.deregister(current);
      current = next;
      for (;;) {
        const r = await get(HAPROXY_PORT + 1, HOST).catch(() => undefined);
        if (r?.status === 200 && r.body === `b${next.port}`) break;
        if (performance.now() - t0 > 5000) throw new Error(`replacement ${n}: still ${r?.status} ${r?.body}\n${render.dump().slice(-2000)}`);
      }
      const t = performance.now();
      fromWrite.push(t - t0);
      fromAck.push(t - acked);
    }

    // 500 mixed changes, one registry write each, in a fixed pseudo-random order: add, remove,
    // a new port for the same instance, weight 1 ↔ 2, drain (weight 0), health failing and back.
    // Timed until HAProxy's servers show it (several of these changes, such as a weight, or a
    // drained instance failing, change no answer), then confirmed by traffic: every live instance
    // answers and no other within 2 × (sum of weights) + 1 requests, which round robin cannot
    // pass over a server that still takes requests.
    let seed = 4242;
    const rnd = (k: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), Math.floor(seed / 65536) % k);
    type Live = { id: string; port: number; weight: number; status: ServiceInstance['status'] };
    let pool: Live[] = [{ id: current.id, port: current.port, weight: 1, status: 'passing' }];
    const record = (l: Live): ServiceInstance => ({ ...inst(SVC, l.port, l.id, l.weight === 1 ? {} : { weight: String(l.weight) }), status: l.status });
    const serving = (p: Live[]) => p.filter((l) => l.status === 'passing' && l.weight > 0);
    const kinds: Record<string, number> = {};
    const mixed: number[] = [];
    const inServiceOf = (p: Live[]) => p.filter((l) => l.status === 'passing').map((l) => `${l.port}:${l.weight}`).sort().join(',');
    /** Changes to an instance out of service (failing): nothing for HAProxy to do, and not timed. */
    let idle = 0;
    for (let n = 1; n <= 500; n++) {
      let next: Live[];
      let write: () => Promise<void>;
      let op: string;
      for (;;) {
        op = ['add', 'remove', 'move', 'weight', 'drain', 'fail', 'recover'][rnd(7)];
        const pick = pool[rnd(pool.length)];
        const free = BACKEND_PORTS.slice(0, 20).filter((port) => !pool.some((l) => l.port === port));
        let changed: Live | undefined;
        next = pool;
        if (op === 'add' && pool.length < 4) changed = { id: `${SVC}-m${n}`, port: free[rnd(free.length)], weight: 1, status: 'passing' };
        else if (op === 'remove' && pool.length > 1) next = pool.filter((l) => l !== pick);
        else if (op === 'move') changed = { ...pick, port: free[rnd(free.length)] };
        else if (op === 'weight') changed = { ...pick, weight: pick.weight === 1 ? 2 : 1 };
        else if (op === 'drain' && pick.weight > 0) changed = { ...pick, weight: 0 };
        else if (op === 'fail' && pick.status === 'passing') changed = { ...pick, status: 'critical' };
        else if (op === 'recover' && pick.status !== 'passing') changed = { ...pick, status: 'passing' };
        else continue;
        if (changed) next = op === 'add' ? [...pool, changed] : pool.map((l) => (l === pick ? changed! : l));
        // Something must stay served, to tell "serving" from "nothing to serve".
        if (serving(next).length === 0) continue;
        const c = changed;
        write = c ? () => registry.register(record(c)) : () => registry.deregister(record(pick));
        break;
      }
      kinds[op] = (kinds[op] ?? 0) + 1;
      const before = inServiceOf(pool);
      pool = next;
      const want = serving(pool).map((l) => `b${l.port}`).sort().join(',');
      const run = 2 * serving(pool).reduce((sum, l) => sum + l.weight, 0) + 1;
      const servers = inServiceOf(pool);
      const t0 = performance.now();
      await write();
      let shown = '';
      while ((shown = await inService(ENV2.HM_HAPROXY_SOCKET, SVC)) !== servers) {
        if (performance.now() - t0 > 5000) throw new Error(`mixed change ${n} (${op}): HAProxy runs ${shown}, expected ${servers}\n${render.dump().slice(-2000)}`);
      }
      if (servers === before) idle++;
      else mixed.push(performance.now() - t0);
      let seen = '';
      while (seen !== want) {
        if (performance.now() - t0 > 5000) throw new Error(`mixed change ${n} (${op}): serving ${seen}, expected ${want}`);
        const got = new Set<string>();
        for (let i = 0; i < run; i++) {
          const r = await get(HAPROXY_PORT + 1, HOST).catch(() => undefined);
          got.add(r?.status === 200 ? r.body : `${r?.status ?? 'error'}`);
        }
        seen = [...got].sort().join(',');
      }
    }

    const reloads = countLines(RELOADS) - 1;
    const runtimeLines = render.logs.filter((l) => l.event === 'runtime' && !l.reload).length;
    console.log(
      `PROBE haproxy runtime (render CLI, etcd, 1000 instance changes): 250 replacements, registry write → HAProxy serving the new instance ${spread(fromWrite)} ` +
        `(from the write acknowledged: ${spread(fromAck)}); 500 mixed changes ${JSON.stringify(kinds)}, registry write → HAProxy's servers show it ${spread(mixed)} (${idle} changed only an instance out of service: not timed), each then confirmed by traffic; ` +
        `reloads ${reloads} per 1000 changes after the first (layout) reload; runtime applications ${runtimeLines}; ` +
        `goal p99 ≤ 20 ms (registry write → served): ${Number(pct(fromWrite, 0.99)) <= 20 ? 'met' : 'not met'} at ${pct(fromWrite, 0.99)} ms on this run`,
    );
    expect(reloads, render.dump().slice(-3000)).toBe(0);
    expect(runtimeLines).toBeGreaterThan(500);
    // Only the first run reloaded (into the slot layout).
    expect(render.logs.filter((l) => l.event === 'runtime' && l.reload).map((l) => l.reason)).toEqual(['first load']);
    // Read together once the last change has been applied and logged (both are counted as it ends).
    await waitFor('the metric and the log agree', async () => (await metric('harbormaster_haproxy_runtime_applied_total')) === render.logs.filter((l) => l.event === 'runtime' && !l.reload).length, 10_000, 50);
    expect(await metric('harbormaster_haproxy_runtime_commands_total')).toBeGreaterThan(runtimeLines);
    expect(await metric('harbormaster_haproxy_runtime_fallbacks_total')).toBe(0);
    expect(await metric('harbormaster_reloads_total')).toBe(1);
    // Generous: the shared test machine may be busy; the numbers above are the measurement.
    expect(Number(pct(fromWrite, 0.5))).toBeLessThan(100);
    expect(Number(pct(mixed, 0.5))).toBeLessThan(100);
    live = serving(pool).map((l) => `b${l.port}`);
    // The file follows the runtime commands.
    const last = serving(pool)[0];
    await waitFor('the file to follow', () => readFileSync(CFG2, 'utf8').includes(`127.0.0.1:${last.port} check weight`), 5000);
  }, 120_000);

  it('applies an instance registered with an IPv6 address at runtime', async () => {
    const reloadsBefore = countLines(RELOADS);
    const v6 = { ...inst(SVC, V6_PORT, `${SVC}-v6`), address: '::1' };
    const t0 = performance.now();
    await registry.register(v6);
    while ((await get(HAPROXY_PORT + 1, HOST).catch(() => undefined))?.body !== `v6-${V6_PORT}`) {
      if (performance.now() - t0 > 5000) throw new Error(`[::1]:${V6_PORT} is not served\n${render.dump().slice(-2000)}`);
    }
    const ms = performance.now() - t0;
    await waitForBodies(HAPROXY_PORT + 1, HOST, [...live, `v6-${V6_PORT}`], 5000);
    await waitFor('the file to follow', () => readFileSync(CFG2, 'utf8').includes(`[::1]:${V6_PORT} check weight 1`), 5000);
    expect(countLines(RELOADS)).toBe(reloadsBefore);
    await registry.deregister(v6);
    await waitForBodies(HAPROXY_PORT + 1, HOST, live, 5000);
    console.log(`PROBE haproxy runtime (render CLI): instance registered at [::1]:${V6_PORT}, served ${ms.toFixed(1)} ms after the registry write; reloads 0`);
  });

  it('falls back to a checked render and reload when the admin socket fails, and says so', async () => {
    await render.stop();
    const reloadsBefore = countLines(RELOADS);
    render = new Hm(
      [
        'render', URI,
        '--template', `${join(TEMPLATES, 'haproxy.cfg.hbs')}:${CFG2}:echo r >> ${RELOADS}; kill -USR2 $(cat ${ENV2.HM_HAPROXY_PIDFILE})`,
        '--check', 'haproxy -q -c -f {{src}}',
        '--verify', `haproxy:${proxy.masterSocket}`,
        '--haproxy-runtime', join(DIR2, 'no-such-admin.sock'),
        '--wait', '0ms:0ms',
        '--api', API,
      ],
      ENV2,
    );
    // A new process knows no slot table: its first run reloads once.
    await render.waitForLog('first reload', (l) => l.event === 'reload' && l.result === 'ok', 20_000);
    const next = inst(SVC, BACKEND_PORTS[23], `${SVC}-fallback`);
    const t0 = performance.now();
    await registry.register(next);
    while ((await get(HAPROXY_PORT + 1, HOST).catch(() => undefined))?.body !== `b${next.port}`) {
      if (performance.now() - t0 > 10_000) throw new Error(`the new instance is not served\n${render.dump().slice(-2000)}`);
    }
    const ms = performance.now() - t0;
    const warn = await render.waitForLog('fallback', (l) => l.event === 'runtime' && typeof l.reason === 'string' && l.reason.startsWith('runtime API failed'), 10_000);
    expect(warn.msg).toMatch(/reloading: runtime API failed, falling back to a reload: haproxy admin socket .*no-such-admin\.sock: set server \S+: ENOENT$/);
    expect(warn.level).toBe(40);
    await waitForBodies(HAPROXY_PORT + 1, HOST, [...live, `b${next.port}`], 30_000);
    await waitFor('the fallback reload', () => countLines(RELOADS) === reloadsBefore + 2, 30_000);
    expect(await metric('harbormaster_haproxy_runtime_fallbacks_total')).toBe(1);
    expect(await metric('harbormaster_haproxy_runtime_applied_total')).toBe(0);
    console.log(`PROBE haproxy runtime (render CLI), admin socket missing: a new instance served ${ms.toFixed(0)} ms after the registry write, through a checked render and reload; log: ${warn.msg}`);
  });
});

describe('--haproxy-runtime with a relative destination', () => {
  it('writes an absolute server-state-file path', async () => {
    const dir = tempDir('hm-hrt-rel-');
    mkdirSync(join(dir, 'conf'));
    const out = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const c = execFile(process.execPath, [BIN, 'render', 'memory://', '--once', '--template', `${join(TEMPLATES, 'haproxy.cfg.hbs')}:conf/haproxy.cfg`, '--haproxy-runtime', 'admin.sock'], { cwd: dir, env: { ...process.env, ...templateEnv(dir, 0, HAPROXY_PORT + 3) } }, (_e, _o, stderr) => resolve({ code: c.exitCode, stderr }));
    });
    expect(out.code, out.stderr).toBe(0);
    const line = readFileSync(join(dir, 'conf', 'haproxy.cfg'), 'utf8').split('\n').find((l) => l.includes('server-state-file'));
    console.log(`PROBE haproxy runtime, relative destination conf/haproxy.cfg: ${line?.trim()}`);
    expect(line?.trim()).toBe(`server-state-file ${join(dir, 'conf', 'haproxy.cfg')}.state`);
  });
});
