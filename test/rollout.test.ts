// `harbormaster rollout` against the real Docker engine, with `harbormaster run` (embedded registry,
// built-in proxy, status API with withdrawals) as the sidecar: plans, refusals, start-first under
// load, a replacement that never becomes healthy (rolled back, or paused), stop-first for a fixed
// host port, --keep and --rollback, an interrupted rollout resumed by a second run, interrupts and
// kills during the readiness wait and in stop-first, two rollouts at once, a failed create in a
// batch of 2, an old container that does not come back, and a registry (etcd v2) that cannot be
// read for a while during the readiness wait.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFailed } from 'vitest';
import { docker, IMAGE, removeContainers } from './support/docker.js';
import { FakeRegistry } from './support/fake-registry.js';
import { FaultProxy } from './support/fault-proxy.js';
import { BIN, Hm, type LogLine } from './support/harbormaster.js';
import { afterRequests, get, Load } from './support/proxy.js';
import { ETCD_ENDPOINT } from './support/registries.js';
import { reachesAll } from './support/run.js';
import { sleep, uniq, waitFor } from './support/wait.js';

const HOST = uniq('hmro');
const P = `${HOST}-`;
const PROXY = 28400;
const API = 28401;
const STATE = mkdtempSync(join(tmpdir(), 'hm-rollout-'));
const BROKEN = `hm-test:broken-${HOST.slice(5)}`;
/** Port of `register etcd2://… --api` (the etcd v2 sidecar) and of the fault proxy before etcd. */
const ETCD2_API = 28402;
const FAKE_REGISTRY = 28403;
/** A built-in proxy following the etcd v2 registry that the etcd v2 rollout withdraws from. */
const ETCD2_PROXY = 28404;
const ETCD2_PREFIX = `/hm-ro2-${HOST.slice(5)}`;
let sidecar: Hm;
let etcd2Sidecar: Hm | undefined;
let etcd2Proxy: Hm | undefined;

/**
 * Containers of a service answering with their name; a health check that turns red where the env
 * BROKEN names the container (`name=NAME` gives a container a NAME other than its name).
 */
async function startService(svc: string, names: string[], extra: string[] = [], publish = '127.0.0.1::80', image = IMAGE): Promise<void> {
  await Promise.all(
    names.map((spec) => {
      const [n, as = n] = spec.split('=');
      return docker(
        'run', '-d', '--name', `${P}${n}`, '-e', `SERVICE_NAME=${svc}`, '-e', `NAME=${as}`, '-l', `app.svc=${svc}`, '-p', publish,
        '--health-cmd', '[ "$BROKEN" != "$NAME" ] && wget -q -O /dev/null http://127.0.0.1/', '--health-interval', '500ms', '--health-retries', '2',
        ...extra, image,
      );
    }),
  );
}

function rollout(args: string[]): Hm {
  const hm = new Hm(['rollout', ...args, '--json', '--hostname', HOST, ...(args.includes('--api') ? [] : ['--api', `http://127.0.0.1:${API}`]), '--state-dir', STATE]);
  onTestFailed(() => console.log(`--- rollout ${args.join(' ')}\n${hm.logs.map((l) => JSON.stringify(l)).join('\n')}\n${hm.stderr.join('')}`));
  return hm;
}

async function finished(hm: Hm, timeoutMs = 90_000): Promise<number | null> {
  const t = setTimeout(() => hm.kill('SIGKILL'), timeoutMs);
  const code = await hm.exited;
  clearTimeout(t);
  return code;
}

const events = (hm: Hm, e: string) => hm.logs.filter((l: LogLine) => l.event === e);

async function names(svc: string, all = false): Promise<string[]> {
  const out = await docker('ps', ...(all ? ['-a'] : []), '--filter', `name=${P}`, '--filter', `label=app.svc=${svc}`, '--format', '{{.Names}}');
  return out.split('\n').filter(Boolean).sort();
}

/**
 * The service's containers that are ready: running, healthy, and passing in the sidecar's catalog
 * (a withdrawn or unhealthy one is not there).
 */
async function readyOf(svc: string): Promise<string[]> {
  const body = (await (await fetch(`http://127.0.0.1:${API}/v1/services`)).json()) as { services: { name: string; instances: { id: string; status: string }[] }[] };
  const passing = new Set(body.services.filter((x) => x.name === svc).flatMap((x) => x.instances.filter((i) => i.status === 'passing').map((i) => i.id.split(':')[1])));
  const out: string[] = [];
  for (const n of await names(svc)) {
    const st = (await docker('inspect', '-f', '{{.State.Running}} {{if .State.Health}}{{.State.Health.Status}}{{end}}', n)).trim();
    if (st === 'true healthy' && passing.has(n)) out.push(n);
  }
  return out;
}

/** Waits until `count` containers of the service are ready (the sidecar's catalog follows Docker within a moment). */
async function readyCount(svc: string, count: number, timeoutMs = 10_000): Promise<string[]> {
  let last: string[] = [];
  await waitFor(`${count} ready containers of ${svc}`, async () => (last = await readyOf(svc)).length === count, timeoutMs, 200).catch(() => undefined);
  return last;
}

async function imageOf(name: string): Promise<string> {
  return (await docker('inspect', '-f', '{{.Config.Image}}', name)).trim();
}

async function envOf(name: string): Promise<string[]> {
  return JSON.parse(await docker('inspect', '-f', '{{json .Config.Env}}', name)) as string[];
}

beforeAll(async () => {
  // The same image with an env that breaks the health check of the containers called bad-2.
  const id = (await docker('create', IMAGE)).trim();
  await docker('commit', '--change', 'ENV BROKEN=bad-2', id, BROKEN);
  await docker('rm', id);
  sidecar = new Hm(['run', '--listen', `127.0.0.1:${PROXY}`, '--api', `127.0.0.1:${API}`, '--hostname', HOST, '--resync', '10']);
  await sidecar.waitForLog('ready line', (l) => l.event === 'ready');
});

beforeEach(() => {
  const from = sidecar.logs.length;
  onTestFailed(() => console.log(`--- harbormaster run, log lines during this test\n${sidecar.logs.slice(from).map((l) => l.msg).join('\n')}`));
});

afterAll(async () => {
  await sidecar?.stop('SIGKILL');
  await etcd2Sidecar?.stop('SIGKILL');
  await removeContainers(P);
  await docker('rmi', '-f', BROKEN).catch(() => undefined);
  rmSync(STATE, { recursive: true, force: true });
});

describe('harbormaster rollout', () => {
  it('prints the plan with --dry-run and changes nothing; refuses an unknown service, a missing image, start-first on a fixed port and a Swarm task with exit 2', async () => {
    const svc = uniq('plan');
    await startService(svc, ['plan-1', 'plan-2']);
    await reachesAll(PROXY, `${svc}.localhost`, ['plan-1', 'plan-2']);
    const dry = rollout([svc, '--dry-run', '--batch', '50%']);
    expect(await finished(dry)).toBe(0);
    const plan = events(dry, 'plan').map((l) => l.message as string);
    expect(plan[0]).toMatch(new RegExp(`^would roll ${svc}: 2 container\\(s\\) in 2 batch\\(es\\) of 1, start-first, image ${IMAGE.replace('.', '\\.')}`));
    expect(plan[1]).toContain(`batch 1: ${P}plan-1`);
    expect(await names(svc)).toEqual([`${P}plan-1`, `${P}plan-2`]);

    const unknown = rollout([uniq('nobody')]);
    expect(await finished(unknown)).toBe(2);
    expect(unknown.stderr.join('')).toMatch(/^harbormaster: no running container of service nobody-\w+ on this host\n$/);

    const missing = rollout([svc, '--image', '127.0.0.1:1/nope:1']);
    expect(await finished(missing)).toBe(2);
    expect(missing.stderr.join('')).toMatch(/^harbormaster: image 127\.0\.0\.1:1\/nope:1 is not present on this host and cannot be pulled: .+\n$/);

    const fixedSvc = uniq('fixed');
    await startService(fixedSvc, ['fixed-1'], [], '127.0.0.1:28410:80');
    const fixed = rollout([fixedSvc, '--order', 'start-first']);
    expect(await finished(fixed)).toBe(2);
    expect(fixed.stderr.join('')).toMatch(/--order start-first: .*fixed-1 \(127\.0\.0\.1:28410->80\/tcp\) hold a fixed host port or address.*use --order stop-first/);

    const swarmSvc = uniq('swarm');
    await startService(swarmSvc, ['swarm-1'], ['-l', 'com.docker.swarm.service.id=abc123', '-l', 'com.docker.swarm.task.id=def456']);
    const swarm = rollout([swarmSvc]);
    expect(await finished(swarm)).toBe(2);
    expect(swarm.stderr.join('')).toMatch(/swarm-1: .*Swarm/);
    // A stopped one-off `compose run` container of the service is left alone, not a reason to refuse.
    const composeSvc = uniq('cmp');
    const labels = ['-l', `com.docker.compose.service=${composeSvc}`, '-l', `com.docker.compose.project=${HOST}`];
    await startService(composeSvc, ['cmp-1'], labels);
    await docker('create', '--name', `${P}cmp-run-1`, '-l', `app.svc=${composeSvc}`, ...labels, '-l', 'com.docker.compose.oneoff=True', IMAGE);
    const oneoff = rollout([composeSvc, '--compose-service', '--dry-run']);
    expect(await finished(oneoff)).toBe(0);
    expect(events(oneoff, 'note').map((l) => l.message).join('\n')).toContain(`not running, left as they are (only running containers are replaced): ${P}cmp-run-1`);

    // --dry-run --pull always pulls nothing: it says it would.
    const tagged = `127.0.0.1:1/hm-dry-${HOST.slice(5)}:1`;
    await docker('tag', IMAGE, tagged);
    const dryPull = rollout([svc, '--dry-run', '--pull', 'always', '--image', tagged]);
    expect(await finished(dryPull)).toBe(0);
    await docker('rmi', tagged);
    const dryNotes = events(dryPull, 'note').map((l) => l.message).join('\n');
    expect(dryNotes).toContain(`would pull ${tagged} first (--pull always); planned with the local image`);
    expect(dryNotes).not.toMatch(/pull of .* failed/);
    console.log(`PROBE rollout refusals: unknown service, missing image, start-first on a fixed port, Swarm task → exit 2 with one line each; dry run left ${(await names(svc)).length} containers as they were; a stopped one-off container skipped (exit 0); --dry-run --pull always: "${dryNotes.split('\n').find((l) => l.includes('would pull'))}"`);
  });

  it('replaces 3 containers one at a time under load without a failed request, keeping env, labels and health check', async () => {
    const svc = uniq('roll');
    await startService(svc, ['roll-1', 'roll-2', 'roll-3'], ['-e', 'STOP_DELAY=0']);
    await reachesAll(PROXY, `${svc}.localhost`, ['roll-1', 'roll-2', 'roll-3']);
    const load = new Load(PROXY, `${svc}.localhost`, '/', 4, 120_000).start();
    await afterRequests(load, 50);
    const t0 = Date.now();
    const ro = rollout([svc, '--drain-timeout', '1s', '--monitor', '500ms', '--stop-timeout', '5']);
    const code = await finished(ro);
    const ms = Date.now() - t0;
    await afterRequests(load, 100);
    await load.stop();
    expect(code).toBe(0);
    expect(load.failures).toEqual([]);
    expect(await names(svc)).toEqual([`${P}roll-1-r2`, `${P}roll-2-r2`, `${P}roll-3-r2`]);
    expect(await names(svc, true)).toEqual([`${P}roll-1-r2`, `${P}roll-2-r2`, `${P}roll-3-r2`]);
    expect(await envOf(`${P}roll-1-r2`)).toEqual(expect.arrayContaining([`SERVICE_NAME=${svc}`, 'NAME=roll-1', 'STOP_DELAY=0']));
    expect((await docker('inspect', '-f', '{{json .Config.Healthcheck.Test}}', `${P}roll-2-r2`)).trim()).toContain('BROKEN');
    expect((await docker('inspect', '-f', '{{index .Config.Labels "io.harbormaster.rollout.base"}} {{index .Config.Labels "io.harbormaster.rollout.generation"}}', `${P}roll-3-r2`)).trim()).toBe(`${P}roll-3 2`);
    await reachesAll(PROXY, `${svc}.localhost`, ['roll-1', 'roll-2', 'roll-3']);
    const ready = events(ro, 'ready').map((l) => l.readyMs as number);
    const withdrawn = events(ro, 'withdraw').map((l) => l.ms as number);
    expect(ready).toHaveLength(3);
    expect(withdrawn).toHaveLength(3);
    const result = events(ro, 'result')[0];
    expect(result).toMatchObject({ status: 'done', replaced: 3 });
    console.log(`PROBE rollout start-first of 3 under load: ${load.ok} requests, ${load.failures.length} failed; ${ms} ms in all (${result.readyWaitMs} ms waiting for readiness, ready after ${ready.join('/')} ms, withdrawn from the registry in ${withdrawn.join('/')} ms)`);
  });

  it('a replacement that never becomes healthy is removed and the batches already replaced are rolled back; with --failure-action pause they stay', async () => {
    const svc = uniq('bad');
    await startService(svc, ['bad-1', 'bad-2']);
    await reachesAll(PROXY, `${svc}.localhost`, ['bad-1', 'bad-2']);
    // With the broken image, bad-1's replacement is healthy and bad-2's never is.
    const load = new Load(PROXY, `${svc}.localhost`, '/', 2, 120_000).start();
    const ro = rollout([svc, '--image', BROKEN, '--health-timeout', '5s', '--drain-timeout', '500ms', '--monitor', '0']);
    expect(await finished(ro)).toBe(1);
    await afterRequests(load, 50);
    await load.stop();
    expect(load.failures).toEqual([]);
    expect(ro.stderr.join('')).toMatch(new RegExp(`^harbormaster: rollout of ${svc} rolled back: ${P}bad-2-r2 unhealthy: health check exited 1`));
    expect(events(ro, 'rollback').map((l) => l.message).join('\n')).toContain(`${P}bad-1 serves again; ${P}bad-1-r2 removed`);
    expect(await names(svc, true)).toEqual([`${P}bad-1`, `${P}bad-2`]);
    await reachesAll(PROXY, `${svc}.localhost`, ['bad-1', 'bad-2']);

    // pause: the replaced batch (bad-1, healthy) stays, bad-2's broken replacement goes.
    const paused = rollout([svc, '--image', BROKEN, '--health-timeout', '5s', '--drain-timeout', '0', '--monitor', '0', '--failure-action', 'pause']);
    expect(await finished(paused)).toBe(1);
    expect(paused.stderr.join('')).toMatch(/paused: .*bad-2-r2 unhealthy/);
    expect(await names(svc, true)).toEqual([`${P}bad-1`, `${P}bad-1-r2`, `${P}bad-2`]);
    expect(await names(svc)).toEqual([`${P}bad-1-r2`, `${P}bad-2`]);
    // Undone on request: the record of the paused rollout is rolled back.
    const undo = rollout([svc, '--rollback', '--drain-timeout', '0', '--monitor', '0']);
    expect(await finished(undo)).toBe(0);
    expect(await names(svc, true)).toEqual([`${P}bad-1`, `${P}bad-2`]);
    console.log(`PROBE rollout failure: unhealthy replacement → "${ro.stderr.join('').trim()}"; ${load.ok} requests during it, ${load.failures.length} failed; pause → "${paused.stderr.join('').trim()}", then --rollback undid it`);
  });

  it('uses stop-first for a fixed host port by itself; --keep 1 keeps the old one stopped and --rollback puts it back', async () => {
    const svc = uniq('port');
    await startService(svc, ['port-1'], [], '127.0.0.1:28411:80');
    await startService(svc, ['port-2']);
    await reachesAll(PROXY, `${svc}.localhost`, ['port-1', 'port-2']);
    const load = new Load(PROXY, `${svc}.localhost`, '/', 2, 120_000).start();
    const ro = rollout([svc, '--keep', '1', '--drain-timeout', '500ms', '--monitor', '0']);
    expect(await finished(ro)).toBe(0);
    expect(events(ro, 'note').map((l) => l.message).join('\n')).toMatch(/order stop-first: .*port-1 \(127\.0\.0\.1:28411->80\/tcp\)/);
    expect(await names(svc)).toEqual([`${P}port-1-r2`, `${P}port-2-r2`]);
    expect(await names(svc, true)).toEqual([`${P}port-1`, `${P}port-1-r2`, `${P}port-2`, `${P}port-2-r2`]);
    expect((await docker('port', `${P}port-1-r2`, '80/tcp')).trim()).toBe('127.0.0.1:28411');
    const back = rollout([svc, '--rollback', '--drain-timeout', '500ms', '--monitor', '0']);
    expect(await finished(back)).toBe(0);
    await afterRequests(load, 50);
    await load.stop();
    expect(await names(svc, true)).toEqual([`${P}port-1`, `${P}port-2`]);
    await reachesAll(PROXY, `${svc}.localhost`, ['port-1', 'port-2']);
    const noKept = rollout([svc, '--rollback']);
    expect(await finished(noKept)).toBe(2);
    expect(noKept.stderr.join('')).toMatch(/--rollback: no kept previous container for .*port-1/);
    console.log(`PROBE rollout stop-first (fixed port) + --keep 1 + --rollback: ${load.ok} requests, ${load.failures.length} failed (stop-first: the service keeps its other container)`);
    expect(load.failures).toEqual([]);
  });

  it('an interrupted rollout leaves every container serving and a second run finishes it; so does one killed outright', async () => {
    const svc = uniq('intr');
    await startService(svc, ['intr-1', 'intr-2']);
    await reachesAll(PROXY, `${svc}.localhost`, ['intr-1', 'intr-2']);
    const load = new Load(PROXY, `${svc}.localhost`, '/', 2, 120_000).start();
    // SIGINT while the first old container drains: it is put back, the replacement stays.
    const first = rollout([svc, '--drain-timeout', '20s', '--monitor', '0']);
    await waitFor('drain', () => events(first, 'drain').length > 0, 30_000);
    first.kill('SIGINT');
    expect(await finished(first)).toBe(130);
    expect(events(first, 'readmit').map((l) => l.container)).toEqual([`${P}intr-1`]);
    expect(await names(svc)).toEqual([`${P}intr-1`, `${P}intr-1-r2`, `${P}intr-2`]);
    await reachesAll(PROXY, `${svc}.localhost`, ['intr-1', 'intr-2']);
    // SIGKILL during the next drain: nothing runs the clean-up; the next run finds the record.
    const second = rollout([svc, '--drain-timeout', '20s', '--monitor', '0']);
    await waitFor('drain', () => events(second, 'drain').length > 0, 30_000);
    second.kill('SIGKILL');
    await finished(second);
    const third = rollout([svc, '--drain-timeout', '500ms', '--monitor', '0']);
    expect(await finished(third)).toBe(0);
    expect(events(third, 'resume').length).toBeGreaterThan(0);
    await afterRequests(load, 50);
    await load.stop();
    expect(load.failures).toEqual([]);
    expect(await names(svc, true)).toEqual([`${P}intr-1-r2`, `${P}intr-2-r2`]);
    console.log(`PROBE rollout interrupted (SIGINT during a drain → exit 130, old one back in rotation), then killed (SIGKILL during a drain), then resumed: ${load.ok} requests, ${load.failures.length} failed; end state ${(await names(svc)).join(', ')}`);
    await sleep(0);
  });

  it('stop-first: a replacement that fails, and a SIGINT while one waits for health, leave every old container running and ready (also through the rollback)', async () => {
    const svc = uniq('sf');
    await startService(svc, ['sfb-1', 'sfb-2=bad-2', 'sfb-3']);
    const start = await readyCount(svc, 3);
    expect(start).toHaveLength(3);
    const load = new Load(PROXY, `${svc}.localhost`, '/', 2, 120_000).start();
    // Batch 1 (sfb-1) is replaced, batch 2 (sfb-2, named bad-2 inside) never becomes healthy on the
    // broken image: both rolled back, the old containers started again; a SIGINT during the
    // rollback does not cut it short.
    const ro = rollout([svc, '--order', 'stop-first', '--image', BROKEN, '--health-timeout', '4s', '--drain-timeout', '300ms', '--monitor', '0']);
    await waitFor('fail', () => events(ro, 'fail').length > 0, 60_000);
    ro.kill('SIGINT');
    expect(await finished(ro)).toBe(1);
    const afterFail = await readyCount(svc, 3);
    // SIGINT while the first replacement (sfb-1-r2, healthy on this image) is being watched: sfb-1 is stopped by then.
    const intr = rollout([svc, '--order', 'stop-first', '--health-timeout', '60s', '--drain-timeout', '300ms', '--monitor', '30s']);
    await waitFor('sfb-1-r2 ready and watched', () => events(intr, 'ready').some((l) => l.container === `${P}sfb-1-r2`), 60_000);
    intr.kill('SIGINT');
    const code = await finished(intr);
    const afterIntr = await readyCount(svc, 3);
    await afterRequests(load, 30);
    await load.stop();
    console.log(`PROBE rollout stop-first: failed replacement → ready ${start.length} before, ${afterFail.length} after the rollback (${afterFail.join(', ')}); SIGINT during the rollout → exit ${code}, ready ${afterIntr.length} (${afterIntr.join(', ')}); ${load.ok} requests, ${load.failures.length} failed`);
    expect(ro.stderr.join('')).toMatch(new RegExp(`rolled back: ${P}sfb-2-r2 unhealthy`));
    expect(afterFail).toEqual([`${P}sfb-1`, `${P}sfb-2`, `${P}sfb-3`]);
    expect(code).toBe(130);
    expect(afterIntr).toEqual([`${P}sfb-1`, `${P}sfb-2`, `${P}sfb-3`]);
    expect(await names(svc, true)).toEqual([`${P}sfb-1`, `${P}sfb-2`, `${P}sfb-3`]);
    expect(load.failures).toEqual([]);
  });

  it('start-first: SIGINT and SIGKILL while a replacement waits, then a run without --image finishes with the image of the first; --rollback --dry-run changes nothing', async () => {
    const svc = uniq('rdy');
    await startService(svc, ['rdy-1', 'rdy-2']);
    const start = await readyCount(svc, 2);
    expect(start).toHaveLength(2);
    const load = new Load(PROXY, `${svc}.localhost`, '/', 2, 120_000).start();
    const rollouts: Hm[] = [];
    onTestFailed(() => console.log(`--- rollouts\n${rollouts.map((r) => r.logs.map((l) => l.msg).join('\n')).join('\n---\n')}\n--- sidecar\n${sidecar.logs.slice(-80).map((l) => l.msg).join('\n')}`));
    // The watch after "ready" is part of the readiness wait: rdy-1-r2 is not known to be ready yet.
    // Drains long enough for what a loaded machine still has in flight when the withdrawal lands.
    const slow = ['--drain-timeout', '2s', '--monitor', '30s'];
    const first = rollout([svc, '--image', BROKEN, ...slow]);
    rollouts.push(first);
    await waitFor('rdy-1-r2 watched', () => events(first, 'ready').length > 0, 60_000);
    first.kill('SIGINT');
    expect(await finished(first)).toBe(130);
    const afterInt = await readyCount(svc, 2);
    expect(await names(svc, true)).toEqual([`${P}rdy-1`, `${P}rdy-2`]);
    // Killed outright at the same point: the record says rdy-1-r2 was created, not that it was ready.
    const second = rollout([svc, '--image', BROKEN, ...slow]);
    rollouts.push(second);
    await waitFor('rdy-1-r2 watched', () => events(second, 'ready').length > 0, 60_000);
    second.kill('SIGKILL');
    await finished(second);
    const afterKill = await readyOf(svc);
    // A dry run of --rollback says what it would undo, and undoes nothing.
    const dry = rollout([svc, '--rollback', '--dry-run']);
    expect(await finished(dry)).toBe(0);
    expect(events(dry, 'plan').map((l) => l.message).join('\n')).toMatch(/would roll back the unfinished rollout/);
    expect(await names(svc, true)).toEqual([`${P}rdy-1`, `${P}rdy-1-r2`, `${P}rdy-2`]);
    // Resumed without --image: the image of the unfinished rollout, for both.
    const third = rollout([svc, '--drain-timeout', '2s', '--monitor', '0']);
    rollouts.push(third);
    expect(await finished(third)).toBe(0);
    await afterRequests(load, 30);
    await load.stop();
    const end = await readyCount(svc, 2);
    const images = await Promise.all(end.map(imageOf));
    console.log(`PROBE rollout readiness interrupts: ready ${start.length} at the start, ${afterInt.length} after SIGINT, ${afterKill.length} after SIGKILL (${afterKill.join(', ')}), ${end.length} after the resume (${end.map((n, i) => `${n} on ${images[i]}`).join(', ')}); ${load.ok} requests, ${load.failures.length} failed`);
    expect(afterInt).toEqual([`${P}rdy-1`, `${P}rdy-2`]);
    expect(afterKill.length).toBeGreaterThanOrEqual(2);
    expect(events(third, 'result')[0]).toMatchObject({ status: 'done', replaced: 2 });
    expect(end).toEqual([`${P}rdy-1-r2`, `${P}rdy-2-r2`]);
    expect(images).toEqual([BROKEN, BROKEN]);
    expect(await names(svc, true)).toEqual([`${P}rdy-1-r2`, `${P}rdy-2-r2`]);
    expect(load.failures).toEqual([]);
  });

  it('stop-first killed during a drain: the next run puts the old container back and finishes', async () => {
    const svc = uniq('sfk');
    await startService(svc, ['sfk-1', 'sfk-2']);
    expect(await readyCount(svc, 2)).toHaveLength(2);
    const first = rollout([svc, '--order', 'stop-first', '--drain-timeout', '20s', '--monitor', '0']);
    await waitFor('drain', () => events(first, 'drain').length > 0, 30_000);
    first.kill('SIGKILL');
    await finished(first);
    const again = rollout([svc, '--order', 'stop-first', '--drain-timeout', '300ms', '--monitor', '0']);
    const code = await finished(again);
    const end = await readyCount(svc, 2);
    console.log(`PROBE rollout stop-first killed during a drain, then run again: exit ${code}, ${events(again, 'resume').length} pair(s) resumed, ready ${end.join(', ')}`);
    expect(code, again.stderr.join('')).toBe(0);
    expect(end).toEqual([`${P}sfk-1-r2`, `${P}sfk-2-r2`]);
  });

  it('two rollouts of the same containers at once (by service name and by compose service): exactly one proceeds, the other exits 2', async () => {
    const svc = uniq('two');
    const compose = ['-l', `com.docker.compose.service=${svc}`, '-l', `com.docker.compose.project=${HOST}`];
    await startService(svc, ['two-1', 'two-2'], compose);
    expect(await readyCount(svc, 2)).toHaveLength(2);
    const a = rollout([svc, '--drain-timeout', '300ms', '--monitor', '0']);
    const b = rollout([svc, '--compose-service', '--drain-timeout', '300ms', '--monitor', '0']);
    const codes = await Promise.all([finished(a), finished(b)]);
    const loser = codes[0] === 2 ? b : a;
    const refused = (codes[0] === 2 ? a : b).stderr.join('');
    const end = await readyCount(svc, 2);
    console.log(`PROBE rollout twice at once: exits ${codes.join(' and ')}; refused with "${refused.trim()}"; ready after: ${end.join(', ')}`);
    expect([...codes].sort()).toEqual([0, 2]);
    expect(refused).toMatch(/^harbormaster: a rollout of these containers is running \(pid \d+ on .*: harbormaster rollout .+\)\n$/);
    expect(events(loser, 'result')[0]).toMatchObject({ status: 'done', replaced: 2 });
    expect(await names(svc, true)).toEqual([`${P}two-1-r2`, `${P}two-2-r2`]);
    expect(end).toEqual([`${P}two-1-r2`, `${P}two-2-r2`]);
  });

  it('--batch 2 with one replacement that cannot be created: both undone, no replacement left behind, no record left', async () => {
    const svc = uniq('bat');
    const gone = mkdtempSync(join(tmpdir(), 'hm-ro-mount-'));
    // bat-1's replacement cannot be created: its bind mount's source is deleted after it started.
    await startService(svc, ['bat-1'], ['--mount', `type=bind,source=${gone},target=/data`]);
    // bat-2's replacement takes Docker a while to create (40 anonymous volumes), so bat-1's failure
    // comes while that create is still on its way.
    await startService(svc, ['bat-2'], Array.from({ length: 40 }, (_, i) => ['-v', `/anon${i}`]).flat());
    expect(await readyCount(svc, 2)).toHaveLength(2);
    rmSync(gone, { recursive: true, force: true });
    const ro = rollout([svc, '--batch', '2', '--drain-timeout', '0', '--monitor', '0']);
    const code = await finished(ro);
    // A create still in flight when the batch failed would show up a moment later.
    await sleep(3_000);
    const left = await names(svc, true);
    const records = readdirSync(join(STATE, 'rollouts')).filter((f) => f.includes(svc));
    console.log(`PROBE rollout --batch 2, one create refused: exit ${code} ("${ro.stderr.join('').trim()}"); containers after: ${left.join(', ')}; records left: ${records.length}`);
    expect(code).toBe(1);
    expect(ro.stderr.join('')).toMatch(/rolled back: creating container .*bat-1-r2: .*bind source path does not exist/);
    expect(left).toEqual([`${P}bat-1`, `${P}bat-2`]);
    expect(records).toEqual([]);
    expect(await readyCount(svc, 2)).toEqual([`${P}bat-1`, `${P}bat-2`]);
    await docker('rm', '-f', '-v', `${P}bat-2`);
  });

  it('a rollback whose old container does not become ready again keeps its ready replacement; --rm containers are refused', async () => {
    const svc = uniq('keep');
    const flags = mkdtempSync(join(tmpdir(), 'hm-ro-flags-'));
    // Unhealthy while /flags/<its hostname> exists (and, on the broken image, when named bad-2).
    const health = ['--health-cmd', '[ ! -f /flags/$HOSTNAME ] && [ "$BROKEN" != "$NAME" ] && wget -q -O /dev/null http://127.0.0.1/', '-v', `${flags}:/flags`];
    await startService(svc, ['keep-1', 'keep-2=bad-2'], health);
    expect(await readyCount(svc, 2)).toHaveLength(2);
    const ro = rollout([svc, '--image', BROKEN, '--health-timeout', '4s', '--drain-timeout', '300ms', '--monitor', '0']);
    // Once keep-1 is replaced and stopped, it is made unable to become healthy again.
    await waitFor('keep-1 stopped', () => events(ro, 'stop').some((l) => l.container === `${P}keep-1`), 60_000);
    writeFileSync(join(flags, (await docker('inspect', '-f', '{{.Config.Hostname}}', `${P}keep-1`)).trim()), '');
    const code = await finished(ro);
    const end = await readyCount(svc, 2);
    console.log(`PROBE rollout rollback with an old container that does not come back: exit ${code}; "${ro.stderr.join('').trim().replace(/\n/g, ' / ')}"; ready after: ${end.join(', ')}`);
    expect(code).toBe(1);
    expect(ro.stderr.join('')).toMatch(new RegExp(`not put back .*: ${P}keep-1\n`));
    expect(end).toEqual([`${P}keep-1-r2`, `${P}keep-2`]);
    expect(await names(svc)).toEqual([`${P}keep-1-r2`, `${P}keep-2`]);

    const rmSvc = uniq('rm');
    await startService(rmSvc, ['rm-1'], ['--rm']);
    const rm = rollout([rmSvc, '--dry-run']);
    expect(await finished(rm)).toBe(2);
    expect(rm.stderr.join('')).toMatch(/rm-1: started with --rm: Docker deletes it as soon as it stops/);
    rmSync(flags, { recursive: true, force: true });
  });

  it('etcd v2 as the registry, unreadable for a while during the readiness wait: the rollout waits it out and finishes', async () => {
    const svc = uniq('e2');
    const fault = await FaultProxy.start({ host: '127.0.0.1', port: Number(ETCD_ENDPOINT.split(':')[1]) });
    etcd2Sidecar = new Hm(['register', `etcd2://${ETCD_ENDPOINT}${ETCD2_PREFIX}`, '--explicit', '--hostname', HOST, '--ttl', '10', '--api', `127.0.0.1:${ETCD2_API}`]);
    try {
      await etcd2Sidecar.waitForLog('register start', (l) => l.event === 'ready' || l.event === 'start', 30_000);
      await startService(svc, ['e2-1', 'e2-2']);
      expect(await readyCount(svc, 2)).toHaveLength(2);
      // Through a proxy that follows the registry this rollout withdraws from (the sidecar of `run`
      // hears of an old container only when Docker stops it: no drain for its proxy).
      etcd2Proxy = new Hm(['proxy', `etcd2://${ETCD_ENDPOINT}${ETCD2_PREFIX}`, '--listen', `127.0.0.1:${ETCD2_PROXY}`, '--api', 'off']);
      await waitFor('the etcd v2 proxy routes the service', async () => (await get(ETCD2_PROXY, `${svc}.localhost`).catch(() => undefined))?.status === 200, 30_000, 100);
      const load = new Load(ETCD2_PROXY, `${svc}.localhost`, '/', 2, 120_000).start();
      const ro = rollout([svc, '--registry', `etcd2://127.0.0.1:${fault.port}${ETCD2_PREFIX}`, '--api', `http://127.0.0.1:${ETCD2_API}`, '--drain-timeout', '2s', '--monitor', '0', '--health-timeout', '30s']);
      await waitFor('e2-1-r2 started', () => events(ro, 'start').length > 0, 60_000);
      // Longer than the etcd v2 client's own retries and its 5 s call timeout: reads fail outright.
      fault.cut();
      await sleep(7_000);
      fault.pass();
      const code = await finished(ro);
      await afterRequests(load, 30);
      await load.stop();
      const ready = events(ro, 'ready').map((l) => l.readyMs as number);
      console.log(`PROBE rollout on etcd v2 with the registry cut for 7 s during the readiness wait: exit ${code}, ready after ${ready.join('/')} ms; ${fault.stats().refused} connections refused meanwhile; ${load.ok} requests, ${load.failures.length} failed`);
      expect(code, ro.stderr.join('')).toBe(0);
      expect(fault.stats().refused).toBeGreaterThan(0);
      expect(ready[0]).toBeGreaterThanOrEqual(6_500);
      expect(await readyCount(svc, 2)).toEqual([`${P}e2-1-r2`, `${P}e2-2-r2`]);
      expect(load.failures).toEqual([]);
    } finally {
      await etcd2Proxy?.stop('SIGKILL');
      await etcd2Sidecar.stop('SIGKILL');
      etcd2Sidecar = undefined;
      await fault.close();
    }
  });

  it('a tag moved on its registry is pulled again by default (and the local image used, with a note, when the registry is down)', async () => {
    const svc = uniq('pull');
    const registry = await FakeRegistry.fromImage(IMAGE, `hm/pull-${HOST.slice(5)}`, 'HM_BUILD');
    const ref = await registry.start(FAKE_REGISTRY);
    try {
      await docker('pull', ref);
      await startService(svc, ['pull-1'], [], '127.0.0.1::80', ref);
      expect(await readyCount(svc, 1)).toHaveLength(1);
      // A new build is pushed under the same tag.
      registry.moveTag(1);
      const before = registry.manifestRequests;
      const ro = rollout([svc, '--drain-timeout', '0', '--monitor', '0']);
      expect(await finished(ro), ro.stderr.join('')).toBe(0);
      const moved = events(ro, 'note').map((l) => l.message as string).find((m) => m.includes('moved'));
      const runs = (await docker('inspect', '-f', '{{.Image}}', `${P}pull-1-r2`)).trim();
      // The registry is gone: the local image serves, with a note.
      await registry.stop();
      const offline = rollout([svc, '--drain-timeout', '0', '--monitor', '0']);
      expect(await finished(offline), offline.stderr.join('')).toBe(0);
      const fallback = events(offline, 'note').map((l) => l.message as string).find((m) => m.startsWith('pull of'));
      console.log(`PROBE rollout --pull missing (default) with a tag moved on a loopback registry: ${registry.manifestRequests - before} manifest request(s); "${moved}"; pull-1-r2 runs ${runs.slice(0, 19)} (the new build ${registry.image(1).id.slice(0, 19)}); registry down: "${fallback}"`);
      expect(runs).toBe(registry.image(1).id);
      expect(moved).toBe(`${ref} moved: ${registry.image(0).id.slice(7, 19)} → ${registry.image(1).id.slice(7, 19)}`);
      expect(fallback).toMatch(new RegExp(`^pull of ${ref.replace(/[.:/]/g, '\\$&')} failed \\(.+\\); using the local image ${registry.image(1).id.slice(7, 19)}$`));
      expect((await docker('inspect', '-f', '{{.Image}}', `${P}pull-1-r3`)).trim()).toBe(registry.image(1).id);
    } finally {
      await registry.stop();
      await removeContainers(`${P}pull-`);
      for (const n of [0, 1]) await docker('rmi', '-f', registry.image(n).id).catch(() => undefined);
    }
  });

  it('--batch 67% with --pause, --keep 2 and --restart always: kept containers get restart policy "no", --rollback gives it back; a progress bar on a terminal', async () => {
    const svc = uniq('kp');
    await startService(svc, ['kp-1', 'kp-2', 'kp-3'], ['--restart', 'always']);
    expect(await readyCount(svc, 3)).toHaveLength(3);
    const policy = async (n: string) => (await docker('inspect', '-f', '{{.HostConfig.RestartPolicy.Name}}', `${P}${n}`)).trim();
    const fast = ['--drain-timeout', '0', '--monitor', '0'];
    const first = rollout([svc, '--batch', '67%', '--pause', '1s', '--keep', '2', ...fast]);
    expect(await finished(first)).toBe(0);
    const batches = events(first, 'batch').map((l) => ({ at: Date.parse(l.time as string), n: l.message }));
    const lastStop = Math.max(...events(first, 'stop').filter((l) => ['kp-1', 'kp-2'].some((k) => l.container === `${P}${k}`)).map((l) => Date.parse(l.time as string)));
    const gap = batches[1].at - lastStop;
    expect(batches.map((b) => b.n)).toEqual([`batch 1/2: ${P}kp-1, ${P}kp-2`, `batch 2/2: ${P}kp-3`]);
    expect(gap).toBeGreaterThanOrEqual(1_000);
    expect(await Promise.all(['kp-1', 'kp-2', 'kp-3'].map(policy))).toEqual(['no', 'no', 'no']);
    expect(await Promise.all(['kp-1-r2', 'kp-2-r2', 'kp-3-r2'].map(policy))).toEqual(['always', 'always', 'always']);

    // On a terminal (a pseudo-terminal from script(1)): a progress bar per batch.
    const cmd = [process.execPath, BIN, 'rollout', svc, '--keep', '2', ...fast, '--hostname', HOST, '--api', `http://127.0.0.1:${API}`, '--state-dir', STATE].map((a) => `'${a}'`).join(' ');
    const tty = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const c = spawn('script', ['-qefc', cmd, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const t = setTimeout(() => c.kill('SIGKILL'), 90_000);
      c.on('exit', (code) => {
        clearTimeout(t);
        resolve({ code, out });
      });
    });
    const plain = tty.out.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
    expect(tty.code, plain).toBe(0);
    expect(plain).toMatch(/batch 3\/3 \[\u2588+\] 4\/4/);
    expect(plain).toMatch(/done: 3 container\(s\) of .* replaced/);
    expect(await names(svc)).toEqual([`${P}kp-1-r3`, `${P}kp-2-r3`, `${P}kp-3-r3`]);
    expect(await Promise.all(['kp-1', 'kp-1-r2'].map(policy))).toEqual(['no', 'no']);

    const back = rollout([svc, '--rollback', ...fast]);
    expect(await finished(back)).toBe(0);
    const end = await readyCount(svc, 3);
    const kept = (await names(svc, true)).filter((n) => !end.includes(n));
    console.log(`PROBE rollout --batch 67% --pause 1s --keep 2: batches ${batches.map((b) => b.n).join(' | ')}, ${gap} ms from the last stop of batch 1 to batch 2; kept with restart policy ${await policy('kp-1')}; progress bar: "${plain.match(/batch 3\/3 \[[^\]]+\] \d+\/4/g)?.at(-1)}"; after --rollback ready ${end.join(', ')} (restart policy ${await policy('kp-1-r2')}), kept ${kept.join(', ')}`);
    expect(end).toEqual([`${P}kp-1-r2`, `${P}kp-2-r2`, `${P}kp-3-r2`]);
    expect(await Promise.all(['kp-1-r2', 'kp-2-r2', 'kp-3-r2'].map(policy))).toEqual(['always', 'always', 'always']);
    expect(kept).toEqual([`${P}kp-1`, `${P}kp-2`, `${P}kp-3`]);
  });
});
