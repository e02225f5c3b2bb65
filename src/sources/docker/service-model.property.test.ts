// Property-based tests of the label/env → ServiceInstance rules over arbitrary containers.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeInstance, encodeInstance } from '../../model/codec.js';
import { validateInstance } from '../../model/validate.js';
import type { ContainerDetails, PortBinding } from './container.js';
import { containerServices, type ModelOptions, type ModelResult } from './service-model.js';

/** Runs per property: fixed, so that the file takes the same time whatever the seed. */
const RUNS = 1000;
const params = { numRuns: RUNS } as const;

// ---------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------

const CONTROL = ['\n', '\r', '\t', '\u0000', '\u0007', '\u001b', '\u007f', '\u0085', '\u2028', '\u2029'];

const KNOWN_KEYS = [
  'NAME', 'Name', 'TAGS', 'ID', 'IGNORE',
  'CHECK_HTTP', 'CHECK_HTTPS', 'CHECK_HTTP_METHOD', 'CHECK_HTTPS_METHOD', 'CHECK_TCP', 'CHECK_CMD', 'CHECK_SCRIPT', 'CHECK_TTL',
  'CHECK_GRPC', 'CHECK_GRPC_USE_TLS', 'CHECK_TLS_SKIP_VERIFY', 'CHECK_INTERVAL', 'CHECK_TIMEOUT', 'CHECK_INITIAL_STATUS',
  'CHECK_DEREGISTER_AFTER', 'HTTP_HOST', 'HTTP_PATH', 'WEIGHT',
  'REGION', 'Region', 'VERSION', 'HM_HOST', 'HM_DIGEST', 'CONSUL_TOKEN', 'FOO.BAR', '__PROTO__', 'CHECK_UNKNOWN', '',
];

const NICE_VALUES = [
  '', 'web', 'Web', 'my_service', 'api-2', 'true', 'false', 'TRUE', '1', '0', 'yes', 'no', 'on', 'off', 'maybe',
  '10s', '1m30s', '500ms', '10 seconds', '/health', '/status?full=1', 'health', 'passing', 'warning', 'critical', 'unknown',
  'my.Service', 'grpc.health.v1.Health', 'a..b', 'GET', 'head', 'G ET', 'example.com', '*.example.com', 'a.example.com,b.example.com',
  'bad host', '/api', '/a//b', '5', '1000', '5000', 'a,b\\,c, d', ',,', 'udp', 'a/b', 'test -f /www/index.html', 'nc -z $SERVICE_IP $SERVICE_PORT',
];

const value = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom(...NICE_VALUES) },
  { weight: 2, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...NICE_VALUES), fc.constantFrom(...CONTROL)).map(([a, c]) => `${a}${c}x`) },
  { weight: 1, arbitrary: fc.constantFrom(64, 255, 256, 512, 513, 1024, 1025, 5000).map((n) => 'a'.repeat(n)) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom('a', 'b\\,c', ' d ', '', 'x'.repeat(300)), { maxLength: 5 }).map((t) => t.join(',')) },
);

const PORT_NUMBERS = [22, 53, 80, 443, 8080, 9000, 65535];

const keySuffix = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...KNOWN_KEYS) },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9_.\-é]{0,10}$/) },
);

/** Values each known key accepts, so that most generated containers register something. */
const GOOD: Record<string, string[]> = {
  NAME: ['web', 'api-2', 'Web'],
  Name: ['other'],
  TAGS: ['a,b\\,c', 'x, y ,', 'ünï,códe'],
  ID: ['custom-id', 'h:web:1'],
  IGNORE: ['', '', '1'],
  CHECK_HTTP: ['/health'],
  CHECK_HTTPS: ['/'],
  CHECK_HTTP_METHOD: ['HEAD', 'get'],
  CHECK_HTTPS_METHOD: ['POST'],
  CHECK_TCP: ['true', 'false', 'Yes'],
  CHECK_CMD: ['test -f /www/index.html'],
  CHECK_SCRIPT: ['nc -z $SERVICE_IP $SERVICE_PORT'],
  CHECK_TTL: ['30s'],
  CHECK_GRPC: ['true', 'my.Service', 'off'],
  CHECK_GRPC_USE_TLS: ['yes', '0'],
  CHECK_TLS_SKIP_VERIFY: ['on', 'false'],
  CHECK_INTERVAL: ['5s', '1m30s'],
  CHECK_TIMEOUT: ['1s'],
  CHECK_INITIAL_STATUS: ['warning', 'critical'],
  CHECK_DEREGISTER_AFTER: ['1m'],
  HTTP_HOST: ['a.example.com,*.b.example.com'],
  HTTP_PATH: ['/api'],
  WEIGHT: ['0', '5', '1000'],
};
const goodValue = (key: string) => fc.constantFrom(...(Object.hasOwn(GOOD, key) ? GOOD[key] : ['eu', 'a,b', 'ünïcødé ✓', '']));

const portPart = fc.oneof(
  { weight: 4, arbitrary: fc.constant('') },
  { weight: 3, arbitrary: fc.constantFrom(...PORT_NUMBERS).map((p) => `${p}_`) },
  { weight: 1, arbitrary: fc.constantFrom('80x_', '1st_', '080_', '99999_', '0_') },
);

/** SERVICE_<key>, SERVICE_<port>_<key> with a port of the container or not, or a bad port part. */
const serviceKey = fc.tuple(portPart, keySuffix).map(([port, key]) => `SERVICE_${port}${key}`);

/** A SERVICE_* setting: mostly a value its key accepts, sometimes anything. */
const setting = fc.tuple(portPart, keySuffix).chain(([port, key]) =>
  fc.tuple(fc.constant(`SERVICE_${port}${key}`), fc.oneof({ weight: 4, arbitrary: goodValue(key) }, { weight: 1, arbitrary: value })),
);

const envEntry: fc.Arbitrary<string> = fc.oneof(
  { weight: 8, arbitrary: setting.map(([k, v]) => `${k}=${v}`) },
  { weight: 1, arbitrary: fc.constantFrom('SERVICE_NAME', 'garbage', '', '=x', 'PATH=/usr/bin:/bin', 'SERVICE_') },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('VIRTUAL_HOST', 'VIRTUAL_PORT'), fc.constantFrom('a.example.com', 'bad host', '80', '443', 'http', '', ...PORT_NUMBERS.map(String))).map(([k, v]) => `${k}=${v}`) },
  { weight: 1, arbitrary: fc.string({ maxLength: 15 }) },
);

const labels = fc
  .array(fc.oneof({ weight: 6, arbitrary: setting }, { weight: 1, arbitrary: fc.tuple(fc.constantFrom('com.example.owner', 'VIRTUAL_HOST'), value) }), { maxLength: 8 })
  .map((entries) => Object.fromEntries(entries));

interface PortArb {
  port: number;
  proto: string;
  published: boolean;
  hostPort: string;
  hostIp: string;
}

const portArb: fc.Arbitrary<PortArb> = fc.record({
  port: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...PORT_NUMBERS) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 65535 }) }),
  proto: fc.constantFrom('tcp', 'tcp', 'tcp', 'udp', 'sctp'),
  published: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  hostPort: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 65535 }).map(String) }, { weight: 1, arbitrary: fc.constantFrom('', '0', 'abc') }),
  hostIp: fc.constantFrom('0.0.0.0', '127.0.0.1', '::', '', '10.1.2.3'),
});

interface Spec {
  id: string;
  name: string;
  image: string;
  env: string[];
  labels: Record<string, string>;
  ports: PortArb[];
  hostNet: boolean;
  ip: string;
  networks: Record<string, string>;
}

const specArb: fc.Arbitrary<Spec> = fc.record({
  id: fc.stringMatching(/^[0-9a-f]{64}$/),
  name: fc.oneof(fc.constantFrom('web1', 'db', 'a.b_c-d'), fc.stringMatching(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,40}$/)),
  image: fc.constantFrom('progrium/foobar:latest', 'nginx', 'acme/my_app:1', 'acme/___:1', 'registry:5000/x/y@sha256:00', ''),
  env: fc.array(envEntry, { maxLength: 10 }),
  labels,
  ports: fc.uniqueArray(portArb, { selector: (p) => `${p.port}/${p.proto}`, minLength: 1, maxLength: 4 }),
  hostNet: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  ip: fc.constantFrom('172.17.0.2', '', 'fd00::2'),
  networks: fc.dictionary(fc.constantFrom('bridge', 'backend', 'zz'), fc.constantFrom('10.5.0.7', '', '172.18.0.3'), { maxKeys: 3 }),
});

const optsArb: fc.Arbitrary<ModelOptions> = fc.record({
  hostname: fc.constantFrom('docker-host-1', 'h'),
  hostIp: fc.option(fc.constantFrom('10.0.0.5', '::1'), { nil: undefined }),
  hostAddress: fc.constantFrom('192.168.1.10', 'fd00::1'),
  internal: fc.boolean(),
  explicit: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  tags: fc.constantFrom([], ['dc1'], ['dc1', 'edge']),
});

function toContainer(s: Spec): ContainerDetails {
  const ports: Record<string, PortBinding[] | null> = {};
  const exposed: Record<string, object> = {};
  for (const p of s.ports) {
    const key = `${p.port}/${p.proto}`;
    exposed[key] = {};
    if (!s.hostNet) ports[key] = p.published ? [{ HostIp: p.hostIp, HostPort: p.hostPort }] : null;
  }
  return {
    Id: s.id,
    Name: `/${s.name}`,
    Config: { Image: s.image, Env: s.env, Labels: s.labels, ExposedPorts: exposed },
    HostConfig: { NetworkMode: s.hostNet ? 'host' : 'default' },
    NetworkSettings: s.hostNet
      ? { IPAddress: '', Ports: {}, Networks: { host: { IPAddress: '' } } }
      : { IPAddress: s.ip, Ports: ports, Networks: Object.fromEntries(Object.entries(s.networks).map(([k, ip]) => [k, { IPAddress: ip }])) },
  };
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const model = (s: Spec, o: ModelOptions): ModelResult => containerServices(toContainer(s), o);

/** Shuffle `xs` by `order` but keep the relative order of entries with the same env name (duplicates: the last wins). */
function shuffleKeepingDuplicates(xs: string[], order: number[]): string[] {
  const nameOf = (e: string) => (e.includes('=') ? e.slice(0, e.indexOf('=')) : e);
  const perm = xs.map((_, i) => i).sort((a, b) => order[a % order.length] - order[b % order.length] || a - b);
  const queues = new Map<string, string[]>();
  for (const e of xs) queues.set(nameOf(e), [...(queues.get(nameOf(e)) ?? []), e]);
  return perm.map((i) => queues.get(nameOf(xs[i]))!.shift()!);
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

describe('containerServices properties', () => {
  it('(a) never throws, and (b) every instance validates and round-trips through the codec; errors are single lines', () => {
    fc.assert(
      fc.property(specArb, optsArb, (spec, opts) => {
        const r = model(spec, opts);
        for (const inst of r.instances) {
          expect(validateInstance(inst)).toBeUndefined();
          expect(decodeInstance(JSON.parse(encodeInstance(inst)))).toEqual(inst);
        }
        for (const e of r.errors) {
          expect(e.startsWith(`container ${spec.name}: `)).toBe(true);
          expect(e).not.toMatch(/[\n\r\u2028\u2029]/);
        }
      }),
      params,
    );
  });

  it('(c) labels beat env: an env var named like an existing SERVICE_* label changes nothing', () => {
    fc.assert(
      fc.property(specArb, optsArb, serviceKey, value, value, fc.nat(), (spec, opts, key, labelValue, envValue, at) => {
        const base = { ...spec, labels: { ...spec.labels, [key]: labelValue } };
        const before = model(base, opts);
        const env = [...base.env];
        env.splice(at % (env.length + 1), 0, `${key}=${envValue}`);
        expect(model({ ...base, env }, opts)).toEqual(before);
      }),
      params,
    );
  });

  it('(d) a bad free-form SERVICE_<key> drops only that key: same instances, one more error line naming it', () => {
    const bad = fc.oneof(
      // a bad value under a fresh, valid key
      fc.tuple(fc.constant('ZZ_FRESH'), fc.oneof(fc.constantFrom(...CONTROL).map((c) => `v${c}`), fc.constant('x'.repeat(513)))),
      // a bad key with a valid value
      fc.tuple(fc.constantFrom('ZZ.FRESH', 'ZZ FRESH', 'HM_ZZ', 'CONSUL_ZZ', 'ZZé', 'Z'.repeat(129)), fc.constant('ok')),
    );
    fc.assert(
      fc.property(specArb, optsArb, bad, fc.boolean(), fc.option(fc.constantFrom(...PORT_NUMBERS), { nil: undefined }), (spec, opts, [key, v], asLabel, port) => {
        const name = `SERVICE_${port === undefined ? '' : `${port}_`}${key}`;
        const withBad = asLabel ? { ...spec, labels: { ...spec.labels, [name]: v } } : { ...spec, env: [...spec.env, `${name}=${v}`] };
        const before = model(spec, opts);
        const after = model(withBad, opts);
        expect(after.instances).toEqual(before.instances);
        expect(after.errors).toEqual(expect.arrayContaining(before.errors));
        const added = after.errors.filter((e) => !before.errors.includes(e));
        // One line, once per container (not per port), when some port is a service.
        if (port === undefined && before.instances.length > 0) expect(added).toHaveLength(1);
        else expect(added.length).toBeLessThanOrEqual(1);
        for (const e of added) expect(e).toMatch(new RegExp(`^${escapeRe(`container ${spec.name}: ${asLabel ? 'label' : 'env'} ${name}: `)}.*; key ignored$`));
        // With a good value under that key instead, each instance has one more meta key and is otherwise equal.
        if (key === 'ZZ_FRESH') {
          const withGood = asLabel ? { ...spec, labels: { ...spec.labels, [name]: 'good' } } : { ...spec, env: [...spec.env, `${name}=good`] };
          const good = model(withGood, opts).instances;
          expect(good.map((i) => i.id)).toEqual(after.instances.map((i) => i.id));
          for (const inst of good) {
            const { zz_fresh, ...rest } = inst.meta;
            if (port === undefined) expect(zz_fresh).toBe('good');
            expect(after.instances).toContainEqual({ ...inst, meta: rest });
          }
        }
      }),
      params,
    );
  });

  it('(d) a bad SERVICE_<port>_NAME never removes or changes the services of other ports', () => {
    const badName = fc.constantFrom('bad_name', 'Bad Name', 'x\ny', '-web', 'a'.repeat(64), 'wéb');
    fc.assert(
      fc.property(specArb, optsArb, fc.constantFrom(...PORT_NUMBERS), badName, (spec, opts, port, bad) => {
        const others = model({ ...spec, labels: { ...spec.labels, [`SERVICE_${port}_IGNORE`]: '1' } }, opts);
        const after = model({ ...spec, labels: { ...spec.labels, [`SERVICE_${port}_NAME`]: bad } }, opts);
        expect(after.instances).toEqual(others.instances);
      }),
      params,
    );
  });

  it('(e) deterministic, and independent of the order of env entries, labels, ports and networks', () => {
    fc.assert(
      fc.property(specArb, optsArb, fc.array(fc.nat(), { minLength: 1, maxLength: 20 }), (spec, opts, order) => {
        const first = model(spec, opts);
        expect(model(spec, opts)).toEqual(first);
        const reversed = <T>(o: Record<string, T>) => Object.fromEntries(Object.entries(o).reverse());
        const shuffled: Spec = {
          ...spec,
          env: shuffleKeepingDuplicates(spec.env, order),
          labels: reversed(spec.labels),
          ports: [...spec.ports].reverse(),
          networks: reversed(spec.networks),
        };
        expect(model(shuffled, opts)).toEqual(first);
      }),
      params,
    );
  });
});
