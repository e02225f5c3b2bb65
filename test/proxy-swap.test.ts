// Table swap under load: 1,000 routing changes through the embedded registry and the real
// catalog watch while keep-alive clients keep requesting; not one request may fail, requests in
// flight on a removed instance finish there, and every change installs a new table.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { CatalogWatch } from '../src/catalog/watch.js';
import { HEALTH_STATUSES, type ServiceInstance } from '../src/model/service-instance.js';
import { ProxyServer } from '../src/proxy/proxy-server.js';
import { createBackend } from '../src/registry/index.js';
import { Load, afterRequests, startBackend, type Backend } from './support/proxy.js';
import { waitFor } from './support/wait.js';

const REG = 'memory://proxy-swap-test';
const CHANGES = 1000;
const cleanup: (() => Promise<void>)[] = [];

afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

describe('routing table swaps under load', () => {
  it(`survives ${CHANGES} routing changes with zero failed requests`, async () => {
    const registry = createBackend(REG, { ttl: 0 });
    const log = pino({ level: 'warn' }, new Writable({ write: (_c, _e, cb) => cb() }));
    const watch = CatalogWatch.forUri(REG, { statuses: [...HEALTH_STATUSES], log });
    const proxy = new ProxyServer({ domain: 'localhost', balance: 'round-robin', statuses: ['passing'], connectTimeoutMs: 2000, responseTimeoutMs: 10_000, idleTimeoutMs: 10_000, retries: 2, log });
    const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
    const off = watch.subscribe((c) => proxy.setCatalog(c));
    cleanup.push(async () => {
      off();
      await proxy.close(1000);
      await watch.stop();
    });
    const backends: Backend[] = [];
    for (const n of ['s0', 's1', 's2']) backends.push(await startBackend(n));
    cleanup.push(async () => void (await Promise.all(backends.map((b) => b.close()))));

    const inst = (k: number, meta: Record<string, string> = {}): ServiceInstance => ({
      id: `t:swap-${k}`,
      name: 'swap',
      address: '127.0.0.1',
      port: backends[k].port,
      protocol: 'tcp',
      tags: [],
      meta,
      host: 't',
      status: 'passing',
    });
    for (let k = 0; k < 3; k++) await registry.register(inst(k));
    await waitFor('three instances routed', () => proxy.table().match('swap.localhost', '/')?.balancer.upstreams.length === 3, 5_000, 10);

    // Slow answers (3 ms) keep requests in flight across swaps, on instances being removed too.
    const load = new Load(port, 'swap.localhost', '/slow/3', 4, 60_000).start();
    await afterRequests(load, 50);
    const swapsBefore = proxy.swaps;
    const servedBefore = backends.map((b) => b.hits);
    for (let i = 0; i < CHANGES; i++) {
      const k = Math.floor(i / 2) % 3;
      // Alternate: withdraw one instance, then bring it back with another weight, every other
      // time on a new path of its own (a new route); at least one instance always serves /.
      if (i % 2 === 0) await registry.deregister(inst(k));
      else await registry.register(inst(k, { weight: String(1 + (i % 4)), http_host: 'swap.localhost', http_path: i % 4 === 1 ? `/v${i}` : '/' }));
      await new Promise((r) => setTimeout(r, 1));
      if (i % 100 === 99) expect(load.failures).toEqual([]);
    }
    for (let k = 0; k < 3; k++) await registry.register(inst(k));
    await waitFor('all back', () => proxy.table().match('swap.localhost', '/')?.balancer.upstreams.length === 3, 5_000, 10);
    await afterRequests(load, 50);
    await load.stop();

    expect(load.failures).toEqual([]);
    // A watch may deliver two changes that arrive together as one snapshot.
    console.log(`PROBE swaps: ${proxy.swaps - swapsBefore} tables for ${CHANGES} changes, ${load.ok} requests, 0 failed`);
    expect(proxy.swaps - swapsBefore).toBeGreaterThanOrEqual(CHANGES * 0.9);
    expect(load.ok).toBeGreaterThan(200);
    expect([...load.bodies.keys()].sort()).toEqual(['s0', 's1', 's2']);
    backends.forEach((b, k) => expect(b.hits).toBeGreaterThan(servedBefore[k]));
    expect(backends.reduce((n, b) => n + b.aborted, 0)).toBe(0);
    for (let k = 0; k < 3; k++) await registry.deregister(inst(k));
  }, 90_000);
});
