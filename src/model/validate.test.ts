import { describe, it, expect } from 'vitest';
import type { ServiceInstance } from './service-instance.js';
import {
  checkBoolean,
  checkDnsLabel,
  checkDuration,
  checkGrpcService,
  checkHttpMethod,
  checkMetaKey,
  checkPort,
  checkText,
  durationMs,
  parseBoolean,
  printable,
  validateCheck,
  validateInstance,
} from './validate.js';

describe('durationMs', () => {
  it.each([
    ['10s', 10_000],
    ['500ms', 500],
    ['1m30s', 90_000],
    ['1h', 3_600_000],
    ['1.5s', 1_500],
    ['2h45m', 9_900_000],
    ['0s', 0],
    ['250us', 0.25],
    ['250µs', 0.25],
    ['1000000ns', 1],
  ])('%s = %d ms', (value, ms) => {
    expect(durationMs(value)).toBeCloseTo(ms, 9);
  });

  it.each(['', '10', '10 seconds', '-1s', '1d', 's', '1.s', ' 10s', '10s '])('%j is not a duration', (value) => {
    expect(durationMs(value)).toBeUndefined();
  });
});

describe('checkDuration', () => {
  it('accepts Go durations', () => {
    for (const v of ['10s', '1m30s', '500ms', '1h']) expect(checkDuration(v)).toBeUndefined();
  });

  it('names the bad value', () => {
    expect(checkDuration('10 seconds')).toContain('"10 seconds" is not a duration');
  });

  it('escapes control characters in the message', () => {
    expect(checkDuration('1\n')).toContain('"1\\n"');
  });
});

describe('checkDnsLabel', () => {
  it.each(['web', 'a', 'web-1', '1web', 'a'.repeat(63)])('%s is a DNS label', (v) => {
    expect(checkDnsLabel(v)).toBeUndefined();
  });

  it.each(['', 'Web', 'my_service', '-web', 'web-', 'a.b', 'a b', 'a'.repeat(64), 'wéb'])('%j is not a DNS label', (v) => {
    expect(checkDnsLabel(v)).toContain('is not a DNS label');
  });

  it('shortens a long value in the message', () => {
    expect(checkDnsLabel('x'.repeat(200))!.length).toBeLessThan(200);
  });
});

describe('checkText', () => {
  it('accepts plain text', () => {
    expect(checkText('hello, world')).toBeUndefined();
  });

  it.each(['a\nb', 'a\tb', '\u0000', '\u007f', '\u0085', '\u2028', '\u2029'])('refuses control character %j', (v) => {
    expect(checkText(v)).toBe('contains control characters');
  });

  it('refuses over-long text', () => {
    expect(checkText('x'.repeat(513))).toBe('longer than 512 characters');
    expect(checkText('x'.repeat(512))).toBeUndefined();
    expect(checkText('x'.repeat(11), 10)).toBe('longer than 10 characters');
  });
});

describe('checkMetaKey', () => {
  it('accepts lowercase keys with _ and -', () => {
    expect(checkMetaKey('proto_version-2')).toBeUndefined();
  });

  it.each(['foo.bar', 'Foo', '', 'a b', 'x'.repeat(129)])('refuses %j', (k) => {
    expect(checkMetaKey(k)).toContain('meta key');
  });

  it('refuses keys starting with consul', () => {
    expect(checkMetaKey('consul_token')).toContain('may not start with "consul"');
  });

  it('reserves keys starting with hm_ for harbormaster', () => {
    expect(checkMetaKey('hm_host')).toContain('reserved');
    expect(checkMetaKey('hm_anything')).toContain('reserved');
    expect(checkMetaKey('hmx')).toBeUndefined();
  });

  it('accepts 128 characters, not 129', () => {
    expect(checkMetaKey('k'.repeat(128))).toBeUndefined();
    expect(checkMetaKey('k'.repeat(129))).toContain('longer than 128');
  });
});

describe('parseBoolean / checkBoolean', () => {
  it.each([
    ['true', true], ['TRUE', true], ['1', true], ['yes', true], ['On', true],
    ['false', false], ['False', false], ['0', false], ['no', false], ['OFF', false],
  ])('%s → %s', (v, b) => {
    expect(parseBoolean(v)).toBe(b);
    expect(checkBoolean(v)).toBeUndefined();
  });

  it.each(['', ' true', 'y', 'n', '2', 'truee', 'enabled', 'false\n'])('%j is not a boolean', (v) => {
    expect(parseBoolean(v)).toBeUndefined();
    expect(checkBoolean(v)).toContain('is not a boolean (true/false, 1/0, yes/no, on/off)');
  });
});

describe('checkHttpMethod', () => {
  it.each(['GET', 'head', 'PROPFIND', 'M-SEARCH'])('%s is a method', (v) => {
    expect(checkHttpMethod(v)).toBeUndefined();
  });

  it.each(['', 'GET /', 'G(ET', 'GET\r', 'X'.repeat(33)])('%j is not a method', (v) => {
    expect(checkHttpMethod(v)).toContain('is not an HTTP method');
  });
});

describe('checkGrpcService', () => {
  it.each(['my.Service', 'grpc.health.v1.Health', 'svc', 'a_b-c.D9'])('%s is a gRPC service', (v) => {
    expect(checkGrpcService(v)).toBeUndefined();
  });

  it.each(['', 'a b', '.a', 'a.', 'a..b', 'a/b', 'x'.repeat(256), 'é'])('%j is not a gRPC service', (v) => {
    expect(checkGrpcService(v)).toContain('gRPC service name');
  });
});

describe('validateInstance', () => {
  const ok: ServiceInstance = {
    id: 'h:web1:80',
    name: 'web',
    address: '10.0.0.1',
    port: 8080,
    protocol: 'tcp',
    tags: ['a'],
    meta: { region: 'eu', http_host: 'a.example.com' },
    host: 'h',
    status: 'passing',
    check: { kind: 'cmd', target: 'true', containerId: 'abc123', interval: '10s' },
  };

  it('accepts a valid instance', () => {
    expect(validateInstance(ok)).toBeUndefined();
  });

  it.each([
    ['a bad name', { name: 'Web' }, 'name'],
    ['an id with /', { id: 'a/b' }, 'id'],
    ['an empty id', { id: '' }, 'id'],
    ['an empty address', { address: '' }, 'address'],
    ['a bad address', { address: 'a b' }, 'address'],
    ['port 0', { port: 0 }, 'port'],
    ['a long tag', { tags: ['x'.repeat(256)] }, 'tags[0]'],
    ['an hm_ meta key', { meta: { hm_digest: 'x' } }, 'meta.hm_digest'],
    ['a bad meta key', { meta: { 'A.B': 'x' } }, 'meta.A.B'],
    ['a long meta value', { meta: { a: 'x'.repeat(513) } }, 'meta.a'],
    ['bad routing meta', { meta: { weight: 'heavy' } }, 'meta.weight'],
    ['63 meta keys', { meta: Object.fromEntries(Array.from({ length: 63 }, (_, i) => [`k${i}`, 'v'])) }, '63 meta keys, at most 62'],
    ['a cmd check without a container', { check: { kind: 'cmd', target: 'true' } }, 'containerId'],
    ['a check with a bad interval', { check: { kind: 'tcp', target: 'h:1', interval: 'soon' } }, 'check interval'],
    ['a lower-case method', { check: { kind: 'http', target: 'http://h/', method: 'get' } }, 'check method'],
    ['a ttl check without ttl', { check: { kind: 'ttl', target: '' } }, 'ttl is missing'],
  ] as Array<[string, Partial<ServiceInstance>, string]>)('refuses %s', (_what, change, field) => {
    expect(validateInstance({ ...ok, ...change })).toContain(field);
  });
});

describe('validateCheck', () => {
  it('accepts every kind in its usual form', () => {
    expect(validateCheck({ kind: 'http', target: 'http://h:1/', interval: '10s', method: 'GET' })).toBeUndefined();
    expect(validateCheck({ kind: 'grpc', target: 'h:1/my.Service', grpcUseTls: false })).toBeUndefined();
    expect(validateCheck({ kind: 'ttl', target: '', ttl: '30s' })).toBeUndefined();
  });

  it('refuses an unknown kind', () => {
    expect(validateCheck({ kind: 'docker' as 'cmd', target: 'x' })).toContain('not a check kind');
  });
});

describe('checkPort', () => {
  it.each([1, 80, 65535, '1', '8080'])('%j is a port', (v) => {
    expect(checkPort(v)).toBeUndefined();
  });

  it.each([0, 65536, 80.5, -1, NaN, '0', '', '80a', '123456', ' 80'])('%j is not a port', (v) => {
    expect(checkPort(v)).toContain('is not a port number');
  });
});

describe('printable', () => {
  it('escapes and shortens', () => {
    expect(printable('a\nb')).toBe('a\\nb');
    expect(printable('a\u2028b\u0085c\u007f')).toBe('a\\u2028b\\u0085c\\u007f');
    expect(printable('x'.repeat(100), 10)).toBe(`${'x'.repeat(10)}…`);
  });
});
