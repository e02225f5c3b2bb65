import os from 'node:os';
import { describe, it, expect } from 'vitest';
import { UsageError } from '../../registry/types.js';
import { parseRegisterArgs } from './register.js';

/** No DOCKER_HOST: the default socket applies. */
const NO_ENV = {};

function parsed(argv: string[], env: Record<string, string | undefined> = NO_ENV) {
  const cfg = parseRegisterArgs(argv, env);
  expect(cfg).toBeDefined();
  return cfg!;
}

/** Asserts a UsageError whose message contains every fragment (usually the flag name). */
function expectUsageError(argv: string[], ...fragments: string[]): void {
  let caught: unknown;
  try {
    parseRegisterArgs(argv, NO_ENV);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(UsageError);
  for (const f of fragments) expect((caught as Error).message).toContain(f);
}

describe('parseRegisterArgs: defaults', () => {
  it('has registrator-like defaults', () => {
    expect(parsed(['consul://'])).toEqual({
      registry: 'consul://',
      hostname: os.hostname(),
      ip: undefined,
      internal: false,
      explicit: false,
      tags: [],
      ttl: 30,
      ttlRefresh: 10,
      resync: 60,
      deregister: 'always',
      cleanup: false,
      retryAttempts: -1,
      retryInterval: 2000,
      docker: 'unix:///var/run/docker.sock',
      dockerTimeoutMs: 10_000,
      registryTimeoutMs: 10_000,
      healthGate: true,
      keepOnExit: false,
      logFormat: 'json',
      logLevel: 'info',
    });
  });

  it('takes the Docker endpoint from DOCKER_HOST', () => {
    expect(parsed(['memory://'], { DOCKER_HOST: 'tcp://10.0.0.1:2375' }).docker).toBe('tcp://10.0.0.1:2375');
  });

  it('an empty DOCKER_HOST falls back to the socket', () => {
    expect(parsed(['memory://'], { DOCKER_HOST: '' }).docker).toBe('unix:///var/run/docker.sock');
  });

  it('--docker beats DOCKER_HOST', () => {
    expect(parsed(['--docker', 'unix:///run/docker.sock', 'memory://'], { DOCKER_HOST: 'tcp://10.0.0.1:2375' }).docker).toBe('unix:///run/docker.sock');
  });

  it('a bad DOCKER_HOST is refused', () => {
    expect(() => parseRegisterArgs(['memory://'], { DOCKER_HOST: 'ssh://me@host' })).toThrow(UsageError);
  });

  it('the default --ttl-refresh is a third of --ttl', () => {
    expect(parsed(['--ttl', '60', 'memory://']).ttlRefresh).toBe(20);
    expect(parsed(['--ttl', '2', 'memory://']).ttlRefresh).toBe(1);
    expect(parsed(['--ttl', '0', 'memory://'])).toMatchObject({ ttl: 0, ttlRefresh: 1 });
  });

  it('--help returns undefined', () => {
    expect(parseRegisterArgs(['--help'], NO_ENV)).toBeUndefined();
    expect(parseRegisterArgs(['-h', 'consul://'], NO_ENV)).toBeUndefined();
  });
});

describe('parseRegisterArgs: every flag', () => {
  it('reads every flag', () => {
    const cfg = parsed([
      '--hostname', 'node-1.example.com',
      '--ip', '10.0.0.5',
      '--internal',
      '--explicit',
      '--tags', 'a, b\\,c',
      '--ttl', '90',
      '--ttl-refresh', '15',
      '--resync', '0',
      '--deregister', 'on-success',
      '--cleanup',
      '--retry-attempts', '5',
      '--retry-interval', '500',
      '--docker', 'tcp://docker.example.com:2376',
      '--docker-timeout', '3s',
      '--registry-timeout', '2500ms',
      '--no-health-gate',
      '--keep-on-exit',
      '--log-format', 'pretty',
      '--log-level', 'debug',
      'etcd://etcd1:2379,etcd2:2379/services',
    ]);
    expect(cfg).toEqual({
      registry: 'etcd://etcd1:2379,etcd2:2379/services',
      hostname: 'node-1.example.com',
      ip: '10.0.0.5',
      internal: true,
      explicit: true,
      tags: ['a', 'b,c'],
      ttl: 90,
      ttlRefresh: 15,
      resync: 0,
      deregister: 'on-success',
      cleanup: true,
      retryAttempts: 5,
      retryInterval: 500,
      docker: 'tcp://docker.example.com:2376',
      dockerTimeoutMs: 3000,
      registryTimeoutMs: 2500,
      healthGate: false,
      keepOnExit: true,
      logFormat: 'pretty',
      logLevel: 'debug',
    });
  });

  it('accepts flags after the URI and --flag=value', () => {
    expect(parsed(['memory://', '--ttl=45', '--retry-attempts=-1'])).toMatchObject({ registry: 'memory://', ttl: 45, ttlRefresh: 15, retryAttempts: -1 });
  });

  it('accepts an IPv6 --ip', () => {
    expect(parsed(['--ip', 'fd00::5', 'memory://']).ip).toBe('fd00::5');
  });

  it('--ttl 0 disables TTLs, so any --ttl-refresh goes', () => {
    expect(parsed(['--ttl', '0', '--ttl-refresh', '100', 'memory://'])).toMatchObject({ ttl: 0, ttlRefresh: 100 });
  });
});

describe('parseRegisterArgs: usage errors', () => {
  it('a missing registry URI', () => {
    expectUsageError([], 'registry URI', 'none');
  });

  it('two registry URIs', () => {
    expectUsageError(['consul://', 'etcd://'], 'registry URI', 'consul:// etcd://');
  });

  it('a bad registry URI', () => {
    expectUsageError(['zookeeper://zk'], 'zookeeper');
  });

  it.each([
    [['--ttl', 'abc'], '--ttl abc'],
    [['--ttl=-5'], '--ttl -5'],
    [['--ttl', '1.5'], '--ttl 1.5'],
    [['--ttl', '86401'], '--ttl 86401'],
    [['--ttl-refresh', '30'], '--ttl-refresh 30'],
    [['--ttl', '10', '--ttl-refresh', '20'], '--ttl-refresh 20'],
    [['--ttl-refresh', '0'], '--ttl-refresh 0'],
    [['--resync', 'soon'], '--resync soon'],
    [['--deregister', 'sometimes'], '--deregister sometimes'],
    [['--retry-attempts', 'x'], '--retry-attempts x'],
    [['--retry-attempts=-2'], '--retry-attempts -2'],
    [['--retry-interval', '5'], '--retry-interval 5'],
    [['--ip', 'not-an-ip'], '--ip not-an-ip'],
    [['--hostname', 'bad host'], '--hostname'],
    [['--docker', 'ftp://docker:21'], '--docker ftp://docker:21'],
    [['--docker', 'unix://relative.sock'], '--docker unix://relative.sock'],
    [['--docker', 'tcp://docker'], '--docker tcp://docker'],
    [['--log-format', 'xml'], '--log-format xml'],
    [['--log-level', 'loud'], '--log-level loud'],
    [['--tags', 'a,b\u0007'], '--tags'],
    [['--bogus'], '--bogus'],
  ])('%j', (flags, fragment) => {
    expectUsageError([...flags, 'consul://'], fragment);
  });

  it('a flag without its value', () => {
    expectUsageError(['consul://', '--ttl'], '--ttl');
  });

  it('a negative number without "=" is ambiguous for parseArgs', () => {
    expectUsageError(['--ttl', '-5', 'consul://'], '--ttl');
  });

  it('a flag given a value it does not take', () => {
    expectUsageError(['--cleanup=yes', 'consul://'], '--cleanup');
  });
});
