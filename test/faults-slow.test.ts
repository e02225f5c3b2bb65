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
  Service: { ID: string; Meta?: Record<string, string> };
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
    const entries = (service: string) => consulGet<HealthEntry[]>(`/health/service/${service}`);
    const health = async (service: string, id: string) => (await entries(service)).find((e) => e.Service.ID === id);
    await waitFor('both on-success services registered and passing', async () => (await health(critService, critId))?.Checks.every((c) => c.Status === 'passing') && (await health(zeroService, zeroId))?.Checks.every((c) => c.Status === 'passing'), 20_000);

    const stoppedAt = Date.now();
    let drainMs = 0;
    const stopping = docker('stop', '-t', '90', drainer).then(() => (drainMs = Date.now() - stoppedAt));
    const crashedAt = Date.now();
    await docker('exec', `${critHost}-f`, 'touch', '/tmp/crash');
    await docker('exec', `${zeroHost}-f`, 'touch', '/tmp/crash');
    const withdrawn = await converge(dr, new Set(), stoppedAt, 10_000);
    // From the crash to Consul showing each one critical.
    const criticalAt: Record<string, number> = {};
    await waitFor('both failed services critical', async () => {
      for (const [service, id] of [[critService, critId], [zeroService, zeroId]]) {
        if ((await health(service, id))?.Checks.some((c) => c.Status === 'critical')) criticalAt[id] ??= Date.now();
      }
      return criticalAt[critId] !== undefined && criticalAt[zeroId] !== undefined;
    }, 20_000, 50);
    const failedAt = Date.now();

    // 100 s: the drain ends after 65 s; Consul reaps critical services after a minute, every 30 s.
    let drainSeen = 0;
    const seen = { [critId]: { missing: 0, passing: 0, copies: 0, others: 0 }, [zeroId]: { missing: 0, passing: 0, copies: 0, others: 0 } };
    for (const until = failedAt + 100_000; Date.now() < until; await sleep(500)) {
      if ((await dr.read()).entries.length > 0) drainSeen++;
      for (const [service, id, host] of [[critService, critId, critHost], [zeroService, zeroId, zeroHost]]) {
        // Every registrator registers every container of the engine: only this host's entries count.
        const all = (await entries(service)).filter((e) => e.Service.Meta?.hm_host === host);
        const mine = all.filter((e) => e.Service.ID === id);
        const f = seen[id];
        if (mine.length === 0) f.missing++;
        else if (mine.every((e) => e.Checks.every((c) => c.Status === 'passing'))) f.passing++;
        f.copies = Math.max(f.copies, mine.length - 1);
        // Anything else under the service name: a stale or second registration.
        f.others = Math.max(f.others, all.length - mine.length);
      }
    }
    const critPassing = seen[critId].passing;
    const critMissing = seen[critId].missing;
    const zeroPassing = seen[zeroId].passing;
    await stopping;
    const critRegistrations = crit.logs.filter((l) => l.event === 'registered' && l.id === critId).length;
    const lostLines = crit.logs.filter((l) => l.event === 'lost' && l.id === critId).length;
    reportFault('docker: drain of 65 s (docker stop -t 90) with a resync every second', { ...withdrawn, drainMs, reappearedSamples: drainSeen });
    const figures = (id: string) => ({ converge: criticalAt[id] - crashedAt, lost: seen[id].missing, duplicated: seen[id].copies, left: seen[id].others, passingSamples: seen[id].passing });
    reportFault('consul: on-success failure (with SERVICE_CHECK_DEREGISTER_AFTER=1m) kept critical for 100 s (TTL 3 s)', { ...figures(critId), registrations: critRegistrations, lostLines });
    reportFault('consul: on-success failure with --ttl 0', figures(zeroId));
    for (const id of [critId, zeroId]) expect({ lost: seen[id].missing, duplicated: seen[id].copies, left: seen[id].others }).toEqual({ lost: 0, duplicated: 0, left: 0 });
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
