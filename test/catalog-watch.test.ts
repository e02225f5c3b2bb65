// The read side against the real engines: snapshots follow registrations within moments,
// equal state gives an equal fingerprint, and a restarted registry is followed without
// restarting the watch.
import { afterAll, describe, expect, it } from 'vitest';
import type { Catalog } from '../src/catalog/catalog.js';
import { CatalogWatch } from '../src/catalog/watch.js';
import { silentLogger } from '../src/log/logger.js';
import type { ServiceInstance } from '../src/model/service-instance.js';
import { createBackend } from '../src/registry/index.js';
import { CONSUL, ETCD_ENDPOINT, privateConsul, privateEtcd } from './support/registries.js';
import { uniq, waitFor } from './support/wait.js';

const watches: CatalogWatch[] = [];
afterAll(async () => {
  for (const w of watches) await w.stop();
});

function follow(uri: string, statuses?: ServiceInstance['status'][]) {
  const w = CatalogWatch.forUri(uri, { log: silentLogger(), statuses });
  watches.push(w);
  const seen: Catalog[] = [];
  w.subscribe((c) => seen.push(c));
  const ids = (name: string) => w.catalog?.services.find((s) => s.name === name)?.instances.map((i) => i.id) ?? [];
  return { w, seen, ids };
}

const inst = (name: string, id: string, over: Partial<ServiceInstance> = {}): ServiceInstance => ({
  id,
  name,
  address: '127.0.0.1',
  port: 20000 + Math.floor(Math.random() * 1000),
  protocol: 'tcp',
  tags: ['t'],
  meta: {},
  host: 'watch-test',
  status: 'passing',
  ...over,
});

describe.each([
  ['consul', () => CONSUL],
  ['etcd', () => `etcd://${ETCD_ENDPOINT}/${uniq('wt3')}`],
  ['etcd2', () => `etcd2://${ETCD_ENDPOINT}/${uniq('wt2')}`],
  ['memory', () => `memory://${uniq('wm')}`],
])('catalog watch on %s', (kind, uriOf) => {
  it('follows registrations and withdrawals, and emits only on change', async () => {
    const uri = uriOf();
    const name = uniq('svc');
    const { w, seen, ids } = follow(uri);
    await w.first();
    const b = createBackend(uri, { ttl: 0 });
    try {
      const a = inst(name, `${name}:a`);
      const c = inst(name, `${name}:b`);
      await b.register(a);
      await b.register(c);
      await waitFor('both instances', () => ids(name).length === 2, 10_000, 20);
      const mine = () => JSON.stringify(w.catalog!.services.find((s) => s.name === name));
      const before = mine();
      const fp = w.catalog!.fingerprint;
      const count = seen.length;
      await b.register(a); // same content again
      await new Promise((r) => setTimeout(r, 500));
      expect(mine()).toBe(before);
      // The shared Consul agent also holds other tests' services; elsewhere the prefix is ours alone.
      if (kind !== 'consul') {
        expect(w.catalog!.fingerprint).toBe(fp);
        expect(seen.length).toBe(count);
      }
      await b.deregister(a);
      await waitFor('one instance left', () => ids(name).length === 1, 10_000, 20);
      expect(ids(name)).toEqual([`${name}:b`]);
      await b.deregister(c);
      await waitFor('service gone', () => !w.catalog!.services.some((s) => s.name === name), 10_000, 20);
    } finally {
      await b.close();
    }
  });
});

describe('catalog watch status filter', () => {
  it('keeps only passing instances by default, warning too when asked (Consul check status)', async () => {
    const name = uniq('st');
    const strict = follow(CONSUL);
    const wide = follow(CONSUL, ['passing', 'warning']);
    const b = createBackend(CONSUL, { ttl: 30 });
    try {
      await b.register(inst(name, `${name}:p`));
      await b.register(inst(name, `${name}:w`, { status: 'warning' }));
      await waitFor('wide sees both', () => wide.ids(name).length === 2, 10_000, 20);
      await waitFor('strict sees the passing one', () => strict.ids(name).length === 1, 10_000, 20);
      expect(strict.ids(name)).toEqual([`${name}:p`]);
    } finally {
      await b.deregister(inst(name, `${name}:p`));
      await b.deregister(inst(name, `${name}:w`));
      await b.close();
    }
  });
});

describe('catalog watch across registry restarts', () => {
  it('follows a Consul agent that restarts (index reset) without being restarted', async () => {
    const consul = privateConsul(18700);
    await consul.start();
    try {
      const { w, ids } = follow(consul.uri);
      await w.first();
      const b1 = createBackend(consul.uri, { ttl: 0 });
      await b1.register(inst('before', 'before:1'));
      await waitFor('before seen', () => ids('before').length === 1, 10_000, 20);
      await b1.close();
      await consul.kill('SIGKILL');
      await consul.start();
      const b2 = createBackend(consul.uri, { ttl: 0 });
      await b2.register(inst('after', 'after:1'));
      await waitFor('after seen, before gone (dev agent forgot it)', () => ids('after').length === 1 && ids('before').length === 0, 40_000, 50);
      await b2.close();
    } finally {
      await consul.kill();
    }
  });

  it('follows an etcd that restarts, with changes made while it was down applied', async () => {
    const etcd = privateEtcd(18800);
    await etcd.start();
    try {
      const uri = `etcd://${etcd.endpoint}/wr`;
      const { w, ids } = follow(uri);
      await w.first();
      const b = createBackend(uri, { ttl: 0 });
      await b.register(inst('one', 'one:1'));
      await waitFor('one seen', () => ids('one').length === 1, 10_000, 20);
      await etcd.kill('SIGKILL');
      await etcd.start();
      await b.register(inst('two', 'two:1'));
      await waitFor('two seen after restart', () => ids('two').length === 1 && ids('one').length === 1, 40_000, 50);
      await b.close();
    } finally {
      await etcd.kill();
      etcd.cleanup();
    }
  });
});
