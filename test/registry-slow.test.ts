// A Consul agent that answers registrations later than harbormaster's operation timeout, but
// applies them (as an agent holding thousands of services does): a slow agent, not a dead one.
// A private dev agent behind the HTTP fault proxy, whose delay rule holds every registration
// past the timeout and still delivers it once the client gave up. harbormaster (services from a
// folder, no Docker) must keep making progress meanwhile, report the slowness on /v1/health,
// not take it for an outage, not write again what the agent already applied, and converge once
// the delay stops.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { HttpFaultProxy } from './support/http-fault-proxy.js';
import { Hm } from './support/harbormaster.js';
import { measure, reportFault } from './support/observer.js';
import { consulServices, privateConsul } from './support/registries.js';
import { sleep, uniq, waitFor } from './support/wait.js';

const CONSUL_BASE = 28700;
const PROXY_PORT = 28710;
const API_PORT = 28720;
const SERVICES = 40;
/** --registry-timeout: the Consul calls themselves end at 80 % of it. */
const TIMEOUT_MS = 1_000;
/** Every registration reaches the agent this late: after the call timed out. */
const DELAY_MS = 1_500;
const SLOW_PHASE_MS = 20_000;

const consul = privateConsul(CONSUL_BASE);
let proxy: HttpFaultProxy | undefined;
let hm: Hm | undefined;
const dir = mkdtempSync(join(tmpdir(), 'hm-slow-'));

afterAll(async () => {
  await hm?.stop('SIGTERM');
  await proxy?.close();
  await consul.kill();
  rmSync(dir, { recursive: true, force: true });
});

interface RegistryHealth {
  ok: boolean;
  connected: boolean;
  slow: boolean;
  inflightLimit: number;
  pending: number;
  registered: number;
}

async function registryHealth(): Promise<RegistryHealth> {
  const res = await fetch(`http://127.0.0.1:${API_PORT}/v1/health`);
  const body = (await res.json()) as { components: { registry: RegistryHealth } };
  return body.components.registry;
}

describe('registry answering later than the operation timeout (Consul)', () => {
  it('keeps registering at a lower rate, reports "slow", never an outage, writes nothing twice, converges once the agent keeps up', async () => {
    await consul.start();
    proxy = await HttpFaultProxy.start({ host: '127.0.0.1', port: CONSUL_BASE }, PROXY_PORT);
    const registerRule = proxy.delay({ method: 'PUT', path: /^\/v1\/agent\/service\/register/ }, DELAY_MS, { evenIfClientLeft: true });

    const host = uniq('slowc');
    const names = Array.from({ length: SERVICES }, (_, i) => `slow-${i}`);
    writeFileSync(join(dir, 'many.json'), JSON.stringify({ services: names.map((name, i) => ({ name, address: '127.0.0.1', port: 20_000 + i })) }));
    const expected = new Set(names.map((n) => `${host}:file:${n}`));
    const held = async () =>
      Object.values(await consulServices(host, CONSUL_BASE))
        .filter((s) => s.ID.includes(':file:'))
        .map((s) => ({ key: s.ID, id: s.ID, address: s.Address, port: s.Port }));

    hm = new Hm([
      'register', '--docker', 'off', '--services-dir', dir, '--hostname', host,
      '--ttl', '10', '--registry-timeout', `${TIMEOUT_MS}ms`, '--retry-interval', '500',
      '--api', `127.0.0.1:${API_PORT}`, `consul://127.0.0.1:${PROXY_PORT}`,
    ]);
    await hm.waitForLog('status API listening', (l) => l.event === 'listen' && l.component === 'api');

    // Slow phase: count what the agent holds every second, and what /v1/health says.
    const t0 = Date.now();
    const progress: number[] = [];
    let sawSlow = false;
    let minLimit = Infinity;
    while (Date.now() - t0 < SLOW_PHASE_MS) {
      await sleep(1_000);
      progress.push((await held()).length);
      const h = await registryHealth();
      if (h.slow) sawSlow = true;
      minLimit = Math.min(minLimit, h.inflightLimit);
    }
    const duringSlow = progress[progress.length - 1];
    const h = await registryHealth();
    console.log(`SLOW registrations held by the agent each second while every one took ${DELAY_MS} ms (timeout ${TIMEOUT_MS} ms): ${progress.join(',')}; health then: ${JSON.stringify(h)}`);

    // Steady progress, not a stall: the count grew over the phase, in more than one step.
    expect(duringSlow).toBeGreaterThan(progress[2] ?? 0);
    expect(new Set(progress).size).toBeGreaterThan(2);
    // Reported, not silent: slow and the writes at once lowered; still connected (not an outage).
    expect(sawSlow).toBe(true);
    expect(minLimit).toBeLessThan(8);
    const outages = hm.logs.filter((l) => typeof l.msg === 'string' && /unreachable/.test(l.msg));
    expect(outages.map((l) => l.msg)).toEqual([]);
    expect(hm.logs.some((l) => l.event === 'registry-slow')).toBe(true);

    // The agent keeps up again: everything converges.
    registerRule.remove();
    const healed = Date.now();
    await waitFor('every service registered and nothing owed', async () => {
      const m = measure(expected, await held());
      const r = await registryHealth();
      return m.lost === 0 && m.leftBehind === 0 && r.pending === 0 && !r.slow;
    }, 60_000, 200);
    const converge = Date.now() - healed;
    const m = measure(expected, await held());
    const puts = proxy.requests({ method: 'PUT', path: /^\/v1\/agent\/service\/register/ }).length;
    const after = await registryHealth();
    reportFault('consul registrations slower than the timeout', {
      converge,
      ...m,
      slowPhase: `${SLOW_PHASE_MS}ms`,
      heldAfterSlowPhase: `${duringSlow}/${SERVICES}`,
      minInflightLimit: minLimit,
      registerPuts: `${puts}/${SERVICES + 1}`,
      healthOkAfter: after.ok,
    });
    expect(m).toEqual({ lost: 0, duplicated: 0, leftBehind: 0 });
    expect(after.ok).toBe(true);
    // Writes the agent applied late are recognised, not sent again and again.
    expect(puts).toBeLessThan(2 * (SERVICES + 1));
  }, 180_000);
});
