// The registrator itself killed with SIGKILL and started again, with and without --cleanup:
// what a watcher of the registry sees must not change for the containers that kept running (a
// Consul blocking query on the passing instances, an etcd reader), and a container removed
// meanwhile must go. SIGHUP must never end the process without withdrawing.
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { docker, removeContainers, run } from './support/docker.js';
import { spawnHm } from './support/harbormaster.js';
import { type Observer, observeConsulHealth, observeEtcd, observeEtcd2, reportFault } from './support/observer.js';
import { CONSUL, consulChecks, ETCD_ENDPOINT } from './support/registries.js';
import { converge, idsOf, type RegistryKind, reader, runMany } from './support/scenario.js';
import { sleep, uniq, waitFor } from './support/wait.js';

// Long enough that the restart (docker rm, a new process listing Docker) lands within it on a loaded
// 2-core machine (three test lanes at once: a restart took up to 7 s there):
// entries of a registrator dead for longer than its TTL lapse, as they must.
const TTL = 12;

afterAll(() => removeContainers('fk'));

function observe(kind: RegistryKind, service: string, host: string): Observer {
  if (kind === 'consul') return observeConsulHealth({ service, host, waitS: 2 });
  if (kind === 'etcd') return observeEtcd({ prefix: `/${host}`, host, intervalMs: 50 });
  return observeEtcd2({ prefix: `/${host}`, host, intervalMs: 50 });
}

describe.each([{ kind: 'consul' as const }, { kind: 'etcd' as const }, { kind: 'etcd2' as const }])('registrator killed and restarted: $kind', ({ kind }) => {
  it.each([{ cleanup: false }, { cleanup: true }])('SIGKILL, a container removed meanwhile, restart (cleanup $cleanup): no watcher sees the others disappear', async ({ cleanup }) => {
    const host = uniq('fk');
    onTestFinished(() => removeContainers(`${host}-`));
    const service = `s${host.replace(/-/g, '')}`;
    const uri = kind === 'consul' ? CONSUL : `${kind}://${ETCD_ENDPOINT}/${host}`;
    const args = ['register', '--hostname', host, '--ttl', String(TTL), '--ttl-refresh', '1', '--retry-interval', '200', ...(cleanup ? ['--cleanup'] : []), uri];
    const first = spawnHm(args);
    const names = await runMany(`${host}-`, 3, { env: { SERVICE_NAME: service } });
    const r = reader(kind, kind === 'consul' ? '127.0.0.1:8500' : ETCD_ENDPOINT, `/${host}`, host);
    onTestFinished(() => r.close());
    await converge(r, idsOf(host, names), Date.now(), 30_000);
    const obs = observe(kind, service, host);
    onTestFinished(() => obs.stop());
    const all = idsOf(host, names);
    await obs.waitFor((ids) => [...all].every((id) => ids.has(id)));

    first.kill('SIGKILL');
    await first.exited;
    const killed = Date.now();
    await docker('rm', '-f', names[2]);
    await sleep(1000);
    const second = spawnHm(args);
    const restarted = Date.now();
    const kept = idsOf(host, names.slice(0, 2));
    // Converged: the watcher's view is exactly the containers still running.
    const done = await obs.waitFor((ids) => ids.size === kept.size && [...kept].every((id) => ids.has(id)), 30_000);
    // Past the TTL: an entry left on the dead process's lease or TTL check would vanish now.
    await sleep((TTL + 2) * 1000);
    await obs.stop();
    const gaps = obs.gaps(kept, { from: killed });
    const copies = Math.max(...obs.samples.filter((s) => s.t >= killed).map((s) => s.ids.length - new Set(s.ids).size));
    const final = obs.latest!.ids;
    const left = final.filter((id) => !kept.has(id)).length;
    const lost = [...kept].filter((id) => !final.includes(id)).length;
    const extra: Record<string, string | number> = { gapsSeen: gaps.length, samples: obs.samples.length, rewrites: second.logs.filter((l) => l.event === 'registered' && String(l.id).includes(`:${host}-`)).length };
    if (kind === 'consul' && !cleanup) {
      // registrator's rule: without --cleanup a dead container's entry is Consul's to reap (critical, then
      // DeregisterCriticalServiceAfter). It must not follow the new run's heartbeat and stay passing.
      const checks = await consulChecks();
      const stale = `${host}:${names[2]}:80`;
      extra.agentViewCritical = Object.values(checks).filter((c) => c.ServiceID === stale && c.Status === 'critical').length;
      expect(extra.agentViewCritical).toBeGreaterThan(0);
    }
    reportFault(`${kind}: registrator SIGKILL + restart${cleanup ? ' --cleanup' : ''}, one container removed while it was down`, {
      converge: done.t - restarted,
      lost,
      duplicated: copies,
      left,
      ...extra,
    });
    expect(gaps).toEqual([]);
    expect({ lost, copies, left }).toEqual({ lost: 0, copies: 0, left: 0 });
    // Adopted, not written again: re-registering would reset the checks of the running containers.
    if (kind !== 'etcd') expect(extra.rewrites).toBe(0);
    expect(await second.stop()).toBe(0);
  });
});

describe('signals', () => {
  it('SIGHUP resyncs and keeps running; SIGTERM afterwards withdraws', async () => {
    const host = uniq('fkh');
    onTestFinished(() => removeContainers(`${host}-`));
    const hm = spawnHm(['register', '--hostname', host, '--ttl', '10', CONSUL]);
    await run(`${host}-a`, { env: { SERVICE_NAME: 'hup' } });
    const r = reader('consul', '127.0.0.1:8500', '', host);
    onTestFinished(() => r.close());
    await converge(r, idsOf(host, [`${host}-a`]), Date.now(), 20_000);
    let exited = false;
    void hm.exited.then(() => (exited = true));
    hm.kill('SIGHUP');
    await hm.waitForLog('reload line', (l) => l.event === 'reload');
    await sleep(1000);
    expect(exited).toBe(false);
    expect(hm.logs.filter((l) => l.event === 'deregistered')).toEqual([]);
    expect((await r.read()).entries.map((e) => e.id)).toEqual([`${host}:${host}-a:80`]);
    expect(await hm.stop('SIGTERM')).toBe(0);
    await waitFor('withdrawn on SIGTERM', async () => (await r.read()).entries.length === 0, 5_000);
  });
});
