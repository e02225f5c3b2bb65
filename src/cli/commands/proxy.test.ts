import { describe, expect, it } from 'vitest';
import { UsageError } from '../../registry/types.js';
import { parseProxyArgs } from './proxy.js';
import { parseRunArgs } from './run.js';

function usageError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('expected a UsageError');
}

describe('parseProxyArgs', () => {
  it('has loopback defaults', () => {
    expect(parseProxyArgs(['consul://127.0.0.1:8500'])).toEqual({
      registry: 'consul://127.0.0.1:8500',
      listen: { host: '127.0.0.1', port: 8080 },
      api: { host: '127.0.0.1', port: 8081 },
      domain: 'localhost',
      balance: 'round-robin',
      connectTimeoutMs: 5000,
      responseTimeoutMs: 60000,
      idleTimeoutMs: 60000,
      bodyTimeoutMs: 60000,
      maxConnectionsPerInstance: 256,
      tunnelIdleTimeoutMs: 3600000,
      retries: 2,
      healthCheck: undefined,
      statuses: ['passing'],
      trustedProxies: [],
      maxHeaderSize: 16384,
      headerTimeoutMs: 10000,
      maxBodySize: 1024 ** 3,
      maxTempSize: 2 * 1024 ** 3,
      drainTimeoutMs: 30000,
      logFormat: 'json',
      logLevel: 'info',
    });
  });

  it('takes every flag', () => {
    const c = parseProxyArgs([
      'etcd://127.0.0.1:2379/x', '--listen', '[::1]:9000', '--api', 'off', '--domain', 'apps.test', '--balance', 'least-conn',
      '--connect-timeout', '100', '--response-timeout', '200', '--idle-timeout', '300', '--retries', '0',
      '--health-check', '/healthz?full=1', '--health-interval', '1000', '--status', 'passing,warning', '--drain-timeout', '0',
      '--trusted-proxies', '10.0.0.0/8,::1', '--max-header-size', '8192', '--header-timeout', '2500',
      '--body-timeout', '400', '--max-connections-per-instance', '8', '--tunnel-idle-timeout', '500',
      '--max-body-size', '512m', '--max-temp-size', '0',
    ])!;
    expect(c).toMatchObject({
      maxBodySize: 512 * 1024 ** 2,
      maxTempSize: 0,
      listen: { host: '::1', port: 9000 },
      api: undefined,
      domain: 'apps.test',
      balance: 'least-conn',
      connectTimeoutMs: 100,
      responseTimeoutMs: 200,
      idleTimeoutMs: 300,
      retries: 0,
      healthCheck: { path: '/healthz?full=1', intervalMs: 1000 },
      statuses: ['passing', 'warning'],
      drainTimeoutMs: 0,
      trustedProxies: ['10.0.0.0/8', '::1/128'],
      maxHeaderSize: 8192,
      headerTimeoutMs: 2500,
      bodyTimeoutMs: 400,
      maxConnectionsPerInstance: 8,
      tunnelIdleTimeoutMs: 500,
    });
  });

  it('returns undefined for --help', () => {
    expect(parseProxyArgs(['--help'])).toBeUndefined();
  });

  it('names the flag in every usage error', () => {
    expect(usageError(() => parseProxyArgs([]))).toContain('one registry URI');
    expect(usageError(() => parseProxyArgs(['bogus']))).toContain('registry URI');
    expect(usageError(() => parseProxyArgs(['memory://', '--listen', '127.0.0.1']))).toContain('--listen');
    expect(usageError(() => parseProxyArgs(['memory://', '--listen', '127.0.0.1:70000']))).toContain('out of range');
    expect(usageError(() => parseProxyArgs(['memory://', '--max-body-size', '1.5g']))).toBe('--max-body-size 1.5g: expected a size in bytes, or with k, m or g (e.g. 512m)');
    expect(usageError(() => parseProxyArgs(['memory://', '--max-temp-size', '-1']))).toContain('--max-temp-size -1');
    expect(usageError(() => parseProxyArgs(['memory://', '--listen', 'bad host:80']))).toContain('--listen');
    expect(usageError(() => parseProxyArgs(['memory://', '--api', 'x']))).toContain('--api');
    expect(usageError(() => parseProxyArgs(['memory://', '--domain', 'Bad_Domain']))).toContain('--domain');
    expect(usageError(() => parseProxyArgs(['memory://', '--balance', 'random']))).toContain('--balance');
    expect(usageError(() => parseProxyArgs(['memory://', '--retries', '-1']))).toContain('--retries');
    expect(usageError(() => parseProxyArgs(['memory://', '--connect-timeout', '1s']))).toContain('--connect-timeout');
    expect(usageError(() => parseProxyArgs(['memory://', '--status', 'ok']))).toContain('--status');
    expect(usageError(() => parseProxyArgs(['memory://', '--health-check', 'healthz']))).toContain('--health-check');
    expect(usageError(() => parseProxyArgs(['memory://', '--health-interval', '1000']))).toContain('--health-check');
    expect(usageError(() => parseProxyArgs(['memory://', '--nope']))).toContain('--nope');
    expect(usageError(() => parseProxyArgs(['memory://', '--trusted-proxies', '10.0.0.0/8,proxy.local']))).toBe('--trusted-proxies 10.0.0.0/8,proxy.local: "proxy.local" is not an IPv4/IPv6 address or CIDR');
    expect(usageError(() => parseProxyArgs(['memory://', '--trusted-proxies', '::/200']))).toBe('--trusted-proxies ::/200: "::/200": the prefix length must be 0 to 128');
    expect(usageError(() => parseProxyArgs(['memory://', '--max-header-size', '100']))).toBe('--max-header-size 100: must be between 1024 and 1048576');
    expect(usageError(() => parseProxyArgs(['memory://', '--header-timeout', '10s']))).toBe('--header-timeout 10s: not a whole number');
    expect(usageError(() => parseProxyArgs(['memory://', '--max-connections-per-instance', '0']))).toContain('--max-connections-per-instance 0: must be between 1 and 65536');
    expect(usageError(() => parseProxyArgs(['memory://', '--body-timeout', '2s']))).toContain('--body-timeout');
    expect(usageError(() => parseProxyArgs(['memory://', '--tunnel-idle-timeout', '-5']))).toContain('--tunnel-idle-timeout');
    expect(usageError(() => parseProxyArgs(['memory://', '--listen', '127.0.0.1:8081']))).toContain('the same address as --listen');
  });
});

describe('parseRunArgs', () => {
  it('defaults to the embedded registry and loopback ports', () => {
    const c = parseRunArgs([], {})!;
    expect(c.register.registry).toBe('memory://');
    expect(c.register.docker).toBe('unix:///var/run/docker.sock');
    expect(c.proxy.listen).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(c.proxy.api).toEqual({ host: '127.0.0.1', port: 8081 });
  });

  it('hands register flags to the registrator and proxy flags to the proxy', () => {
    const c = parseRunArgs(['--registry', 'consul://127.0.0.1:8500', '--hostname', 'h1', '--ttl=10', '--listen', '127.0.0.1:9080', '--deregister', 'on-success', '--retries=1', '--cleanup'], {})!;
    expect(c.register).toMatchObject({ registry: 'consul://127.0.0.1:8500', hostname: 'h1', ttl: 10, deregister: 'on-success', cleanup: true });
    expect(c.proxy).toMatchObject({ listen: { host: '127.0.0.1', port: 9080 }, retries: 1 });
    expect(parseRunArgs(['--trusted-proxies', '172.16.0.0/12', '--header-timeout', '5000'], {})!.proxy).toMatchObject({ trustedProxies: ['172.16.0.0/12'], headerTimeoutMs: 5000 });
  });

  it('rejects arguments, bad register flags and bad proxy flags with one line', () => {
    expect(usageError(() => parseRunArgs(['consul://x'], {}))).toContain('run takes no arguments');
    expect(usageError(() => parseRunArgs(['--ttl', '1'], {}))).toContain('--ttl');
    expect(usageError(() => parseRunArgs(['--registry', 'nope'], {}))).toContain('registry URI');
    expect(usageError(() => parseRunArgs(['--listen', 'x'], {}))).toContain('--listen');
  });

  it('takes the template flags of render, with --status and --domain shared with the proxy', () => {
    const c = parseRunArgs(['--template', 'templates/nginx.conf.hbs:/tmp/hm-run-nginx.conf:nginx -s reload', '--check', 'nginx -t -c {{src}}', '--wait', '100ms:1s', '--domain', 'apps.test', '--status', 'passing,warning'], {})!;
    expect(c.render).toMatchObject({ wait: { minMs: 100, maxMs: 1000 }, domain: 'apps.test', statuses: ['passing', 'warning'], once: false, dry: false });
    expect(c.render!.templates).toHaveLength(1);
    expect(c.render!.templates[0]).toMatchObject({ destination: '/tmp/hm-run-nginx.conf', command: 'nginx -s reload', check: 'nginx -t -c {{src}}' });
    expect(parseRunArgs([], {})!.render).toBeUndefined();
    expect(usageError(() => parseRunArgs(['--wait', '1s'], {}))).toContain('--wait');
    expect(usageError(() => parseRunArgs(['--check', 'true'], {}))).toContain('--check');
  });

  it('returns undefined for --help', () => {
    expect(parseRunArgs(['-h'], {})).toBeUndefined();
  });
});
