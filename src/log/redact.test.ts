import { afterEach, describe, expect, it } from 'vitest';
import { addEnvSecrets, addSecret, clearSecrets, redact, redactUri } from './redact.js';

describe('redact', () => {
  afterEach(() => clearSecrets());

  it('masks every registered secret, also JSON-escaped and URL-encoded, longest first', () => {
    expect(redact('nothing registered')).toBe('nothing registered');
    addSecret('p@ss"w/rd');
    addSecret('p@ss');
    addSecret(undefined);
    addSecret('');
    expect(redact('a p@ss"w/rd b')).toBe('a [redacted] b');
    expect(redact(JSON.stringify({ err: 'auth p@ss"w/rd failed' }))).toBe('{"err":"auth [redacted] failed"}');
    expect(redact(`https://h/?t=${encodeURIComponent('p@ss"w/rd')}`)).toBe('https://h/?t=[redacted]');
    expect(redact('p@ss alone')).toBe('[redacted] alone');
    // A secret holding regex characters is taken literally.
    addSecret('a.b*c');
    expect(redact('axbxc a.b*c')).toBe('axbxc [redacted]');
  });

  it('registers the credentials of the environment', () => {
    addEnvSecrets({ CONSUL_HTTP_TOKEN: 'ct-1a2b', ETCDCTL_USER: 'hm:pw-3c4d', HM_API_TOKEN: 'at-5e6f', PATH: '/usr/bin' });
    expect(redact('ct-1a2b hm:pw-3c4d at-5e6f /usr/bin')).toBe('[redacted] hm:[redacted] [redacted] /usr/bin');
    clearSecrets();
    addEnvSecrets({ ETCDCTL_USER: 'hm', ETCDCTL_PASSWORD: 'pw-7a8b' });
    expect(redact('hm pw-7a8b')).toBe('hm [redacted]');
  });

  it('masks userinfo in URIs whatever it holds', () => {
    expect(redactUri('etcd://root:hunter2@127.0.0.1:2379/p')).toBe('etcd://[redacted]@127.0.0.1:2379/p');
    expect(redactUri('consul://127.0.0.1:8500')).toBe('consul://127.0.0.1:8500');
  });
});
