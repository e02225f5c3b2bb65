import { describe, it, expect } from 'vitest';
import { decodeInstance, encodeInstance } from './codec.js';
import type { ServiceInstance } from './service-instance.js';

function instance(overrides: Partial<ServiceInstance> = {}): ServiceInstance {
  return {
    id: 'docker-host-1:web1:80',
    name: 'web',
    address: '192.168.1.10',
    port: 32768,
    protocol: 'tcp',
    tags: ['master', 'a,b'],
    meta: { region: 'us-east', version: '2' },
    host: 'docker-host-1',
    status: 'passing',
    ...overrides,
  };
}

/** The stored JSON of `instance()` with some fields replaced, as a plain object. */
function record(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { ...JSON.parse(encodeInstance(instance())), ...overrides };
}

describe('encodeInstance / decodeInstance', () => {
  it('round-trips an instance', () => {
    const inst = instance();
    expect(decodeInstance(JSON.parse(encodeInstance(inst)))).toEqual(inst);
  });

  it('round-trips a udp instance with a check and a non-passing status', () => {
    const inst = instance({
      protocol: 'udp',
      status: 'critical',
      check: { kind: 'http', target: 'http://192.168.1.10:32768/health', interval: '10s', initialStatus: 'warning' },
    });
    expect(decodeInstance(JSON.parse(encodeInstance(inst)))).toEqual(inst);
  });

  it('encodes the documented fields and no check when there is none', () => {
    expect(Object.keys(JSON.parse(encodeInstance(instance())))).toEqual(['id', 'name', 'address', 'port', 'protocol', 'tags', 'meta', 'host', 'status']);
  });

  it('fills defaults for optional fields', () => {
    const decoded = decodeInstance({ id: 'x', name: 'web', address: '10.0.0.1', port: 80 });
    expect(decoded).toEqual({ id: 'x', name: 'web', address: '10.0.0.1', port: 80, protocol: 'tcp', tags: [], meta: {}, host: '', status: 'passing' });
  });

  it('drops a null check', () => {
    expect(decodeInstance(record({ check: null }))).not.toHaveProperty('check');
  });
});

describe('decodeInstance rejects bad records', () => {
  it.each([
    ['not an object', null, 'record is not an object'],
    ['an array', [], 'record is not an object'],
    ['a string', 'web', 'record is not an object'],
    ['a port string', record({ port: '80' }), 'port'],
    ['a port out of range', record({ port: 70000 }), 'port'],
    ['a fractional port', record({ port: 80.5 }), 'port'],
    ['a missing port', record({ port: undefined }), 'port'],
    ['a bad protocol', record({ protocol: 'sctp' }), 'protocol'],
    ['a bad status', record({ status: 'unknown' }), 'status'],
    ['tags not an array', record({ tags: 'a,b' }), 'tags'],
    ['a tag not a string', record({ tags: ['a', 3] }), 'tags[1]'],
    ['meta not an object', record({ meta: ['a'] }), 'meta'],
    ['a meta value not a string', record({ meta: { a: 1 } }), 'meta.a'],
    ['a missing id', record({ id: undefined }), 'id'],
    ['a name not a string', record({ name: 42 }), 'name'],
    ['control characters in the name', record({ name: 'web\nx' }), 'name contains control characters'],
    ['control characters in the address', record({ address: '10.0.0.1\u0000' }), 'address contains control characters'],
    ['control characters in a tag', record({ tags: ['ok', 'b\u001b[31m'] }), 'tags[1] contains control characters'],
    ['control characters in a meta value', record({ meta: { k: 'v\r' } }), 'meta.k contains control characters'],
    ['a line separator in the host', record({ host: 'h\u2028' }), 'host contains control characters'],
    ['an overlong id', record({ id: 'x'.repeat(256) }), 'id longer than 255'],
  ])('%s', (_what, raw, message) => {
    expect(() => decodeInstance(raw)).toThrow(message);
  });
});
