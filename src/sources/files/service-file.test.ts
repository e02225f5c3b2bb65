import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { validateInstance } from '../../model/validate.js';
import { FileError, parseServiceFile } from './service-file.js';

const opts = { hostname: 'db-host', hostAddress: '10.0.0.5' };
const parse = (text: string) => parseServiceFile(text, opts);
const fails = (text: string) => {
  try {
    parse(text);
  } catch (err) {
    expect(err).toBeInstanceOf(FileError);
    return (err as Error).message;
  }
  throw new Error('parsed');
};

describe('service files', () => {
  it('reads Consul\'s service definition shape, JSON or YAML, one or many per file', () => {
    const one = parse('{"service": {"name": "postgres", "id": "pg-main", "address": "127.0.0.1", "port": 5432, "tags": ["primary"], "meta": {"version": "15"}}}');
    expect(one.instances).toEqual([
      { id: 'db-host:file:pg-main', name: 'postgres', address: '127.0.0.1', port: 5432, protocol: 'tcp', tags: ['primary'], meta: { version: '15' }, host: 'db-host', status: 'passing' },
    ]);
    const many = parse(`services:
  - name: redis
    port: 6379
  - Name: memcached
    Port: "11211"
    Protocol: udp
---
service: { name: ntp, port: 123, protocol: udp, tags: [time] }
`);
    expect(many.instances.map((i) => [i.id, i.address, i.port, i.protocol, i.tags])).toEqual([
      ['db-host:file:redis', '10.0.0.5', 6379, 'tcp', []],
      ['db-host:file:memcached', '10.0.0.5', 11211, 'udp', ['udp']],
      ['db-host:file:ntp', '10.0.0.5', 123, 'udp', ['time', 'udp']],
    ]);
    expect(parse('- {name: a, port: 1}\n- {name: b, port: 2}\n').instances).toHaveLength(2);
    expect(parse('name: bare\nport: 80\n').instances[0].id).toBe('db-host:file:bare');
    expect(parse('services: []\n').instances).toEqual([]);
  });

  it('refuses what a write in progress or a hostile file looks like, naming the line', () => {
    const err = (text: string) => {
      try {
        parse(text);
      } catch (e) {
        return (e as Error).message;
      }
      return 'accepted';
    };
    // Between truncating and writing: not "no services".
    expect(err('')).toBe('1: no service definition (empty; write `services: []` to define none)');
    expect(err('# only a comment\n---\n')).toMatch(/^1: no service definition/);
    const t0 = performance.now();
    expect(err(`services:\n  - name: a\n    port: 1\n    meta: ${'['.repeat(500_000)}`)).toBe('4: nested more than 64 levels deep');
    const deepMs = performance.now() - t0;
    expect(err('service: {name: a, port: 1, meta: {"__proto__": x}}')).toBe('1: meta.__proto__: not allowed as a key');
    // Brackets in strings and comments are not nesting.
    expect(err(`service: {name: a, port: 1, meta: {k: "${'['.repeat(100)}"}} # ${'{'.repeat(100)}`)).toBe('accepted');
    console.log(`PROBE service file: 500,000 nested brackets refused in ${deepMs.toFixed(1)} ms`);
    expect(deepMs).toBeLessThan(200);
  });

  it('reads UTF-8 only, naming the line of a byte that is not', async () => {
    const { decodeServiceFile } = await import('./service-file.js');
    expect(decodeServiceFile(Buffer.from('service: {name: é, port: 1}\n'))).toContain('é');
    expect(() => decodeServiceFile(Buffer.concat([Buffer.from('services:\n  - name: a\n    meta: {k: "'), Buffer.from([0xff, 0xfe]), Buffer.from('"}\n')]))).toThrow('3: not UTF-8 text');
  });

  it('maps Consul checks, snake_case or CamelCase', () => {
    const c = (check: string) => parse(`service: { name: x, port: 80, check: ${check} }`).instances[0];
    expect(c('{ http: "http://127.0.0.1/health", interval: 5s, timeout: 1s, method: HEAD }').check).toEqual({ kind: 'http', target: 'http://127.0.0.1/health', interval: '5s', timeout: '1s', method: 'HEAD' });
    expect(c('{ HTTP: "https://127.0.0.1/", TLSSkipVerify: true }').check).toEqual({ kind: 'https', target: 'https://127.0.0.1/', interval: '10s', tlsSkipVerify: true });
    expect(c('{ tcp: "127.0.0.1:5432", deregister_critical_service_after: 90m }').check).toEqual({ kind: 'tcp', target: '127.0.0.1:5432', interval: '10s', deregisterAfter: '90m' });
    expect(c('{ ttl: 30s, status: warning }')).toMatchObject({ check: { kind: 'ttl', target: '', ttl: '30s', initialStatus: 'warning' }, status: 'warning' });
    expect(c('{ grpc: "127.0.0.1:9000/health", grpc_use_tls: false }').check).toEqual({ kind: 'grpc', target: '127.0.0.1:9000/health', interval: '10s', grpcUseTls: false });
    expect(c("{ args: ['/usr/bin/check', '--name', \"it's\"], interval: 30s }").check).toEqual({ kind: 'script', target: "/usr/bin/check --name 'it'\\''s'", interval: '30s' });
    expect(parse('service: { name: x, port: 80, checks: [{ tcp: "127.0.0.1:80" }] }').instances[0].check).toMatchObject({ kind: 'tcp' });
  });

  it('names the line and the field of what is wrong', () => {
    expect(fails('service:\n  name: web\n  port: 99999\n')).toBe('3: port: expected a number from 1 to 65535');
    expect(fails('service:\n  name: web\n')).toBe('2: port: missing');
    expect(fails('service:\n  port: 80\n')).toBe('2: name: missing');
    expect(fails('service:\n  name: Web_1\n  port: 80\n')).toMatch(/^2: name /);
    expect(fails('service:\n  name: web\n  port: 80\n  address: "not an address!"\n')).toMatch(/^4: address "not an address!" is not an IP address or host name$/);
    expect(fails('service:\n  name: web\n  port: 80\n  meta:\n    http_path: "no-slash"\n')).toMatch(/^4: meta\.http_path /);
    expect(fails('service:\n  name: web\n  port: 80\n  colour: blue\n')).toBe('4: colour: not a field of a service definition (name, id, address, port, tags, meta, check, protocol)');
    expect(fails('service:\n  name: web\n  port: 80\n  check: { http: "http://x/", tcp: "x:1" }\n')).toBe('4: check: expected exactly one of http, tcp, grpc, ttl, args');
    expect(fails('service: {name: web, port: 80\n')).toMatch(/^\d+: /);
    expect(fails('{"service": {"name": "web" "port": 80}}')).toMatch(/^1: /);
    expect(fails('services:\n  - {name: a, port: 1}\n  - {name: a, port: 2}\n')).toBe('3: id: "db-host:file:a" is defined twice in this file (first at line 2)');
    expect(fails('service:\n  name: a\n  name: b\n  port: 1\n')).toMatch(/^3: .*unique/i);
  });

  it('reports Consul features it has no use for, and refuses nothing for them', () => {
    const r = parse('service:\n  name: web\n  port: 80\n  enable_tag_override: true\n  weights: { passing: 10 }\n');
    expect(r.instances).toHaveLength(1);
    expect(r.ignored).toEqual(['4: enable_tag_override', '5: weights']);
  });

  it('any text: no exception but FileError, and every instance it yields passes the model\'s validation', () => {
    const value = fc.oneof(fc.string({ maxLength: 40 }), fc.integer({ min: -10, max: 70_000 }), fc.constantFrom('127.0.0.1', '::1', 'db.internal', '80', 'udp', 'tcp', '10s'));
    const svc = fc.dictionary(fc.constantFrom('name', 'id', 'address', 'port', 'tags', 'meta', 'protocol', 'check', 'Name', 'Port'), value, { maxKeys: 8 });
    const doc = fc.oneof(
      svc.map((s) => JSON.stringify({ service: s })),
      fc.array(svc, { maxLength: 4 }).map((a) => JSON.stringify({ services: a })),
      fc.string({ maxLength: 200 }),
    );
    fc.assert(
      fc.property(doc, (text) => {
        try {
          for (const i of parse(text).instances) expect(validateInstance(i)).toBeUndefined();
        } catch (err) {
          expect(err).toBeInstanceOf(FileError);
          expect((err as Error).message).toMatch(/^\d+: \S/);
          expect((err as Error).message).not.toContain('\n');
        }
      }),
      { numRuns: 1_000 },
    );
  });
});
