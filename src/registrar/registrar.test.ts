import { afterEach, describe, it, expect } from 'vitest';
import { silentLogger } from '../log/logger.js';
import type { ServiceInstance } from '../model/service-instance.js';
import { MemoryBackend, MemoryStore } from '../registry/memory-backend.js';
import { RejectedError, type HeartbeatResult, type RegistryBackend } from '../registry/types.js';
import { Registrar, type RegistrarOptions } from './registrar.js';

const HOST = 'node-1';
const OTHER_HOST = 'node-2';

/** One service instance as the Docker source would produce it for `container`. */
function instance(container: string, port = 80, overrides: Partial<ServiceInstance> = {}): ServiceInstance {
  return {
    id: `${HOST}:${container}:${port}`,
    name: container.replace(/\d+$/, ''),
    address: '192.168.1.10',
    port: 32000 + port,
    protocol: 'tcp',
    tags: [],
    meta: {},
    host: HOST,
    status: 'passing',
    ...overrides,
  };
}

/**
 * Wraps a backend to count calls and inject failures: `fail.register = 2` makes the next two
 * register calls throw a connection error, `down = true` makes every call but close() throw,
 * and `reject` makes register refuse matching instances with a RejectedError.
 */
class FlakyBackend implements RegistryBackend {
  readonly description = 'flaky+memory://x';
  readonly calls = { register: [] as string[], deregister: [] as string[], listOwn: 0, heartbeat: 0 };
  readonly fail = { register: 0, deregister: 0 };
  down = false;
  reject: (s: ServiceInstance) => boolean = () => false;

  constructor(private readonly inner: RegistryBackend) {}

  private failIfDown(op?: keyof FlakyBackend['fail']): void {
    if (this.down) throw new Error('connection refused');
    if (op && this.fail[op] > 0) {
      this.fail[op]--;
      throw new Error('connection refused');
    }
  }

  async ping(): Promise<void> {
    this.failIfDown();
    await this.inner.ping();
  }

  async register(s: ServiceInstance): Promise<void> {
    this.calls.register.push(s.id);
    if (this.reject(s)) throw new RejectedError(`invalid check for ${s.id}`);
    this.failIfDown('register');
    await this.inner.register(s);
  }

  async deregister(s: ServiceInstance): Promise<void> {
    this.calls.deregister.push(s.id);
    this.failIfDown('deregister');
    await this.inner.deregister(s);
  }

  async heartbeat(instances: ServiceInstance[]): Promise<HeartbeatResult> {
    this.calls.heartbeat++;
    this.failIfDown();
    return this.inner.heartbeat(instances);
  }

  async list(): Promise<ServiceInstance[]> {
    this.failIfDown();
    return this.inner.list();
  }

  async listOwn(host: string): Promise<ServiceInstance[]> {
    this.calls.listOwn++;
    this.failIfDown();
    return this.inner.listOwn(host);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

const running: Registrar[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.stop(false);
});

interface Setup {
  store: MemoryStore;
  backend: FlakyBackend;
  registrar: Registrar;
}

/** A registrar on a fresh memory store behind a FlakyBackend; not started. */
function setup(opts: Partial<RegistrarOptions> = {}, ttl = 30, prepopulate: ServiceInstance[] = []): Setup {
  const store = new MemoryStore();
  for (const s of prepopulate) store.put(s, 0);
  const backend = new FlakyBackend(new MemoryBackend(store, 'x', { ttl }));
  const registrar = new Registrar(backend, {
    hostname: HOST,
    ttlRefreshMs: 0,
    cleanup: false,
    retryIntervalMs: 20,
    maxRetryMs: 200,
    log: silentLogger(),
    ...opts,
  });
  running.push(registrar);
  return { store, backend, registrar };
}

/** Polls `cond` every 10 ms; fails the test after `timeoutMs`. */
async function waitFor(what: string, cond: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ids = (list: ServiceInstance[]) => list.map((s) => s.id).sort();
const count = (list: string[], id: string) => list.filter((x) => x === id).length;

describe('Registrar: desired state', () => {
  it('set registers and an empty set withdraws', async () => {
    const { store, registrar } = setup();
    registrar.start();
    const web = instance('web1');
    registrar.set('web1', [web]);
    await registrar.settled();
    expect(store.list()).toEqual([web]);
    expect(registrar.current()).toEqual([web]);
    expect(registrar.status).toMatchObject({ registryUp: true, registered: 1 });

    registrar.set('web1', [], 'die');
    await registrar.settled();
    expect(store.list()).toEqual([]);
    expect(registrar.current()).toEqual([]);
    expect(registrar.status.registered).toBe(0);
  });

  it('set replaces the instances of one owner only', async () => {
    const { store, registrar } = setup();
    registrar.start();
    registrar.set('web1', [instance('web1', 80), instance('web1', 443)]);
    registrar.set('db1', [instance('db1', 5432)]);
    await registrar.settled();
    registrar.set('web1', [instance('web1', 443)]);
    await registrar.settled();
    expect(ids(store.list())).toEqual([`${HOST}:db1:5432`, `${HOST}:web1:443`]);
  });

  it('replaceAll registers everything and withdraws owners not present', async () => {
    const { store, registrar } = setup();
    registrar.start();
    registrar.replaceAll(new Map([
      ['web1', [instance('web1')]],
      ['db1', [instance('db1', 5432)]],
    ]));
    await registrar.settled();
    expect(ids(store.list())).toEqual([`${HOST}:db1:5432`, `${HOST}:web1:80`]);

    registrar.replaceAll(new Map([
      ['db1', [instance('db1', 5432)]],
      ['cache1', []],
    ]));
    await registrar.settled();
    expect(ids(store.list())).toEqual([`${HOST}:db1:5432`]);
  });

  it('does not register an unchanged instance again', async () => {
    const { backend, registrar } = setup();
    registrar.start();
    const web = instance('web1');
    registrar.set('web1', [web]);
    await registrar.settled();
    registrar.set('web1', [{ ...web, meta: {} }]);
    registrar.replaceAll(new Map([['web1', [{ ...web }]]]));
    await registrar.settled();
    expect(backend.calls.register).toEqual([web.id]);
  });

  it('registers a changed instance again', async () => {
    const { store, backend, registrar } = setup();
    registrar.start();
    const web = instance('web1');
    registrar.set('web1', [web]);
    await registrar.settled();
    const moved = { ...web, port: 40000, tags: ['v2'] };
    registrar.set('web1', [moved]);
    await registrar.settled();
    expect(store.list()).toEqual([moved]);
    expect(count(backend.calls.register, web.id)).toBe(2);
  });

  it('withdraws the old registration before registering a renamed service', async () => {
    const { store, backend, registrar } = setup();
    registrar.start();
    const web = instance('web1');
    registrar.set('web1', [web]);
    await registrar.settled();
    registrar.set('web1', [{ ...web, name: 'frontend' }]);
    await registrar.settled();
    expect(store.list().map((s) => [s.id, s.name])).toEqual([[web.id, 'frontend']]);
    expect(backend.calls.deregister).toEqual([web.id]);
  });

  it('keeps the first owner of a duplicate ID; the second takes over when the first leaves', async () => {
    const { store, registrar } = setup();
    registrar.start();
    const first = instance('a1', 80, { id: 'shared' });
    const second = instance('b1', 80, { id: 'shared' });
    registrar.set('a1', [first]);
    registrar.set('b1', [second]);
    await registrar.settled();
    expect(store.list()).toEqual([first]);

    registrar.set('a1', []);
    await registrar.settled();
    expect(store.list()).toEqual([second]);
  });
});

describe('Registrar: cleanup on start', () => {
  const ownStale = instance('old1', 80);
  const ownWanted = instance('web1', 80, { port: 1 });
  const foreign = instance('other1', 80, { id: `${OTHER_HOST}:other1:80`, host: OTHER_HOST });

  async function startWith(cleanup: boolean) {
    const s = setup({ cleanup }, 30, [ownStale, ownWanted, foreign]);
    s.registrar.start();
    s.registrar.replaceAll(new Map([['web1', [instance('web1', 80)]]]));
    await s.registrar.settled();
    return s;
  }

  it('with cleanup, removes this host\'s stale registrations but not other hosts\'', async () => {
    const { store } = await startWith(true);
    expect(store.list().map((s) => [s.id, s.port])).toEqual([
      [foreign.id, foreign.port],
      [`${HOST}:web1:80`, 32080],
    ]);
  });

  it('without cleanup, leaves stale registrations alone', async () => {
    const { store, backend } = await startWith(false);
    expect(ids(store.list())).toEqual(ids([foreign, ownStale, ownWanted]));
    expect(store.list().find((s) => s.id === ownWanted.id)?.port).toBe(32080);
    expect(backend.calls.deregister).toEqual([]);
  });
});

describe('Registrar: heartbeat', () => {
  it('registers again an entry that disappeared from the registry', async () => {
    const { store, backend, registrar } = setup({ ttlRefreshMs: 50 });
    const web = instance('web1');
    const db = instance('db1', 5432);
    registrar.set('web1', [web]);
    registrar.set('db1', [db]);
    registrar.start();
    await registrar.settled();
    expect(ids(store.list())).toEqual(ids([db, web]));

    store.delete(web.id);
    expect(ids(store.list())).toEqual([db.id]);
    await waitFor('web1 registered again', () => store.list().some((s) => s.id === web.id));
    expect(store.list()).toEqual([db, web]);
    expect(backend.calls.heartbeat).toBeGreaterThan(0);
    expect(count(backend.calls.register, web.id)).toBe(2);
    expect(count(backend.calls.register, db.id)).toBe(1);
  });

  it('keeps registrations with a TTL alive', async () => {
    const { store, registrar } = setup({ ttlRefreshMs: 100 }, 1);
    registrar.set('web1', [instance('web1')]);
    registrar.start();
    await registrar.settled();
    await sleep(1_300);
    expect(ids(store.list())).toEqual([`${HOST}:web1:80`]);
  });
});

describe('Registrar: failures', () => {
  it('retries a failing register with backoff and ends registered', async () => {
    const { store, backend, registrar } = setup();
    backend.fail.register = 3;
    const web = instance('web1');
    registrar.start();
    registrar.set('web1', [web]);
    await registrar.settled();
    expect(registrar.status.registryUp).toBe(false);
    expect(registrar.status.lastError).toBe('connection refused');

    await waitFor('web1 registered after retries', () => store.list().length === 1);
    expect(store.list()).toEqual([web]);
    expect(count(backend.calls.register, web.id)).toBe(4);
    await waitFor('registry reported up', () => registrar.status.registryUp);
    expect(registrar.status.registered).toBe(1);
  });

  it('after a failure, lists the registry again and registers every current service again', async () => {
    const { store, backend, registrar } = setup();
    registrar.start();
    const web = instance('web1');
    registrar.set('web1', [web]);
    await registrar.settled();
    const listsBefore = backend.calls.listOwn;

    backend.fail.register = 1;
    store.delete(web.id); // the registry lost it during the outage
    registrar.set('db1', [instance('db1', 5432)]);
    await waitFor('both registered', () => store.list().length === 2);
    expect(backend.calls.listOwn).toBeGreaterThan(listsBefore);
    expect(count(backend.calls.register, web.id)).toBe(2);
  });

  it('does not retry a registration the registry rejected; a changed instance is tried again', async () => {
    const { store, backend, registrar } = setup();
    backend.reject = (s) => s.id === `${HOST}:bad1:80`;
    registrar.start();
    const bad = instance('bad1');
    const good = instance('web1');
    registrar.set('bad1', [bad]);
    registrar.set('web1', [good]);
    await registrar.settled();
    expect(store.list()).toEqual([good]);
    expect(registrar.status.registryUp).toBe(true);

    // More work and more time (several retry intervals) do not bring the rejected one back.
    registrar.set('db1', [instance('db1', 5432)]);
    await registrar.settled();
    await sleep(150);
    await registrar.settled();
    expect(count(backend.calls.register, bad.id)).toBe(1);
    expect(registrar.current().map((s) => s.id)).not.toContain(bad.id);

    registrar.set('bad1', [{ ...bad, port: 40000 }]);
    await registrar.settled();
    expect(count(backend.calls.register, bad.id)).toBe(2);
    expect(ids(store.list())).toEqual([`${HOST}:db1:5432`, good.id]);
  });

  it('keeps retrying while the registry is down and registers once it is back', async () => {
    const { store, backend, registrar } = setup();
    backend.down = true;
    registrar.start();
    registrar.set('web1', [instance('web1')]);
    await waitFor('a few failed attempts', () => backend.calls.listOwn >= 3);
    expect(registrar.status.registryUp).toBe(false);
    expect(store.list()).toEqual([]);

    backend.down = false;
    await waitFor('web1 registered', () => store.list().length === 1);
    await waitFor('registry reported up', () => registrar.status.registryUp);
  });

  // Without --cleanup, what this process registered itself must still be withdrawn after an
  // outage, even though the full resync forgets what it believed was registered.
  it('withdraws, once the registry answers again, a service whose withdrawal failed', async () => {
    const { store, backend, registrar } = setup();
    registrar.start();
    const web = instance('web1');
    const db = instance('db1', 5432);
    registrar.set('web1', [web]);
    registrar.set('db1', [db]);
    await registrar.settled();

    backend.fail.deregister = 1;
    registrar.set('web1', [], 'die');
    await registrar.settled();
    expect(registrar.status.registryUp).toBe(false);

    await waitFor('registry reported up', () => registrar.status.registryUp);
    await registrar.settled();
    // web1's container is gone: its registration must not outlive the outage.
    await waitFor('web1 withdrawn after the outage', () => !store.list().some((s) => s.id === web.id), 1_000);
    expect(store.list()).toEqual([db]);
  });

  it('withdraws, once the registry answers again, a service whose container stopped during the outage', async () => {
    const { store, backend, registrar } = setup();
    registrar.start();
    const web = instance('web1');
    const db = instance('db1', 5432);
    registrar.set('web1', [web]);
    registrar.set('db1', [db]);
    await registrar.settled();

    backend.down = true;
    registrar.set('web1', [], 'die');
    await waitFor('a failed attempt', () => !registrar.status.registryUp);
    backend.down = false;

    await waitFor('registry reported up', () => registrar.status.registryUp);
    await registrar.settled();
    await waitFor('web1 withdrawn after the outage', () => !store.list().some((s) => s.id === web.id), 1_000);
    expect(store.list()).toEqual([db]);
  });
});

describe('Registrar: stop', () => {
  async function withTwoOwners() {
    const s = setup({ ttlRefreshMs: 50 });
    s.registrar.start();
    s.registrar.set('web1', [instance('web1', 80), instance('web1', 443)]);
    s.registrar.set('db1', [instance('db1', 5432)]);
    await s.registrar.settled();
    expect(s.store.list()).toHaveLength(3);
    return s;
  }

  it('stop(true) withdraws everything', async () => {
    const { store, registrar } = await withTwoOwners();
    await registrar.stop(true);
    expect(store.list()).toEqual([]);
    expect(registrar.current()).toEqual([]);
  });

  it('stop(false) leaves the registrations to their TTL', async () => {
    const { store, registrar } = await withTwoOwners();
    await registrar.stop(false);
    expect(store.list()).toHaveLength(3);
  });

  it('ignores changes after stop', async () => {
    const { store, backend, registrar } = await withTwoOwners();
    await registrar.stop(false);
    const registers = backend.calls.register.length;
    registrar.set('cache1', [instance('cache1', 6379)]);
    await registrar.settled();
    await sleep(120);
    expect(store.list()).toHaveLength(3);
    expect(backend.calls.register).toHaveLength(registers);
  });
});
