// harbormaster register against the real dockerd and Consul agent: lifecycle, checks, TTL
// heartbeats, health gating and withdrawal on the way down.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { docker, DOCKER_HOST, hostPort, isRunning, removeContainers, run } from './support/docker.js';
import { Hm, runCli, spawnHm } from './support/harbormaster.js';
import { CONSUL, consulChecks, consulServices } from './support/registries.js';
import { sleep, uniq, waitFor } from './support/wait.js';
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
