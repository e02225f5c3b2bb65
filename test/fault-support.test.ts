// The fault-injection support itself, against real things: proxies in front of an echo server,
// etcd, the Docker socket and Consul; frozen and ACL-restricted private registries; bulk
// foreign entries; the registry observer.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { ConsecutiveBreaker, circuitBreaker, handleWhen, noop } from 'cockatiel';
import { Etcd3, type IOptions, isRecoverableError } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { docker, DOCKER_SOCKET, removeContainers, run } from './support/docker.js';
import { FaultProxy } from './support/fault-proxy.js';
import { HttpFaultProxy } from './support/http-fault-proxy.js';
import { measure, observeConsul, observeConsulHealth, observeEtcd, observeEtcd2, reportFault } from './support/observer.js';
import { consulGet, ETCD_ENDPOINT, fillEtcd, fillEtcd2, privateConsul, privateConsulAcl, privateEtcd, REGISTRATOR_POLICY } from './support/registries.js';
import { sleep, uniq, waitFor } from './support/wait.js';

afterAll(async () => {
  await removeContainers('hmf-');
});

/**
 * The etcd3 client's default circuit breaker stays open 5 s after a failure, which would hide
 * both the fault and the recovery: a short one, as harbormaster uses, shows them.
 */
const quickBreaker: IOptions['faultHandling'] = {
  host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 300, breaker: new ConsecutiveBreaker(3) }),
  global: noop,
};

/** Settles with what happened within `ms`: the value, the error, or 'pending'. */
async function within<T>(p: Promise<T>, ms: number): Promise<{ value?: T; error?: Error; pending?: true }> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<{ pending: true }>((r) => (timer = setTimeout(() => r({ pending: true }), ms)));
  try {
    return await Promise.race([p.then((value) => ({ value }), (error: Error) => ({ error })), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A raw TCP client that records what it receives and how it ended. */
class Probe {
  readonly socket: net.Socket;
  data = '';
  closed = false;
  error?: NodeJS.ErrnoException;
  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.setEncoding('utf8').on('data', (d: string) => (this.data += d));
    this.socket.on('error', (e) => (this.error = e));
    this.socket.on('close', () => (this.closed = true));
    onTestFinished(() => void this.socket.destroy());
  }

  /** Send, forgetting what came before. */
  send(text: string): void {
    this.data = '';
    this.socket.write(text);
  }

  async echo(text: string, timeoutMs = 3000): Promise<number> {
    const t0 = Date.now();
    this.send(text);
    await waitFor(`echo of ${text}`, () => this.data === text, timeoutMs, 10);
    return Date.now() - t0;
  }
}

describe('FaultProxy', () => {
  it('forwards, delays, black-holes, cuts and resets a TCP connection', async () => {
    // The echo server's sockets get RSTs too: their errors are expected.
    const echo = net.createServer((s) => s.on('error', () => undefined).pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const proxy = await FaultProxy.start({ host: '127.0.0.1', port: (echo.address() as net.AddressInfo).port });
    onTestFinished(async () => {
      await proxy.close();
      echo.close();
    });
    expect(proxy.address).toBe(`127.0.0.1:${proxy.port}`);

    const a = new Probe(proxy.port);
    expect(await a.echo('hello')).toBeLessThan(500);
    expect(proxy.stats()).toMatchObject({ accepted: 1, open: 1 });

    proxy.delay(300);
    // Delayed on the way there and on the way back.
    expect(await a.echo('slow')).toBeGreaterThanOrEqual(580);

    proxy.blackhole();
    a.send('lost');
    const b = new Probe(proxy.port);
    await waitFor('second connection accepted', () => proxy.stats().accepted === 2);
    await sleep(400);
    expect(a.data).toBe('');
    expect(a.closed || b.closed).toBe(false);
    expect(proxy.stats()).toMatchObject({ open: 2, dropped: 4 });

    // `a` lost bytes, so it is closed on pass; `b` sent nothing and carries on.
    proxy.pass();
    await waitFor('black-holed connection closed', () => a.closed);
    expect(await b.echo('after')).toBeLessThan(500);

    proxy.blackhole({ hold: true });
    b.send('held');
    await sleep(300);
    expect(b.data).toBe('');
    proxy.pass();
    await waitFor('held bytes delivered', () => b.data === 'held', 2000, 10);

    proxy.cut();
    await waitFor('open connection cut', () => b.closed);
    const c = new Probe(proxy.port);
    await waitFor('new connection closed at once', () => c.closed, 2000, 10);
    expect(c.data).toBe('');
    expect(proxy.stats().refused).toBe(1);

    proxy.pass();
    const d = new Probe(proxy.port);
    await d.echo('again');
    proxy.reset();
    await waitFor('reset seen', () => d.closed, 2000, 10);
    expect(d.error?.code).toBe('ECONNRESET');
    expect(proxy.stats().open).toBe(0);
  });

  it('carries an etcd3 (gRPC) client: works, fails under blackhole and cut, recovers after pass', async () => {
    const proxy = await FaultProxy.start({ host: '127.0.0.1', port: 2379 });
    const client = new Etcd3({ hosts: `http://${proxy.address}`, dialTimeout: 2000, faultHandling: quickBreaker });
    const prefix = `/${uniq('hmf-proxy')}`;
    onTestFinished(async () => {
      client.close();
      await proxy.close();
      const direct = new Etcd3({ hosts: `http://${ETCD_ENDPOINT}` });
      await direct.delete().prefix(prefix).exec();
      direct.close();
    });
    const put = (k: string, ms = 1000) => client.put(`${prefix}/${k}`).value('v').options({ deadline: Date.now() + ms }).exec();

    await put('a');
    expect(await client.get(`${prefix}/a`).string()).toBe('v');
    // A watch stream through the proxy sees a write made directly to etcd.
    const watcher = await client.watch().prefix(`${prefix}/w`).create();
    const seen = new Promise<string>((r) => watcher.on('put', (kv) => r(kv.key.toString())));
    const direct = new Etcd3({ hosts: `http://${ETCD_ENDPOINT}` });
    await direct.put(`${prefix}/w1`).value('x');
    direct.close();
    expect((await within(seen, 3000)).value).toBe(`${prefix}/w1`);
    await watcher.cancel();

    proxy.blackhole();
    const hole = await within(put('b'), 3000);
    expect(hole.error?.message ?? '').toMatch(/deadline|timed? ?out|unavailable/i);
    proxy.cut();
    const t0 = Date.now();
    const cut = await within(put('c', 2000), 4000);
    expect(cut.error).toBeDefined();
    console.log(`etcd3 put under cut failed after ${Date.now() - t0} ms: ${cut.error?.message}`);

    proxy.pass();
    const t1 = Date.now();
    await waitFor('etcd3 client back', () => put('d').then(() => true), 20_000, 200);
    console.log(`etcd3 client recovered ${Date.now() - t1} ms after pass()`);
    expect(await client.get(`${prefix}/d`).string()).toBe('v');
  });
  it('carries HTTP and a long-lived Docker event stream to a unix socket; reset breaks the stream', async () => {
    const proxy = await FaultProxy.start({ socketPath: DOCKER_SOCKET });
    onTestFinished(() => proxy.close());
    expect(await (await fetch(`http://${proxy.address}/_ping`)).text()).toBe('OK');
    const api = new Docker({ host: '127.0.0.1', port: proxy.port, protocol: 'http' });
    const name = uniq('hmf-tcp');
    const stream = await api.getEvents({ filters: { container: [name] } });
    let text = '';
    let broken = false;
    stream.on('data', (d: Buffer) => (text += d.toString()));
    stream.on('error', () => (broken = true));
    stream.on('close', () => (broken = true));
    await run(name, { publish: [] });
    await waitFor('start event through the TCP proxy', () => /"(status|Action)":"start"/.test(text), 15_000);
    proxy.reset();
    await waitFor('stream broken by the reset', () => broken, 3000, 10);
    expect(proxy.stats().open).toBe(0);
    // New connections still pass after a reset.
    expect((await api.listContainers({ filters: { name: [name] } })).map((c) => c.Names[0])).toEqual([`/${name}`]);
    await docker('rm', '-f', name);
  });
});

describe('HttpFaultProxy', () => {
  it('sits in front of the Docker socket: lists, streams events, injects raw lines, hangs, answers 429, cuts streams', async () => {
    const proxy = await HttpFaultProxy.start({ socketPath: DOCKER_SOCKET });
    onTestFinished(() => proxy.close());
    const api = new Docker({ host: '127.0.0.1', port: proxy.port, protocol: 'http' });
    expect(Array.isArray(await api.listContainers())).toBe(true);

    const name = uniq('hmf-ev');
    const stream = await api.getEvents({ filters: { container: [name] } });
    const chunks: Buffer[] = [];
    let ended = false;
    stream.on('data', (d: Buffer) => chunks.push(d));
    stream.on('error', () => (ended = true));
    stream.on('close', () => (ended = true));
    stream.on('end', () => (ended = true));
    const text = () => Buffer.concat(chunks).toString('utf8');
    await waitFor('events stream open', () => proxy.streams(/^\/events/).length === 1);

    await run(name, { publish: [] });
    await waitFor('start event through the proxy', () => /"(status|Action)":"start"/.test(text()), 15_000);

    expect(proxy.inject('null\n', /^\/events/)).toBe(1);
    proxy.inject('garbage\n', /^\/events/);
    proxy.inject('{"Type":"container"}\n', /^\/events/);
    // A valid event whose name is cut in the middle of "ä" (0xC3 0xA4), sent as two chunks.
    const event = Buffer.from(`${JSON.stringify({ Type: 'container', Action: 'start', Actor: { ID: 'f'.repeat(64), Attributes: { name: 'nämé-ü' } }, time: 1 })}\n`);
    const split = event.indexOf(Buffer.from('ä')) + 1;
    proxy.inject(event.subarray(0, split), /^\/events/);
    await sleep(50);
    proxy.inject(event.subarray(split), /^\/events/);
    await waitFor('injected lines', () => text().includes('nämé-ü'), 3000, 10);
    expect(text()).toContain('null\ngarbage\n{"Type":"container"}\n');
    // The client really got the halves apart: one chunk ends inside the character.
    expect(chunks.some((c) => c.at(-1) === 0xc3)).toBe(true);

    // An inspect hangs until released, then is forwarded.
    const rule = proxy.hang({ method: 'GET', path: /^\/containers\/[^/]+\/json/ });
    const t0 = Date.now();
    const inspect = api.getContainer(name).inspect();
    expect((await within(inspect, 600)).pending).toBe(true);
    expect(proxy.hungCount).toBe(1);
    expect(proxy.releaseHung()).toBe(1);
    expect((await inspect).Name).toBe(`/${name}`);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(600);
    expect(rule.hits).toBe(1);
    rule.remove();

    const limit = proxy.respond(/^\/containers\/json/, 429, { message: 'rate limit exceeded' }, { times: 1 });
    const limited = await within(api.listContainers(), 3000);
    expect((limited.error as Error & { statusCode?: number })?.statusCode).toBe(429);
    expect(limited.error?.message).toContain('rate limit exceeded');
    expect(Array.isArray(await api.listContainers())).toBe(true);
    expect(limit.hits).toBe(1);

    await docker('rm', '-f', name);
    await waitFor('destroy event through the proxy', () => /"(status|Action)":"destroy"/.test(text()), 15_000);
    expect(proxy.cutStreams(/^\/events/)).toBe(1);
    await waitFor('client sees the stream end', () => ended, 3000, 10);

    const log = proxy.requests(/^\/containers\/json/).map((e) => [e.outcome, e.status]);
    expect(log).toEqual([['forwarded', 200], ['responded', 429], ['forwarded', 200]]);
    expect(proxy.requests(/^\/events/)[0].outcome).toBe('destroyed');
  });

  it('sits in front of Consul: answers 429 to registrations, delays, passes blocking queries through and cuts them', async () => {
    const proxy = await HttpFaultProxy.start({ host: '127.0.0.1', port: 8500 });
    const id = uniq('hmf-consul');
    onTestFinished(async () => {
      await proxy.close();
      await fetch(`http://127.0.0.1:8500/v1/agent/service/deregister/${id}`, { method: 'PUT' });
    });
    const register = () => fetch(`${proxy.url}/v1/agent/service/register`, { method: 'PUT', body: JSON.stringify({ ID: id, Name: 'hmf-consul', Port: 1 }) });

    const rule = proxy.respond({ method: 'PUT', path: /^\/v1\/agent\/service\/register/ }, 429, 'rate limit exceeded');
    const res = await register();
    expect([res.status, await res.text()]).toEqual([429, 'rate limit exceeded']);
    expect((await consulGet<Record<string, unknown>>('/agent/services'))[id]).toBeUndefined();
    rule.remove();
    expect((await register()).status).toBe(200);
    expect((await consulGet<Record<string, unknown>>('/agent/services'))[id]).toBeDefined();
    expect(rule.hits).toBe(1);

    const slow = proxy.delay(/^\/v1\/status\/leader/, 300);
    const t0 = Date.now();
    expect((await fetch(`${proxy.url}/v1/status/leader`)).ok).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    slow.remove();

    // A blocking query waits upstream and comes back through the proxy when the catalog changes.
    const first = await fetch(`${proxy.url}/v1/agent/service/${id}`);
    const hash = first.headers.get('x-consul-contenthash') ?? '';
    expect(hash).not.toBe('');
    const blocked = fetch(`${proxy.url}/v1/agent/service/${id}?hash=${hash}&wait=20s`).then((r) => r.json() as Promise<{ Tags: string[] }>);
    expect((await within(blocked, 500)).pending).toBe(true);
    await fetch(`http://127.0.0.1:8500/v1/agent/service/register`, { method: 'PUT', body: JSON.stringify({ ID: id, Name: 'hmf-consul', Port: 1, Tags: ['changed'] }) });
    expect((await within(blocked, 5000)).value?.Tags).toEqual(['changed']);

    const cutMe = fetch(`${proxy.url}/v1/agent/service/${id}?hash=${(await fetch(`${proxy.url}/v1/agent/service/${id}`)).headers.get('x-consul-contenthash')}&wait=20s`);
    await waitFor('blocking query in flight', () => proxy.streams(/hash=/).length === 1);
    expect(proxy.cutStreams(/hash=/)).toBe(1);
    expect((await within(cutMe, 3000)).error).toBeDefined();
  });
});

describe('private registries', () => {
  const etcd = privateEtcd(19379);
  beforeAll(() => etcd.start());
  afterAll(async () => {
    await etcd.kill();
    etcd.cleanup();
  });

  it('freezes and thaws a daemon: requests time out while paused and work after resume', async () => {
    const client = new Etcd3({ hosts: `http://${etcd.endpoint}`, dialTimeout: 1000, faultHandling: quickBreaker });
    onTestFinished(() => client.close());
    expect(etcd.running).toBe(true);
    expect(etcd.pid).toBeGreaterThan(0);
    await client.put('/pause/a').value('1');

    etcd.pause();
    expect(etcd.paused).toBe(true);
    const frozen = await within(client.get('/pause/a').options({ deadline: Date.now() + 1000 }).string(), 3000);
    expect(frozen.error).toBeDefined();
    const health = await within(fetch(`http://${etcd.endpoint}/health`, { signal: AbortSignal.timeout(1000) }), 3000);
    expect(health.error).toBeDefined();

    etcd.resume();
    const t0 = Date.now();
    expect(await waitFor('etcd answers again', () => client.get('/pause/a').options({ deadline: Date.now() + 1000 }).string(), 15_000, 100)).toBe('1');
    console.log(`etcd3 client answered ${Date.now() - t0} ms after SIGCONT`);

    // Killing a paused daemon does not hang, and leaves no stopped process behind.
    etcd.pause();
    const pid = etcd.pid!;
    await etcd.kill();
    expect(etcd.running).toBe(false);
    expect(() => process.kill(pid, 0)).toThrow();
    await etcd.start();
  });

  it('writes 50,000 foreign entries through v3 and v2, and an observer polls past them', async () => {
    const v3 = await fillEtcd(etcd.endpoint, '/bulk3', 50_000);
    console.log(`fillEtcd: 50000 keys in ${v3.ms} ms`);
    const client = new Etcd3({ hosts: `http://${etcd.endpoint}` });
    onTestFinished(() => client.close());
    expect(await client.getAll().prefix('/bulk3/').count()).toBe(50_000);

    const v2 = await fillEtcd2(etcd.endpoint, '/bulk2', 50_000);
    console.log(`fillEtcd2: 50000 keys in ${v2.ms} ms`);
    const list = (await (await fetch(`http://${etcd.endpoint}/v2/keys/bulk2/foreign-svc-7`)).json()) as { node: { nodes: unknown[] } };
    expect(list.node.nodes).toHaveLength(1000);

    // Our host's entries among the foreign ones; the index keys under _hosts are not instances.
    const inst = (id: string, port: number) => JSON.stringify({ id, name: 'web', address: '127.0.0.1', port, host: 'me' });
    await client.put('/bulk3/web/me:a:80').value(inst('me:a:80', 1001));
    await client.put('/bulk3/web/me:b:80').value(inst('me:b:80', 1002));
    await client.put('/bulk3/_hosts/me/web/me:a:80').value(inst('me:a:80', 1001));
    await fetch(`http://${etcd.endpoint}/v2/keys/bulk2/web/me:a:80`, { method: 'PUT', body: new URLSearchParams({ value: inst('me:a:80', 1001) }) });
    await fetch(`http://${etcd.endpoint}/v2/keys/bulk2/_hosts/me/x`, { method: 'PUT', body: new URLSearchParams({ value: inst('me:a:80', 1001) }) });

    const o3 = observeEtcd({ endpoint: etcd.endpoint, prefix: '/bulk3', host: 'me' });
    const o2 = observeEtcd2({ endpoint: etcd.endpoint, prefix: '/bulk2', host: 'me' });
    const s3 = await o3.waitFor((ids) => ids.size === 2, 10_000);
    const s2 = await o2.waitFor((ids) => ids.size === 1, 10_000);
    // The same instance a second time under another key: a duplicate.
    await client.put('/bulk3/web-old/me:a:80').value(inst('me:a:80', 1001));
    const dup = await o3.waitFor((_, s) => s.entries.length === 3, 10_000);
    await Promise.all([o3.stop(), o2.stop()]);
    const polls = o3.samples.length > 1 ? (o3.samples.at(-1)!.t - o3.samples[0].t) / (o3.samples.length - 1) : 0;
    console.log(`observer over 50000 foreign v3 keys: one sample every ${Math.round(polls)} ms`);

    expect(s3.entries.map((e) => e.key).sort()).toEqual(['/bulk3/web/me:a:80', '/bulk3/web/me:b:80']);
    expect(s2.ids).toEqual(['me:a:80']);
    expect(measure(new Set(['me:a:80', 'me:b:80']), s3.entries)).toEqual({ lost: 0, duplicated: 0, leftBehind: 0 });
    expect(measure(new Set(['me:a:80', 'me:b:80']), dup.entries)).toEqual({ lost: 0, duplicated: 1, leftBehind: 0 });
    expect(measure(new Set(['me:a:80', 'me:c:80']), new Map(dup.entries.map((e) => [e.key, e.id])))).toEqual({ lost: 1, duplicated: 1, leftBehind: 1 });
    // Two IDs on one address:port count as a duplicate as well.
    expect(measure(new Set(['x', 'y']), [{ key: 'x', id: 'x', address: '10.0.0.1', port: 80 }, { key: 'y', id: 'y', address: '10.0.0.1', port: 80 }]))
      .toEqual({ lost: 0, duplicated: 1, leftBehind: 0 });
  });

  it('takes a registrator policy away from a Consul ACL token and gives it back', async () => {
    const consul = privateConsulAcl(19500);
    await consul.start();
    onTestFinished(() => consul.kill());
    await consul.createPolicy('registrator', REGISTRATOR_POLICY);
    const token = await consul.createToken(['registrator']);
    const register = async (secret?: string) => (await fetch(`http://127.0.0.1:${consul.httpPort}/v1/agent/service/register`, {
      method: 'PUT',
      headers: secret ? { 'X-Consul-Token': secret } : {},
      body: JSON.stringify({ ID: 'acl-1', Name: 'acl', Port: 1, Check: { CheckID: 'acl-1-ttl', TTL: '30s' } }),
    })).status;

    expect(await register(token.secretId)).toBe(200);
    expect(await register()).toBe(403);
    const checkPass = await fetch(`http://127.0.0.1:${consul.httpPort}/v1/agent/check/pass/acl-1-ttl`, { method: 'PUT', headers: { 'X-Consul-Token': token.secretId } });
    expect(checkPass.status).toBe(200);

    await consul.setTokenPolicies(token.accessorId, []);
    let t0 = Date.now();
    await waitFor('403 once the policy is gone', async () => (await register(token.secretId)) === 403, 60_000, 50);
    const revoke = Date.now() - t0;
    await consul.setTokenPolicies(token.accessorId, ['registrator']);
    t0 = Date.now();
    await waitFor('200 once the policy is back', async () => (await register(token.secretId)) === 200, 60_000, 50);
    const restore = Date.now() - t0;
    console.log(`Consul ACL token change took effect: policy removed ${revoke} ms, restored ${restore} ms`);
    const self = await consul.api<{ Policies: { Name: string }[] }>('GET', '/acl/token/self', undefined, token.secretId);
    expect(self.Policies.map((p) => p.Name)).toEqual(['registrator']);
  });

  it('observes a Consul agent and its health view: gaps where a service was missing', async () => {
    const consul = privateConsul(19600);
    await consul.start();
    onTestFinished(() => consul.kill());
    const HOST = 'hmf-obs';
    const base = `http://127.0.0.1:${consul.httpPort}/v1/agent/service`;
    const register = (id: string, port: number) => fetch(`${base}/register`, { method: 'PUT', body: JSON.stringify({ ID: id, Name: 'obs', Address: '127.0.0.1', Port: port, Meta: { hm_host: HOST } }) });
    await register('obs-a', 2001);
    await register('obs-b', 2002);
    await fetch(`${base}/register`, { method: 'PUT', body: JSON.stringify({ ID: 'other', Name: 'obs', Port: 2003, Meta: { hm_host: 'elsewhere' } }) });

    const agent = observeConsul({ port: consul.httpPort, host: HOST });
    const health = observeConsulHealth({ port: consul.httpPort, service: 'obs', host: HOST, waitS: 2 });
    onTestFinished(() => Promise.all([agent.stop(), health.stop()]).then(() => undefined));
    await agent.waitFor((ids) => ids.has('obs-a') && ids.has('obs-b'));
    await health.waitFor((ids) => ids.has('obs-a') && ids.has('obs-b'));
    const t0 = Date.now();

    await fetch(`${base}/deregister/obs-a`, { method: 'PUT' });
    await agent.waitFor((ids) => !ids.has('obs-a'));
    await health.waitFor((ids) => !ids.has('obs-a'));
    await sleep(500);
    await register('obs-a', 2001);
    await agent.waitFor((ids) => ids.has('obs-a'));
    await health.waitFor((ids) => ids.has('obs-a'));
    const converge = Date.now() - t0;
    await sleep(300);
    await Promise.all([agent.stop(), health.stop()]);

    for (const obs of [agent, health]) {
      const gaps = obs.gaps(['obs-a', 'obs-b']);
      expect(gaps.map((g) => g.id)).toEqual(['obs-a']);
      expect(gaps[0].to).toBeDefined();
      expect(gaps[0].ms).toBeGreaterThanOrEqual(400);
      expect(gaps[0].ms).toBeLessThan(3000);
      expect(obs.samples.every((s) => !s.ids.includes('other'))).toBe(true);
    }
    // Blocking queries answer on changes: few samples, each with a growing index.
    const indexes = health.samples.map((s) => s.index ?? 0);
    expect(indexes.every((x, i) => i === 0 || x >= indexes[i - 1])).toBe(true);
    expect(agent.samples.length).toBeGreaterThan(health.samples.length);
    expect(agent.gaps(['obs-never-there'], { afterFirstSeen: true })).toEqual([]);
    expect(agent.gaps(['obs-never-there'])).toHaveLength(1);

    const state = mkdtempSync(join(tmpdir(), 'hm-fault-report-'));
    const before = process.env.HM_TEST_STATE;
    process.env.HM_TEST_STATE = state;
    try {
      const m = measure(new Set(['obs-a', 'obs-b']), agent.latest!.entries);
      const line = reportFault('observer-selftest', { converge, ...m, gaps: agent.gaps(['obs-a', 'obs-b']).length, via: 'agent' });
      expect(line).toMatch(/^FAULT observer-selftest: converge=\d+ms lost=0 duplicated=0 left=0 gaps=1 via=agent$/);
      expect(readFileSync(join(state, 'fault-report.txt'), 'utf8')).toBe(`${line}\n`);
    } finally {
      if (before === undefined) delete process.env.HM_TEST_STATE;
      else process.env.HM_TEST_STATE = before;
      rmSync(state, { recursive: true, force: true });
    }
  });
});
