// Scale faults: 500 containers started at once on one host, with containers stopped in the
// middle of resyncs of all of them; and 50,000 other hosts' entries under the etcd prefix
// (v3 and v2), which a host must never need to read to know its own.
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { docker, removeContainers, run } from './support/docker.js';
import { spawnHm } from './support/harbormaster.js';
import { reportFault } from './support/observer.js';
import { ETCD_ENDPOINT, fillEtcd, fillEtcd2, privateEtcd } from './support/registries.js';
import { converge, idsOf, reader, type RegistryReader, runMany } from './support/scenario.js';
import { sleep, uniq } from './support/wait.js';

afterAll(() => removeContainers('fm'));

/** --internal without a network: every instance is 127.0.0.1:80, so only ids are compared. */
function idsOnly(r: RegistryReader): RegistryReader {
  return {
    ...r,
    read: async () => {
      const h = await r.read();
      return { ...h, entries: h.entries.map((e) => ({ key: e.key, id: e.id })) };
    },
  };
}

describe('scale', () => {
  it('500 containers started at once are all registered; containers stopped during resyncs of all 500 stay withdrawn', async () => {
    const host = uniq('fmm');
    const hm = spawnHm(['register', '--hostname', host, '--internal', '--ip', '127.0.0.1', '--ttl', '30', '--resync', '2', `etcd://${ETCD_ENDPOINT}/${host}`]);
    const raw = reader('etcd', ETCD_ENDPOINT, `/${host}`, host);
    onTestFinished(() => raw.close());
    const r = idsOnly(raw);
    const t0 = Date.now();
    // No network to set up: Docker starts these as fast as it can start anything.
    const names = await runMany(`${host}-`, 500, { env: { SERVICE_NAME: 'many', STOP_DELAY: '2' }, publish: [], extra: ['--network', 'none', '--expose', '80'] }, 16);
    const lastStart = Date.now();
    const m = await converge(r, idsOf(host, names), lastStart, 120_000);
    reportFault('scale: 500 containers started 16 at a time', { ...m, dockerStartMs: lastStart - t0 });
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });

    // Five stops, each right after a resync of all 500 began; each container drains 2 s.
    const victims = names.slice(0, 5);
    const stopped = new Map<string, number>();
    const stops = victims.map(async (v, i) => {
      await sleep(i * 700);
      hm.kill('SIGHUP');
      await sleep(20);
      stopped.set(`${host}:${v}:80`, Date.now());
      await docker('stop', '-t', '10', v);
    });
    let reappeared = 0;
    const gone = new Set<string>();
    const watchUntil = Date.now() + 10_000;
    while (Date.now() < watchUntil) {
      const present = new Set((await r.read()).entries.map((e) => e.id));
      for (const id of stopped.keys()) {
        if (!present.has(id)) gone.add(id);
        else if (gone.has(id)) reappeared++;
      }
      await sleep(50);
    }
    await Promise.all(stops);
    const after = await converge(r, idsOf(host, names.slice(5)), Date.now(), 30_000);
    reportFault('scale: 5 containers stopped during resyncs of 500', { ...after, reappearedSamples: reappeared, withdrawn: gone.size });
    expect(gone.size).toBe(5);
    expect(reappeared).toBe(0);
    expect(after).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
  }, 300_000);

  it('50,000 other hosts\' entries under the prefix (etcd v3 and v2): registrations, resyncs and heartbeats stay cheap', async () => {
    const etcd = privateEtcd(20650, ['--quota-backend-bytes', String(4 * 1024 ** 3)]);
    await etcd.start();
    onTestFinished(async () => {
      await etcd.kill();
      etcd.cleanup();
    });
    const v3 = await fillEtcd(etcd.endpoint, '/hm', 50_000);
    const v2 = await fillEtcd2(etcd.endpoint, '/hm2', 50_000);
    for (const [kind, prefix, api] of [['etcd', '/hm', 20660], ['etcd2', '/hm2', 20661]] as const) {
      const host = uniq('fmf');
      onTestFinished(() => removeContainers(`${host}-`));
      spawnHm(['register', '--hostname', host, '--ttl', '3', '--ttl-refresh', '1', '--api', `127.0.0.1:${api}`, `${kind}://${etcd.endpoint}${prefix}`]);
      const r = reader(kind, etcd.endpoint, prefix, host);
      onTestFinished(() => r.close());
      const started = Date.now();
      const names = [`${host}-a`, `${host}-b`, `${host}-c`];
      for (const n of names) await run(n, { env: { SERVICE_NAME: 'mine' } });
      const m = await converge(r, idsOf(host, names), started, 30_000);
      // Several TTLs: heartbeats keep up, and every resync (one per complete Docker listing) reads only this host.
      await sleep(7000);
      const again = await converge(r, idsOf(host, names), Date.now(), 5_000);
      const metrics = await (await fetch(`http://127.0.0.1:${api}/metrics`)).text();
      const listSum = Number(/harbormaster_registry_op_seconds_sum\{op="list"\} (\S+)/.exec(metrics)?.[1] ?? NaN);
      const listCount = Number(/harbormaster_registry_op_seconds_count\{op="list"\} (\S+)/.exec(metrics)?.[1] ?? NaN);
      const health = (await (await fetch(`http://127.0.0.1:${api}/v1/health`)).json()) as { ok: boolean };
      reportFault(`${kind}: 50,000 foreign entries under the prefix`, {
        ...m,
        stillAfter7s: again.lost === 0,
        listOwnMs: ((listSum / listCount) * 1000).toFixed(1),
        fillMs: kind === 'etcd' ? v3.ms : v2.ms,
      });
      expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
      expect(again).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
      expect(listCount).toBeGreaterThan(0);
      expect(listSum / listCount).toBeLessThan(0.2);
      expect(health.ok).toBe(true);
    }
  }, 240_000);
});
