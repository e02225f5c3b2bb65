// The fast test app (image hm-fast:1, test/fixtures/fastapp.c) in real containers, and the load
// generator against it: names and HTTP/1.1 framing, the rates the generator reaches with no
// failure, a graceful stop finishing a request in flight, an immediate stop cutting it, a
// replacement that never becomes healthy, a slow starter, and busybox httpd for comparison.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { docker, hostPort, IMAGE, removeContainers } from './support/docker.js';
import { startLoad, summary, type LoadOptions } from './support/load-gen.js';
import { nextRequest, rawRequest } from './support/raw-http.js';
import { sleep, uniq, waitFor } from './support/wait.js';

const FAST_IMAGE = 'hm-fast:1';
const HEALTH = ['--health-cmd', 'wget -q -O- http://127.0.0.1/health', '--health-interval', '1s', '--health-timeout', '2s'];
const prefix = uniq('lg');
const ports: Record<string, number> = {};
const started: Record<string, number> = {};

async function start(id: string, env: Record<string, string>, extra: string[] = [], image = FAST_IMAGE): Promise<void> {
  const args = ['run', '-d', '--name', `${prefix}-${id}`, '-p', '127.0.0.1::80'];
  for (const [k, v] of Object.entries(env)) args.push('-e', `${k}=${v}`);
  await docker(...args, ...extra, image);
  started[id] = Date.now();
  ports[id] = await hostPort(`${prefix}-${id}`);
}

const get = (id: string, path = '/', timeoutMs = 5_000) => rawRequest(ports[id], `GET ${path} HTTP/1.1\r\nHost: svc.test\r\n\r\n`, { timeoutMs });
const answering = (id: string) => waitFor(`${prefix}-${id} answering`, async () => (await get(id, '/', 1_000)).status === 200, 15_000, 50);
const health = (id: string) => docker('inspect', '-f', '{{.State.Health.Status}}', `${prefix}-${id}`);
const load = (id: string, o: Partial<LoadOptions> = {}) => startLoad({ url: `http://127.0.0.1:${ports[id]}/`, host: 'svc.test', durationMs: 10_000, ...o });

/** `docker stop -t 10` of a container, resolving with how long it took. */
async function stopTimed(id: string): Promise<number> {
  const t = Date.now();
  await docker('stop', '-t', '10', `${prefix}-${id}`);
  return Date.now() - t;
}

beforeAll(async () => {
  await docker('image', 'inspect', FAST_IMAGE).catch((err: Error) => {
    throw new Error(`image ${FAST_IMAGE}: ${err.message.trim()} (scripts/test-env.sh builds it)`);
  });
  await Promise.all([
    start('a', { NAME: 'a' }, HEALTH),
    start('b', { NAME: 'b' }, HEALTH),
    start('g', { NAME: 'g' }),
    start('i', { NAME: 'i', TERM_MODE: 'immediate' }),
    start('bb', { NAME: 'bb' }, [], IMAGE),
  ]);
  await Promise.all(['a', 'b', 'g', 'i', 'bb'].map(answering));
});

afterAll(() => removeContainers(`${prefix}-`));

describe('fast test app', () => {
  it('answers its NAME with keep-alive and Content-Length framing, honours Connection: close and HTTP/1.0, bounds the request head, and turns docker-healthy', async () => {
    const first = await rawRequest(ports.a, 'GET / HTTP/1.1\r\nHost: svc.test\r\n\r\n', { keepOpen: true });
    expect([first.status, first.body, first.headers.connection, first.headers['content-length']]).toEqual([200, 'a\n', 'keep-alive', '2']);
    const s = first.socket!;
    const post = await nextRequest(s, 'POST /x HTTP/1.1\r\nHost: svc.test\r\nContent-Length: 5\r\n\r\nhello');
    expect([post.status, post.body]).toEqual([200, 'a\n']);
    const chunked = await nextRequest(s, 'POST /x HTTP/1.1\r\nHost: svc.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
    expect([chunked.status, chunked.body]).toEqual([200, 'a\n']);
    const head = await nextRequest(s, 'HEAD / HTTP/1.1\r\nHost: svc.test\r\n\r\n');
    expect([head.status, head.headers['content-length'], head.raw.endsWith('\r\n\r\n')]).toEqual([200, '2', true]);
    const ok = await nextRequest(s, 'GET /health HTTP/1.1\r\nHost: svc.test\r\n\r\n');
    expect([ok.status, ok.body]).toEqual([200, 'ok\n']);
    s.destroy();

    expect((await get('b')).body).toBe('b\n');
    const close = await rawRequest(ports.a, 'GET / HTTP/1.1\r\nHost: svc.test\r\nConnection: close\r\n\r\n', { untilClose: true });
    expect([close.status, close.headers.connection, close.end]).toEqual([200, 'close', 'response']);
    const old = await rawRequest(ports.a, 'GET / HTTP/1.0\r\n\r\n', { untilClose: true });
    expect([old.status, old.body, old.end]).toEqual([200, 'a\n', 'response']);
    const big = await rawRequest(ports.a, `GET / HTTP/1.1\r\nHost: svc.test\r\nX-Big: ${'x'.repeat(20_000)}\r\n\r\n`, { untilClose: true });
    expect([big.status, big.end]).toEqual([431, 'response']);
    const put = await rawRequest(ports.a, 'PUT / HTTP/1.1\r\nHost: svc.test\r\nContent-Length: 0\r\n\r\n');
    expect(put.status).toBe(405);

    await waitFor('a and b docker-healthy', async () => (await health('a')) === 'healthy' && (await health('b')) === 'healthy', 15_000, 200);
  });

  it('takes at least 2,000 keep-alive and 300 fresh-connection requests/s together with no failure, GET and POST', async () => {
    // The default caps are 3,000 and 450/s: what is asked for, with room for a busy machine.
    const lg = load('a');
    await sleep(3_000);
    const r = await lg.stop();
    console.log(`PROBE load-gen GET → fast app a, 3 s: ${summary(r)}`);
    expect(r.keepalive.rate).toBeGreaterThanOrEqual(2_000);
    expect(r.fresh.rate).toBeGreaterThanOrEqual(300);
    expect([r.keepalive.failures, r.fresh.failures, r.keepalive.unfinished, r.fresh.unfinished]).toEqual([0, 0, 0, 0]);
    expect(Object.keys({ ...r.keepalive.bodies, ...r.fresh.bodies })).toEqual(['a']);

    const post = await load('b', { method: 'POST', durationMs: 1_000 }).done;
    console.log(`PROBE load-gen POST → fast app b, 1 s: ${summary(post)}`);
    expect(post.stoppedBy).toBe('duration');
    expect([post.keepalive.failures, post.fresh.failures]).toEqual([0, 0]);
    expect(post.keepalive.bodies).toEqual({ b: post.keepalive.ok });
    expect(post.keepalive.ok).toBeGreaterThan(1_000);

    const capped = await load('b', { maxRequests: 500 }).done;
    expect([capped.stoppedBy, capped.keepalive.requests + capped.fresh.requests]).toEqual(['requests', 500]);
  });

  it('is faster than busybox httpd under the same unthrottled load', async () => {
    const unthrottled = { durationMs: 2_000, keepalive: { rate: Infinity }, fresh: { rate: Infinity } };
    const fast = await load('a', unthrottled).done;
    const bb = await load('bb', unthrottled).done;
    console.log(`PROBE unthrottled 2 s: fast app ${fast.keepalive.rate + fast.fresh.rate} req/s (${summary(fast)}) || busybox httpd ${bb.keepalive.rate + bb.fresh.rate} req/s (${summary(bb)})`);
    expect([fast.keepalive.failures, fast.fresh.failures]).toEqual([0, 0]);
    expect(fast.keepalive.connections).toBe(16); // kept alive, where busybox closes after every answer
    expect(bb.keepalive.connections).toBeGreaterThan(100);
    expect(fast.keepalive.okRate + fast.fresh.okRate).toBeGreaterThan(bb.keepalive.okRate + bb.fresh.okRate);
  });

  it('TERM_MODE=graceful: docker stop under load lets a request in flight finish, loses nothing sent on a connection already in use, exits 0', async () => {
    const lg = load('g');
    await sleep(500);
    const slow = get('g', '/slow?ms=1000');
    await sleep(300);
    const t = Date.now();
    const stopping = stopTimed('g');
    const answer = await slow;
    const answeredAfter = Date.now() - t;
    const stopMs = await stopping;
    const r = await lg.stop();
    const exit = await docker('inspect', '-f', '{{.State.ExitCode}}', `${prefix}-g`);
    // The app's own drain, from its log: SIGTERM received → exit (docker's teardown is not in it).
    const log = (await docker('logs', '-t', `${prefix}-g`)).split('\n');
    const at = (what: string) => Date.parse(log.find((l) => l.includes(what))?.split(' ', 1)[0] ?? '');
    const drainMs = at('fastapp: exiting') - at('draining');
    console.log(`PROBE graceful: /slow?ms=1000 sent 300 ms before docker stop → ${answer.status} ${JSON.stringify(answer.body)} connection: ${answer.headers.connection} ${answeredAfter} ms after the stop; the app drained in ${drainMs} ms (${log.slice(-2).map((l) => l.replace(/^\S+ /, '')).join('; ')}), exit ${exit}, docker stop took ${stopMs} ms; load: ${summary(r)}`);
    expect([answer.status, answer.body, answer.headers.connection]).toEqual([200, 'g\n', 'close']);
    expect(answeredAfter).toBeGreaterThan(500);
    expect(drainMs).toBeGreaterThan(400);
    expect(drainMs).toBeLessThan(2_500);
    expect(exit).toBe('0');
    expect(r.keepalive.ok).toBeGreaterThan(1_000);
    // After TERM new connections fail (nothing listens); a request on a connection in use never does.
    expect(r.keepalive.failuresOnReused).toBe(0);
  });

  it('TERM_MODE=immediate: docker stop cuts requests in flight (the load generator counts them as lost on reused connections) and the app exits 0 at once', async () => {
    // 4 keep-alive connections each always waiting on a 200 ms answer: 4 requests in flight at the stop.
    const lg = load('i', { url: `http://127.0.0.1:${ports.i}/slow?ms=200`, keepalive: { connections: 4 }, fresh: false });
    const slow = get('i', '/slow?ms=3000');
    await sleep(500);
    const t = Date.now();
    const stopMs = await stopTimed('i');
    const answer = await slow;
    const cutAfter = Date.now() - t;
    const r = await lg.stop();
    const exit = await docker('inspect', '-f', '{{.State.ExitCode}}', `${prefix}-i`);
    console.log(`PROBE immediate: /slow?ms=3000 in flight at docker stop → status ${answer.status} (${answer.end}) ${cutAfter} ms after the stop; docker stop took ${stopMs} ms, exit ${exit}; load of /slow?ms=200: ${summary(r)}`);
    expect([answer.status, answer.end]).toEqual([0, 'closed']);
    expect(r.keepalive.failuresOnReused).toBeGreaterThanOrEqual(1);
    expect(cutAfter).toBeLessThan(2_000);
    expect(stopMs).toBeLessThan(2_000);
    expect(exit).toBe('0');
  });

  it('UNHEALTHY=1: docker health turns unhealthy while / still answers', async () => {
    await start('u', { NAME: 'u', UNHEALTHY: '1' }, [...HEALTH, '--health-retries', '1']);
    await waitFor('u unhealthy', async () => (await health('u')) === 'unhealthy', 15_000, 100);
    const after = Date.now() - started.u;
    const state = JSON.parse(await docker('inspect', '-f', '{{json .State.Health}}', `${prefix}-u`)) as { Log: { ExitCode: number; Output: string }[] };
    const check = state.Log[state.Log.length - 1];
    const root = await get('u');
    const h = await get('u', '/health');
    console.log(`PROBE unhealthy: docker health unhealthy ${after} ms after docker run returned (health-cmd exit ${check.ExitCode}: ${JSON.stringify(check.Output.trim())}); / → ${root.status} ${JSON.stringify(root.body)}; /health → ${h.status} ${JSON.stringify(h.body)}`);
    expect(check.ExitCode).not.toBe(0);
    expect([root.status, root.body, h.status]).toEqual([200, 'u\n', 503]);
  });

  it('STARTUP_DELAY_MS delays listening', async () => {
    await start('s', { NAME: 's', STARTUP_DELAY_MS: '1500' });
    const t = started.s;
    let refused = 0;
    await waitFor('s answering', async () => {
      const a = await get('s', '/', 500);
      if (a.status !== 200) refused++;
      return a.status === 200;
    }, 10_000, 50);
    const after = Date.now() - t;
    console.log(`PROBE startup delay 1500 ms: first answer ${after} ms after docker run returned, ${refused} attempts before failed`);
    expect(refused).toBeGreaterThan(0);
    expect(after).toBeGreaterThan(1_000);
  });
});
