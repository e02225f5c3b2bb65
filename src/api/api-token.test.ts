import http from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../log/logger.js';
import { redact } from '../log/redact.js';
import { UsageError } from '../registry/types.js';
import { apiAddress, apiToken, bearerMatches } from './api-token.js';
import { Sidecar } from '../rollout/registry-view.js';
import type { WithdrawalControl } from '../sources/docker/withdrawals.js';
import { StatusServer } from './status-server.js';

const usage = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('no UsageError');
};

describe('apiToken', () => {
  it('reads the flag, the file, then HM_API_TOKEN and HM_API_TOKEN_FILE; registers it for redaction; never echoes it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hm-token-'));
    const file = join(dir, 'token');
    writeFileSync(file, 'from-file-9c1e\n');
    expect(apiToken({ 'api-token': 'flag-token-3f2a' }, { HM_API_TOKEN: 'env' })).toBe('flag-token-3f2a');
    expect(apiToken({ 'api-token-file': file }, {})).toBe('from-file-9c1e');
    expect(apiToken({}, { HM_API_TOKEN: 'env-token-77b0' })).toBe('env-token-77b0');
    expect(apiToken({}, { HM_API_TOKEN_FILE: file })).toBe('from-file-9c1e');
    expect(apiToken({}, {})).toBeUndefined();
    expect(redact('x flag-token-3f2a y env-token-77b0')).toBe('x [redacted] y [redacted]');
    expect(usage(() => apiToken({ 'api-token': 'a', 'api-token-file': file }, {}))).toContain('give one');
    expect(usage(() => apiToken({ 'api-token-file': join(dir, 'none') }, {}))).toContain('ENOENT');
    const bad = usage(() => apiToken({ 'api-token': 'has space-secret-1d' }, {}));
    expect(bad).toContain('--api-token');
    expect(bad).not.toContain('space-secret-1d');
  });

  it('a non-loopback API needs a token or --api-insecure; loopback and localhost do not', () => {
    expect(apiAddress({ host: '127.0.0.2', port: 1 }, {}, {})).toEqual({ host: '127.0.0.2', port: 1 });
    expect(apiAddress({ host: '::1', port: 1 }, {}, {})).toEqual({ host: '::1', port: 1 });
    expect(apiAddress({ host: 'localhost', port: 1 }, {}, {})).toEqual({ host: 'localhost', port: 1 });
    expect(usage(() => apiAddress({ host: '0.0.0.0', port: 8081 }, {}, {}))).toBe(
      '--api 0.0.0.0:8081: not a loopback address; give --api-token-file <file> (or HM_API_TOKEN), or --api-insecure to serve it to anyone who can reach it',
    );
    expect(apiAddress({ host: '0.0.0.0', port: 1 }, { 'api-insecure': true }, {})).toEqual({ host: '0.0.0.0', port: 1 });
    expect(apiAddress({ host: '0.0.0.0', port: 1 }, {}, { HM_API_TOKEN: 'tok-0a1b' })).toEqual({ host: '0.0.0.0', port: 1, token: 'tok-0a1b' });
    expect(usage(() => apiAddress(undefined, { 'api-token': 'x' }, {}))).toContain('only meaningful with a status API');
    // HM_API_TOKEN in the environment of a command without an API is not an error.
    expect(apiAddress(undefined, {}, { HM_API_TOKEN: 'x' })).toBeUndefined();
  });

  it('bearerMatches: only the exact token, as a Bearer credential', () => {
    expect(bearerMatches('Bearer abc', 'abc')).toBe(true);
    expect(bearerMatches('bearer abc', 'abc')).toBe(true);
    for (const h of [undefined, '', 'Bearer', 'Bearer ab', 'Bearer abcd', 'Basic abc', 'abc', 'Bearer abc def']) expect(bearerMatches(h, 'abc')).toBe(false);
  });
});

describe('StatusServer with a token', () => {
  const server = new StatusServer({ catalog: () => undefined, components: { registry: () => ({ ok: false, lastError: 'connect ECONNREFUSED 10.1.2.3:8501' }) } }, silentLogger());
  afterAll(() => server.close());
  const get = (port: number, path: string, headers: http.OutgoingHttpHeaders = {}, method = 'GET') =>
    new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path, method, headers }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      });
      req.on('error', reject);
      req.end();
    });

  it('401 with WWW-Authenticate without the token; /v1/health answers only its status and ok; everything with it', async () => {
    const { port } = await server.listen({ host: '127.0.0.1', port: 0, token: 's3cret-api-token' });
    for (const [path, method] of [['/v1/services', 'GET'], ['/metrics', 'GET'], ['/nothing', 'GET'], ['/v1/health', 'POST']]) {
      for (const auth of [undefined, 'Bearer wrong', 'Basic czNjcmV0', 'Bearer s3cret-api-token2']) {
        const r = await get(port, path, auth ? { authorization: auth } : {}, method);
        expect(r.status, `${method} ${path} ${auth}`).toBe(401);
        expect(r.headers['www-authenticate']).toMatch(/^Bearer/);
      }
    }
    const open = await get(port, '/v1/health');
    expect(open.status).toBe(503);
    expect(JSON.parse(open.body)).toEqual({ ok: false });
    const full = await get(port, '/v1/health', { authorization: 'Bearer s3cret-api-token' });
    expect(full.status).toBe(503);
    expect(JSON.parse(full.body)).toMatchObject({ ok: false, lastError: 'registry: connect ECONNREFUSED 10.1.2.3:8501' });
    expect((await get(port, '/v1/services', { authorization: 'Bearer s3cret-api-token' })).status).toBe(503);
    expect((await get(port, '/metrics', { authorization: 'Bearer s3cret-api-token' })).status).toBe(200);
  });
});

describe('rollout against a sidecar with a token', () => {
  const withdrawals = { list: () => [] } as unknown as WithdrawalControl;
  const server = new StatusServer({ catalog: () => undefined, components: {}, withdrawals }, silentLogger());
  afterAll(() => server.close());

  it('sends the token it is given; without it the sidecar answers 401', async () => {
    const { port } = await server.listen({ host: '127.0.0.1', port: 0, token: 'sidecar-token-4e1' });
    const api = new URL(`http://127.0.0.1:${port}`);
    expect(await new Sidecar(api, 'sidecar-token-4e1').reachable()).toBeUndefined();
    expect(await new Sidecar(api).reachable()).toContain('answered 401');
    expect(await new Sidecar(api, 'wrong').reachable()).toContain('answered 401');
  });
});
