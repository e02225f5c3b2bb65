// The Docker side under faults, injected between harbormaster and the real Docker API: bad
// event lines, a multibyte character split across chunks, hung and failing inspections, the
// API unreachable while healthchecked containers start, a shutdown while every call hangs,
// HEALTHCHECK exec events during resyncs, and a container restarting in a loop.
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { docker, DOCKER_SOCKET, IMAGE, removeContainers, run } from './support/docker.js';
import { FaultProxy } from './support/fault-proxy.js';
import { spawnHm } from './support/harbormaster.js';
import { HttpFaultProxy, type LoggedRequest } from './support/http-fault-proxy.js';
import { reportFault } from './support/observer.js';
import { etcdRead } from './support/registries.js';
import { converge, idsOf, reader } from './support/scenario.js';
import { sleep, uniq, waitFor } from './support/wait.js';

const SOCKET = DOCKER_SOCKET;
const EVENTS = { path: /^\/events/ };

afterAll(() => removeContainers('fd'));

/** A test host: its unique name, a registrator through `dockerAddr`, and a reader of its etcd prefix. */
function host(tag: string, dockerUri: string, extra: string[] = []) {
  const name = uniq(tag);
  onTestFinished(() => removeContainers(`${name}-`));
  const hm = spawnHm(['register', '--hostname', name, '--ttl', '10', '--ttl-refresh', '2', '--retry-interval', '200', '--docker', dockerUri, ...extra, `etcd://127.0.0.1:2379/${name}`]);
  const r = reader('etcd', '127.0.0.1:2379', `/${name}`, name);
  onTestFinished(() => r.close());
  return { name, hm, r, ids: (...containers: string[]) => idsOf(name, containers.map((c) => `${name}-${c}`)) };
}

async function httpProxy(): Promise<HttpFaultProxy> {
  const p = await HttpFaultProxy.start({ socketPath: SOCKET });
  onTestFinished(() => p.close());
  return p;
}

const svc = { env: { SERVICE_NAME: 'svc' } };

/** Most requests of `reqs` open at the same moment (from the proxy's log: arrival and duration). */
/** The proxy learns of a client's abort and of its next request in whichever order a loaded machine delivers them. */
const OVERLAP_SLACK_MS = 200;

function maxConcurrent(reqs: LoggedRequest[]): number {
  const now = Date.now();
  const edges = reqs
    .flatMap((r) => [[r.time, 1], [r.time + Math.max(1, (r.ms ?? now - r.time) - OVERLAP_SLACK_MS), -1]] as const)
    .sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let open = 0;
  let max = 0;
  for (const [, d] of edges) max = Math.max(max, (open += d));
  return max;
}

/** Exits with code 3 once /tmp/crash exists. */
const CRASHING = ['sh', '-c', 'echo ok >/www/index.html; httpd -p 80 -h /www; while [ ! -f /tmp/crash ]; do sleep 0.2; done; exit 3'];

describe('Docker event stream', () => {
  it('bad event lines (null, garbage, wrong types, a multibyte character split across chunks) never stop the stream or the process', async () => {
    const proxy = await httpProxy();
    const h = host('fdl', `tcp://${proxy.address}`);
    let exited = false;
    void h.hm.exited.then(() => (exited = true));
    await run(`${h.name}-a`, svc);
    await converge(h.r, h.ids('a'), Date.now(), 20_000);
    await waitFor('the event stream through the proxy', () => proxy.streams(EVENTS).length > 0);

    const bad = ['null', 'garbage', '[]', '"text"', '42', '{"Type":"container"}', '{"Type":"container","Action":"start","Actor":null}',
      '{"Type":"container","Action":"start","Actor":{"ID":42}}', '{"Type":"container","Action":"kill","Actor":{"ID":"abcdef012345","Attributes":{"signal":{"x":1}}}}',
      '{"Action":{"a":1},"Actor":{"ID":"abcdef012345"}}', `{"Type":"container","Action":"start","Actor":{"ID":"${'f'.repeat(64)}"}}`];
    for (const line of bad) expect(proxy.inject(`${line}\n`, EVENTS)).toBeGreaterThan(0);

    // A real `stop` event for container a, its bytes split inside a two-byte character.
    const id = await docker('inspect', '-f', '{{.Id}}', `${h.name}-a`);
    const now = Date.now();
    const ev = Buffer.from(`${JSON.stringify({ Type: 'container', Action: 'stop', Actor: { ID: id, Attributes: { name: `${h.name}-a`, note: 'nämé-ü' } }, time: Math.floor(now / 1000), timeNano: now * 1e6 })}\n`);
    const split = ev.indexOf(Buffer.from('ä')) + 1;
    proxy.inject(ev.subarray(0, split), EVENTS);
    await sleep(50);
    proxy.inject(ev.subarray(split), EVENTS);
    const injected = Date.now();
    const m1 = await converge(h.r, new Set(), injected, 10_000);

    // And the stream still delivers Docker's own events.
    const started = Date.now();
    await run(`${h.name}-b`, svc);
    const m2 = await converge(h.r, h.ids('b'), started, 10_000);
    reportFault('docker: 11 bad event lines, then a stop event split inside a UTF-8 character', { ...m1, nextStartMs: m2.converge });
    expect(m1).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    expect(m2).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    expect(exited).toBe(false);
    // garbage: not JSON; null, [], "text", 42: not an object; the rest are objects that name nothing known.
    expect(h.hm.logs.filter((l) => /not JSON|not an object/.test(l.msg))).toHaveLength(5);
  });

  it('HEALTHCHECK exec events around a starting container during constant resyncs do not skip it', async () => {
    const proxy = await httpProxy();
    const h = host('fde', `tcp://${proxy.address}`, ['--resync', '1']);
    await waitFor('the event stream through the proxy', () => proxy.streams(EVENTS).length > 0, 20_000);
    const id = await docker('create', '--name', `${h.name}-x`, '-p', '127.0.0.1::80', '-e', 'SERVICE_NAME=svc', IMAGE);
    let stop = false;
    const noise = (async () => {
      for (let i = 0; i < 200 && !stop; i++) {
        for (const action of ['exec_create: /bin/true', 'exec_start: /bin/true', 'exec_die']) {
          const now = Date.now();
          proxy.inject(`${JSON.stringify({ Type: 'container', Action: action, Actor: { ID: id, Attributes: { name: `${h.name}-x` } }, time: Math.floor(now / 1000), timeNano: now * 1e6 })}\n`, EVENTS);
        }
        await sleep(20);
      }
    })();
    const started = Date.now();
    await docker('start', `${h.name}-x`);
    const m = await converge(h.r, h.ids('x'), started, 10_000);
    stop = true;
    await noise;
    reportFault('docker: exec events every 20 ms while a container starts, resync every 1 s', { ...m });
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
  });
});

describe('Docker API calls', () => {
  it('a hung inspection holds up only its own container, is retried until it answers, and resyncs (every second) never pile up behind it', async () => {
    const proxy = await httpProxy();
    const h = host('fdh', `tcp://${proxy.address}`, ['--docker-timeout', '2s', '--resync', '1']);
    await waitFor('the event stream through the proxy', () => proxy.streams(EVENTS).length > 0, 20_000);
    const id = await docker('create', '--name', `${h.name}-x`, '-p', '127.0.0.1::80', '-e', 'SERVICE_NAME=svc', IMAGE);
    const rule = proxy.hang({ method: 'GET', path: new RegExp(`^/containers/${id}/json`) });
    await docker('start', `${h.name}-x`);
    const t0 = Date.now();
    await run(`${h.name}-y`, svc);
    const other = await converge(h.r, h.ids('y'), t0, 10_000);
    await sleep(4000);
    expect(rule.hits).toBeGreaterThanOrEqual(2);
    // Measured while it hung: inspections of that container one at a time, one listing at a time.
    const inspections = proxy.requests({ method: 'GET', path: new RegExp(`^/containers/${id}/json`) });
    const listings = proxy.requests({ method: 'GET', path: /^\/containers\/json/ }).filter((r) => r.time >= t0);
    const concurrentInspections = maxConcurrent(inspections);
    const concurrentListings = maxConcurrent(listings);
    rule.remove();
    proxy.releaseHung('destroy');
    const released = Date.now();
    const m = await converge(h.r, h.ids('x', 'y'), released, 30_000);
    reportFault('docker: one container\'s inspection hung 5 s (--docker-timeout 2s, --resync 1)', {
      ...m,
      otherContainerMs: other.converge,
      attempts: rule.hits,
      concurrentInspections,
      concurrentListings,
      listings: listings.length,
    });
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
    expect(other.converge).toBeLessThan(3000);
    expect(concurrentInspections).toBe(1);
    expect(concurrentListings).toBe(1);
    // A resync waits for its inspections (here: the hung one's 2 s timeout) before the next one lists:
    // one listing per 2 s, not one per second stacked up behind it.
    expect(listings.length).toBeLessThanOrEqual(Math.ceil((released - t0) / 2000) + 1);
  });

  it('an inspection answered 500 is retried, not dropped', async () => {
    const proxy = await httpProxy();
    const h = host('fdf', `tcp://${proxy.address}`);
    await waitFor('the event stream through the proxy', () => proxy.streams(EVENTS).length > 0, 20_000);
    const id = await docker('create', '--name', `${h.name}-x`, '-p', '127.0.0.1::80', '-e', 'SERVICE_NAME=svc', IMAGE);
    const rule = proxy.respond({ method: 'GET', path: new RegExp(`^/containers/${id}/json`) }, 500, { message: 'injected failure' }, { times: 2 });
    const t0 = Date.now();
    await docker('start', `${h.name}-x`);
    const m = await converge(h.r, h.ids('x'), t0, 20_000);
    reportFault('docker: inspection answered 500 twice', { ...m, failedInspections: rule.hits });
    expect(rule.hits).toBe(2);
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
  });

  it('Docker unreachable while healthchecked containers start: registered once it answers and they are healthy', async () => {
    const tcp = await FaultProxy.start({ socketPath: SOCKET });
    onTestFinished(() => tcp.close());
    const h = host('fdu', `tcp://${tcp.address}`);
    await run(`${h.name}-pre`, svc);
    await converge(h.r, h.ids('pre'), Date.now(), 20_000);
    tcp.cut();
    const down = Date.now();
    const hc = { ...svc, extra: ['--health-cmd', 'test -f /www/index.html', '--health-interval', '1s', '--health-start-period', '1s'] };
    for (const n of ['h0', 'h1', 'h2']) await run(`${h.name}-${n}`, hc);
    await docker('rm', '-f', `${h.name}-pre`);
    await sleep(Math.max(0, 4000 - (Date.now() - down)));
    tcp.pass();
    const back = Date.now();
    const m = await converge(h.r, h.ids('h0', 'h1', 'h2'), back, 45_000);
    reportFault('docker: API unreachable 4 s while 3 healthchecked containers started and one was removed', { ...m, downMs: back - down });
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
  });

  it('shutdown while every Docker call hangs still withdraws everything within its deadline', async () => {
    const proxy = await httpProxy();
    const h = host('fdx', `tcp://${proxy.address}`, ['--docker-timeout', '60s']);
    await runManyNamed(h.name, ['a', 'b']);
    await converge(h.r, h.ids('a', 'b'), Date.now(), 20_000);
    proxy.hang(/./);
    proxy.cutStreams(EVENTS);
    await sleep(300);
    h.hm.kill('SIGHUP'); // a resync whose listing now hangs
    await sleep(300);
    const t0 = Date.now();
    const code = await h.hm.stop('SIGTERM');
    const took = Date.now() - t0;
    const m = await converge(h.r, new Set(), t0, 5_000);
    reportFault('docker: SIGTERM while every Docker call hangs', { ...m, shutdownMs: took, exitCode: code ?? 'signal' });
    expect(code).toBe(0);
    expect(took).toBeLessThan(10_000);
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
  });
});

describe('Docker lifecycles', () => {
  it('`docker stop` of an image with its own STOPSIGNAL (SIGWINCH) withdraws at the stop, not at the exit', async () => {
    const h = host('fdw', `unix://${SOCKET}`);
    await run(`${h.name}-w`, { ...svc, extra: ['--stop-signal', 'SIGWINCH'] });
    await converge(h.r, h.ids('w'), Date.now(), 20_000);
    const t0 = Date.now();
    const stopping = docker('stop', '-t', '6', `${h.name}-w`);
    const m = await converge(h.r, new Set(), t0, 10_000);
    await stopping;
    reportFault('docker: stop of a container whose STOPSIGNAL is SIGWINCH (-t 6)', { ...m, exitedAfterMs: Date.now() - t0 });
    expect(m.converge).toBeLessThan(2000);
  });

  it('an unpause event arriving after the kill of a stopping container does not bring it back', async () => {
    const proxy = await httpProxy();
    const h = host('fdp', `tcp://${proxy.address}`);
    await run(`${h.name}-a`, svc);
    await converge(h.r, h.ids('a'), Date.now(), 20_000);
    await waitFor('the event stream through the proxy', () => proxy.streams(EVENTS).length > 0);
    const id = await docker('inspect', '-f', '{{.Id}}', `${h.name}-a`);
    const event = (Action: string, attrs: Record<string, string> = {}) => {
      const now = Date.now();
      return `${JSON.stringify({ Type: 'container', Action, Actor: { ID: id, Attributes: { name: `${h.name}-a`, ...attrs } }, time: Math.floor(now / 1000), timeNano: now * 1e6 })}\n`;
    };
    // As moby logs the stop of a paused container: resume, kill, and containerd's resumed event late.
    proxy.inject(event('kill', { signal: '15' }), EVENTS);
    await sleep(100);
    proxy.inject(event('unpause'), EVENTS);
    const t0 = Date.now();
    const m = await converge(h.r, new Set(), t0, 5_000);
    await sleep(2000);
    const after = (await h.r.read()).entries.length;
    reportFault('docker: unpause event after the kill of a stopping container', { ...m, reappeared: after });
    expect(after).toBe(0);
  });

  it('--cleanup after a restart leaves a container alone whose inspection failed, and no watcher sees it go', async () => {
    const proxy = await httpProxy();
    const name = uniq('fdc');
    onTestFinished(() => removeContainers(`${name}-`));
    const args = ['register', '--hostname', name, '--cleanup', '--ttl', '10', '--ttl-refresh', '2', '--docker', `tcp://${proxy.address}`, `etcd://127.0.0.1:2379/${name}`];
    const first = spawnHm(args);
    for (const c of ['x', 'y']) await run(`${name}-${c}`, svc);
    const r = reader('etcd', '127.0.0.1:2379', `/${name}`, name);
    onTestFinished(() => r.close());
    const all = idsOf(name, [`${name}-x`, `${name}-y`]);
    await converge(r, all, Date.now(), 20_000);
    first.kill('SIGKILL');
    await first.exited;
    const xid = await docker('inspect', '-f', '{{.Id}}', `${name}-x`);
    const rule = proxy.respond({ method: 'GET', path: new RegExp(`^/containers/${xid}/json`) }, 500, { message: 'injected failure' }, { times: 2 });
    const restarted = Date.now();
    spawnHm(args);
    let missing = 0;
    for (const until = Date.now() + 6000; Date.now() < until; await sleep(50)) {
      const ids = new Set((await r.read()).entries.map((e) => e.id));
      if (![...all].every((id) => ids.has(id))) missing++;
    }
    const m = await converge(r, all, restarted, 10_000);
    reportFault('docker: --cleanup restart while one container\'s inspection fails twice', { ...m, samplesWithOneMissing: missing, failedInspections: rule.hits });
    expect(rule.hits).toBe(2);
    expect(missing).toBe(0);
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
  });

  it('a container kept as critical (--deregister on-success) whose destroy event was missed goes at the next listing', async () => {
    const tcp = await FaultProxy.start({ socketPath: SOCKET });
    onTestFinished(() => tcp.close());
    const h = host('fdk', `tcp://${tcp.address}`, ['--deregister', 'on-success', '--resync', '0']);
    await run(`${h.name}-f`, { ...svc, cmd: CRASHING });
    await converge(h.r, h.ids('f'), Date.now(), 20_000);
    await docker('exec', `${h.name}-f`, 'touch', '/tmp/crash');
    const status = async () => Object.values(await etcdRead(`/${h.name}`)).map((v) => v.status);
    await waitFor('kept as critical', async () => (await status()).join() === 'critical', 20_000, 100);
    tcp.cut();
    const down = Date.now();
    await docker('rm', '-f', `${h.name}-f`);
    await sleep(Math.max(0, 1_500 - (Date.now() - down)));
    tcp.pass();
    const back = Date.now();
    const m = await converge(h.r, new Set(), back, 20_000);
    reportFault('docker: a critical (on-success) container removed while the event stream was down', { ...m, downMs: back - down });
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
  });

  it('a container restarting in a loop is registered while it runs, never twice, and nothing is left once it stops', async () => {
    const h = host('fdr', `unix://${SOCKET}`);
    const name = `${h.name}-loop`;
    await run(name, { ...svc, extra: ['--restart', 'always'], cmd: ['sh', '-c', 'httpd -p 80 -h /www; sleep 1; exit 3'] });
    const id = `${h.name}:${name}:80`;
    let flips = 0;
    let seen = false;
    let maxCopies = 0;
    for (const until = Date.now() + 10_000; Date.now() < until; await sleep(50)) {
      const entries = (await h.r.read()).entries.filter((e) => e.id === id);
      maxCopies = Math.max(maxCopies, entries.length);
      if (entries.length > 0 !== seen) {
        seen = !seen;
        flips++;
      }
    }
    const restarts = Number(await docker('inspect', '-f', '{{.RestartCount}}', name));
    await docker('update', '--restart', 'no', name);
    await waitFor('the loop to end', async () => (await docker('inspect', '-f', '{{.State.Running}}', name)) === 'false', 20_000, 200);
    const ended = Date.now();
    const m = await converge(h.r, new Set(), ended, 10_000);
    reportFault('docker: container restarting in a loop for 10 s', { ...m, restarts, registrationFlips: flips, maxCopies });
    expect(restarts).toBeGreaterThanOrEqual(2);
    expect(flips).toBeGreaterThanOrEqual(2);
    expect(maxCopies).toBe(1);
    expect(m).toMatchObject({ lost: 0, duplicated: 0, leftBehind: 0 });
  });
});

async function runManyNamed(hostName: string, names: string[]): Promise<void> {
  for (const n of names) await run(`${hostName}-${n}`, svc);
}
