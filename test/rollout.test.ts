// `harbormaster rollout` against the real Docker engine, with `harbormaster run` (embedded registry,
// built-in proxy, status API with withdrawals) as the sidecar: plans, refusals, start-first under
// load, a replacement that never becomes healthy (rolled back, or paused), stop-first for a fixed
// host port, --keep and --rollback, and an interrupted rollout resumed by a second run.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFailed } from 'vitest';
import { docker, IMAGE, removeContainers } from './support/docker.js';
import { Hm, type LogLine } from './support/harbormaster.js';
import { afterRequests, Load } from './support/proxy.js';
import { reachesAll } from './support/run.js';
import { sleep, uniq, waitFor } from './support/wait.js';

const HOST = uniq('hmro');
const P = `${HOST}-`;
const PROXY = 28400;
const API = 28401;
const STATE = mkdtempSync(join(tmpdir(), 'hm-rollout-'));
const BROKEN = `hm-test:broken-${HOST.slice(5)}`;
let sidecar: Hm;

/** Containers of a service answering with their name; a health check that turns red where the env BROKEN names the container. */
async function startService(svc: string, names: string[], extra: string[] = [], publish = '127.0.0.1::80'): Promise<void> {
  await Promise.all(
    names.map((n) =>
      docker(
        'run', '-d', '--name', `${P}${n}`, '-e', `SERVICE_NAME=${svc}`, '-e', `NAME=${n}`, '-l', `app.svc=${svc}`, '-p', publish,
        '--health-cmd', '[ "$BROKEN" != "$NAME" ] && wget -q -O /dev/null http://127.0.0.1/', '--health-interval', '500ms', '--health-retries', '2',
        ...extra, IMAGE,
      ),
    ),
  );
}

function rollout(args: string[]): Hm {
  const hm = new Hm(['rollout', ...args, '--json', '--hostname', HOST, '--api', `http://127.0.0.1:${API}`, '--state-dir', STATE]);
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
    console.log(`PROBE rollout refusals: unknown service, missing image, start-first on a fixed port, Swarm task → exit 2 with one line each; dry run left ${(await names(svc)).length} containers as they were`);
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
});
