// Faults that only show over minutes, run side by side in one test to share the wait:
// a container draining for longer than a minute while resyncs run every second (it must stay
// withdrawn), and --deregister on-success on Consul, where a failed container's critical entry
// must stay put past Consul's reaping of critical services (not be reaped and registered again
// in a loop), and must show as critical even with --ttl 0.
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { docker, removeContainers, run } from './support/docker.js';
import { spawnHm } from './support/harbormaster.js';
import { reportFault } from './support/observer.js';
import { CONSUL, consulGet, ETCD_ENDPOINT } from './support/registries.js';
import { converge, idsOf, reader } from './support/scenario.js';
import { sleep, uniq, waitFor } from './support/wait.js';

afterAll(() => removeContainers('fs'));

/** Exits with code 3 once /tmp/crash exists. */
const CRASHING = ['sh', '-c', 'echo ok >/www/index.html; httpd -p 80 -h /www; while [ ! -f /tmp/crash ]; do sleep 0.2; done; exit 3'];

interface HealthEntry {
  Service: { ID: string };
  Checks: { CheckID: string; Status: string }[];
}

describe('slow faults', () => {
  it('a drain longer than a minute is never undone by resyncs; on-success failures stay critical past Consul\'s reaping, also with --ttl 0', async () => {
    // (a) Draining for 65 s under `docker stop -t 90`, with a resync every second.
    const drainHost = uniq('fsd');
    onTestFinished(() => removeContainers(`${drainHost}-`));
    spawnHm(['register', '--hostname', drainHost, '--ttl', '10', '--resync', '1', `etcd://${ETCD_ENDPOINT}/${drainHost}`]);
    const drainer = `${drainHost}-drain`;
    await run(drainer, { env: { SERVICE_NAME: 'drain', STOP_DELAY: '65' } });
    const dr = reader('etcd', ETCD_ENDPOINT, `/${drainHost}`, drainHost);
    onTestFinished(() => dr.close());
    await converge(dr, idsOf(drainHost, [drainer]), Date.now(), 20_000);

    // (b) on-success with a TTL, (c) on-success with --ttl 0; one crashing container each.
    const critHost = uniq('fsc');
    const zeroHost = uniq('fsz');
    for (const h of [critHost, zeroHost]) onTestFinished(() => removeContainers(`${h}-`));
    const crit = spawnHm(['register', '--hostname', critHost, '--deregister', 'on-success', '--ttl', '3', '--ttl-refresh', '1', CONSUL]);
    spawnHm(['register', '--hostname', zeroHost, '--deregister', 'on-success', '--ttl', '0', CONSUL]);
    const critService = `c${critHost.replace(/-/g, '')}`;
    const zeroService = `z${zeroHost.replace(/-/g, '')}`;
    // With a check of its own that asks Consul to reap it after a minute critical: a failed container must still stay.
    await run(`${critHost}-f`, { env: { SERVICE_NAME: critService, SERVICE_CHECK_HTTP: '/', SERVICE_CHECK_INTERVAL: '1s', SERVICE_CHECK_DEREGISTER_AFTER: '1m' }, cmd: CRASHING });
    await run(`${zeroHost}-f`, { env: { SERVICE_NAME: zeroService }, cmd: CRASHING });
    const critId = `${critHost}:${critHost}-f:80`;
    const zeroId = `${zeroHost}:${zeroHost}-f:80`;
    const health = async (service: string, id: string) => (await consulGet<HealthEntry[]>(`/health/service/${service}`)).find((e) => e.Service.ID === id);
    await waitFor('both on-success services registered and passing', async () => (await health(critService, critId))?.Checks.every((c) => c.Status === 'passing') && (await health(zeroService, zeroId))?.Checks.every((c) => c.Status === 'passing'), 20_000);

    const stoppedAt = Date.now();
    let drainMs = 0;
    const stopping = docker('stop', '-t', '90', drainer).then(() => (drainMs = Date.now() - stoppedAt));
    await docker('exec', `${critHost}-f`, 'touch', '/tmp/crash');
    await docker('exec', `${zeroHost}-f`, 'touch', '/tmp/crash');
    const withdrawn = await converge(dr, new Set(), stoppedAt, 10_000);
    await waitFor('both failed services critical', async () => {
      const a = await health(critService, critId);
      const b = await health(zeroService, zeroId);
      return a?.Checks.some((c) => c.Status === 'critical') && b?.Checks.some((c) => c.Status === 'critical');
    }, 20_000);
    const failedAt = Date.now();

    // 100 s: the drain ends after 65 s; Consul reaps critical services after a minute, every 30 s.
    let drainSeen = 0;
    let critMissing = 0;
    let critPassing = 0;
    let zeroPassing = 0;
    for (const until = failedAt + 100_000; Date.now() < until; await sleep(500)) {
      if ((await dr.read()).entries.length > 0) drainSeen++;
      const a = await health(critService, critId);
      if (!a) critMissing++;
      else if (a.Checks.every((c) => c.Status === 'passing')) critPassing++;
      const b = await health(zeroService, zeroId);
      if (b?.Checks.every((c) => c.Status === 'passing')) zeroPassing++;
    }
    await stopping;
    const critRegistrations = crit.logs.filter((l) => l.event === 'registered' && l.id === critId).length;
    const lostLines = crit.logs.filter((l) => l.event === 'lost' && l.id === critId).length;
    reportFault('docker: drain of 65 s (docker stop -t 90) with a resync every second', { ...withdrawn, drainMs, reappearedSamples: drainSeen });
    reportFault('consul: on-success failure (with SERVICE_CHECK_DEREGISTER_AFTER=1m) kept critical for 100 s (TTL 3 s)', { converge: 0, lost: critMissing, duplicated: 0, left: 0, registrations: critRegistrations, lostLines, passingSamples: critPassing });
    reportFault('consul: on-success failure with --ttl 0', { converge: 0, lost: 0, duplicated: 0, left: 0, passingSamples: zeroPassing });
    expect(withdrawn.converge).toBeLessThan(3000);
    expect(drainMs).toBeGreaterThan(60_000);
    expect(drainSeen).toBe(0);
    expect(critMissing).toBe(0);
    expect(critPassing).toBe(0);
    // Registered as passing, then once more as critical: never reaped, never registered in a loop.
    expect(critRegistrations).toBe(2);
    expect(lostLines).toBe(0);
    expect(zeroPassing).toBe(0);
  }, 240_000);
});
