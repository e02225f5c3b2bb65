import { afterEach, describe, expect, it } from 'vitest';
import { addEnvSecrets, addSecret, clearSecrets, redact, redactMetrics, redactOutput, redactUri } from './redact.js';

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
    // A password holding '/' (base64) would otherwise end the userinfo early.
    expect(redactUri('etcd://root:hun/ter2@127.0.0.1:2379/p')).toBe('etcd://[redacted]@127.0.0.1:2379/p');
    expect(redactUri('root:hunter2@127.0.0.1:2379')).toBe('[redacted]@127.0.0.1:2379');
  });

  it('keeps JSON valid however short the secret: masked inside strings only, numbers and layout kept', () => {
    addSecret('3');
    const line = `${JSON.stringify({ level: 30, time: '2026-12-08T01:03:33.300Z', addr: '127.0.0.1:8083', msg: 'token 3 refused' })}\n`;
    const out = redactOutput(line);
    expect(out.endsWith('\n')).toBe(true);
    expect(JSON.parse(out)).toEqual({ level: 30, time: '2026-12-08T01:0[redacted]:[redacted][redacted].[redacted]00Z', addr: '127.0.0.1:808[redacted]', msg: 'token [redacted] refused' });
    // An API body indented by 2 stays indented, and parses.
    const body = `${JSON.stringify({ ok: true, port: 8083, services: [{ name: 'a3' }] }, null, 2)}\n`;
    expect(redactOutput(body)).toBe(`${JSON.stringify({ ok: true, port: 8083, services: [{ name: 'a[redacted]' }] }, null, 2)}\n`);
    // Several JSON lines (a log stream), and plain text.
    expect(redactOutput('{"n":3,"s":"3"}\n{"n":33}\nplain 3\n')).toBe('{"n":3,"s":"[redacted]"}\n{"n":33}\nplain [redacted]\n');
    // Metrics: label values, never the samples.
    expect(redactMetrics('# HELP x 3 things\nx{err="3 refused"} 3\n')).toBe('# HELP x [redacted] things\nx{err="[redacted] refused"} 3\n');
  });
});
