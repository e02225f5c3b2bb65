// harbormaster register against the real dockerd and Consul agent: lifecycle, checks, TTL
// heartbeats, health gating and withdrawal on the way down.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { docker, DOCKER_HOST, hostPort, isRunning, removeContainers, run } from './support/docker.js';
import { Hm, runCli, spawnHm } from './support/harbormaster.js';
import { HttpFaultProxy } from './support/http-fault-proxy.js';
import { CONSUL, consulChecks, consulGet, type ConsulService, consulServices, privateConsul } from './support/registries.js';
import { sleep, uniq, waitFor } from './support/wait.js';
import { silentLogger } from '../src/log/logger.js';
import { Registrar } from '../src/registrar/registrar.js';
import { createBackend } from '../src/registry/index.js';
import type { ServiceInstance } from '../src/model/service-instance.js';

const HOST = uniq('itc');
const P = `${HOST}-`; // container name prefix
let hm: Hm;

const services = () => consulServices(HOST);
const has = (id: string) => async () => (await services())[id];
const gone = (id: string) => async () => !(await services())[id];

beforeAll(async () => {
  hm = new Hm(['register', '--hostname', HOST, '--ttl', '6', '--ttl-refresh', '2', '--resync', '5', CONSUL]);
  await hm.waitForLog('startup line', (l) => l.event === 'start');
});

afterAll(async () => {
  await hm.stop();
  await removeContainers(P);
});

describe('register → consul', () => {
  it('registers a started container with its published address, tags, meta and a passing TTL check', async () => {
    await run(`${P}web`, { env: { SERVICE_NAME: 'web', SERVICE_TAGS: 'blue,v\\,1', SERVICE_REGION: 'eu' } });
    const id = `${HOST}:${P}web:80`;
    const s = await waitFor('web in consul', has(id));
    expect(s.Service).toBe('web');
    expect(s.Address).toBe('127.0.0.1');
    expect(s.Port).toBe(await hostPort(`${P}web`));
    expect(s.Tags).toEqual(['blue', 'v,1']);
    expect(s.Meta).toMatchObject({ region: 'eu', hm_host: HOST });
    const check = await waitFor('ttl check', async () => (await consulChecks())[`harbormaster-ttl:${id}`]);
    expect(check.Status).toBe('passing');
    // The startup line names both ends.
    const start = hm.logs.find((l) => l.event === 'start')!;
    expect(start.msg).toContain(DOCKER_HOST);
    expect(start.msg).toContain('consul://127.0.0.1:8500');
    const line = await hm.waitForLog('registered line', (l) => l.event === 'registered' && l.id === id);
    expect(line.msg).toContain(`127.0.0.1:${s.Port}`);
  });

  it('keeps the TTL check passing across several TTL periods', async () => {
    const id = `${HOST}:${P}web:80`;
    await sleep(8000); // longer than --ttl 6
    const checks = await consulChecks();
    // The service's alias follows the host's one heartbeat check, passed once per round.
    expect(checks[`harbormaster-ttl:${id}`].Status).toBe('passing');
    expect(checks[`harbormaster-host:${HOST}`].Status).toBe('passing');
    expect(hm.logs.filter((l) => l.event === 'lost')).toEqual([]);
    // The heartbeat service is bookkeeping: harbormaster's own listing does not show it.
    const listed = await runCli(['services', '--json', 'consul://127.0.0.1:8500']);
    const ids = (JSON.parse(listed.stdout) as { id: string }[]).map((i) => i.id);
    expect(ids).toContain(id);
    expect(ids).not.toContain(`harbormaster:${HOST}`);
  });

  it('maps SERVICE_CHECK_HTTP to a Consul HTTP check that passes against the container', async () => {
    await run(`${P}chk`, { env: { SERVICE_NAME: 'chk', SERVICE_CHECK_HTTP: '/index.html', SERVICE_CHECK_INTERVAL: '1s' } });
    const id = `${HOST}:${P}chk:80`;
    await waitFor('chk registered', has(id));
    const check = await waitFor('http check passing', async () => {
      const c = (await consulChecks())[`service:${id}`];
      return c?.Status === 'passing' ? c : undefined;
    });
    expect(check.Type).toBe('http');
  });

  it('withdraws on `docker stop` before the process has exited (kill event)', async () => {
    await run(`${P}slow`, { env: { SERVICE_NAME: 'slow', STOP_DELAY: '4' } });
    const id = `${HOST}:${P}slow:80`;
    await waitFor('slow registered', has(id));
    const stopping = docker('stop', '-t', '20', `${P}slow`);
    await waitFor('slow withdrawn', gone(id), 3000, 50);
    // Still draining: the container has not exited yet.
    expect(await isRunning(`${P}slow`)).toBe(true);
    await stopping;
    const line = hm.logs.find((l) => l.event === 'deregistered' && l.id === id)!;
    expect(line.msg).toMatch(/kill (SIG)?TERM|stop/);
  });

  it('withdraws on kill and on die, and registers again on start and restart', async () => {
    await run(`${P}life`, { env: { SERVICE_NAME: 'life' } });
    const id = `${HOST}:${P}life:80`;
    await waitFor('life registered', has(id));
    await docker('kill', `${P}life`);
    await waitFor('life withdrawn after kill', gone(id));
    await docker('start', `${P}life`);
    const s1 = await waitFor('life back after start', has(id));
    expect(s1.Port).toBe(await hostPort(`${P}life`));
    await docker('restart', '-t', '1', `${P}life`);
    await waitFor('life back after restart', async () => {
      const s = (await services())[id];
      return s && (await isRunning(`${P}life`)) && s.Port === (await hostPort(`${P}life`)) ? s : undefined;
    });
    // die without stop/kill: the process exits by itself
    await docker('exec', `${P}life`, 'kill', '1');
    await waitFor('life withdrawn after die', gone(id));
  });

  it('withdraws on pause and registers again on unpause', async () => {
    await run(`${P}pz`, { env: { SERVICE_NAME: 'pz' } });
    const id = `${HOST}:${P}pz:80`;
    await waitFor('pz registered', has(id));
    await docker('pause', `${P}pz`);
    await waitFor('pz withdrawn', gone(id));
    await docker('unpause', `${P}pz`);
    await waitFor('pz back', has(id));
  });

  it('registers a container with a HEALTHCHECK only while Docker reports it healthy', async () => {
    await run(`${P}hc`, {
      env: { SERVICE_NAME: 'hc' },
      extra: ['--health-cmd', 'test -f /tmp/healthy', '--health-interval', '1s', '--health-retries', '1', '--health-timeout', '1s'],
    });
    const id = `${HOST}:${P}hc:80`;
    await hm.waitForLog('health gate line', (l) => l.event === 'waiting' && l.container === `${P}hc`);
    await sleep(2500);
    expect((await services())[id]).toBeUndefined();
    await docker('exec', `${P}hc`, 'touch', '/tmp/healthy');
    await waitFor('hc registered once healthy', has(id), 15_000);
    await docker('exec', `${P}hc`, 'rm', '/tmp/healthy');
    await waitFor('hc withdrawn once unhealthy', gone(id), 15_000);
    await docker('exec', `${P}hc`, 'touch', '/tmp/healthy');
    await waitFor('hc registered again', has(id), 15_000);
  });

  it('skips only the service with a bad label and names the container and key', async () => {
    await run(`${P}bad`, { labels: { SERVICE_NAME: 'bad_name' } });
    await run(`${P}multi`, { publish: ['80', '81'], labels: { SERVICE_81_CHECK_TCP: 'true', SERVICE_81_CHECK_INTERVAL: 'often', SERVICE_NAME: 'multi' } });
    await run(`${P}good`, { env: { SERVICE_NAME: 'good' } });
    await waitFor('good registered', has(`${HOST}:${P}good:80`));
    await waitFor('multi port 80 registered', has(`${HOST}:${P}multi:80`));
    const bad = await hm.waitForLog('bad name error', (l) => l.event === 'error' && String(l.msg).includes(`container ${P}bad`));
    expect(bad.msg).toContain('SERVICE_NAME');
    const interval = await hm.waitForLog('bad interval error', (l) => l.event === 'error' && String(l.msg).includes(`container ${P}multi`));
    expect(interval.msg).toContain('SERVICE_81_CHECK_INTERVAL');
    const all = await services();
    expect(Object.keys(all).filter((k) => k.includes(`${P}bad`))).toEqual([]);
    expect(all[`${HOST}:${P}multi:81`]).toBeUndefined();
    // The error is logged once, not again on every resync.
    await sleep(6000);
    expect(hm.logs.filter((l) => l.event === 'error' && String(l.msg).includes(`container ${P}bad`))).toHaveLength(1);
  });

  it('registers udp ports with the udp tag and id suffix', async () => {
    await run(`${P}dns`, { publish: ['53/udp'], env: { SERVICE_NAME: 'dns' } });
    const s = await waitFor('udp service', has(`${HOST}:${P}dns:53:udp`));
    expect(s.Tags).toContain('udp');
  });

  it('keeps services registered on a kill with a reload signal (HUP)', async () => {
    await run(`${P}hup`, { env: { SERVICE_NAME: 'hup' } });
    const id = `${HOST}:${P}hup:80`;
    await waitFor('hup registered', has(id));
    await docker('kill', '-s', 'HUP', `${P}hup`).catch(() => undefined);
    await sleep(1500);
    expect((await services())[id]).toBeDefined();
    expect(hm.logs.some((l) => l.event === 'deregistered' && l.id === id)).toBe(false);
  });

  it('keeps a container registered through `docker kill -s QUIT` it survives (a thread dump), and through the resync after it', async () => {
    await run(`${P}quit`, { env: { SERVICE_NAME: 'quit' } });
    const id = `${HOST}:${P}quit:80`;
    await waitFor('quit registered', has(id));
    // PID 1 of the test image has no handler for QUIT: the container keeps running, as a JVM does after its thread dump.
    await docker('kill', '-s', 'QUIT', `${P}quit`);
    await sleep(500);
    hm.kill('SIGHUP'); // a resync: Docker's StartedAt did not change, nothing may undo the kill's verdict later either
    await sleep(1500);
    const missing: number[] = [];
    for (let i = 0; i < 10; i++, await sleep(200)) if (!(await services())[id]) missing.push(i);
    console.log(`PROBE docker kill -s QUIT: running=${await isRunning(`${P}quit`)}, samples without it=${missing.length} of 10`);
    expect(await isRunning(`${P}quit`)).toBe(true);
    expect(missing).toEqual([]);
    expect(hm.logs.some((l) => l.event === 'deregistered' && l.id === id)).toBe(false);
    // The container's own stop signal still withdraws at once.
    await docker('kill', '-s', 'TERM', `${P}quit`);
    await waitFor('withdrawn on its stop signal', gone(id), 5_000);
  });

  it('follows a rename: the old ID is withdrawn and the new one registered', async () => {
    await run(`${P}old`, { env: { SERVICE_NAME: 'renamed' } });
    await waitFor('old id', has(`${HOST}:${P}old:80`));
    await docker('rename', `${P}old`, `${P}new`);
    await waitFor('new id', has(`${HOST}:${P}new:80`));
    await waitFor('old id gone', gone(`${HOST}:${P}old:80`));
  });
});

describe('register flags', () => {
  it('--internal registers the container IP and exposed port; --tags adds tags; --explicit skips unnamed containers', async () => {
    const host = `${HOST}-flags`;
    const hm2 = spawnHm(['register', '--hostname', host, '--internal', '--explicit', '--tags', 'dc1,edge', CONSUL]);
    await hm2.waitForLog('start', (l) => l.event === 'start');
    await run(`${P}named`, { env: { SERVICE_NAME: 'named' } });
    await run(`${P}anon`);
    const s = await waitFor('named registered', async () => (await consulServices(host))[`${host}:${P}named:80`]);
    const ip = await docker('inspect', '-f', '{{.NetworkSettings.IPAddress}}', `${P}named`);
    expect(s.Address).toBe(ip);
    expect(s.Port).toBe(80);
    expect(s.Tags).toEqual(['dc1', 'edge']);
    await sleep(1500);
    expect(Object.keys(await consulServices(host)).some((k) => k.includes(`${P}anon`))).toBe(false);
  });

  it('registers a --net=host container\'s exposed ports on the host address', async () => {
    const host = `${HOST}-hostnet`;
    spawnHm(['register', '--hostname', host, '--ip', '127.0.0.1', CONSUL]);
    await docker('run', '-d', '--name', `${P}hn`, '--net', 'host', '--expose', '19480', '-e', 'SERVICE_NAME=hostnet', '-e', 'PORT=19480', '-e', 'NAME=hostnet-body', 'hm-test:2');
    const s = await waitFor('hostnet registered', async () => (await consulServices(host))[`${host}:${P}hn:19480`]);
    expect(s.Address).toBe('127.0.0.1');
    expect(s.Port).toBe(19480);
    // What was registered answers there.
    expect(await (await fetch(`http://${s.Address}:${s.Port}/`)).text()).toBe('hostnet-body\n');
  });
});

describe('consul heartbeat service after a lapse', () => {
  it('an instance registered by a new run is passing at once, even though the host heartbeat lapsed meanwhile', async () => {
    const host = uniq('itclapse');
    const inst = (id: string): ServiceInstance => ({ id, name: host, address: '127.0.0.1', port: 20100, protocol: 'tcp', tags: [], meta: {}, host, status: 'passing' });
    const first = createBackend(CONSUL, { ttl: 2, host });
    await first.register(inst(`${host}:a`));
    await first.close();
    // Nobody passes the host's heartbeat: it turns critical (the agent keeps that status on re-registration).
    await waitFor('heartbeat critical', async () => (await consulChecks())[`harbormaster-host:${host}`]?.Status === 'critical', 10_000, 100);
    const second = createBackend(CONSUL, { ttl: 2, host });
    try {
      const t0 = Date.now();
      await second.register(inst(`${host}:b`));
      const health = (await (await fetch(`http://127.0.0.1:8500/v1/health/service/${host}?passing=1`)).json()) as { Service: { ID: string } }[];
      console.log(`PROBE consul: instance registered after a lapsed heartbeat: passing after ${Date.now() - t0} ms`);
      expect(health.map((e) => e.Service.ID)).toContain(`${host}:b`);
    } finally {
      await second.deregisterAll?.([inst(`${host}:a`), inst(`${host}:b`)]);
      await second.close();
    }
  });
});

describe('consul: service IDs that are not the host\'s to take', () => {
  it('a SERVICE_ID of a host heartbeat or of a service another tool registered is refused with one line naming the container; nothing of theirs is replaced or withdrawn; the host\'s heartbeat still works', async () => {
    const host = uniq('itcx');
    onTestFinished(() => removeContainers(`${host}-`));
    const foreignId = `${host}-vault`;
    const foreignName = `ext${host.replace(/-/g, '')}`;
    const put = (path: string, body?: unknown) => fetch(`http://127.0.0.1:8500/v1${path}`, { method: 'PUT', ...(body ? { body: JSON.stringify(body) } : {}) });
    // Registered on the agent by something else: no harbormaster meta.
    expect((await put('/agent/service/register', { ID: foreignId, Name: foreignName, Port: 8200 })).ok).toBe(true);
    onTestFinished(async () => void (await put(`/agent/service/deregister/${foreignId}`)));
    const hm = spawnHm(['register', '--hostname', host, '--ttl', '3', '--ttl-refresh', '1', '--resync', '1', CONSUL]);
    await run(`${host}-hb`, { env: { SERVICE_NAME: 'hb' }, labels: { SERVICE_ID: `harbormaster:${host}` } });
    await run(`${host}-col`, { env: { SERVICE_NAME: 'col' }, labels: { SERVICE_ID: foreignId } });
    await run(`${host}-ok`, { env: { SERVICE_NAME: 'ok' } });
    const okId = `${host}:${host}-ok:80`;
    await waitFor('ok passing', async () => (await consulChecks())[`harbormaster-ttl:${okId}`]?.Status === 'passing');
    await hm.waitForLog('the collision line', (l) => /already the ID of service/.test(l.msg));
    await hm.waitForLog('the reserved line', (l) => /is reserved/.test(l.msg));
    // Four resyncs and four heartbeat rounds.
    await sleep(4000);
    const collision = hm.logs.filter((l) => /already the ID of service/.test(l.msg));
    const reserved = hm.logs.filter((l) => /is reserved/.test(l.msg));
    const all = await consulGet<Record<string, ConsulService>>('/agent/services');
    const okRegistered = hm.logs.filter((l) => l.event === 'registered' && l.id === okId).length;
    const lostLines = hm.logs.filter((l) => l.event === 'lost').length;
    console.log(`PROBE consul SERVICE_ID collisions: collision lines=${collision.length}, reserved lines=${reserved.length}, ok registered ${okRegistered}×, lost lines=${lostLines}`);
    expect(collision).toHaveLength(1);
    expect(collision[0].msg).toContain(`container ${host}-col`);
    expect(collision[0].msg).toContain('SERVICE_ID');
    expect(reserved).toHaveLength(1);
    expect(reserved[0].msg).toContain(`container ${host}-hb: label SERVICE_ID:`);
    expect(all[foreignId]).toMatchObject({ Service: foreignName, Port: 8200 });
    expect(all[foreignId].Meta?.hm_host).toBeUndefined();
    expect(all[`harbormaster:${host}`]?.Meta).toMatchObject({ hm_role: 'heartbeat' });
    expect(okRegistered).toBe(1);
    expect(lostLines).toBe(0);
    // The colliding container goes: what it never took is not withdrawn either.
    await docker('rm', '-f', `${host}-col`);
    await sleep(1500);
    expect((await consulGet<Record<string, ConsulService>>('/agent/services'))[foreignId]).toMatchObject({ Service: foreignName });
    // The sidecar dies without withdrawing: its instances turn critical within the TTL, as they must.
    hm.kill('SIGKILL');
    await hm.exited;
    const killed = Date.now();
    await waitFor('ok critical', async () => (await consulChecks())[`harbormaster-ttl:${okId}`]?.Status === 'critical', 10_000, 100);
    const criticalAfter = Date.now() - killed;
    console.log(`PROBE consul: instances critical ${criticalAfter} ms after the sidecar's SIGKILL (TTL 3 s)`);
    expect(criticalAfter).toBeLessThan(3_000 + 2_000);
  });
});

describe('consul: shutdown', () => {
  const inst = (host: string, c: string): ServiceInstance => ({ id: `${host}:${c}:80`, name: `sd${host.replace(/-/g, '')}`, address: '127.0.0.1', port: 20000, protocol: 'tcp', tags: [], meta: {}, host, status: 'passing' });

  it('a registration that lands after shutdown began (delayed 6 s on its way) is withdrawn again once it has: nothing is left', async () => {
    const host = uniq('itcl');
    const proxy = await HttpFaultProxy.start({ host: '127.0.0.1', port: 8500 });
    onTestFinished(() => proxy.close());
    const backend = createBackend(`consul://${proxy.address}`, { ttl: 10, host });
    const registrar = new Registrar(backend, { hostname: host, ttlRefreshMs: 3_000, cleanup: false, retryIntervalMs: 100, log: silentLogger() });
    registrar.start();
    registrar.complete();
    registrar.set('a', [inst(host, 'a')]);
    await registrar.settled();
    const rule = proxy.delay({ method: 'PUT', path: /^\/v1\/agent\/service\/register/ }, 6_000);
    registrar.set('b', [inst(host, 'b')]);
    await waitFor('b on its way', () => rule.hits > 0, 5_000, 10);
    const sent = Date.now();
    await registrar.stop(true);
    const took = Date.now() - sent;
    const entries = async () => Object.keys(await consulServices(host)).filter((id) => !id.startsWith('harbormaster:'));
    const leftAtStop = (await entries()).length;
    await sleep(Math.max(0, 6_000 + 1_000 - (Date.now() - sent)));
    const leftAfter = await entries();
    console.log(`PROBE consul: shutdown with a registration landing 6 s late: stop took ${took} ms, left at stop=${leftAtStop}, left 7 s after it was sent=${leftAfter.length}`);
    expect(leftAtStop).toBe(0);
    expect(leftAfter).toEqual([]);
    expect(took).toBeLessThan(16_000);
    await backend.close();
  });

  it('300 instances withdrawn within the deadline; with a deadline too short, the line says how many are left and every one left is critical at once', async () => {
    const consul = privateConsul(20710);
    await consul.start();
    try {
      const N = 300;
      const lines: { msg: string; withdrawn?: number; left?: number }[] = [];
      const log = pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString()) as { msg: string }), cb()) }));
      const load = async (host: string) => {
        const backend = createBackend(consul.uri, { ttl: 10, host });
        const registrar = new Registrar(backend, { hostname: host, ttlRefreshMs: 3_000, cleanup: false, retryIntervalMs: 100, concurrency: 16, log });
        registrar.start();
        registrar.complete();
        for (let i = 0; i < N; i++) registrar.set(`c${i}`, [inst(host, `c${i}`)]);
        const t0 = Date.now();
        await registrar.settled();
        return { backend, registrar, loadMs: Date.now() - t0 };
      };
      const own = async (host: string) => Object.keys(await consulServices(host, consul.httpPort)).filter((id) => !id.startsWith('harbormaster:'));

      const fullHost = uniq('itcs');
      const full = await load(fullHost);
      const t0 = Date.now();
      await full.registrar.stop(true);
      const fullMs = Date.now() - t0;
      await full.backend.close();
      const fullLeft = (await own(fullHost)).length;

      const host = uniq('itcs');
      const short = await load(host);
      await short.registrar.stop(true, 400);
      // What shutdown does next: the client goes, with whatever it still had in flight.
      await short.backend.close();
      await sleep(500);
      const line = lines.find((l) => /registrations by the shutdown deadline/.test(l.msg));
      const left = await own(host);
      const checks = await consulChecks(consul.httpPort);
      const passing = left.filter((id) => checks[`harbormaster-ttl:${id}`]?.Status !== 'critical');
      console.log(
        `PROBE consul shutdown: ${N} loaded in ${full.loadMs} ms, withdrawn in ${fullMs} ms, left ${fullLeft}; with a 0.4 s deadline: "${line?.msg}", left on the agent ${left.length}, of them not critical ${passing.length}`,
      );
      expect(fullLeft).toBe(0);
      expect(fullMs).toBeLessThan(16_000);
      expect(line).toBeDefined();
      expect(line!.withdrawn! + line!.left!).toBe(N);
      // Deregistrations the agent had already received when the client went may still have landed.
      expect(left.length).toBeLessThanOrEqual(line!.left!);
      expect(left.length).toBeGreaterThanOrEqual(line!.left! - 8);
      expect(left.length).toBeGreaterThan(0);
      expect(passing).toEqual([]);
    } finally {
      await consul.kill();
    }
  }, 120_000);
});
