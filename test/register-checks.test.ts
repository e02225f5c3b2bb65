// harbormaster register against the real dockerd and Consul: the SERVICE_CHECK_* checks as Consul
// runs them (TTL, Docker/cmd, gRPC with a service name), precedence of labels over env, and bad
// settings that skip only what they concern.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { docker, removeContainers, run } from './support/docker.js';
import { Hm, spawnHm } from './support/harbormaster.js';
import { CONSUL, type ConsulCheck, consulChecks, consulGet, consulServices, Daemon } from './support/registries.js';
import { sleep, uniq, waitFor } from './support/wait.js';

const HOST = uniq('itchk');
const P = `${HOST}-`; // container name prefix
let hm: Hm;

const services = () => consulServices(HOST);
const has = (id: string) => async () => (await services())[id];

/** The SERVICE_CHECK_* check of a service, as the agent at `port` reports it, once it has `status`. */
function checkWithStatus(id: string, status: string, port = 8500) {
  return async (): Promise<ConsulCheck & { Output?: string } | undefined> => {
    const c = (await consulChecks(port))[`service:${id}`] as (ConsulCheck & { Output?: string }) | undefined;
    return c?.Status === status ? c : undefined;
  };
}

/** A free loopback TCP port (closed again before it is used). */
async function freePort(): Promise<number> {
  const s = http.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  s.close();
  return port;
}

beforeAll(async () => {
  hm = new Hm(['register', '--hostname', HOST, '--ttl', '10', '--ip', '127.0.0.1', CONSUL]);
  await hm.waitForLog('startup line', (l) => l.event === 'start');
});

afterAll(async () => {
  await hm.stop();
  await removeContainers(P);
});

describe('SERVICE_CHECK_* in Consul', () => {
  it('SERVICE_CHECK_TTL=30s: check service:<id>, which PUT /v1/agent/check/pass/service:<id> makes passing', async () => {
    await run(`${P}ttl`, { env: { SERVICE_NAME: 'ttl', SERVICE_CHECK_TTL: '30s' } });
    const id = `${HOST}:${P}ttl:80`;
    await waitFor('ttl registered', has(id));
    const before = await waitFor('ttl check', async () => (await consulChecks())[`service:${id}`]);
    expect(before.ServiceID).toBe(id);
    expect(before.Type).toBe('ttl');
    expect(before.Status).toBe('critical'); // a TTL check waits for its first pass
    const res = await fetch(`http://127.0.0.1:8500/v1/agent/check/pass/${encodeURIComponent(`service:${id}`)}`, { method: 'PUT' });
    expect(res.status).toBe(200);
    await waitFor('ttl check passing', checkWithStatus(id, 'passing'), 10_000);
    // harbormaster's own heartbeat check is a different one.
    expect((await consulChecks())[`harbormaster-ttl:${id}`]?.Status).toBe('passing');
  });

  it('SERVICE_CHECK_GRPC=my.Service with SERVICE_CHECK_GRPC_USE_TLS=false: Consul asks <ip>:<port> for my.Service, in plaintext', async () => {
    // A gRPC health server on the host (plaintext HTTP/2), at the port a --net=host container exposes.
    const asked: string[] = [];
    const server = http2.createServer();
    server.on('stream', (stream, headers) => {
      const chunks: Buffer[] = [];
      stream.on('data', (d: Buffer) => chunks.push(d));
      stream.on('end', () => {
        // grpc.health.v1.HealthCheckRequest { string service = 1 } after the 5-byte message prefix.
        const msg = Buffer.concat(chunks).subarray(5);
        const service = msg[0] === 0x0a ? msg.subarray(2, 2 + msg[1]).toString() : '';
        asked.push(`${String(headers[':path'])} ${service}`);
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        // HealthCheckResponse { status = SERVING (1) }
        stream.end(Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]));
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    try {
      await docker('run', '-d', '--name', `${P}grpc`, '--net', 'host', '--expose', String(port),
        '-e', 'SERVICE_NAME=grpcsvc', '-e', 'SERVICE_CHECK_GRPC=my.Service', '-e', 'SERVICE_CHECK_GRPC_USE_TLS=false',
        '-e', 'SERVICE_CHECK_INTERVAL=1s', '-e', `PORT=${await freePort()}`, 'hm-test:2');
      const id = `${HOST}:${P}grpc:${port}`;
      const s = await waitFor('grpc service registered', has(id));
      expect([s.Address, s.Port]).toEqual(['127.0.0.1', port]);
      const check = await waitFor('grpc check passing', checkWithStatus(id, 'passing'), 15_000);
      expect(check.Type).toBe('grpc');
      expect(asked[0]).toBe('/grpc.health.v1.Health/Check my.Service');
    } finally {
      server.close();
    }
  });

  it('SERVICE_CHECK_CMD: a Docker check Consul runs inside the container (agent with enable_script_checks)', async () => {
    // Consul accepts Docker checks registered over its HTTP API only with enable_script_checks; the
    // shared agent has enable_local_script_checks, so this test brings its own. The containers
    // publish nothing and carry no name, so that only this test's registrator (--internal) sees them:
    // other registrators on this Docker host would send their Docker check to the shared agent.
    const consul = privateConsulWithScripts(17420);
    await consul.start();
    try {
      const host = `${HOST}-cmd`;
      const hm2 = spawnHm(['register', '--hostname', host, '--ttl', '10', '--internal', `consul://127.0.0.1:${consul.httpPort}`]);
      await hm2.waitForLog('start', (l) => l.event === 'start');
      const hidden = { publish: [], extra: ['--expose', '80'] };
      await run(`${P}cmdok`, { ...hidden, env: { SERVICE_CHECK_CMD: 'test -f /www/index.html', SERVICE_CHECK_INTERVAL: '1s' } });
      await run(`${P}cmdflip`, { ...hidden, env: { SERVICE_CHECK_CMD: 'test -f /tmp/ok || exit 2', SERVICE_CHECK_INTERVAL: '1s' } });
      const ok = `${host}:${P}cmdok:80`;
      const flip = `${host}:${P}cmdflip:80`;
      const passing = await waitFor('cmd check passing', checkWithStatus(ok, 'passing', consul.httpPort), 20_000);
      expect(passing.Type).toBe('docker');
      // The command really runs in the container: its result follows the container's files.
      await waitFor('flip registered', async () => (await consulChecks(consul.httpPort))[`service:${flip}`]);
      await sleep(2500); // a few runs of the 1 s check
      expect((await consulChecks(consul.httpPort))[`service:${flip}`].Status).toBe('critical');
      await docker('exec', `${P}cmdflip`, 'touch', '/tmp/ok');
      await waitFor('flip passing once /tmp/ok exists', checkWithStatus(flip, 'passing', consul.httpPort), 15_000);
      await docker('exec', `${P}cmdflip`, 'rm', '/tmp/ok');
      await waitFor('flip critical once /tmp/ok is gone', checkWithStatus(flip, 'critical', consul.httpPort), 15_000);
      expect(hm2.logs.filter((l) => l.event === 'error' && String(l.msg).includes(`${P}cmd`))).toEqual([]);
    } finally {
      await docker('rm', '-f', `${P}cmdok`, `${P}cmdflip`).catch(() => undefined);
      await consul.kill();
    }
  });
});

describe('precedence and bad settings', () => {
  it('a SERVICE_HTTP_HOST label beats env VIRTUAL_HOST + VIRTUAL_PORT', async () => {
    const vhost = { VIRTUAL_HOST: 'env.example.com', VIRTUAL_PORT: '80' };
    await run(`${P}vh`, { env: { SERVICE_NAME: 'vh', ...vhost }, labels: { SERVICE_HTTP_HOST: 'label.example.com' } });
    await run(`${P}vhenv`, { env: { SERVICE_NAME: 'vhenv', ...vhost } });
    const labelled = await waitFor('vh registered', has(`${HOST}:${P}vh:80`));
    expect(labelled.Meta.http_host).toBe('label.example.com');
    const aliased = await waitFor('vhenv registered', has(`${HOST}:${P}vhenv:80`));
    expect(aliased.Meta.http_host).toBe('env.example.com');
  });

  it('a bad free-form SERVICE_* setting drops that key only: the service registers, with one error line per key', async () => {
    await run(`${P}badkey`, {
      env: { SERVICE_NAME: 'badkey', SERVICE_X: 'a\u0007b', SERVICE_REGION: 'eu' },
      labels: { 'SERVICE_FOO.BAR': 'x' },
      publish: ['80', '81'],
    });
    const s80 = await waitFor('badkey port 80 registered', has(`${HOST}:${P}badkey:80`));
    const s81 = await waitFor('badkey port 81 registered', has(`${HOST}:${P}badkey:81`));
    for (const s of [s80, s81]) expect(s.Meta).toEqual({ region: 'eu', hm_host: HOST, ...(s.Meta.hm_digest ? { hm_digest: s.Meta.hm_digest } : {}) });
    const lines = (key: string) => hm.logs.filter((l) => l.event === 'error' && String(l.msg).includes(`container ${P}badkey:`) && String(l.msg).includes(key));
    await waitFor('error lines', () => lines('env SERVICE_X:').length > 0 && lines('label SERVICE_FOO.BAR:').length > 0);
    expect(lines('env SERVICE_X:')).toHaveLength(1);
    expect(lines('env SERVICE_X:')[0].msg).toMatch(/control characters; key ignored$/);
    expect(lines('label SERVICE_FOO.BAR:')).toHaveLength(1);
    expect(lines('label SERVICE_FOO.BAR:')[0].msg).toContain('"foo.bar"');
  });

  it('more than 62 meta keys: the service is skipped with one clear line, and Consul never sees it', async () => {
    const rec = await recordingProxy(8500);
    try {
      const host = `${HOST}-meta`;
      const hm2 = spawnHm(['register', '--hostname', host, '--ttl', '10', '--ip', '127.0.0.1', `consul://127.0.0.1:${rec.port}`]);
      await hm2.waitForLog('start', (l) => l.event === 'start');
      const keys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`SERVICE_K${i}`, `v${i}`]));
      await run(`${P}meta63`, { env: { SERVICE_NAME: 'meta63' }, labels: keys(63) });
      await run(`${P}meta62`, { env: { SERVICE_NAME: 'meta62' }, labels: keys(62) });
      // 62 of a service's own keys and harbormaster's fit in Consul's 64.
      const ok = await waitFor('meta62 registered', async () => (await consulServices(host))[`${host}:${P}meta62:80`]);
      expect(Object.keys(ok.Meta).filter((k) => /^k\d+$/.test(k))).toHaveLength(62);
      const line = await hm2.waitForLog('meta63 error', (l) => l.event === 'error' && String(l.msg).includes(`container ${P}meta63:`));
      expect(line.msg).toContain('63 meta keys');
      expect(line.msg).toContain('at most 62');
      expect(line.msg).toContain('service on port 80/tcp skipped');
      await sleep(1000);
      expect(hm2.logs.filter((l) => l.event === 'error' && String(l.msg).includes(`${P}meta63`))).toHaveLength(1);
      expect(Object.keys(await consulServices(host)).filter((id) => id.includes(`${P}meta63`))).toEqual([]);
      // Nothing about it ever reached Consul, and nothing this registrator sent failed (a new ID is
      // looked up first, so that a service someone else registered under it is not replaced: 404, free).
      expect(rec.requests.filter((r) => r.body.includes(`${P}meta63`))).toEqual([]);
      expect(rec.requests.filter((r) => r.body.includes(`${P}meta62`)).map((r) => r.status)).toContain(200);
      const lookup = (r: Recorded) => r.method === 'GET' && r.path.startsWith('/v1/agent/service/') && r.status === 404;
      expect(rec.requests.filter((r) => r.status >= 400 && !lookup(r) && r.body.includes(`${P}meta6`))).toEqual([]);
    } finally {
      await rec.close();
    }
  });
});

// ---------------------------------------------------------------------------

/** A Consul dev agent on ports base..base+5 that accepts script and Docker checks over its HTTP API. */
function privateConsulWithScripts(base: number): Daemon & { httpPort: number } {
  const state = process.env.HM_TEST_STATE ?? '/tmp/harbormaster-test';
  const bin = readFileSync(`${state}/consul-path`, 'utf8').trim();
  const d = new Daemon(
    bin,
    ['agent', '-dev', '-client', '127.0.0.1', '-bind', '127.0.0.1', '-http-port', String(base), '-dns-port', String(base + 1),
      '-serf-lan-port', String(base + 2), '-serf-wan-port', String(base + 3), '-server-port', String(base + 4), '-grpc-port', String(base + 5),
      '-node', `hm-scripts-${base}`, '-hcl', 'enable_script_checks = true'],
    async () => (await consulGet<string>('/status/leader', base)).includes(':'),
  );
  return Object.assign(d, { httpPort: base });
}

interface Recorded {
  method: string;
  path: string;
  status: number;
  body: string;
}

/** An HTTP proxy to the agent at `target` that records every request, its body and the answer's status. */
async function recordingProxy(target: number): Promise<{ port: number; requests: Recorded[]; close(): Promise<void> }> {
  const requests: Recorded[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const up = http.request({ host: '127.0.0.1', port: target, method: req.method, path: req.url, headers: req.headers }, (r) => {
        requests.push({ method: req.method ?? '', path: req.url ?? '', status: r.statusCode ?? 0, body: `${req.url ?? ''} ${body.toString()}` });
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.destroy());
      up.end(body);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
