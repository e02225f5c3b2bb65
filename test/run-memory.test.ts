// `harbormaster run` as a child process on the real dockerd with the embedded registry: the
// proxy in front of real containers (routing, 404/503, WebSocket, SIGKILL under load, ejection),
// the status API, graceful shutdown on SIGTERM, and starting without a reachable Docker.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFailed } from 'vitest';
import { docker, DOCKER_HOST, removeContainers } from './support/docker.js';
import { Hm, spawnHm } from './support/harbormaster.js';
import { dig } from './support/dig.js';
import { uniq, waitFor } from './support/wait.js';
import { afterRequests, get, Load } from './support/proxy.js';
import { connectRefused, httpdScript, killableScript, metricValue, reachesAll, routingChecks, sigkillUnderLoad, startContainer, websocketCheck } from './support/run.js';

const HOST = uniq('hmpx');
const TAG = HOST.slice(5);
const P = `${HOST}-`;
const PROXY = 19710;
const API = 19711;
const DNS = 19714;
const DIR = mkdtempSync(join(tmpdir(), 'hm-run-'));
let hm: Hm;

const api = async (path: string) => fetch(`http://127.0.0.1:${API}${path}`);

beforeAll(async () => {
  writeFileSync(join(DIR, 'services.hbs'), '{{#each services}}{{name}} {{instances.length}}\n{{/each}}');
  hm = new Hm([
    'run', '--listen', `127.0.0.1:${PROXY}`, '--api', `127.0.0.1:${API}`, '--dns', `127.0.0.1:${DNS}`, '--dns-ttl', '5', '--hostname', HOST, '--deregister', 'on-success', '--resync', '10', '--drain-timeout', '15000',
    '--template', `${join(DIR, 'services.hbs')}:${join(DIR, 'services.txt')}`, '--wait', '50ms:500ms',
  ]);
  await hm.waitForLog('ready line', (l) => l.event === 'ready').catch((err: Error) => {
    throw new Error(`${err.message}\n${hm.dump()}`);
  });
});

beforeEach(() => {
  const from = hm.logs.length;
  onTestFailed(() => console.log(`--- harbormaster run, log lines during this test\n${hm.logs.slice(from).map((l) => l.msg).join('\n')}${hm.stderr.join('')}`));
});

afterAll(async () => {
  await hm.stop('SIGKILL');
  await removeContainers(P);
  rmSync(DIR, { recursive: true, force: true });
});

describe('harbormaster run (embedded registry)', () => {
  it('reaches both containers of one service with Host: web.localhost', async () => {
    await Promise.all([
      startContainer(`${P}w1`, { SERVICE_NAME: 'web', NAME: `web-1-${TAG}` }),
      startContainer(`${P}w2`, { SERVICE_NAME: 'web', NAME: `web-2-${TAG}` }),
    ]);
    // Other containers on this Docker host may be called web too: both of ours must answer.
    const seen = await reachesAll(PROXY, 'web.localhost', [`web-1-${TAG}`, `web-2-${TAG}`]);
    expect(seen.has(`web-1-${TAG}`) && seen.has(`web-2-${TAG}`)).toBe(true);
    const start = hm.logs.find((l) => l.event === 'ready')!;
    expect(start.msg).toContain(`proxy http://127.0.0.1:${PROXY}`);
  });

  it('keeps a --template rendered from the same catalog', async () => {
    const rendered = await waitFor('web in the rendered file', () => {
      const text = readFileSync(join(DIR, 'services.txt'), 'utf8');
      return /^web [2-9]\d*$/m.test(text) ? text : undefined;
    }, 20_000);
    expect(rendered).toMatch(/^web \d+$/m);
    const h = (await (await api('/v1/health')).json()) as { components: { render?: { ok: boolean; runs: number } } };
    expect(h.components.render).toMatchObject({ ok: true });
    expect(h.components.render!.runs).toBeGreaterThan(0);
  });

  it('routes SERVICE_HTTP_HOST, SERVICE_HTTP_PATH and VIRTUAL_HOST; 404 for unknown hosts, 503 for a crashed service', async () => {
    await routingChecks(PROXY, P, TAG);
  });

  it('passes a WebSocket upgrade through to a container and echoes frames both ways', async () => {
    await websocketCheck(PROXY, P, TAG);
  });

  it('loses no GET when a container is killed with SIGKILL under load', async () => {
    await sigkillUnderLoad(PROXY, P, TAG, hm);
  });

  it('ejects an instance whose server died of SIGKILL and retries its requests on another one', async () => {
    const svc = `ej-${TAG}`;
    await Promise.all([startContainer(`${P}ea`, { SERVICE_NAME: svc }, killableScript('ej-a')), startContainer(`${P}eb`, { SERVICE_NAME: svc }, httpdScript('ej-b'))]);
    await reachesAll(PROXY, `${svc}.localhost`, ['ej-a', 'ej-b']);
    const load = new Load(PROXY, `${svc}.localhost`, '/', 4, 45_000).start();
    try {
      await afterRequests(load, 50);
      // The server process dies; the container, and so the registration, stays.
      const mark = hm.logs.length;
      await docker('exec', `${P}ea`, 'killall', '-9', 'httpd');
      const ejected = (l: { event?: string; id?: unknown }) => l.event === 'ejected' && String(l.id).includes(`${P}ea`);
      await waitFor('ej-a ejected', () => hm.logs.slice(mark).find(ejected), 20_000);
      const fromA = load.bodies.get('ej-a\n') ?? 0;
      await afterRequests(load, 300);
      await load.stop();
      expect(load.failures).toEqual([]);
      expect(load.bodies.get('ej-a\n') ?? 0).toBe(fromA);
      const text = await (await api('/metrics')).text();
      expect(metricValue(text, 'harbormaster_proxy_retries_total', { service: svc })).toBeGreaterThan(0);
      const errors = metricValue(text, 'harbormaster_proxy_upstream_errors_total', { service: svc });
      expect(errors).toBeGreaterThan(0);
      // Ejected, it is only tried again when its backoff ends: a handful of errors, not one per request.
      expect(errors).toBeLessThan(40);
      const line = hm.logs.slice(mark).find(ejected)!;
      expect(line.msg).toMatch(/ejected for \d+ ms after/);
    } finally {
      await load.stop();
    }
  });

  it('serves the catalog, health and Prometheus metrics on the status API', async () => {
    const services = (await (await api('/v1/services')).json()) as { complete: boolean; services: { name: string; instances: { id: string; address: string; port: number; status: string }[] }[] };
    expect(services.complete).toBe(true);
    const web = services.services.find((s) => s.name === 'web')!;
    const ours = web.instances.filter((i) => i.id.startsWith(`${HOST}:`));
    expect(ours.map((i) => i.id).sort()).toEqual([`${HOST}:${P}w1:80`, `${HOST}:${P}w2:80`]);
    expect(ours.every((i) => i.address === '127.0.0.1' && i.port > 0 && i.status === 'passing')).toBe(true);
    const crashed = services.services.find((s) => s.name === `crash-${TAG}`)!;
    expect(crashed.instances[0].status).toBe('critical');

    const health = await api('/v1/health');
    expect(health.status).toBe(200);
    const h = (await health.json()) as { ok: boolean; lastSync: string; components: Record<string, { ok: boolean; connected?: boolean; [k: string]: unknown }> };
    expect(h.ok).toBe(true);
    expect(Date.parse(h.lastSync)).toBeGreaterThan(Date.now() - 120_000);
    expect(h.components.docker).toMatchObject({ ok: true, connected: true, endpoint: DOCKER_HOST });
    expect(h.components.registry).toMatchObject({ ok: true, registry: 'memory://' });
    expect(h.components.catalog).toMatchObject({ ok: true, complete: true });
    expect(h.components.proxy).toMatchObject({ ok: true, listen: `127.0.0.1:${PROXY}` });

    const metrics = await api('/metrics');
    expect(metrics.headers.get('content-type')).toContain('text/plain');
    const text = await metrics.text();
    expect(metricValue(text, 'harbormaster_proxy_requests_total', { service: 'web', status: '200' })).toBeGreaterThan(0);
    expect(metricValue(text, 'harbormaster_proxy_requests_total', { service: 'none', status: '404' })).toBeGreaterThan(0);
    expect(metricValue(text, 'harbormaster_proxy_requests_total', { service: `crash-${TAG}`, status: '503' })).toBeGreaterThan(0);
    expect(metricValue(text, 'harbormaster_registrations_total')).toBeGreaterThan(5);
    expect(metricValue(text, 'harbormaster_deregistrations_total')).toBeGreaterThan(0);
    for (const name of ['harbormaster_proxy_active_connections', 'harbormaster_registry_op_seconds_count', 'harbormaster_heartbeats_total', 'resident_memory_bytes']) {
      expect(text).toContain(name);
    }

    expect((await api('/nope')).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${API}/v1/services`, { method: 'POST' })).status).toBe(405);
  });

  it('answers DNS from the embedded registry: containers appear and disappear in the next answers', async () => {
    const svc = `dns-${TAG}`;
    await Promise.all([
      startContainer(`${P}d1`, { SERVICE_NAME: svc, SERVICE_TAGS: 'blue,v1' }),
      startContainer(`${P}d2`, { SERVICE_NAME: svc, SERVICE_TAGS: 'green' }),
    ]);
    const name = `${svc}.service.consul`;
    const srv = await waitFor('both containers in SRV', async () => {
      const r = await dig(DNS, name, 'SRV');
      return r.answer.length === 2 ? r : undefined;
    }, 30_000, 200);
    const ports = srv.data.map((d) => Number(d.split(' ')[2])).sort();
    const published = (await Promise.all([`${P}d1`, `${P}d2`].map(async (c) => Number((await docker('port', c, '80/tcp')).split(':').pop())))).sort();
    expect(ports).toEqual(published);
    expect(srv.additional).toEqual(['7f000001.addr.dc1.consul. 5 IN A 127.0.0.1']);
    expect((await dig(DNS, name)).data).toEqual(['127.0.0.1']);
    expect((await dig(DNS, `v1.blue.${name}`, 'SRV')).answer).toHaveLength(1);
    expect((await dig(DNS, `_${svc}._green.service.consul`, 'SRV')).data).toEqual([`1 1 ${(await docker('port', `${P}d2`, '80/tcp')).split(':').pop()} 7f000001.addr.dc1.consul.`]);
    expect((await dig(DNS, `${HOST}.node.consul`)).data).toEqual(['127.0.0.1']);
    const t0 = Date.now();
    await docker('stop', '-t', '1', `${P}d1`);
    await waitFor('d1 gone from SRV', async () => (await dig(DNS, name, 'SRV')).answer.length === 1, 20_000, 50);
    const gone = Date.now() - t0;
    await docker('stop', '-t', '1', `${P}d2`);
    // The last instance withdrawn: the service is no longer in the registry at all.
    await waitFor('service gone', async () => (await dig(DNS, name)).status === 'NXDOMAIN', 20_000, 50);
    // Known but with nothing to answer: the crashed container kept as critical (--deregister on-success).
    const empty = await dig(DNS, `crash-${TAG}.service.consul`);
    expect(empty).toMatchObject({ status: 'NOERROR', answer: [] });
    expect(empty.authority).toHaveLength(1);
    expect((await dig(DNS, `nosuch-${TAG}.service.consul`)).status).toBe('NXDOMAIN');
    const health = (await (await api('/v1/health')).json()) as { components: Record<string, { ok: boolean }> };
    expect(health.components.dns).toMatchObject({ ok: true, listening: true });
    console.log(`PROBE run DNS (memory://): SRV ${srv.data.join(' | ')}; docker stop → gone from SRV in ${gone} ms; last one stopped → NXDOMAIN; a critical-only service → ${empty.status} with no answer`);
  });

  it('on SIGTERM stops accepting, finishes the request in flight, and exits 0', async () => {
    const svc = `slow-${TAG}`;
    await startContainer(`${P}slow`, { SERVICE_NAME: svc }, httpdScript('slow', 3));
    await reachesAll(PROXY, `${svc}.localhost`, ['slow']);
    const slow = get(PROXY, `${svc}.localhost`, '/cgi-bin/slow', { timeoutMs: 20_000 });
    await waitFor('request in flight', async () => ((await (await api('/v1/health')).json()) as { components: { proxy: { inFlight: number } } }).components.proxy.inFlight === 1, 10_000, 50);
    hm.kill('SIGTERM');
    await waitFor('proxy port closed', () => connectRefused(PROXY), 10_000, 50);
    expect(await slow).toMatchObject({ status: 200, body: 'slow-done\n' });
    expect(await hm.exited).toBe(0);
    const stopped = hm.logs.find((l) => l.event === 'stopped' && l.component === 'proxy')!;
    expect(stopped.cut).toBe(0);
  });
});

describe('harbormaster run without a reachable Docker', () => {
  it('still starts, says so once in plain words, and keeps retrying', async () => {
    const nd = spawnHm(['run', '--docker', 'unix:///tmp/hm-no-docker-here.sock', '--listen', '127.0.0.1:19712', '--api', '127.0.0.1:19713', '--hostname', `${HOST}-nd`]);
    await nd.waitForLog('ready line', (l) => l.event === 'ready');
    const down = await nd.waitForLog('docker-down line', (l) => l.event === 'docker-down');
    expect(down.msg).toContain('cannot reach Docker at unix:///tmp/hm-no-docker-here.sock');
    expect((await get(19712, 'web.localhost')).status).toBe(404);
    const health = await answerForHealth(19713);
    expect(health.components.docker).toMatchObject({ ok: false, connected: false });
    expect(String(health.components.docker.lastError)).toContain('hm-no-docker-here.sock');
    // DNS on its default address, 127.0.0.1:8600, which the test environment's Consul agent holds:
    // run goes on without DNS and says so in one line.
    const dnsOff = await nd.waitForLog('dns-off line', (l) => l.event === 'dns-off');
    expect(dnsOff).toMatchObject({ level: 40, address: '127.0.0.1:8600' });
    expect(health.components.dns).toBeUndefined();
    // Retries go on quietly (debug level): still one line after a few seconds.
    await new Promise((r) => setTimeout(r, 4000));
    expect(nd.logs.filter((l) => l.event === 'docker-down')).toHaveLength(1);
    expect(await nd.stop()).toBe(0);
  });
});

async function answerForHealth(port: number): Promise<{ ok: boolean; components: Record<string, { ok: boolean; lastError?: string; [k: string]: unknown }> }> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/health`);
  expect(res.status).toBe(503);
  return (await res.json()) as { ok: boolean; components: Record<string, { ok: boolean; lastError?: string }> };
}
