import { describe, it, expect } from 'vitest';
import { UsageError } from './types.js';
import { parseRegistryUri } from './uri.js';

/** Asserts that `uri` is refused with a UsageError whose message contains every fragment. */
function expectRefused(uri: string, ...fragments: string[]): void {
  let caught: unknown;
  try {
    parseRegistryUri(uri);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(UsageError);
  for (const f of fragments) expect((caught as Error).message).toContain(f);
}

describe('parseRegistryUri: consul', () => {
  it('consul://host:port', () => {
    expect(parseRegistryUri('consul://consul.service:8500')).toEqual({ kind: 'consul', host: 'consul.service', port: 8500, secure: false });
  });

  it('consul:// defaults to the local agent on 8500', () => {
    expect(parseRegistryUri('consul://')).toEqual({ kind: 'consul', host: '127.0.0.1', port: 8500, secure: false });
  });

  it('consul://host without a port uses 8500', () => {
    expect(parseRegistryUri('consul://10.0.0.1')).toEqual({ kind: 'consul', host: '10.0.0.1', port: 8500, secure: false });
  });

  it('consul-tls defaults to 8501 and is secure', () => {
    expect(parseRegistryUri('consul-tls://consul.example.com')).toEqual({ kind: 'consul', host: 'consul.example.com', port: 8501, secure: true });
    expect(parseRegistryUri('consul-tls://consul.example.com:9501')).toMatchObject({ port: 9501, secure: true });
  });

  it('accepts a bracketed IPv6 host', () => {
    expect(parseRegistryUri('consul://[::1]:8500')).toEqual({ kind: 'consul', host: '[::1]', port: 8500, secure: false });
  });

  it('tolerates a trailing slash', () => {
    expect(parseRegistryUri('consul://localhost:8500/')).toMatchObject({ host: 'localhost', port: 8500 });
  });
});

describe('parseRegistryUri: etcd', () => {
  it('etcd with several endpoints and a prefix', () => {
    expect(parseRegistryUri('etcd://10.0.0.1:2379,10.0.0.2:22379,etcd3/services/prod')).toEqual({
      kind: 'etcd',
      endpoints: ['http://10.0.0.1:2379', 'http://10.0.0.2:22379', 'http://etcd3:2379'],
      prefix: '/services/prod',
    });
  });

  it('etcd defaults: local endpoint and /harbormaster prefix', () => {
    expect(parseRegistryUri('etcd://')).toEqual({ kind: 'etcd', endpoints: ['http://127.0.0.1:2379'], prefix: '/harbormaster' });
    expect(parseRegistryUri('etcd://etcd:2379')).toEqual({ kind: 'etcd', endpoints: ['http://etcd:2379'], prefix: '/harbormaster' });
  });

  it('strips trailing slashes from the prefix', () => {
    expect(parseRegistryUri('etcd://etcd:2379/skydns/')).toMatchObject({ prefix: '/skydns' });
  });

  it('etcd2', () => {
    expect(parseRegistryUri('etcd2://etcd:4001/skydns2.local')).toEqual({ kind: 'etcd2', endpoints: ['http://etcd:4001'], prefix: '/skydns2.local' });
  });

  it('etcd-tls: the same cluster list over https', () => {
    expect(parseRegistryUri('etcd-tls://10.0.0.1:2379,10.0.0.2,etcd3.internal:2380/harbormaster')).toEqual({
      kind: 'etcd',
      endpoints: ['https://10.0.0.1:2379', 'https://10.0.0.2:2379', 'https://etcd3.internal:2380'],
      prefix: '/harbormaster',
    });
    expect(parseRegistryUri('etcd-tls://')).toEqual({ kind: 'etcd', endpoints: ['https://127.0.0.1:2379'], prefix: '/harbormaster' });
  });

  it('etcd-tls checks each endpoint and the prefix like etcd://', () => {
    expectRefused('etcd-tls://a:2379,b:99999/x', 'etcd-tls://a:2379,b:99999/x', 'port 99999 is out of range');
    expectRefused('etcd-tls://a:2379,/x', '"" is not host[:port]');
    expectRefused('etcd-tls://a:2379/a b', 'prefix "/a b"');
  });

  it('etcd2 over TLS is refused by name', () => {
    expectRefused('etcd2-tls://etcd:2379/x', 'etcd2 over TLS is not supported');
  });
});

describe('parseRegistryUri: memory', () => {
  it('memory:// is the default store', () => {
    expect(parseRegistryUri('memory://')).toEqual({ kind: 'memory', name: 'default' });
  });

  it('memory://name names a store', () => {
    expect(parseRegistryUri('memory://test_store-1')).toEqual({ kind: 'memory', name: 'test_store-1' });
  });
});

describe('parseRegistryUri: rejections', () => {
  it('an unknown scheme', () => {
    expectRefused('zookeeper://zk:2181', 'unknown scheme', 'zookeeper');
  });

  it.each(['consul://host:0', 'consul://host:65536', 'consul://host:99999', 'etcd://a:2379,b:70000'])('an out-of-range port: %s', (uri) => {
    expectRefused(uri, 'out of range');
  });

  it.each(['consul://host:abc', 'consul://host:123456', 'consul://host:'])('a port that is not a number: %s', (uri) => {
    expectRefused(uri, 'host[:port]');
  });

  it('a path on consul', () => {
    expectRefused('consul://localhost:8500/services', 'consul takes no path');
  });

  it('a path on memory', () => {
    expectRefused('memory://x/y', 'memory takes no path');
  });

  it('a bad memory name', () => {
    expectRefused('memory://a.b', 'memory name');
  });

  it.each(['etcd://etcd:2379/pre fix', 'etcd://etcd:2379/a$b', 'etcd://etcd:2379//double', 'etcd2://etcd:2379/ü'])('bad prefix characters: %s', (uri) => {
    expectRefused(uri, 'prefix');
  });

  it.each(['etcd://a:2379,,b:2379', 'consul://bad_host', 'consul://-host', 'consul://user@host:8500'])('a bad host: %s', (uri) => {
    expectRefused(uri, 'host[:port]');
  });

  it.each(['', 'garbage', 'consul:host:8500', '://host', 'Consul://host', 'consul//host'])('garbage: %j', (uri) => {
    expectRefused(uri, 'scheme://host:port');
  });
});
