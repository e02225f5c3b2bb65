// `register --services-dir` (with --docker off) against the real Consul agent, etcd v3 and etcd v2:
// files added, edited, renamed and deleted are followed within a second; an invalid file keeps
// its services as they were; a proxy watching the registry loses no request while a file moves
// a service from one backend to another; 1,000 services in 100 files.
import { mkdtempSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Hm } from './support/harbormaster.js';
import { afterRequests, get, Load, startBackend, type Backend } from './support/proxy.js';
import { CONSUL, consulServices, etcd2Read, etcdRead, ETCD_ENDPOINT } from './support/registries.js';
import { uniq, waitFor } from './support/wait.js';

const procs: Hm[] = [];
const dirs: string[] = [];
const backends: Backend[] = [];
afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGTERM')));
  for (const b of backends) await b.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function hm(args: string[]): Hm {
  const h = new Hm(args);
  procs.push(h);
  return h;
}

function folder(): string {
  const d = mkdtempSync(join(tmpdir(), 'hm-svcdir-'));
  dirs.push(d);
  return d;
}

type Entry = { name: string; port: number; address: string };

/** What the registry holds for one host: id → entry. */
function reader(kind: string, uri: string, host: string): () => Promise<Map<string, Entry>> {
  if (kind === 'Consul') {
    // The host's heartbeat service (harbormaster:<host>) is not one of the file's services.
    return async () =>
      new Map(Object.values(await consulServices(host)).filter((s) => s.ID.includes(':file:')).map((s) => [s.ID, { name: s.Service, port: s.Port, address: s.Address }]));
  }
  const prefix = new URL(uri.replace(/^etcd2?:/, 'http:')).pathname;
  const read = kind === 'etcd v3' ? etcdRead : etcd2Read;
  return async () => {
    const all = await read(prefix);
    return new Map(
      Object.values(all)
        .filter((v) => v.host === host)
        .map((v) => [String(v.id), { name: String(v.name), port: Number(v.port), address: String(v.address) }]),
    );
  };
}

describe.each([
  ['Consul', () => CONSUL],
  ['etcd v3', () => `etcd://${ETCD_ENDPOINT}/${uniq('sdir3')}`],
  ['etcd v2', () => `etcd2://${ETCD_ENDPOINT}/${uniq('sdir2')}`],
])('register --services-dir on %s', (kind, uriOf) => {
  it('follows files added, edited, renamed and deleted; an invalid file keeps its services', async () => {
    const uri = uriOf();
    const host = uniq('sdhost');
    const dir = folder();
    const read = reader(kind, uri, host);
    writeFileSync(join(dir, 'db.yaml'), 'service:\n  name: pg\n  address: 127.0.0.1\n  port: 5432\n  tags: [primary]\n');
    const reg = hm(['register', '--docker', 'off', '--services-dir', dir, '--hostname', host, '--ttl', '10', '--api', '127.0.0.1:0', uri]);
    await waitFor('pg registered', async () => (await read()).has(`${host}:file:pg`), 15_000, 50);
    expect((await read()).get(`${host}:file:pg`)).toEqual({ name: 'pg', port: 5432, address: '127.0.0.1' });

    const timed = async (what: string, change: () => void, done: (m: Map<string, Entry>) => boolean) => {
      const t0 = Date.now();
      change();
      await waitFor(what, async () => done(await read()), 10_000, 20);
      return Date.now() - t0;
    };
    const added = await timed('cache added', () => writeFileSync(join(dir, 'cache.json'), JSON.stringify({ services: [{ name: 'redis', port: 6379, address: '127.0.0.1' }, { name: 'memcached', port: 11211, address: '127.0.0.1' }] })), (m) => m.size === 3);
    const edited = await timed('pg edited', () => writeFileSync(join(dir, 'db.yaml'), 'service:\n  name: pg\n  address: 127.0.0.1\n  port: 5433\n'), (m) => m.get(`${host}:file:pg`)?.port === 5433);
    const renamed = await timed('renamed', () => renameSync(join(dir, 'cache.json'), join(dir, 'caches.json')), (m) => m.size === 3);
    // Invalid: one line naming the file, the line and the field; pg stays as it was.
    writeFileSync(join(dir, 'db.yaml'), 'service:\n  name: pg\n  address: 127.0.0.1\n  port: 70000\n');
    const bad = await reg.waitForLog('invalid file', (l) => l.event === 'services-file-invalid', 10_000);
    expect(bad.msg).toBe('db.yaml:4: port: expected a number from 1 to 65535; its services stay as they were until it is valid');
    await new Promise((r) => setTimeout(r, 1_000));
    expect((await read()).get(`${host}:file:pg`)?.port).toBe(5433);
    const fixed = await timed('valid again', () => writeFileSync(join(dir, 'db.yaml'), 'service:\n  name: pg\n  address: 127.0.0.1\n  port: 5434\n'), (m) => m.get(`${host}:file:pg`)?.port === 5434);
    const deleted = await timed('deleted', () => unlinkSync(join(dir, 'caches.json')), (m) => m.size === 1);
    console.log(`PROBE services-dir on ${kind}: added ${added} ms, edited ${edited} ms, renamed ${renamed} ms, valid again ${fixed} ms, deleted ${deleted} ms`);
    for (const ms of [added, edited, renamed, fixed, deleted]) expect(ms).toBeLessThan(1_500);
    expect(reg.logs.filter((l) => l.level >= 50 && l.event !== 'services-file-invalid')).toEqual([]);
    // SIGTERM withdraws what the files registered.
    expect(await reg.stop('SIGTERM')).toBe(0);
    expect((await read()).size).toBe(0);
  });
});

describe('register --services-dir at scale and under a proxy', () => {
  it('1,000 services in 100 files are registered, and withdrawn when the folder goes', async () => {
    for (const [kind, uri] of [['etcd v3', `etcd://${ETCD_ENDPOINT}/${uniq('sdk')}`], ['Consul', CONSUL]] as const) {
      const host = uniq('sdk');
      const dir = folder();
      for (let f = 0; f < 100; f++) {
        const services = Array.from({ length: 10 }, (_, i) => ({ name: `bulk-${f % 20}`, id: `b-${f}-${i}`, address: '127.0.0.1', port: 20000 + f * 10 + i }));
        writeFileSync(join(dir, `f${String(f).padStart(3, '0')}.json`), JSON.stringify({ services }));
      }
      const read = reader(kind, uri, host);
      const t0 = Date.now();
      const reg = hm(['register', '--docker', 'off', '--services-dir', dir, '--hostname', host, '--ttl', '30', uri]);
      // Consul's agent takes registrations one at a time: on a loaded 2-core machine, minutes (measured 13 s quiet).
      await waitFor('1,000 registered', async () => (await read()).size === 1_000, 180_000, 200);
      const all = Date.now() - t0;
      const t1 = Date.now();
      rmSync(dir, { recursive: true });
      await waitFor('all withdrawn', async () => (await read()).size === 0, 180_000, 200);
      const gone = Date.now() - t1;
      console.log(`PROBE services-dir ${kind}: 1,000 services in 100 files registered ${all} ms after start; folder deleted → all withdrawn in ${gone} ms`);
      await reg.stop('SIGTERM');
    }
  }, 420_000);

  it('a proxy watching the registry loses no request while a file moves a service to another backend', async () => {
    const host = uniq('sdpx');
    const uri = `etcd://${ETCD_ENDPOINT}/${uniq('sdpx')}`;
    const dir = folder();
    const a = await startBackend('A');
    const b = await startBackend('B');
    backends.push(a, b);
    const svc = uniq('moved');
    const file = join(dir, 'svc.yaml');
    const def = (ports: number[]) => `services:\n${ports.map((p, i) => `  - { name: ${svc}, id: ${svc}-${p}-${i}, address: 127.0.0.1, port: ${p} }\n`).join('')}`;
    writeFileSync(file, def([a.port]));
    hm(['register', '--docker', 'off', '--services-dir', dir, '--hostname', host, '--ttl', '10', uri]);
    const proxy = hm(['proxy', uri, '--listen', '127.0.0.1:0', '--api', 'off']);
    const ready = await proxy.waitForLog('proxy listening', (l) => l.event === 'listen' && l.component === 'proxy', 15_000);
    const port = Number(String(ready.addr).split(':').pop());
    const load = new Load(port, `${svc}.localhost`, '/', 4, 30_000);
    await waitFor('routed to A', async () => (await get(port, `${svc}.localhost`)).status === 200, 15_000, 50);
    load.start();
    try {
      await afterRequests(load, 200);
      writeFileSync(file, def([a.port, b.port]));
      await waitFor('B in rotation', () => (load.bodies.get('B') ?? 0) > 0, 10_000, 20);
      writeFileSync(file, def([b.port]));
      const before = a.hits;
      await waitFor('A out of rotation', async () => {
        const h = a.hits;
        await afterRequests(load, 100);
        return a.hits === h;
      }, 10_000, 0);
      await afterRequests(load, 200);
      await load.stop();
      expect(load.failures).toEqual([]);
      console.log(`PROBE services-dir under a proxy: ${load.total} requests, ${load.failures.length} failed; A answered ${a.hits} (${a.hits - before} after its removal was written), B ${b.hits}`);
    } finally {
      await load.stop();
    }
  });
});
