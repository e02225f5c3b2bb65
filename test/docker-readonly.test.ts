// The read-only Docker socket proxy of examples/docker-socket-proxy (real HAProxy, its shipped
// config with only the listen port and the engine's socket path changed) in front of the real
// engine: it refuses writes; `register` (into the dev Consul) and `run` register, route and
// withdraw a container through it without one refused call; `rollout` through it fails with one
// line naming the refused call, and the service is untouched.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { docker, DOCKER_SOCKET, removeContainers, run } from './support/docker.js';
import { runCli, spawnHm } from './support/harbormaster.js';
import { get } from './support/proxy.js';
import { CONSUL, consulServices } from './support/registries.js';
import { Haproxy, tempDir } from './support/render.js';
import { uniq, waitFor } from './support/wait.js';

const EXAMPLE = new URL('../examples/docker-socket-proxy/haproxy.cfg', import.meta.url);
const PORT = 29250;
/** The same config with its path rule dropped: every GET passes, so a rollout gets as far as its first write. */
const GETS_PORT = 29251;
const RUN_LISTEN = 29252;
const RUN_API = 29253;

const HOST = uniq('hm-dro');
const P = `${HOST}-`;
const DIR = tempDir('hm-docker-ro-');
const proxies: Haproxy[] = [];
const figures: string[] = [];

/** The shipped config, templated for its listen port and the engine's socket only. */
function config(port: number, allowEveryGet = false): string {
  let cfg = readFileSync(EXAMPLE, 'utf8');
  const swaps: [string, string][] = [
    ['bind 127.0.0.1:2375', `bind 127.0.0.1:${port}`],
    ['server engine /var/run/docker.sock', `server engine ${DOCKER_SOCKET}`],
  ];
  if (allowEveryGet) swaps.push(['unless read_method read_path', 'unless read_method']);
  for (const [from, to] of swaps) {
    if (!cfg.includes(from)) throw new Error(`${EXAMPLE.pathname} no longer has "${from}"`);
    cfg = cfg.replace(from, to);
  }
  const file = join(DIR, `docker-ro-${port}.cfg`);
  writeFileSync(file, cfg);
  return file;
}

interface Request {
  method: string;
  path: string;
  status: number;
}

/** The proxy's request log (log-format "%ci %HM %HPO %ST" on stderr), from line `from` on. */
function requests(proxy: Haproxy, from = 0): Request[] {
  return proxy
    .log()
    .split('\n')
    .flatMap((l) => {
      const m = /^\S+ ([A-Z]+) (\S+) (\d{3})$/.exec(l.trim());
      return m ? [{ method: m[1], path: m[2], status: Number(m[3]) }] : [];
    })
    .slice(from);
}

function tally(what: string, rs: Request[]): { allowed: number; denied: Request[] } {
  const denied = rs.filter((r) => r.status === 403);
  const calls = (list: Request[]) => [...new Set(list.map((r) => `${r.method} ${r.path.replace(/^\/v1\.\d+/, '').replace(/^\/containers\/[0-9a-f]{64}\//, '/containers/{id}/')}`))].sort().join(', ');
  const refused = denied.length > 0 ? `; refused: ${calls(denied)}` : '';
  figures.push(`${what}: ${rs.length - denied.length} allowed, ${denied.length} denied (allowed: ${calls(rs.filter((r) => r.status !== 403))}${refused})`);
  return { allowed: rs.length - denied.length, denied };
}

/** One request to the Docker proxy, its path sent as written (Node folds no dot segments). */
function raw(port: number, method: string, path: string, body?: string): Promise<{ status: number; body: string }> {
  return get(port, `127.0.0.1:${port}`, path, { method, body, headers: body ? { 'content-type': 'application/json' } : {} });
}

async function startProxy(port: number, allowEveryGet = false): Promise<Haproxy> {
  const dir = join(DIR, `master-${port}`);
  mkdirSync(dir);
  const h = new Haproxy(config(port, allowEveryGet), dir);
  proxies.push(h);
  await h.start();
  await waitFor(`the Docker proxy on ${port}`, async () => (await raw(port, 'GET', '/_ping')).status === 200, 10_000);
  return h;
}

async function exists(name: string): Promise<boolean> {
  return docker('inspect', '-f', '{{.Id}}', name).then(() => true, () => false);
}

let proxy: Haproxy;

beforeAll(async () => {
  proxy = await startProxy(PORT);
});

afterAll(async () => {
  for (const h of proxies) await h.stop();
  await removeContainers(P);
  console.log(`[docker-readonly] requests through the read-only proxy per command:\n  ${figures.join('\n  ')}`);
});

describe('the read-only Docker socket proxy (examples/docker-socket-proxy/haproxy.cfg)', () => {
  it('passes the reads the sidecar makes and refuses every write and every other endpoint', async () => {
    const from = requests(proxy).length;
    const victim = `${P}victim`;
    const id = await run(victim);
    for (const path of ['/_ping', '/version', '/v1.41/_ping', '/containers/json?all=1', `/containers/${id}/json`, `/v1.41/containers/${victim}/json`, '/events?since=0&until=1']) {
      expect((await raw(PORT, 'GET', path)).status, `GET ${path}`).toBe(200);
    }
    expect((await raw(PORT, 'HEAD', '/_ping')).status).toBe(200);

    const create = await raw(PORT, 'POST', `/containers/create?name=${P}made`, JSON.stringify({ Image: 'hm-test:2' }));
    expect(create.status).toBe(403);
    expect(JSON.parse(create.body)).toMatchObject({ message: expect.stringContaining('read-only Docker API') });
    expect(await exists(`${P}made`)).toBe(false);
    expect((await raw(PORT, 'DELETE', `/containers/${victim}?force=1`)).status).toBe(403);
    expect((await raw(PORT, 'DELETE', '/containers/x')).status).toBe(403);
    expect((await raw(PORT, 'POST', `/containers/${id}/stop`)).status).toBe(403);
    expect((await raw(PORT, 'POST', `/containers/${id}/exec`, JSON.stringify({ Cmd: ['true'] }))).status).toBe(403);
    for (const path of ['/info', '/images/json', '/images/hm-test:2/json', '/networks', `/containers/${id}/logs?stdout=1`, `/containers/${id}/export`, '/v1.41/../images/json', `/containers/${id}%2F..%2F..%2Finfo/json`, '/containers//json']) {
      expect((await raw(PORT, 'GET', path)).status, `GET ${path}`).toBe(403);
    }
    expect(await docker('inspect', '-f', '{{.State.Running}}', victim)).toBe('true');
    const t = tally('direct checks', requests(proxy, from));
    expect(t.denied.length).toBe(14);
  });

  it('register: a container started on the engine is registered in Consul and withdrawn on stop, no call refused', async () => {
    const from = requests(proxy).length;
    const svc = `${HOST}-reg`;
    const hm = spawnHm(['register', '--hostname', HOST, '--ip', '127.0.0.1', '--explicit', '--ttl', '15', '--resync', '5', CONSUL], { DOCKER_HOST: `tcp://127.0.0.1:${PORT}` });
    await hm.waitForLog('start line', (l) => l.event === 'start', 30_000);
    const name = `${P}reg`;
    await run(name, { env: { SERVICE_NAME: svc } });
    const id = `${HOST}:${name}:80`;
    await waitFor(`${id} in Consul`, async () => (await consulServices(HOST))[id], 30_000);
    await docker('stop', '-t', '1', name);
    await waitFor(`${id} gone from Consul`, async () => !(await consulServices(HOST))[id], 30_000);
    expect(await hm.stop()).toBe(0);
    const t = tally('register', requests(proxy, from));
    expect(t.denied).toEqual([]);
    expect(t.allowed).toBeGreaterThanOrEqual(3);
    expect(hm.logs.filter((l) => /refused/.test(l.msg))).toEqual([]);
  });

  it('run: a container is registered and routed by the built-in proxy, and withdrawn on stop, no call refused', async () => {
    const from = requests(proxy).length;
    const vhost = `${HOST}.test`;
    const hm = spawnHm(['run', '--listen', `127.0.0.1:${RUN_LISTEN}`, '--api', `127.0.0.1:${RUN_API}`, '--hostname', HOST, '--resync', '5'], { DOCKER_HOST: `tcp://127.0.0.1:${PORT}` });
    await hm.waitForLog('ready line', (l) => l.event === 'ready', 30_000);
    const name = `${P}run`;
    await run(name, { env: { SERVICE_NAME: `${HOST}-run`, SERVICE_HTTP_HOST: vhost, NAME: name } });
    await waitFor(`${vhost} routed to ${name}`, async () => {
      const a = await get(RUN_LISTEN, vhost).catch(() => undefined);
      return a?.status === 200 && a.body.trim() === name;
    }, 30_000);
    await docker('stop', '-t', '1', name);
    await waitFor(`${vhost} no longer routed`, async () => [404, 503].includes((await get(RUN_LISTEN, vhost).catch(() => undefined))?.status ?? 0), 30_000);
    await hm.stop();
    const t = tally('run', requests(proxy, from));
    expect(t.denied).toEqual([]);
    expect(t.allowed).toBeGreaterThanOrEqual(3);
  });

  it('rollout: through the read-only proxy it fails with one line naming the refused call, and the service is untouched', async () => {
    const svc = `${HOST}-web`;
    const sidecar = spawnHm(['run', '--listen', `127.0.0.1:${RUN_LISTEN}`, '--api', `127.0.0.1:${RUN_API}`, '--hostname', HOST, '--resync', '5'], { DOCKER_HOST: `tcp://127.0.0.1:${PORT}` });
    await sidecar.waitForLog('ready line', (l) => l.event === 'ready', 30_000);
    const names = [`${P}web-1`, `${P}web-2`];
    const ids = await Promise.all(names.map((n) => run(n, { env: { SERVICE_NAME: svc, NAME: n }, labels: { 'app.svc': svc } })));
    await waitFor(`${svc} registered twice`, async () => {
      const body = (await (await fetch(`http://127.0.0.1:${RUN_API}/v1/services`)).json()) as { services: { name: string; instances: unknown[] }[] };
      return body.services.find((s) => s.name === svc)?.instances.length === 2;
    }, 30_000);
    const state = tempDir('hm-docker-ro-state-');
    const rollout = (port: number) =>
      runCli(['rollout', svc, '--hostname', HOST, '--api', `http://127.0.0.1:${RUN_API}`, '--state-dir', state, '--health-timeout', '20s', '--drain-timeout', '0s'], { DOCKER_HOST: `tcp://127.0.0.1:${port}` });
    const ours = async () => (await docker('ps', '-a', '--filter', `label=app.svc=${svc}`, '--format', '{{.ID}} {{.Names}} {{.State}}')).split('\n').filter(Boolean).sort();
    const before = await ours();

    // The shipped proxy: the first call outside its list is the image lookup, before anything changes.
    let from = requests(proxy).length;
    const r = await rollout(PORT);
    const lines = r.stderr.trim().split('\n');
    expect(r.code, r.stderr).toBe(1);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^harbormaster: rollout of ${svc}: Docker at tcp://127\\.0\\.0\\.1:${PORT} refused GET /images/hm-test:2/json \\(HTTP 403: read-only Docker API`));
    expect(lines[0]).toContain('needs write access to the Docker API');
    expect(r.stderr).not.toMatch(/\n\s+at /);
    figures.push(`rollout (shipped proxy) said: ${lines[0]}`);
    let t = tally('rollout (shipped proxy)', requests(proxy, from));
    expect(t.denied.map((d) => `${d.method} ${d.path.replace(/^\/v1\.\d+/, '')}`)).toEqual(['GET /images/hm-test:2/json']);
    expect(await ours()).toEqual(before);

    // Every GET allowed, still no write: the rollout gets as far as its create, which is refused; nothing was made, nothing to undo.
    const gets = await startProxy(GETS_PORT, true);
    from = requests(gets).length;
    const r2 = await rollout(GETS_PORT);
    const lines2 = r2.stderr.trim().split('\n');
    expect(r2.code, r2.stderr).toBe(1);
    expect(lines2).toHaveLength(1);
    expect(lines2[0]).toMatch(new RegExp(`^harbormaster: rollout of ${svc} rolled back: creating container ${P}web-1-r2: Docker at tcp://127\\.0\\.0\\.1:${GETS_PORT} refused POST /containers/create \\(HTTP 403`));
    expect(r2.stderr).not.toMatch(/\n\s+at /);
    figures.push(`rollout (every GET allowed) said: ${lines2[0]}`);
    t = tally('rollout (every GET allowed)', requests(gets, from));
    expect(t.denied.map((d) => `${d.method} ${d.path.replace(/^\/v1\.\d+/, '')}`)).toEqual(['POST /containers/create']);
    expect(await ours()).toEqual(before);
    for (const [i, n] of names.entries()) expect(await docker('inspect', '-f', '{{.Id}} {{.State.Running}}', n)).toBe(`${ids[i]} true`);
    // The sidecar still serves both (a refused rollout withdrew nothing for good).
    const body = (await (await fetch(`http://127.0.0.1:${RUN_API}/v1/services`)).json()) as { services: { name: string; instances: { status: string }[] }[] };
    expect(body.services.find((s) => s.name === svc)?.instances.filter((i) => i.status === 'passing')).toHaveLength(2);
    await sidecar.stop();
  });
});
