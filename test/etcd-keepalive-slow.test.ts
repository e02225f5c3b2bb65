// The etcd heartbeat against one slow endpoint (the shared etcd behind a TCP proxy that delays
// every chunk): a keepalive that takes longer than a third of the TTL, but less than the TTL,
// still keeps the lease. Cutting it short at TTL/3, with no other member to try, failed every
// round.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdBackend } from '../src/registry/etcd-backend.js';
import { FaultProxy } from './support/fault-proxy.js';
import { uniq } from './support/wait.js';

/** Private port of this file. */
const PORT = 28810;
const TTL = 3;

let proxy: FaultProxy;
let backend: EtcdBackend;
const ref = { id: 'eks:1', name: 'eks' };

beforeAll(async () => {
  proxy = await FaultProxy.start({ host: '127.0.0.1', port: 2379 }, PORT);
  backend = new EtcdBackend({ endpoints: [`http://127.0.0.1:${PORT}`], prefix: `/${uniq('eks')}` }, { ttl: TTL, host: uniq('eks-host') }, {});
});

afterAll(async () => {
  proxy?.pass();
  // Its lease lapses within the TTL anyway.
  await backend?.deregister(ref).catch(() => undefined);
  await backend?.close();
  await proxy?.close();
});

describe('etcd v3 heartbeat, one slow endpoint', () => {
  it('a keepalive answered in ~1.4 s with a TTL of 3 s (one endpoint) goes through', async () => {
    await backend.register({ id: ref.id, name: ref.name, address: '127.0.0.1', port: 1, protocol: 'tcp', tags: [], meta: {}, host: 'eks', status: 'passing' });
    expect((await backend.heartbeat([ref])).lost).toEqual([]);
    proxy.delay(700);
    const t0 = Date.now();
    const res = await backend.heartbeat([ref]);
    const ms = Date.now() - t0;
    console.log(`PROBE etcd keepalive through a 700 ms each-way delay: ${ms} ms`);
    expect(ms).toBeGreaterThan(1_000);
    expect(res.lost).toEqual([]);
    expect(res.error).toBeUndefined();
  });
});
