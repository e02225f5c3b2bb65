// `harbormaster run --registry …` with Consul, etcd v3 and etcd v2 (private instances on their own
// loopback ports, so that registering every container of this Docker host touches no other
// test's registry): the same routing checks as with the embedded registry, through each engine's
// change feed.
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFailed } from 'vitest';
import { removeContainers } from './support/docker.js';
import { Hm } from './support/harbormaster.js';
import { privateConsul, privateEtcd } from './support/registries.js';
import { uniq } from './support/wait.js';
import { get } from './support/proxy.js';
import { routingChecks, sigkillUnderLoad, websocketCheck } from './support/run.js';

const consul = privateConsul(19740);
const etcd = privateEtcd(19750);
const HOST = uniq('hmpr');
const TAG = HOST.slice(5);

beforeAll(async () => {
  await Promise.all([consul.start(), etcd.start()]);
});

afterAll(async () => {
  await removeContainers(`${HOST}-`);
  await consul.kill('SIGTERM');
  await etcd.kill('SIGTERM');
  etcd.cleanup();
});

const CASES = [
  { engine: 'consul', short: 'c', uri: () => consul.uri, proxy: 19720 },
  { engine: 'etcd', short: 'e', uri: () => `etcd://${etcd.endpoint}/hm-${TAG}`, proxy: 19722 },
  { engine: 'etcd2', short: 'v', uri: () => `etcd2://${etcd.endpoint}/hm2-${TAG}`, proxy: 19724 },
];

for (const c of CASES) {
  describe(`harbormaster run --registry ${c.engine}`, () => {
    const prefix = `${HOST}-${c.short}-`;
    const tag = `${TAG}${c.short}`;
    let hm: Hm;

    beforeAll(async () => {
      hm = new Hm(['run', '--registry', c.uri(), '--listen', `127.0.0.1:${c.proxy}`, '--api', `127.0.0.1:${c.proxy + 1}`, '--hostname', `${HOST}-${c.short}`, '--deregister', 'on-success', '--ttl', '10', '--resync', '10']);
      await hm.waitForLog('ready line', (l) => l.event === 'ready').catch((err: Error) => {
        throw new Error(`${err.message}\n${hm.dump()}`);
      });
    });

    beforeEach(() => {
      const from = hm.logs.length;
      onTestFailed(() => console.log(`--- harbormaster run --registry ${c.engine}, log lines during this test\n${hm.logs.slice(from).map((l) => l.msg).join('\n')}${hm.stderr.join('')}`));
    });

    afterAll(async () => {
      await hm.stop('SIGTERM');
      await removeContainers(prefix);
    });

    it('routes by Host and path prefix; 404 for unknown hosts, 503 for a crashed service', async () => {
      await routingChecks(c.proxy, prefix, tag);
      const start = hm.logs.find((l) => l.event === 'start')!;
      expect(start.msg).toContain(c.engine === 'consul' ? 'consul://127.0.0.1:19740' : `127.0.0.1:19750`);
    });

    it('passes WebSocket upgrades', async () => {
      await websocketCheck(c.proxy, prefix, tag);
    });

    it('loses no GET when a container is killed with SIGKILL under load', async () => {
      await sigkillUnderLoad(c.proxy, prefix, tag, hm);
    });

    it('reports the registry on /v1/health', async () => {
      const res = await fetch(`http://127.0.0.1:${c.proxy + 1}/v1/health`);
      const h = (await res.json()) as { ok: boolean; components: Record<string, { ok: boolean; registry?: string }> };
      expect(res.status).toBe(200);
      expect(h.components.registry).toMatchObject({ ok: true, registry: c.uri() });
      expect(h.components.catalog).toMatchObject({ ok: true, registry: c.uri() });
      expect((await get(c.proxy, `nobody-${tag}.localhost`)).status).toBe(404);
    });
  });
}
