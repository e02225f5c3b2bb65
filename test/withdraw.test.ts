// Taking a container out of rotation through the sidecar's status API (POST/DELETE /v1/withdraw),
// as `rollout` does before it stops the old container: against the real dockerd, with
// `harbormaster run` (embedded registry, built-in proxy under load) and with `register` on the
// real Consul agent (reached through a fault proxy, to cut it off for the outage case).
import http from 'node:http';
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFailed } from 'vitest';
import { docker, removeContainers, run } from './support/docker.js';
import { FaultProxy } from './support/fault-proxy.js';
import { Hm } from './support/harbormaster.js';
import { afterRequests, Load } from './support/proxy.js';
import { consulServices } from './support/registries.js';
import { reachesAll } from './support/run.js';
import { sleep, uniq, waitFor } from './support/wait.js';

const RUN_HOST = uniq('hmwr');
const REG_HOST = uniq('hmwc');
const RP = `${RUN_HOST}-`;
const CP = `${REG_HOST}-`;
const PROXY = 28210;
const RUN_API = 28211;
const REG_API = 28221;
const CONSUL_FAULT = 28222;

let runHm: Hm;
let regHm: Hm;
let consul: FaultProxy;

interface Answer {
  status: number;
  body: string;
  json: <T>() => T;
  ms: number;
}

/** One request to a status API, timed; raw, so that the test decides every header. */
function call(port: number, method: string, path: string, headers: Record<string, string> = {}): Promise<Answer> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, json: <T>() => JSON.parse(body) as T, ms: Math.round(performance.now() - t0) }));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${path}: no answer in 10 s`)));
    req.end();
  });
}

interface Withdrawn {
  container: string;
  name: string;
  withdrawn: string[];
  until: string;
  confirmed: boolean;
}

const registered = async (id: string) => !!(await consulServices(REG_HOST))[id];
const inCatalog = async (id: string) => {
  const c = (await call(RUN_API, 'GET', '/v1/services')).json<{ services: { instances: { id: string }[] }[] }>();
  return c.services.some((s) => s.instances.some((i) => i.id === id));
};
const fullId = async (name: string) => docker('inspect', '-f', '{{.Id}}', name);

beforeAll(async () => {
  consul = await FaultProxy.start({ host: '127.0.0.1', port: 8500 }, CONSUL_FAULT);
  runHm = new Hm(['run', '--listen', `127.0.0.1:${PROXY}`, '--api', `127.0.0.1:${RUN_API}`, '--hostname', RUN_HOST, '--resync', '3']);
  regHm = new Hm([
    'register', '--hostname', REG_HOST, '--ttl', '6', '--ttl-refresh', '2', '--resync', '3', '--retry-interval', '200',
    '--api', `127.0.0.1:${REG_API}`, `consul://127.0.0.1:${CONSUL_FAULT}`,
  ]);
  const started = (hm: Hm, event: string) => hm.waitForLog(`${event} line`, (l) => l.event === event).catch((err: Error) => {
    throw new Error(`${err.message}\n${hm.dump()}`);
  });
  await Promise.all([started(runHm, 'ready'), started(regHm, 'listen')]);
});

beforeEach(() => {
  const from = [runHm.logs.length, regHm.logs.length];
  onTestFailed(() => {
    console.log(`--- run, during this test\n${runHm.logs.slice(from[0]).map((l) => l.msg).join('\n')}${runHm.stderr.join('')}`);
    console.log(`--- register, during this test\n${regHm.logs.slice(from[1]).map((l) => l.msg).join('\n')}${regHm.stderr.join('')}`);
  });
});

afterAll(async () => {
  await Promise.all([runHm?.stop('SIGKILL'), regHm?.stop('SIGKILL')]);
  await consul?.close();
  await Promise.all([removeContainers(RP), removeContainers(CP)]);
});

describe('harbormaster run: withdraw through the status API', () => {
  it("takes the old container out of the proxy's rotation while it keeps running, with no failed request; DELETE puts it back", async () => {
    const svc = `wd-${RUN_HOST.slice(5)}`;
    await Promise.all([run(`${RP}old`, { env: { SERVICE_NAME: svc, NAME: 'old' } }), run(`${RP}new`, { env: { SERVICE_NAME: svc, NAME: 'new' } })]);
    await reachesAll(PROXY, `${svc}.localhost`, ['old', 'new']);
    const oldId = `${RUN_HOST}:${RP}old:80`;
    const load = new Load(PROXY, `${svc}.localhost`, '/', 4, 30_000).start();
    try {
      await afterRequests(load, 100);
      // When the proxy last sent a request to the old container, sampled every 5 ms.
      let lastOld = 0;
      let oldSeen = load.bodies.get('old\n') ?? 0;
      const sampler = setInterval(() => {
        const n = load.bodies.get('old\n') ?? 0;
        if (n !== oldSeen) (oldSeen = n), (lastOld = performance.now());
      }, 5);
      const t0 = performance.now();
      const w = await call(RUN_API, 'POST', `/v1/withdraw?container=${RP}old&for=60s`);
      expect(w.status, w.body).toBe(200);
      const body = w.json<Withdrawn>();
      expect(body).toMatchObject({ container: await fullId(`${RP}old`), name: `${RP}old`, withdrawn: [oldId], confirmed: true });
      expect(Date.parse(body.until) - Date.now()).toBeGreaterThan(55_000);
      // Confirmed: the catalog read right after the answer no longer has it.
      expect(await inCatalog(oldId)).toBe(false);
      const catalogMs = Math.round(performance.now() - t0);
      await afterRequests(load, 300);
      const fromOld = load.bodies.get('old\n') ?? 0;
      await afterRequests(load, 300);
      clearInterval(sampler);
      await load.stop();
      expect(load.failures).toEqual([]);
      expect(load.bodies.get('old\n') ?? 0).toBe(fromOld);
      expect((await docker('inspect', '-f', '{{.State.Running}}', `${RP}old`)).trim()).toBe('true');
      const proxyMs = Math.max(0, Math.round(lastOld - t0));
      console.log(
        `PROBE run withdraw: POST answered 200 confirmed=${body.confirmed} in ${w.ms} ms; the catalog read right after (done ${catalogMs} ms after the POST) no longer has it; ` +
          `last request the proxy sent it: ${proxyMs} ms after the POST (sampled every 5 ms); ${load.total} requests, ${load.failures.length} failed; old container still running`,
      );
      expect(runHm.logs.some((l) => l.event === 'withdrawn' && l.msg.startsWith(`withdrew ${RP}old (1 instances) until `))).toBe(true);
    } finally {
      await load.stop();
    }
    const d = await call(RUN_API, 'DELETE', `/v1/withdraw?container=${RP}old`);
    expect(d.status, d.body).toBe(200);
    expect(d.json()).toEqual({ container: await fullId(`${RP}old`), name: `${RP}old`, readmitted: true });
    const t1 = performance.now();
    await reachesAll(PROXY, `${svc}.localhost`, ['old'], '/', 10_000);
    console.log(`PROBE run re-admit: DELETE answered in ${d.ms} ms, the proxy reached the old container again ${Math.round(performance.now() - t1)} ms later`);
    expect(runHm.logs.some((l) => l.event === 'readmitted' && l.msg === `re-admitted ${RP}old`)).toBe(true);
  });

  it('refuses what it cannot do: unknown container 404, ambiguous 400, bad parameters 400, a browser 403, other methods 405', async () => {
    await Promise.all([run(`${RP}a1`, { env: { SERVICE_NAME: 'wd-amb' } }), run(`${RP}a2`, { env: { SERVICE_NAME: 'wd-amb' } })]);
    const unknown = await call(RUN_API, 'POST', `/v1/withdraw?container=${RP}nobody`);
    expect(unknown).toMatchObject({ status: 404, body: `container "${RP}nobody": no such container\n` });
    expect((await call(RUN_API, 'DELETE', `/v1/withdraw?container=${RP}nobody`)).status).toBe(404);
    const bad = await call(RUN_API, 'POST', `/v1/withdraw?container=${RP}a1&for=forever`);
    expect(bad).toMatchObject({ status: 400, body: 'for "forever": not a duration like 30s or 2m\n' });
    expect((await call(RUN_API, 'POST', '/v1/withdraw')).body).toContain('container: missing');
    // A container named like the start of another's id: refused, naming both.
    const a2 = await fullId(`${RP}a2`);
    const prefix = a2.slice(0, 12);
    const named = await docker('run', '-d', '--name', prefix, '-l', `hm-test-prefix=${RP}`, 'hm-test:2');
    try {
      const amb = await call(RUN_API, 'POST', `/v1/withdraw?container=${prefix}`);
      expect(amb.status).toBe(400);
      expect(amb.body).toContain(`${prefix} (${named.slice(0, 12)})`);
      expect(amb.body).toContain(`${RP}a2 (${prefix})`);
    } finally {
      await docker('rm', '-f', named);
    }
    const fromPage = await call(RUN_API, 'POST', `/v1/withdraw?container=${RP}a1`, { origin: 'http://attacker.example' });
    expect(fromPage.status).toBe(403);
    expect(fromPage.body).toContain('Origin');
    expect((await call(RUN_API, 'DELETE', `/v1/withdraw?container=${RP}a1`, { host: `rebind.example:${RUN_API}` })).status).toBe(403);
    const put = await call(RUN_API, 'PUT', `/v1/withdraw?container=${RP}a1`);
    expect(put.status).toBe(405);
    expect((await call(RUN_API, 'POST', '/v1/health')).status).toBe(405);
    // Nothing refused was withdrawn.
    expect((await call(RUN_API, 'GET', '/v1/withdraw')).json()).toEqual({ withdrawals: [] });
    expect(runHm.logs.filter((l) => l.event === 'withdrawn' && String(l.container).startsWith(`${RP}a`))).toEqual([]);
  });
});

describe('harbormaster register (Consul): withdraw through the status API', () => {
  it('is gone from Consul when the answer comes, and stays out through SIGHUP, periodic resyncs and health_status events until DELETE', async () => {
    await run(`${CP}hc`, { env: { SERVICE_NAME: 'wd-hc' }, extra: ['--health-cmd', 'test ! -f /tmp/sick', '--health-interval', '1s', '--health-retries', '1', '--health-timeout', '1s'] });
    const id = `${REG_HOST}:${CP}hc:80`;
    await waitFor('hc registered once healthy', () => registered(id), 15_000, 50);
    const t0 = performance.now();
    const w = await call(REG_API, 'POST', `/v1/withdraw?container=${CP}hc&for=5m`);
    expect(w.status, w.body).toBe(200);
    expect(w.json<Withdrawn>()).toMatchObject({ name: `${CP}hc`, withdrawn: [id], confirmed: true });
    // Confirmed: Consul's own agent no longer lists it when the answer comes.
    expect(await registered(id)).toBe(false);
    const goneMs = Math.round(performance.now() - t0);
    const health = (await call(REG_API, 'GET', '/v1/health')).json<{ components: { docker: { withdrawn: { name: string; withdrawn: string[] }[] } } }>();
    expect(health.components.docker.withdrawn).toEqual([expect.objectContaining({ name: `${CP}hc`, withdrawn: [id] })]);

    // A SIGHUP resync and (resync every 3 s) a periodic one.
    const hups = regHm.logs.filter((l) => l.event === 'reload').length;
    process.kill(regHm.pid, 'SIGHUP');
    await regHm.waitForLog('SIGHUP line', (l) => l.event === 'reload' && regHm.logs.filter((x) => x.event === 'reload').length > hups);
    // health_status: unhealthy, then healthy again: each one inspects the container anew.
    const gates = regHm.logs.filter((l) => l.event === 'waiting' && l.container === `${CP}hc`).length;
    await docker('exec', `${CP}hc`, 'touch', '/tmp/sick');
    await regHm.waitForLog('unhealthy seen', (l) => l.event === 'waiting' && l.container === `${CP}hc` && regHm.logs.filter((x) => x.event === 'waiting' && x.container === `${CP}hc`).length > gates, 10_000);
    await docker('exec', `${CP}hc`, 'rm', '/tmp/sick');
    await waitFor('hc healthy again', async () => (await docker('inspect', '-f', '{{.State.Health.Status}}', `${CP}hc`)) === 'healthy', 10_000, 100);
    const sinceOut = performance.now();
    let checks = 0;
    while (performance.now() - sinceOut < 3_500) {
      expect(await registered(id)).toBe(false);
      checks++;
      await sleep(100);
    }
    expect(regHm.logs.filter((l) => l.event === 'registered' && l.id === id)).toHaveLength(1);

    const d = await call(REG_API, 'DELETE', `/v1/withdraw?container=${(await fullId(`${CP}hc`)).slice(0, 12)}`);
    expect(d.json()).toMatchObject({ name: `${CP}hc`, readmitted: true });
    const t1 = performance.now();
    await waitFor('hc registered again', () => registered(id), 5_000, 5);
    console.log(
      `PROBE consul withdraw: POST answered 200 confirmed=true in ${w.ms} ms; Consul read right after (done ${goneMs} ms after the POST) no longer has it; ` +
        `still out after SIGHUP, resyncs and unhealthy→healthy (${checks} reads over 3.5 s); DELETE answered in ${d.ms} ms, registered again ${Math.round(performance.now() - t1)} ms later`,
    );
    expect(regHm.logs.some((l) => l.event === 'readmitted' && l.msg === `re-admitted ${CP}hc`)).toBe(true);
  });

  it('expires after for=2s and registers it again; a removed container is forgotten and a new one of the same name is not withdrawn', async () => {
    await run(`${CP}exp`, { env: { SERVICE_NAME: 'wd-exp' } });
    const id = `${REG_HOST}:${CP}exp:80`;
    await waitFor('exp registered', () => registered(id), 10_000, 50);
    const t0 = performance.now();
    const w = await call(REG_API, 'POST', `/v1/withdraw?container=${CP}exp&for=2s`);
    expect(w.json<Withdrawn>()).toMatchObject({ withdrawn: [id], confirmed: true });
    expect(await registered(id)).toBe(false);
    await waitFor('exp registered again', () => registered(id), 8_000, 20);
    const backMs = Math.round(performance.now() - t0);
    expect(backMs).toBeGreaterThanOrEqual(2_000);
    await regHm.waitForLog('withdrawal expired', (l) => l.event === 'withdrawal-expired' && l.msg === `withdrawal of ${CP}exp expired`, 5_000);

    const first = await fullId(`${CP}exp`);
    expect((await call(REG_API, 'POST', `/v1/withdraw?container=${first}&for=10m`)).json<Withdrawn>().confirmed).toBe(true);
    await docker('rm', '-f', `${CP}exp`);
    await waitFor('withdrawal forgotten', async () => (await call(REG_API, 'GET', '/v1/withdraw')).json<{ withdrawals: unknown[] }>().withdrawals.length === 0, 5_000, 20);
    // the status API can answer before the line has come through the pipe from a loaded process
    await regHm.waitForLog('withdrawal forgotten', (l) => l.event === 'withdrawal-forgotten' && l.container === `${CP}exp`, 5_000);
    await run(`${CP}exp`, { env: { SERVICE_NAME: 'wd-exp' } });
    await waitFor('the new exp registered', () => registered(id), 10_000, 50);
    expect(await fullId(`${CP}exp`)).not.toBe(first);
    console.log(`PROBE consul expiry: for=2s → registered again ${backMs} ms after the POST; removed container forgotten, its successor of the same name registered`);
  });

  it('while Consul is cut off: answers within a second with confirmed false, withdraws once Consul answers again, and keeps it out', async () => {
    await run(`${CP}out`, { env: { SERVICE_NAME: 'wd-out' } });
    const id = `${REG_HOST}:${CP}out:80`;
    await waitFor('out registered', () => registered(id), 10_000, 50);
    const from = regHm.logs.length;
    consul.cut();
    let back = 0;
    try {
      const w = await call(REG_API, 'POST', `/v1/withdraw?container=${CP}out`);
      expect(w.status, w.body).toBe(200);
      expect(w.json<Withdrawn>()).toMatchObject({ withdrawn: [id], confirmed: false });
      expect(w.ms).toBeLessThan(2_000);
      expect(await registered(id)).toBe(true);
      await sleep(1_000);
      expect(await registered(id)).toBe(true);
      consul.pass();
      back = performance.now();
      await waitFor('out withdrawn once consul answers', async () => !(await registered(id)), 15_000, 20);
      const goneMs = Math.round(performance.now() - back);
      await waitFor('registry up again', () => regHm.logs.slice(from).some((l) => l.event === 'registry-up'), 15_000);
      await sleep(1_500);
      expect(await registered(id)).toBe(false);
      console.log(`PROBE consul outage: POST answered 200 in ${w.ms} ms with confirmed false (Consul cut off); withdrawn ${goneMs} ms after Consul was reachable again, still out after its full resync`);
      // Off limits to a web page on this machine, whatever the state.
      const fromPage = await call(REG_API, 'DELETE', `/v1/withdraw?container=${CP}out`, { origin: 'null' });
      expect(fromPage.status).toBe(403);
      expect(await registered(id)).toBe(false);
    } finally {
      consul.pass();
    }
  });
});
