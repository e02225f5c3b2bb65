// The status API with a bearer token, against started harbormaster processes: every request
// without the token is a 401 (a withdrawal too), /v1/health tells a probe only ok or not, the
// token is read from a flag, a file or the environment and never written out; a status API on
// a non-loopback address without a token is refused at start (exit 2). Listeners default to
// loopback.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli, spawnHm } from './support/harbormaster.js';
import { waitFor } from './support/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'hm-api-token-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const TOKEN = 'api-token-5d1c0e7f9b2a';

async function call(port: number, path: string, init: RequestInit & { token?: string } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (init.token) headers.set('authorization', `Bearer ${init.token}`);
  return fetch(`http://127.0.0.1:${port}${path}`, { ...init, headers, signal: AbortSignal.timeout(10_000) });
}

describe('status API bearer token', () => {
  it('register (token from a file): 401 without it on every path and method, a withdrawal included; /v1/health says only ok', async () => {
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const services = join(dir, 'svc');
    (await import('node:fs')).mkdirSync(services);
    writeFileSync(join(services, 'web.yaml'), 'service:\n  name: web\n  address: 127.0.0.1\n  port: 8080\n');
    const port = 29001;
    const hm = spawnHm(['register', '--docker', 'off', '--services-dir', services, '--hostname', 'tok', '--api', `127.0.0.1:${port}`, '--api-token-file', tokenFile, 'memory://']);
    await hm.waitForLog('status API listening', (l) => l.event === 'listen' && l.component === 'api');
    let refused = 0;
    for (const path of ['/v1/services', '/metrics', '/v1/withdraw', '/elsewhere']) {
      for (const token of [undefined, 'wrong', `${TOKEN}x`, TOKEN.slice(0, -1)]) {
        const r = await call(port, path, { token });
        expect(r.status, `${path} ${token}`).toBe(401);
        expect(r.headers.get('www-authenticate')).toMatch(/^Bearer /);
        refused++;
      }
    }
    for (const method of ['POST', 'DELETE']) {
      const r = await call(port, '/v1/withdraw?container=x', { method });
      expect(r.status).toBe(401);
      refused++;
    }
    const probe = await call(port, '/v1/health');
    expect(await probe.json()).toEqual({ ok: probe.status === 200 });
    const full = await waitFor('registered', async () => {
      const r = await call(port, '/v1/services', { token: TOKEN });
      const body = (await r.json()) as { services: { name: string }[] };
      return r.status === 200 && body.services.some((s) => s.name === 'web') ? body : undefined;
    });
    expect(full.services.map((s) => s.name)).toEqual(['web']);
    const health = (await (await call(port, '/v1/health', { token: TOKEN })).json()) as { components: Record<string, unknown> };
    expect(Object.keys(health.components).sort()).toEqual(['files', 'registry']);
    expect((await call(port, '/metrics', { token: TOKEN })).status).toBe(200);
    // With the token the request gets through: --docker off has no withdrawals to list.
    expect((await call(port, '/v1/withdraw', { token: TOKEN })).status).toBe(404);
    await hm.stop();
    const out = hm.stdout.join('') + hm.stderr.join('');
    expect(out).not.toContain(TOKEN);
    console.log(`status API token: ${refused} requests without the right token refused with 401; ${out.length} bytes of output scanned, token found 0 times`);
  });

  it('proxy (token from HM_API_TOKEN) and dns (from --api-token): the same; the token in argv is masked in the log', async () => {
    const proxy = spawnHm(['proxy', 'memory://', '--listen', '127.0.0.1:29002', '--api', '127.0.0.1:29003'], { HM_API_TOKEN: TOKEN });
    const dns = spawnHm(['dns', 'memory://', '--listen', '127.0.0.1:29004', '--api', '127.0.0.1:29005', '--api-token', TOKEN, '--log-level', 'debug']);
    for (const [hm, port] of [[proxy, 29003], [dns, 29005]] as const) {
      await hm.waitForLog('status API listening', (l) => l.event === 'listen' && l.component === 'api');
      expect((await call(port, '/v1/services')).status).toBe(401);
      expect((await call(port, '/v1/services', { token: 'nope' })).status).toBe(401);
      expect((await call(port, '/v1/services', { token: TOKEN })).status).toBe(200);
      expect((await call(port, '/v1/health')).status).toBe(200);
      expect(await (await call(port, '/v1/health')).json()).toEqual({ ok: true });
    }
    await proxy.stop();
    await dns.stop();
    for (const hm of [proxy, dns]) expect(hm.stdout.join('') + hm.stderr.join('')).not.toContain(TOKEN);
  });

  it('a non-loopback status API without a token does not start (exit 2) unless --api-insecure; a bad token file is named', async () => {
    const open = await runCli(['proxy', 'memory://', '--listen', '127.0.0.1:29006', '--api', '0.0.0.0:29007']);
    expect(open.code).toBe(2);
    expect(open.stderr).toBe('harbormaster: --api 0.0.0.0:29007: not a loopback address; give --api-token-file <file> (or HM_API_TOKEN), or --api-insecure to serve it to anyone who can reach it\n');
    const missing = await runCli(['dns', 'memory://', '--api', '127.0.0.1:29008', '--api-token-file', join(dir, 'absent')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--api-token-file');
    expect(missing.stderr).toContain('ENOENT');
    const spaced = await runCli(['dns', 'memory://', '--api', '127.0.0.1:29008', '--api-token', 'two words-secret']);
    expect(spaced.code).toBe(2);
    expect(spaced.stderr).not.toContain('words-secret');
    const insecure = spawnHm(['proxy', 'memory://', '--listen', '127.0.0.1:29009', '--api', '0.0.0.0:29010', '--api-insecure']);
    await insecure.waitForLog('status API listening', (l) => l.event === 'listen' && l.component === 'api');
    expect((await call(29010, '/v1/services')).status).toBe(200);
  });

  it('credentials in the environment are masked from the first log line on, in both log formats', async () => {
    // A token that happens to be a word of the start line: it is registered before anything is logged.
    for (const format of ['json', 'pretty']) {
      const hm = spawnHm(['proxy', 'consul://127.0.0.1:29011', '--listen', '127.0.0.1:29012', '--api', 'off', '--log-format', format], { CONSUL_HTTP_TOKEN: 'following' });
      await waitFor('the start line', () => hm.stdout.join('').includes('harbormaster proxy:'));
      await hm.stop();
      const out = hm.stdout.join('') + hm.stderr.join('');
      expect(out).toContain('harbormaster proxy: [redacted] consul://127.0.0.1:29011');
      expect(out).not.toContain('following');
    }
  });

  it('listeners default to loopback: the proxy on 127.0.0.1:8080, its API on 127.0.0.1:8081, DNS on 127.0.0.1:8600', async () => {
    const { parseProxyArgs } = await import('../src/cli/commands/proxy.js');
    const { parseDnsArgs } = await import('../src/cli/commands/dns.js');
    const p = parseProxyArgs(['memory://'])!;
    expect([p.listen, p.api]).toEqual([{ host: '127.0.0.1', port: 8080 }, { host: '127.0.0.1', port: 8081 }]);
    const d = parseDnsArgs(['memory://'])!;
    expect([d.listen, d.api]).toEqual([{ host: '127.0.0.1', port: 8600 }, undefined]);
  });
});
