// Outages and scale against the real engines: Consul and etcd restarted under harbormaster,
// the registrator killed with SIGKILL, dockerd restarted, and 100 containers started at once.
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { docker, hostPort, removeContainers, restartDockerd, run } from './support/docker.js';
import { spawnHm } from './support/harbormaster.js';
import { reportFault } from './support/observer.js';
import { CONSUL, consulChecks, consulServices, etcdRead, privateConsul, privateEtcd } from './support/registries.js';
import { converge, idsOf, reader } from './support/scenario.js';
import { sleep, uniq, waitFor } from './support/wait.js';


afterAll(async () => {
  await removeContainers('itr');
});

/** Start n containers named <prefix><i>; they are removed when the test ends. */
async function runMany(prefix: string, n: number, env: Record<string, string>, extra: string[] = []): Promise<void> {
  onTestFinished(() => removeContainers(prefix));
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await run(`${prefix}${i}`, { env, extra });
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

describe('registry outages', () => {
  it('re-registers everything after the Consul agent restarts (dev mode forgets all), without duplicates', async () => {
    const consul = privateConsul(18500);
    await consul.start();
    try {
      const HOST = uniq('itrc');
      const hm = spawnHm(['register', '--hostname', HOST, '--ttl', '10', '--ttl-refresh', '1', '--retry-interval', '200', consul.uri]);
      await runMany(`${HOST}-`, 3, { SERVICE_NAME: 'svc' });
      // A registrator registers every container of the host: count this test's own.
      const own = async () => Object.fromEntries(Object.entries(await consulServices(HOST, 18500)).filter(([id]) => id.includes(`:${HOST}-`)));
      await waitFor('3 registered', async () => Object.keys(await own()).length === 3);
      await consul.kill('SIGKILL');
      await sleep(1500);
      await consul.start();
      const restarted = Date.now();
      // The agent forgot everything: exactly the three are back, each once, passing.
      const r = reader('consul', `127.0.0.1:${consul.httpPort}`, '', HOST);
      const m = await converge(r, idsOf(HOST, [0, 1, 2].map((i) => `${HOST}-${i}`)), restarted, 30_000);
      r.close();
      reportFault('consul: agent killed and restarted (dev mode: it forgets every service)', { ...m });
      expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
      const back = await own();
      expect(Object.values(back).map((s) => s.Service)).toEqual(['svc', 'svc', 'svc']);
      await hm.waitForLog('recovery line', (l) => l.event === 'registry-up' || l.event === 'lost');
      const checks = await consulChecks(18500);
      expect(Object.keys(checks).filter((c) => c.startsWith(`harbormaster-ttl:${HOST}:${HOST}-`))).toHaveLength(3);
      expect(await hm.stop()).toBe(0);
    } finally {
      await consul.kill();
    }
  });

  it('keeps every service through an etcd restart, short and longer than the TTL', async () => {
    const etcd = privateEtcd(12379);
    await etcd.start();
    try {
      const HOST = uniq('itre');
      const prefix = `/${HOST}`;
      const hm = spawnHm(['register', '--hostname', HOST, '--ttl', '3', '--ttl-refresh', '1', '--retry-interval', '200', `etcd://${etcd.endpoint}${prefix}`]);
      await runMany(`${HOST}-`, 3, { SERVICE_NAME: 'svc' });
      const all3 = async () => Object.keys(await etcdRead(prefix, etcd.endpoint)).filter((k) => k.includes(`:${HOST}-`)).length === 3;
      await waitFor('3 registered', all3);
      for (const outage of [1000, 6000]) {
        await etcd.kill('SIGKILL');
        await sleep(outage);
        await etcd.start();
        await waitFor(`3 present after a ${outage} ms outage`, all3, 30_000);
        // Longer than the TTL: they never lapse, renewed by the registrator once etcd is back.
        for (const until = Date.now() + 4000; Date.now() < until; await sleep(100)) expect(await all3()).toBe(true);
      }
      expect(await hm.stop()).toBe(0);
    } finally {
      await etcd.kill();
      etcd.cleanup();
    }
  });

  it('lets Consul mark the services critical, then remove them, after the registrator is killed with SIGKILL', async () => {
    const HOST = uniq('itrk');
    const hm = spawnHm(['register', '--hostname', HOST, '--ttl', '3', '--ttl-refresh', '1', CONSUL]);
    await run(`${HOST}-x`, { env: { SERVICE_NAME: 'orphan' } });
    const id = `${HOST}:${HOST}-x:80`;
    await waitFor('registered', async () => (await consulServices(HOST))[id]);
    hm.kill('SIGKILL');
    await hm.exited;
    await waitFor('ttl check critical', async () => (await consulChecks())[`harbormaster-ttl:${id}`]?.Status === 'critical', 10_000, 200);
    // DeregisterCriticalServiceAfter is at least one minute in Consul, reaped every 30 s.
    await waitFor('service removed by consul', async () => !(await consulServices(HOST))[id], 170_000, 1000);
  }, 210_000);
});

describe('docker', () => {
  it('keeps a failed container registered as critical with --deregister on-success', async () => {
    const HOST = uniq('itro');
    spawnHm(['register', '--hostname', HOST, '--deregister', 'on-success', '--ttl', '10', '--ttl-refresh', '1', CONSUL]);
    // Serves until /tmp/crash appears, then exits with code 3.
    const crashing = 'httpd -p 80 -h /www; while [ ! -f /tmp/crash ]; do sleep 0.2; done; exit 3';
    await run(`${HOST}-f`, { env: { SERVICE_NAME: 'crash' }, cmd: ['sh', '-c', crashing] });
    const id = `${HOST}:${HOST}-f:80`;
    await waitFor('registered', async () => (await consulServices(HOST))[id]);
    await docker('exec', `${HOST}-f`, 'touch', '/tmp/crash');
    // The container's state is its own status check; the heartbeat check says the host is alive.
    await waitFor('critical', async () => (await consulChecks())[`harbormaster-status:${id}`]?.Status === 'critical');
    expect((await consulChecks())[`harbormaster-ttl:${id}`]?.Status).toBe('passing');
    expect((await consulServices(HOST))[id]).toBeDefined();
    expect(await docker('inspect', '-f', '{{.State.ExitCode}}', `${HOST}-f`)).toBe('3');
  });

  it('starts without a reachable Docker, says so once, keeps retrying and exits cleanly', async () => {
    const hm = spawnHm(['register', '--docker', 'unix:///tmp/harbormaster-no-such.sock', '--retry-interval', '100', 'memory://']);
    const line = await hm.waitForLog('docker-down line', (l) => l.event === 'docker-down');
    expect(line.msg).toContain('cannot reach Docker at unix:///tmp/harbormaster-no-such.sock');
    await sleep(3000);
    expect(hm.logs.filter((l) => l.event === 'docker-down')).toHaveLength(1);
    expect(await hm.stop()).toBe(0);
  });

  it('registers 100 containers started at once', async () => {
    const HOST = uniq('itrm');
    const hm = spawnHm(['register', '--hostname', HOST, '--ttl', '30', CONSUL]);
    await hm.waitForLog('start', (l) => l.event === 'start');
    const t0 = Date.now();
    await runMany(`${HOST}-`, 100, { SERVICE_NAME: 'many' });
    const own = async () => Object.values(await consulServices(HOST)).filter((s) => s.ID.includes(`:${HOST}-`));
    const all = await waitFor('100 registered', async () => {
      const s = await own();
      return s.length === 100 ? s : undefined;
    }, 90_000, 250);
    const ports = new Set(all.map((s) => s.Port));
    expect(ports.size).toBe(100);
    console.log(`100 containers started and registered in ${Date.now() - t0} ms`);
    await removeContainers(`${HOST}-`);
    await waitFor('100 withdrawn', async () => (await own()).length === 0, 60_000, 250);
    await hm.stop();
  }, 240_000);

  it('survives a dockerd restart: reconnects, resyncs and follows restarted containers', async () => {
    const HOST = uniq('itrd');
    const hm = spawnHm(['register', '--hostname', HOST, '--ttl', '30', '--resync', '0', CONSUL]);
    await run(`${HOST}-keep`, { env: { SERVICE_NAME: 'keep' }, extra: ['--restart', 'always'] });
    await run(`${HOST}-lose`, { env: { SERVICE_NAME: 'lose' } });
    const keep = `${HOST}:${HOST}-keep:80`;
    const lose = `${HOST}:${HOST}-lose:80`;
    await waitFor('both registered', async () => {
      const s = await consulServices(HOST);
      return s[keep] && s[lose];
    });
    await restartDockerd();
    const dockerBack = Date.now();
    await hm.waitForLog('docker-down', (l) => l.event === 'docker-down', 30_000);
    await hm.waitForLog('docker-up', (l) => l.event === 'docker-up', 60_000);
    const s = await waitFor('keep registered at its new port, lose withdrawn', async () => {
      const now = await consulServices(HOST);
      const port = await hostPort(`${HOST}-keep`).catch(() => 0);
      return now[keep]?.Port === port && !now[lose] ? now : undefined;
    }, 60_000, 250);
    // Measured from dockerd answering again: exactly the one that restarted, once, passing.
    const r = reader('consul', '127.0.0.1:8500', '', HOST);
    const m = await converge(r, new Set([keep]), dockerBack, 10_000);
    r.close();
    reportFault('docker: dockerd restarted (a --restart always container back on a new port, another one not)', { ...m, newPort: s[keep].Port });
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    expect(s[keep].Service).toBe('keep');
    expect(await hm.stop()).toBe(0);
  }, 180_000);
});
