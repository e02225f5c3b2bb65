// `harbormaster proxy` as a child process following a real etcd (a private one): routes what is
// written there, reports on its status API, drains on SIGTERM; usage errors exit 2 in one line.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServiceInstance } from '../src/model/service-instance.js';
import { createBackend } from '../src/registry/index.js';
import { Hm, runCli } from './support/harbormaster.js';
import { privateEtcd } from './support/registries.js';
import { uniq, waitFor } from './support/wait.js';
import { get, startBackend, type Backend } from './support/proxy.js';
import { connectRefused } from './support/run.js';

const etcd = privateEtcd(19752);
const PREFIX = `/${uniq('hmpc')}`;
const URI = () => `etcd://${etcd.endpoint}${PREFIX}`;
const PROXY = 19730;
const API = 19731;
const backends: Backend[] = [];

beforeAll(async () => {
  await etcd.start();
});

afterAll(async () => {
  for (const b of backends) await b.close();
  await etcd.kill('SIGTERM');
  etcd.cleanup();
});

describe('harbormaster proxy', () => {
  it('rejects bad flags with exit 2 and one line naming the flag', async () => {
    for (const [args, fragment] of [
      [['proxy'], 'one registry URI'],
      [['proxy', 'memory://', '--listen', 'nowhere'], '--listen'],
      [['proxy', 'memory://', '--balance', 'random'], '--balance'],
      [['proxy', 'memory://', '--retries', 'many'], '--retries'],
      [['proxy', 'memory://', '--health-check', 'no-slash'], '--health-check'],
      [['run', '--registry', 'bogus://x'], 'bogus'],
      [['run', '--listen', '127.0.0.1:99999'], '--listen'],
    ] as const) {
      const r = await runCli([...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(fragment);
    }
    const help = await runCli(['proxy', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--drain-timeout');
  });

  it('exits 1 with one line when its port is taken', async () => {
    const b = await startBackend('squatter');
    backends.push(b);
    const r = await runCli(['proxy', URI(), '--listen', `127.0.0.1:${b.port}`, '--api', 'off']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot listen on 127.0.0.1:${b.port}`);
  });

  it('routes what the registry holds, and on SIGTERM lets the request in flight finish before exiting 0', async () => {
    const hm = new Hm(['proxy', URI(), '--listen', `127.0.0.1:${PROXY}`, '--api', `127.0.0.1:${API}`, '--drain-timeout', '10000']);
    try {
      await hm.waitForLog('listening', (l) => l.event === 'listen' && l.component === 'proxy');
      const b = await startBackend('etcd-backed');
      backends.push(b);
      const inst: ServiceInstance = { id: 'cli:slow-1:80', name: 'slowsvc', address: '127.0.0.1', port: b.port, protocol: 'tcp', tags: [], meta: {}, host: 'cli', status: 'passing' };
      const writer = createBackend(URI(), { ttl: 0 });
      await writer.register(inst);
      await writer.close();
      await waitFor('routed', async () => (await get(PROXY, 'slowsvc.localhost')).status === 200, 20_000, 100);

      const services = (await (await fetch(`http://127.0.0.1:${API}/v1/services`)).json()) as { services: { name: string; instances: { id: string }[] }[] };
      expect(services.services.find((s) => s.name === 'slowsvc')!.instances.map((i) => i.id)).toEqual(['cli:slow-1:80']);
      const health = (await (await fetch(`http://127.0.0.1:${API}/v1/health`)).json()) as { ok: boolean; components: Record<string, { ok: boolean }> };
      expect(health.ok).toBe(true);
      expect(Object.keys(health.components).sort()).toEqual(['proxy', 'registry']);

      const slow = get(PROXY, 'slowsvc.localhost', '/slow/2000');
      await waitFor('request in flight', () => b.hits === 2, 5_000, 10);
      hm.kill('SIGTERM');
      await waitFor('listener closed', () => connectRefused(PROXY), 5_000, 20);
      expect(await slow).toMatchObject({ status: 200, body: 'etcd-backed' });
      expect(await hm.exited).toBe(0);
      expect(hm.logs.find((l) => l.event === 'stopped')!.msg).toContain('every request in flight finished');
    } catch (err) {
      console.log(hm.dump());
      throw err;
    } finally {
      await hm.stop('SIGKILL');
    }
  });
});
