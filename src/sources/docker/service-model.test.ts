import { describe, it, expect } from 'vitest';
import type { ContainerDetails, PortBinding } from './container.js';
import { MAX_META_KEYS, OWN_META_KEYS } from '../../model/service-instance.js';
import { containerServices, defaultServiceName, splitTags, type ModelOptions } from './service-model.js';

// ---------------------------------------------------------------------------
// Fixture builders: the shape of `docker inspect`, reduced to what the model reads.
// ---------------------------------------------------------------------------

const HOST_ADDRESS = '192.168.1.10';
const CONTAINER_IP = '172.17.0.2';

interface ContainerSpec {
  name?: string;
  image?: string;
  env?: Record<string, string>;
  labels?: Record<string, string>;
  /** NetworkSettings.Ports; `null` means exposed but not published. */
  ports?: Record<string, PortBinding[] | null>;
  /** Config.ExposedPorts; defaults to the keys of `ports`. */
  exposed?: string[];
  ip?: string;
  networks?: Record<string, { IPAddress?: string }>;
  networkMode?: string;
}

function container(spec: ContainerSpec = {}): ContainerDetails {
  const ports = spec.ports ?? { '80/tcp': published('32768') };
  const exposed = spec.exposed ?? Object.keys(ports);
  const hostNet = spec.networkMode === 'host';
  return {
    Id: '3f4e1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f',
    Name: `/${spec.name ?? 'web1'}`,
    Config: {
      Image: spec.image ?? 'progrium/foobar:latest',
      Env: [
        'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        ...Object.entries(spec.env ?? {}).map(([k, v]) => `${k}=${v}`),
      ],
      Labels: spec.labels ?? {},
      ExposedPorts: Object.fromEntries(exposed.map((p) => [p, {}])),
    },
    HostConfig: { NetworkMode: spec.networkMode ?? 'default' },
    NetworkSettings: hostNet
      ? { IPAddress: '', Ports: {}, Networks: { host: { IPAddress: '' } } }
      : {
          IPAddress: spec.ip ?? CONTAINER_IP,
          Ports: ports,
          Networks: spec.networks ?? { bridge: { IPAddress: spec.ip ?? CONTAINER_IP } },
        },
    State: { Running: true, Paused: false, Restarting: false, ExitCode: 0, Health: null },
  };
}

/** A published binding as Docker reports it. */
function published(hostPort: string, hostIp = '0.0.0.0'): PortBinding[] {
  return [{ HostIp: hostIp, HostPort: hostPort }];
}

function modelOpts(overrides: Partial<ModelOptions> = {}): ModelOptions {
  return { hostname: 'docker-host-1', hostAddress: HOST_ADDRESS, internal: false, explicit: false, tags: [], ...overrides };
}

function services(spec: ContainerSpec, opts: Partial<ModelOptions> = {}) {
  return containerServices(container(spec), modelOpts(opts));
}

/** The only instance of a container that must yield exactly one and no error. */
function only(spec: ContainerSpec, opts: Partial<ModelOptions> = {}) {
  const r = services(spec, opts);
  expect(r.errors).toEqual([]);
  expect(r.instances).toHaveLength(1);
  return r.instances[0];
}

const TWO_PORTS = { '80/tcp': published('32768'), '443/tcp': published('32769') };

// ---------------------------------------------------------------------------

describe('splitTags', () => {
  it('splits at commas and trims', () => {
    expect(splitTags('a, b ,c')).toEqual(['a', 'b', 'c']);
  });

  it('keeps an escaped comma inside a tag', () => {
    expect(splitTags('a\\,b,c')).toEqual(['a,b', 'c']);
  });

  it('drops empty tags and returns [] for an empty value', () => {
    expect(splitTags('')).toEqual([]);
    expect(splitTags(',a,,b,')).toEqual(['a', 'b']);
  });

  it('keeps a backslash that does not escape a comma', () => {
    expect(splitTags('a\\b,c')).toEqual(['a\\b', 'c']);
  });
});

describe('defaultServiceName', () => {
  it.each([
    ['progrium/foobar:latest', 'foobar'],
    ['redis', 'redis'],
    ['nginx:1.25-alpine', 'nginx'],
    ['registry.example.com:5000/team/app:1.2', 'app'],
    ['localhost:5000/foo', 'foo'],
    ['library/redis@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef', 'redis'],
    ['acme/api:2.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef', 'api'],
    ['acme/my_app:1', 'my-app'],
    ['acme/My.App:1', 'my-app'],
    ['acme/__svc__', 'svc'],
  ])('%s → %s', (image, name) => {
    expect(defaultServiceName(image)).toBe(name);
  });

  it('caps the name at 63 characters without a trailing dash', () => {
    const name = defaultServiceName(`acme/${'a'.repeat(62)}_b:1`);
    expect(name).toBe('a'.repeat(62));
  });
});

describe('containerServices: worked examples', () => {
  it('single published port: image base name, host address, hostname:container:port id', () => {
    expect(only({})).toEqual({
      id: 'docker-host-1:web1:80',
      name: 'foobar',
      address: HOST_ADDRESS,
      port: 32768,
      protocol: 'tcp',
      tags: [],
      meta: {},
      host: 'docker-host-1',
      status: 'passing',
    });
  });

  it('multiple published ports: one service per port, names suffixed with the port', () => {
    const r = services({ ports: TWO_PORTS });
    expect(r.errors).toEqual([]);
    expect(r.instances.map((i) => [i.id, i.name, i.port])).toEqual([
      ['docker-host-1:web1:80', 'foobar-80', 32768],
      ['docker-host-1:web1:443', 'foobar-443', 32769],
    ]);
  });

  it('SERVICE_NAME applies to every port, suffixed in a group', () => {
    const r = services({ ports: TWO_PORTS, env: { SERVICE_NAME: 'www' } });
    expect(r.instances.map((i) => i.name)).toEqual(['www-80', 'www-443']);
  });

  it('SERVICE_<port>_NAME names that port without a suffix and beats SERVICE_NAME', () => {
    const r = services({ ports: TWO_PORTS, env: { SERVICE_NAME: 'www', SERVICE_443_NAME: 'secure' } });
    expect(r.errors).toEqual([]);
    expect(r.instances.map((i) => i.name)).toEqual(['www-80', 'secure']);
  });

  it('a generic label beats a port-specific env var (labels always beat env; registrator differs)', () => {
    const r = services({ env: { SERVICE_80_NAME: 'from-port' }, labels: { SERVICE_NAME: 'generic' } });
    expect(r.errors).toEqual([]);
    expect(r.instances.map((i) => i.name)).toEqual(['generic']);
  });

  it('within labels and within env, port-specific beats generic', () => {
    expect(only({ labels: { SERVICE_NAME: 'generic', SERVICE_80_NAME: 'port' } }).name).toBe('port');
    expect(only({ env: { SERVICE_80_NAME: 'port', SERVICE_NAME: 'generic' } }).name).toBe('port');
  });

  it('a generic label name in a group still gets the port suffix when it beats a port-specific env name', () => {
    const r = services({ ports: TWO_PORTS, env: { SERVICE_80_NAME: 'env-port' }, labels: { SERVICE_NAME: 'www' } });
    expect(r.instances.map((i) => i.name)).toEqual(['www-80', 'www-443']);
  });

  it('an empty label still beats env: "" means unset, so the default applies', () => {
    expect(only({ env: { SERVICE_NAME: 'from-env' }, labels: { SERVICE_NAME: '' } }).name).toBe('foobar');
  });

  it('between spellings of one key in the same source, the upper-case one wins, whatever the order', () => {
    const a = only({ labels: { SERVICE_Region: 'mixed', SERVICE_REGION: 'upper' } });
    const b = only({ labels: { SERVICE_REGION: 'upper', SERVICE_Region: 'mixed' } });
    expect(a.meta).toEqual({ region: 'upper' });
    expect(b).toEqual(a);
  });

  it('ignores env entries without "=" and the last of duplicate env entries wins', () => {
    const c = container({});
    c.Config.Env = ['SERVICE_NAME', 'SERVICE_TAGS=a', 'garbage', '=x', 'SERVICE_TAGS=b'];
    const r = containerServices(c, modelOpts());
    expect(r.errors).toEqual([]);
    expect(r.instances.map((i) => [i.name, i.tags])).toEqual([['foobar', ['b']]]);
  });

  it('a meta key "__proto__" stays an ordinary key', () => {
    const inst = only({ labels: { SERVICE___PROTO__: 'x' } });
    expect(Object.keys(inst.meta)).toEqual(['__proto__']);
    expect(Object.getPrototypeOf(inst.meta)).toBe(Object.prototype);
  });

  it('lowercases SERVICE_NAME', () => {
    expect(only({ env: { SERVICE_NAME: 'WebApp' } }).name).toBe('webapp');
  });

  it('labels beat env for the same key', () => {
    const inst = only({
      env: { SERVICE_NAME: 'from-env', SERVICE_TAGS: 'env-tag', SERVICE_REGION: 'env' },
      labels: { SERVICE_NAME: 'from-label', SERVICE_TAGS: 'label-tag', SERVICE_REGION: 'label' },
    });
    expect(inst.name).toBe('from-label');
    expect(inst.tags).toEqual(['label-tag']);
    expect(inst.meta).toEqual({ region: 'label' });
  });

  it('SERVICE_TAGS is a comma list with \\, escaping; --tags are appended', () => {
    const inst = only({ env: { SERVICE_TAGS: 'master, backups,a\\,b' } }, { tags: ['dc1', 'backups'] });
    expect(inst.tags).toEqual(['master', 'backups', 'a,b', 'dc1']);
  });

  it('--tags alone tag every service', () => {
    const r = services({ ports: TWO_PORTS }, { tags: ['dc1'] });
    expect(r.instances.map((i) => i.tags)).toEqual([['dc1'], ['dc1']]);
  });

  it('SERVICE_ID overrides the id', () => {
    expect(only({ env: { SERVICE_ID: 'custom-id' } }).id).toBe('custom-id');
  });

  it('a generic SERVICE_ID on several ports gets the port, like the name: every port registers', () => {
    const r = services({ ports: { ...TWO_PORTS, '53/udp': published('32770') }, labels: { SERVICE_ID: 'api' } });
    expect(r.errors).toEqual([]);
    expect(r.instances.map((i) => i.id)).toEqual(['api-53:udp', 'api-80', 'api-443']);
  });

  it('a port-specific SERVICE_<port>_ID is kept as written in a group', () => {
    const r = services({ ports: TWO_PORTS, env: { SERVICE_ID: 'api', SERVICE_443_ID: 'tls' } });
    expect(r.instances.map((i) => i.id)).toEqual(['api-80', 'tls']);
  });

  it.each(['harbormaster:docker-host-1', 'harbormaster:other-host', 'harbormaster:'])('SERVICE_ID=%s (a host heartbeat service) skips that port with one line', (id) => {
    const r = services({ ports: TWO_PORTS, labels: { SERVICE_80_ID: id } });
    expect(r.instances.map((i) => i.id)).toEqual(['docker-host-1:web1:443']);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain('container web1: label SERVICE_80_ID:');
    expect(r.errors[0]).toContain('is reserved');
    expect(r.errors[0]).toContain('service on port 80/tcp skipped');
  });

  it('an ID that only starts like a heartbeat ID is allowed', () => {
    expect(only({ env: { SERVICE_ID: 'harbormaster:web:80' } }).id).toBe('harbormaster:web:80');
  });

  it('SERVICE_<port>_ID overrides the id of that port only', () => {
    const r = services({ ports: TWO_PORTS, env: { SERVICE_443_ID: 'tls' } });
    expect(r.instances.map((i) => i.id)).toEqual(['docker-host-1:web1:80', 'tls']);
  });

  it('SERVICE_IGNORE skips the whole container', () => {
    const r = services({ ports: TWO_PORTS, labels: { SERVICE_IGNORE: 'true' } });
    expect(r).toEqual({ instances: [], errors: [] });
  });

  it('SERVICE_<port>_IGNORE skips that port; the others keep their group suffix', () => {
    const r = services({ ports: TWO_PORTS, env: { SERVICE_80_IGNORE: '1' } });
    expect(r.errors).toEqual([]);
    expect(r.instances.map((i) => [i.id, i.name])).toEqual([['docker-host-1:web1:443', 'foobar-443']]);
  });

  it('other SERVICE_<key> settings become lowercase meta; port-specific ones override', () => {
    const r = services({
      ports: TWO_PORTS,
      env: { SERVICE_REGION: 'us-east', SERVICE_Version: '1', SERVICE_443_VERSION: '2', SERVICE_80_PROTO: 'plain' },
      labels: { 'com.example.owner': 'team-a' },
    });
    expect(r.errors).toEqual([]);
    expect(r.instances.map((i) => i.meta)).toEqual([
      { proto: 'plain', region: 'us-east', version: '1' },
      { region: 'us-east', version: '2' },
    ]);
  });

  it('reserved keys (name, tags, id, ignore) do not become meta', () => {
    const inst = only({ env: { SERVICE_NAME: 'x', SERVICE_TAGS: 't', SERVICE_ID: 'i', SERVICE_IGNORE: '' } });
    expect(inst.meta).toEqual({});
  });

  it('a udp port gets the "udp" tag and an ":udp" id suffix', () => {
    const r = services({ ports: { '53/udp': published('5353'), '53/tcp': published('5353') }, image: 'coredns/coredns' });
    expect(r.errors).toEqual([]);
    expect(r.instances.map((i) => [i.id, i.name, i.protocol, i.tags])).toEqual([
      ['docker-host-1:web1:53', 'coredns-53', 'tcp', []],
      ['docker-host-1:web1:53:udp', 'coredns-53', 'udp', ['udp']],
    ]);
  });

  it('does not duplicate the udp tag when it is also given', () => {
    const inst = only({ ports: { '53/udp': published('53') }, env: { SERVICE_TAGS: 'udp,dns' } });
    expect(inst.tags).toEqual(['udp', 'dns']);
  });

  it('ignores sctp ports', () => {
    const r = services({ ports: { '80/tcp': published('8080'), '9000/sctp': published('9000') } });
    expect(r.instances.map((i) => i.id)).toEqual(['docker-host-1:web1:80']);
  });
});

describe('containerServices: addresses and ports', () => {
  it('skips exposed but unpublished ports', () => {
    const r = services({ ports: { '80/tcp': published('32768'), '8080/tcp': null }, exposed: ['80/tcp', '8080/tcp', '9090/tcp'] });
    expect(r.errors).toEqual([]);
    // One service left: not a group, so no suffix.
    expect(r.instances.map((i) => [i.id, i.name])).toEqual([['docker-host-1:web1:80', 'foobar']]);
  });

  it('a container without published ports yields nothing', () => {
    expect(services({ ports: { '80/tcp': null } })).toEqual({ instances: [], errors: [] });
  });

  it('an empty binding list counts as unpublished', () => {
    expect(services({ ports: { '80/tcp': [] } }).instances).toEqual([]);
  });

  it('--internal registers every exposed port at the container IP and exposed port', () => {
    const r = services({ ports: { '80/tcp': published('32768'), '8080/tcp': null } }, { internal: true });
    expect(r.errors).toEqual([]);
    expect(r.instances.map((i) => [i.name, i.address, i.port])).toEqual([
      ['foobar-80', CONTAINER_IP, 80],
      ['foobar-8080', CONTAINER_IP, 8080],
    ]);
  });

  it('--internal falls back to the IP of a user-defined network', () => {
    const inst = only({ ip: '', networks: { backend: { IPAddress: '10.5.0.7' } } }, { internal: true });
    expect(inst.address).toBe('10.5.0.7');
  });

  it('a binding on a specific host IP keeps that IP', () => {
    expect(only({ ports: { '80/tcp': published('8080', '127.0.0.1') } }, { hostIp: '10.0.0.5' }).address).toBe('127.0.0.1');
  });

  it('a wildcard binding uses --ip', () => {
    expect(only({}, { hostIp: '10.0.0.5' }).address).toBe('10.0.0.5');
  });

  it('a wildcard binding without --ip uses the host address', () => {
    expect(only({}).address).toBe(HOST_ADDRESS);
  });

  it('an IPv6 wildcard binding counts as wildcard', () => {
    expect(only({ ports: { '80/tcp': published('8080', '::') } }).address).toBe(HOST_ADDRESS);
  });

  it('uses the first binding when Docker reports an IPv4 and an IPv6 one', () => {
    const inst = only({ ports: { '80/tcp': [{ HostIp: '0.0.0.0', HostPort: '32768' }, { HostIp: '::', HostPort: '32768' }] } });
    expect([inst.address, inst.port]).toEqual([HOST_ADDRESS, 32768]);
  });

  it('--net=host registers the exposed ports on the host address', () => {
    const r = services({ networkMode: 'host', exposed: ['80/tcp', '9000/udp'], image: 'nginx' });
    expect(r.errors).toEqual([]);
    expect(r.instances.map((i) => [i.id, i.name, i.address, i.port, i.protocol])).toEqual([
      ['docker-host-1:web1:80', 'nginx-80', HOST_ADDRESS, 80, 'tcp'],
      ['docker-host-1:web1:9000:udp', 'nginx-9000', HOST_ADDRESS, 9000, 'udp'],
    ]);
  });

  it('--net=host uses --ip when given', () => {
    const inst = only({ networkMode: 'host', exposed: ['80/tcp'] }, { hostIp: '10.0.0.5' });
    expect([inst.address, inst.port]).toEqual(['10.0.0.5', 80]);
  });

  it('--net=host with --internal uses the host address too', () => {
    const inst = only({ networkMode: 'host', exposed: ['80/tcp'] }, { internal: true });
    expect([inst.address, inst.port]).toEqual([HOST_ADDRESS, 80]);
  });
});

describe('containerServices: --explicit', () => {
  it('skips containers without SERVICE_NAME', () => {
    expect(services({ ports: TWO_PORTS }, { explicit: true })).toEqual({ instances: [], errors: [] });
  });

  it('keeps containers with SERVICE_NAME', () => {
    expect(only({ env: { SERVICE_NAME: 'api' } }, { explicit: true }).name).toBe('api');
  });

  it('keeps only the ports named by SERVICE_<port>_NAME', () => {
    const r = services({ ports: TWO_PORTS, labels: { SERVICE_443_NAME: 'secure' } }, { explicit: true });
    expect(r.instances.map((i) => [i.id, i.name])).toEqual([['docker-host-1:web1:443', 'secure']]);
  });
});

describe('containerServices: checks', () => {
  const checkOf = (env: Record<string, string>, opts: Partial<ModelOptions> = {}) => only({ env }, opts).check;
  const target = `${HOST_ADDRESS}:32768`;

  it('SERVICE_CHECK_HTTP: http check on the registered address, default interval 10s', () => {
    expect(checkOf({ SERVICE_CHECK_HTTP: '/health' })).toEqual({ kind: 'http', target: `http://${target}/health`, interval: '10s' });
  });

  it('SERVICE_CHECK_HTTPS with interval and timeout', () => {
    expect(checkOf({ SERVICE_CHECK_HTTPS: '/status?full=1', SERVICE_CHECK_INTERVAL: '5s', SERVICE_CHECK_TIMEOUT: '1s' })).toEqual({
      kind: 'https',
      target: `https://${target}/status?full=1`,
      interval: '5s',
      timeout: '1s',
    });
  });

  it('brackets an IPv6 address in the check target', () => {
    expect(checkOf({ SERVICE_CHECK_TCP: 'true' }, { hostAddress: 'fd00::1' })?.target).toBe('[fd00::1]:32768');
  });

  it('SERVICE_CHECK_TCP', () => {
    expect(checkOf({ SERVICE_CHECK_TCP: 'true', SERVICE_CHECK_TIMEOUT: '2s' })).toEqual({ kind: 'tcp', target, interval: '10s', timeout: '2s' });
  });

  it('SERVICE_CHECK_TTL has a ttl and no interval', () => {
    expect(checkOf({ SERVICE_CHECK_TTL: '30s', SERVICE_CHECK_INTERVAL: '5s' })).toEqual({ kind: 'ttl', target: '', ttl: '30s' });
  });

  it('SERVICE_CHECK_SCRIPT interpolates $SERVICE_IP and $SERVICE_PORT', () => {
    expect(checkOf({ SERVICE_CHECK_SCRIPT: 'nc -z $SERVICE_IP $SERVICE_PORT && echo $SERVICE_PORT' })).toEqual({
      kind: 'script',
      target: `nc -z ${HOST_ADDRESS} 32768 && echo 32768`,
      interval: '10s',
    });
  });

  it('SERVICE_CHECK_SCRIPT uses the internal address and port with --internal', () => {
    expect(checkOf({ SERVICE_CHECK_SCRIPT: 'check $SERVICE_IP:$SERVICE_PORT' }, { internal: true })?.target).toBe(`check ${CONTAINER_IP}:80`);
  });

  it('SERVICE_CHECK_GRPC', () => {
    expect(checkOf({ SERVICE_CHECK_GRPC: 'true' })).toEqual({ kind: 'grpc', target, interval: '10s', grpcUseTls: false });
    expect(checkOf({ SERVICE_CHECK_GRPC: 'true', SERVICE_CHECK_GRPC_USE_TLS: 'true' })?.grpcUseTls).toBe(true);
  });

  it('SERVICE_CHECK_INITIAL_STATUS and SERVICE_CHECK_DEREGISTER_AFTER', () => {
    expect(checkOf({ SERVICE_CHECK_HTTP: '/', SERVICE_CHECK_INITIAL_STATUS: 'critical', SERVICE_CHECK_DEREGISTER_AFTER: '1m30s' })).toEqual({
      kind: 'http',
      target: `http://${target}/`,
      interval: '10s',
      initialStatus: 'critical',
      deregisterAfter: '1m30s',
    });
  });

  it('HTTP wins over the other kinds when several are set', () => {
    expect(checkOf({ SERVICE_CHECK_TCP: 'true', SERVICE_CHECK_HTTP: '/h' })?.kind).toBe('http');
  });

  it('no check without a SERVICE_CHECK_<kind>; interval or timeout alone do nothing', () => {
    const inst = only({ env: { SERVICE_CHECK_INTERVAL: '5s', SERVICE_CHECK_TIMEOUT: '1s' } });
    expect(inst.check).toBeUndefined();
    expect(inst.meta).toEqual({});
  });

  it('check keys are not copied into meta', () => {
    const inst = only({
      env: {
        SERVICE_CHECK_HTTP: '/health',
        SERVICE_CHECK_INTERVAL: '15s',
        SERVICE_CHECK_TIMEOUT: '1s',
        SERVICE_CHECK_INITIAL_STATUS: 'warning',
        SERVICE_CHECK_DEREGISTER_AFTER: '10m',
        SERVICE_VERSION: '3',
      },
    });
    expect(inst.meta).toEqual({ version: '3' });
    expect(inst.check).toMatchObject({ interval: '15s', timeout: '1s', initialStatus: 'warning', deregisterAfter: '10m' });
  });

  it('SERVICE_<port>_CHECK_HTTP checks only that port', () => {
    const r = services({ ports: TWO_PORTS, env: { SERVICE_80_CHECK_HTTP: '/ping' } });
    expect(r.instances.map((i) => i.check?.target)).toEqual([`http://${target}/ping`, undefined]);
  });

  it('an empty SERVICE_CHECK_<kind> means no check', () => {
    expect(checkOf({ SERVICE_CHECK_HTTP: '', SERVICE_CHECK_INTERVAL: '' })).toBeUndefined();
  });
});

describe('containerServices: SERVICE_CHECK_CMD', () => {
  const ID = container().Id;

  it('runs the command in the container: a cmd check with the container ID, default interval 10s', () => {
    expect(only({ env: { SERVICE_CHECK_CMD: 'test -f /www/index.html' } }).check).toEqual({
      kind: 'cmd',
      target: 'test -f /www/index.html',
      containerId: ID,
      interval: '10s',
    });
  });

  it('takes interval, initial status and deregister-after; $SERVICE_* stay as they are', () => {
    expect(only({ labels: { SERVICE_CHECK_CMD: 'echo $SERVICE_PORT', SERVICE_CHECK_INTERVAL: '1s', SERVICE_CHECK_INITIAL_STATUS: 'critical', SERVICE_CHECK_DEREGISTER_AFTER: '5m' } }).check).toEqual({
      kind: 'cmd',
      target: 'echo $SERVICE_PORT',
      containerId: ID,
      interval: '1s',
      initialStatus: 'critical',
      deregisterAfter: '5m',
    });
  });

  it('SERVICE_<port>_CHECK_CMD checks only that port', () => {
    const r = services({ ports: TWO_PORTS, env: { SERVICE_443_CHECK_CMD: 'true' } });
    expect(r.errors).toEqual([]);
    expect(r.instances.map((i) => i.check?.kind)).toEqual([undefined, 'cmd']);
  });

  it('comes after http(s) and before script, as in registrator', () => {
    expect(only({ env: { SERVICE_CHECK_HTTP: '/', SERVICE_CHECK_CMD: 'true' } }).check?.kind).toBe('http');
    expect(only({ env: { SERVICE_CHECK_SCRIPT: 'x', SERVICE_CHECK_CMD: 'true' } }).check?.kind).toBe('cmd');
  });

  it('is not copied into meta', () => {
    expect(only({ env: { SERVICE_CHECK_CMD: 'true' } }).meta).toEqual({});
  });

  it.each([
    ['a control character', 'true\u0007', 'control characters'],
    ['a newline', 'true\nfalse', 'control characters'],
    ['more than 1024 characters', `echo ${'x'.repeat(1020)}`, 'longer than 1024'],
  ])('refuses %s, skipping that service only', (_what, cmd, reason) => {
    const r = services({ ports: TWO_PORTS, env: { SERVICE_80_CHECK_CMD: cmd } });
    expect(r.instances.map((i) => i.id)).toEqual(['docker-host-1:web1:443']);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain('container web1: env SERVICE_80_CHECK_CMD');
    expect(r.errors[0]).toContain(reason);
  });

  it('accepts 1024 characters', () => {
    expect(only({ env: { SERVICE_CHECK_CMD: 'x'.repeat(1024) } }).check?.target).toHaveLength(1024);
  });
});

describe('containerServices: booleans, gRPC targets, methods and TLS', () => {
  const checkOf = (env: Record<string, string>) => only({ env }).check;
  const target = `${HOST_ADDRESS}:32768`;

  it.each(['false', 'FALSE', '0', 'no', 'Off'])('SERVICE_CHECK_TCP=%s means no TCP check', (v) => {
    expect(checkOf({ SERVICE_CHECK_TCP: v })).toBeUndefined();
  });

  it.each(['true', 'True', '1', 'yes', 'ON'])('SERVICE_CHECK_TCP=%s is a TCP check', (v) => {
    expect(checkOf({ SERVICE_CHECK_TCP: v })?.kind).toBe('tcp');
  });

  it('SERVICE_CHECK_TCP=false lets a later kind apply', () => {
    expect(checkOf({ SERVICE_CHECK_TCP: 'false', SERVICE_CHECK_GRPC: 'true' })?.kind).toBe('grpc');
  });

  it('SERVICE_CHECK_GRPC_USE_TLS=false keeps TLS off', () => {
    expect(checkOf({ SERVICE_CHECK_GRPC: 'true', SERVICE_CHECK_GRPC_USE_TLS: 'false' })).toEqual({ kind: 'grpc', target, interval: '10s', grpcUseTls: false });
    expect(checkOf({ SERVICE_CHECK_GRPC: 'true', SERVICE_CHECK_GRPC_USE_TLS: 'no' })?.grpcUseTls).toBe(false);
    expect(checkOf({ SERVICE_CHECK_GRPC: 'true', SERVICE_CHECK_GRPC_USE_TLS: 'Yes' })?.grpcUseTls).toBe(true);
  });

  it('SERVICE_CHECK_GRPC=<service> checks that gRPC service: host:port/<service>', () => {
    expect(checkOf({ SERVICE_CHECK_GRPC: 'my.Service', SERVICE_CHECK_GRPC_USE_TLS: 'false' })).toEqual({
      kind: 'grpc',
      target: `${target}/my.Service`,
      interval: '10s',
      grpcUseTls: false,
    });
    expect(checkOf({ SERVICE_CHECK_GRPC: 'grpc.health.v1.Health' })?.target).toBe(`${target}/grpc.health.v1.Health`);
  });

  it.each(['false', '0', 'off'])('SERVICE_CHECK_GRPC=%s means no gRPC check', (v) => {
    expect(checkOf({ SERVICE_CHECK_GRPC: v })).toBeUndefined();
  });

  it('SERVICE_CHECK_TLS_SKIP_VERIFY applies to https checks and to gRPC with TLS', () => {
    expect(checkOf({ SERVICE_CHECK_HTTPS: '/', SERVICE_CHECK_TLS_SKIP_VERIFY: 'true' })).toEqual({
      kind: 'https',
      target: `https://${target}/`,
      interval: '10s',
      tlsSkipVerify: true,
    });
    expect(checkOf({ SERVICE_CHECK_GRPC: 'true', SERVICE_CHECK_GRPC_USE_TLS: 'true', SERVICE_CHECK_TLS_SKIP_VERIFY: '1' })).toMatchObject({ grpcUseTls: true, tlsSkipVerify: true });
    expect(checkOf({ SERVICE_CHECK_GRPC: 'true', SERVICE_CHECK_TLS_SKIP_VERIFY: 'true' })).not.toHaveProperty('tlsSkipVerify');
    expect(checkOf({ SERVICE_CHECK_HTTPS: '/', SERVICE_CHECK_TLS_SKIP_VERIFY: 'false' })).not.toHaveProperty('tlsSkipVerify');
  });

  it('SERVICE_CHECK_HTTP_METHOD / SERVICE_CHECK_HTTPS_METHOD set the method, upper-cased, each for its scheme', () => {
    expect(checkOf({ SERVICE_CHECK_HTTP: '/', SERVICE_CHECK_HTTP_METHOD: 'head' })).toEqual({ kind: 'http', target: `http://${target}/`, interval: '10s', method: 'HEAD' });
    expect(checkOf({ SERVICE_CHECK_HTTPS: '/', SERVICE_CHECK_HTTPS_METHOD: 'POST' })?.method).toBe('POST');
    expect(checkOf({ SERVICE_CHECK_HTTPS: '/', SERVICE_CHECK_HTTP_METHOD: 'POST' })).not.toHaveProperty('method');
  });

  it('port-specific forms apply to their port only', () => {
    const r = services({
      ports: TWO_PORTS,
      env: { SERVICE_CHECK_HTTPS: '/', SERVICE_443_CHECK_HTTPS_METHOD: 'HEAD', SERVICE_443_CHECK_TLS_SKIP_VERIFY: 'yes' },
    });
    expect(r.errors).toEqual([]);
    expect(r.instances.map((i) => [i.check?.method, i.check?.tlsSkipVerify])).toEqual([
      [undefined, undefined],
      ['HEAD', true],
    ]);
  });

  it('none of these keys becomes meta', () => {
    const inst = only({
      env: { SERVICE_CHECK_HTTPS: '/', SERVICE_CHECK_HTTP_METHOD: 'GET', SERVICE_CHECK_HTTPS_METHOD: 'GET', SERVICE_CHECK_TLS_SKIP_VERIFY: 'no', SERVICE_CHECK_GRPC_USE_TLS: 'no' },
    });
    expect(inst.meta).toEqual({});
  });

  it.each([
    ['SERVICE_CHECK_GRPC_USE_TLS', { SERVICE_CHECK_GRPC: 'true', SERVICE_CHECK_GRPC_USE_TLS: 'maybe' }, 'not a boolean'],
    ['SERVICE_CHECK_TCP', { SERVICE_CHECK_TCP: 'sure' }, 'not a boolean'],
    ['SERVICE_CHECK_TLS_SKIP_VERIFY', { SERVICE_CHECK_HTTPS: '/', SERVICE_CHECK_TLS_SKIP_VERIFY: 'truee' }, 'not a boolean'],
    ['SERVICE_CHECK_GRPC', { SERVICE_CHECK_GRPC: 'my service' }, 'gRPC service name'],
    ['SERVICE_CHECK_GRPC', { SERVICE_CHECK_GRPC: 'a..b' }, 'gRPC service name'],
    ['SERVICE_CHECK_GRPC', { SERVICE_CHECK_GRPC: 'a'.repeat(256) }, 'gRPC service name'],
    ['SERVICE_CHECK_HTTP_METHOD', { SERVICE_CHECK_HTTP: '/', SERVICE_CHECK_HTTP_METHOD: 'GET /x' }, 'not an HTTP method'],
    ['SERVICE_CHECK_HTTPS_METHOD', { SERVICE_CHECK_HTTPS: '/', SERVICE_CHECK_HTTPS_METHOD: 'G(ET' }, 'not an HTTP method'],
    ['SERVICE_CHECK_INTERVAL', { SERVICE_CHECK_TCP: 'true', SERVICE_CHECK_INTERVAL: '5 seconds' }, 'not a duration'],
  ])('a bad %s skips the service with one line', (key, env, reason) => {
    const r = services({ env });
    expect(r.instances).toEqual([]);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain(`container web1: env ${key}:`);
    expect(r.errors[0]).toContain(reason);
    expect(r.errors[0]).toContain('skipped');
  });
});

describe('containerServices: check settings no check uses', () => {
  it.each([
    ['SERVICE_CHECK_TLS_SKIP_VERIFY', { SERVICE_CHECK_TLS_SKIP_VERIFY: 'y' }, 'not a boolean'],
    ['SERVICE_CHECK_INTERVAL', { SERVICE_CHECK_INTERVAL: '5 seconds' }, 'not a duration'],
    ['SERVICE_CHECK_HTTP_METHOD', { SERVICE_CHECK_TCP: 'true', SERVICE_CHECK_HTTP_METHOD: 'GET /x' }, 'not an HTTP method'],
  ])('a bad %s is reported and ignored; the service is registered', (key, env, reason) => {
    const r = services({ env });
    expect(r.instances).toHaveLength(1);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain(`container web1: env ${key}:`);
    expect(r.errors[0]).toContain(reason);
    expect(r.errors[0]).toContain('key ignored');
  });
});

describe('containerServices: ids that are path segments or hidden keys', () => {
  it.each([['.', 'may not be "." or ".."'], ['..', 'may not be "." or ".."'], ['_web', 'may not start with "_"']])('SERVICE_ID=%s skips the service', (id, reason) => {
    const r = services({ env: { SERVICE_ID: id } });
    expect(r.instances).toEqual([]);
    expect(r.errors[0]).toContain(reason);
  });
});

describe('containerServices: the first check key set decides the check', () => {
  it('a bad value of another kind of check is reported and ignored', () => {
    const r = services({ env: { SERVICE_CHECK_HTTP: '/health', SERVICE_CHECK_TTL: 'bogus', SERVICE_CHECK_TCP: 'maybe' } });
    expect(r.instances).toHaveLength(1);
    expect(r.instances[0].check).toMatchObject({ kind: 'http' });
    expect(r.errors).toHaveLength(2);
    for (const e of r.errors) expect(e).toContain('key ignored');
  });

  it('a script check keeps its timeout', () => {
    const r = services({ env: { SERVICE_CHECK_SCRIPT: 'true', SERVICE_CHECK_TIMEOUT: '3s' } });
    expect(r.instances[0].check).toMatchObject({ kind: 'script', timeout: '3s' });
  });
});

describe('containerServices: nginx-proxy aliases and precedence of http_host', () => {
  it('VIRTUAL_HOST without VIRTUAL_PORT is http_host of every port', () => {
    const r = services({ ports: TWO_PORTS, env: { VIRTUAL_HOST: 'a.example.com' } });
    expect(r.instances.map((i) => i.meta.http_host)).toEqual(['a.example.com', 'a.example.com']);
  });

  it('VIRTUAL_HOST with VIRTUAL_PORT applies to that port', () => {
    const r = services({ ports: TWO_PORTS, env: { VIRTUAL_HOST: 'a.example.com', VIRTUAL_PORT: '443' } });
    expect(r.instances.map((i) => i.meta.http_host)).toEqual([undefined, 'a.example.com']);
  });

  it('a SERVICE_HTTP_HOST label beats env VIRTUAL_HOST + VIRTUAL_PORT', () => {
    const inst = only({ env: { VIRTUAL_HOST: 'env.example.com', VIRTUAL_PORT: '80' }, labels: { SERVICE_HTTP_HOST: 'label.example.com' } });
    expect(inst.meta).toEqual({ http_host: 'label.example.com' });
  });

  it('a generic SERVICE_HTTP_HOST env var beats VIRTUAL_HOST + VIRTUAL_PORT too', () => {
    const inst = only({ env: { VIRTUAL_HOST: 'alias.example.com', VIRTUAL_PORT: '80', SERVICE_HTTP_HOST: 'env.example.com' } });
    expect(inst.meta).toEqual({ http_host: 'env.example.com' });
  });

  it('a bad VIRTUAL_PORT is reported once and VIRTUAL_HOST ignored; the services still register', () => {
    const r = services({ ports: TWO_PORTS, env: { VIRTUAL_HOST: 'a.example.com', VIRTUAL_PORT: 'http' } });
    expect(r.instances.map((i) => [i.id, i.meta])).toEqual([
      ['docker-host-1:web1:80', {}],
      ['docker-host-1:web1:443', {}],
    ]);
    expect(r.errors).toEqual(['container web1: env VIRTUAL_PORT: "http" is not a port number; VIRTUAL_HOST ignored']);
  });

  it('an empty SERVICE_HTTP_HOST label is unset and hides VIRTUAL_HOST', () => {
    expect(only({ env: { VIRTUAL_HOST: 'a.example.com' }, labels: { SERVICE_HTTP_HOST: '' } }).meta).toEqual({});
  });

  it('a bad VIRTUAL_HOST is routing meta: that service is skipped', () => {
    const r = services({ ports: TWO_PORTS, env: { VIRTUAL_HOST: 'bad host!', VIRTUAL_PORT: '80' } });
    expect(r.instances.map((i) => i.id)).toEqual(['docker-host-1:web1:443']);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain('env VIRTUAL_HOST');
  });
});

describe('containerServices: meta limits', () => {
  const many = (n: number, prefix = 'SERVICE_K') => Object.fromEntries(Array.from({ length: n }, (_, i) => [`${prefix}${i}`, 'v']));

  it('exports harbormaster\'s own meta keys and the limits', () => {
    expect(OWN_META_KEYS).toEqual(['hm_host', 'hm_digest']);
    expect(MAX_META_KEYS).toBe(64);
  });

  it(`keeps ${64 - 2} meta keys`, () => {
    expect(Object.keys(only({ env: many(62) }).meta)).toHaveLength(62);
  });

  it('skips a service with more, naming the container and the count, and not the other ports', () => {
    const r = services({ ports: TWO_PORTS, env: { ...many(62), SERVICE_80_EXTRA: 'x' } });
    expect(r.instances.map((i) => i.id)).toEqual(['docker-host-1:web1:443']);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toMatch(/^container web1: meta: 63 meta keys .*at most 62.*hm_host, hm_digest.*; service on port 80\/tcp skipped$/);
  });

  it('counts labels and env together, after dropping bad keys', () => {
    const r = services({ env: many(40, 'SERVICE_E'), labels: { ...many(22, 'SERVICE_L'), 'SERVICE_BAD.KEY': 'x' } });
    expect(r.instances).toHaveLength(1);
    expect(Object.keys(r.instances[0].meta)).toHaveLength(62);
    expect(r.errors).toHaveLength(1);
  });

  it.each([
    ['a key starting with hm_', { SERVICE_HM_HOST: 'x' }, 'label SERVICE_HM_HOST', 'reserved'],
    ['a key longer than 128', { [`SERVICE_${'K'.repeat(129)}`]: 'x' }, `label SERVICE_${'K'.repeat(129)}`, 'longer than 128'],
    ['a value longer than 512', { SERVICE_LONG: 'x'.repeat(513) }, 'label SERVICE_LONG', 'longer than 512'],
  ])('drops %s, keeping the service and its other meta', (_what, labels, source, reason) => {
    const r = services({ labels: { ...labels, SERVICE_REGION: 'eu' } });
    expect(r.instances.map((i) => i.meta)).toEqual([{ region: 'eu' }]);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain(`container web1: ${source}:`);
    expect(r.errors[0]).toContain(reason);
    expect(r.errors[0]).toMatch(/; key ignored$/);
  });
});

describe('containerServices: bad input', () => {
  /** Asserts one error line naming the container and the setting, and returns it. */
  function singleError(r: { errors: string[] }, key: string): string {
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain('container web1');
    expect(r.errors[0]).toContain(key);
    return r.errors[0];
  }

  it('a SERVICE_NAME with an underscore skips the service', () => {
    const r = services({ env: { SERVICE_NAME: 'my_service' } });
    expect(r.instances).toEqual([]);
    const e = singleError(r, 'SERVICE_NAME');
    expect(e).toContain('env SERVICE_NAME');
    expect(e).toContain('my_service');
    expect(e).toContain('80/tcp');
  });

  it('a SERVICE_NAME longer than 63 characters is refused', () => {
    const r = services({ labels: { SERVICE_NAME: 'a'.repeat(64) } });
    expect(r.instances).toEqual([]);
    expect(r.errors.length).toBeGreaterThan(0);
    for (const e of r.errors) {
      expect(e).toContain('container web1');
      expect(e).toContain('label SERVICE_NAME');
    }
  });

  it('a group suffix that makes a name longer than 63 characters is refused', () => {
    // 61 + '-80' and 61 + '-443' are both over the limit, while the name alone is fine.
    const r = services({ ports: TWO_PORTS, env: { SERVICE_NAME: 'a'.repeat(61) } });
    expect(r.instances).toEqual([]);
    expect(r.errors).toHaveLength(2);
    expect(r.errors.every((e) => e.includes('container web1') && e.includes('SERVICE_NAME') && e.includes('63'))).toBe(true);
  });

  it('a newline in a value skips the service', () => {
    const r = services({ env: { SERVICE_TAGS: 'a\nb' } });
    expect(r.instances).toEqual([]);
    expect(singleError(r, 'SERVICE_TAGS')).toContain('control characters');
  });

  it('a control character in a free-form meta value drops that key only, on every port, with one line', () => {
    const r = services({ ports: TWO_PORTS, labels: { SERVICE_REGION: 'us\u0007east', SERVICE_TIER: 'web' } });
    expect(r.instances.map((i) => [i.id, i.meta])).toEqual([
      ['docker-host-1:web1:80', { tier: 'web' }],
      ['docker-host-1:web1:443', { tier: 'web' }],
    ]);
    const e = singleError(r, 'label SERVICE_REGION');
    expect(e).toContain('control characters');
    expect(e).toMatch(/; key ignored$/);
  });

  it('a newline in an env meta value drops that key only', () => {
    const r = services({ env: { SERVICE_X: 'a\nb', SERVICE_NAME: 'web' } });
    expect(r.instances.map((i) => [i.name, i.meta])).toEqual([['web', {}]]);
    singleError(r, 'env SERVICE_X');
  });

  it('a bad value that loses to a label is not reported', () => {
    const r = services({ env: { SERVICE_REGION: 'bad\u0007' }, labels: { SERVICE_REGION: 'eu' } });
    expect(r.errors).toEqual([]);
    expect(r.instances[0].meta).toEqual({ region: 'eu' });
  });

  it('a bad routing meta value (http_host, http_path, weight) skips the service', () => {
    for (const [key, value] of [['SERVICE_HTTP_HOST', 'not a host'], ['SERVICE_HTTP_PATH', 'no-slash'], ['SERVICE_WEIGHT', '5000'], ['SERVICE_HTTP_PATH', '/a\u0007']]) {
      const r = services({ ports: TWO_PORTS, env: { [key.replace('SERVICE_', 'SERVICE_80_')]: value } });
      expect(r.instances.map((i) => i.id)).toEqual(['docker-host-1:web1:443']);
      expect(singleError(r, key.replace('SERVICE_', 'SERVICE_80_'))).toContain('skipped');
    }
  });

  it('a bad SERVICE_80_TAGS does not affect port 443', () => {
    const r = services({ ports: TWO_PORTS, labels: { SERVICE_80_TAGS: 'a\u0000' } });
    expect(r.instances.map((i) => i.id)).toEqual(['docker-host-1:web1:443']);
    singleError(r, 'label SERVICE_80_TAGS');
  });

  it('an error in a port-specific setting skips only that port', () => {
    const r = services({ ports: TWO_PORTS, labels: { SERVICE_80_NAME: 'bad_name' } });
    expect(r.instances.map((i) => [i.id, i.name])).toEqual([['docker-host-1:web1:443', 'foobar-443']]);
    const e = singleError(r, 'label SERVICE_80_NAME');
    expect(e).toContain('80/tcp');
  });

  it('an error in a generic setting skips every port', () => {
    const r = services({ ports: TWO_PORTS, env: { SERVICE_NAME: 'bad name' } });
    expect(r.instances).toEqual([]);
    expect(r.errors).toHaveLength(2);
    expect(r.errors.every((e) => e.includes('container web1') && e.includes('SERVICE_NAME'))).toBe(true);
  });

  it('a bad check interval "10 seconds" is refused', () => {
    const r = services({ env: { SERVICE_CHECK_HTTP: '/health', SERVICE_CHECK_INTERVAL: '10 seconds' } });
    expect(r.instances).toEqual([]);
    expect(singleError(r, 'SERVICE_CHECK_INTERVAL')).toContain('10 seconds');
  });

  it('a bad port-specific check interval skips only that port', () => {
    const r = services({ ports: TWO_PORTS, env: { SERVICE_CHECK_HTTP: '/health', SERVICE_443_CHECK_INTERVAL: '10 seconds' } });
    expect(r.instances.map((i) => i.id)).toEqual(['docker-host-1:web1:80']);
    singleError(r, 'SERVICE_443_CHECK_INTERVAL');
  });

  it.each([
    ['SERVICE_CHECK_TIMEOUT', { SERVICE_CHECK_TCP: 'true', SERVICE_CHECK_TIMEOUT: 'soon' }],
    ['SERVICE_CHECK_TTL', { SERVICE_CHECK_TTL: '30' }],
    ['SERVICE_CHECK_DEREGISTER_AFTER', { SERVICE_CHECK_TCP: 'true', SERVICE_CHECK_DEREGISTER_AFTER: '1 day' }],
    ['SERVICE_CHECK_INITIAL_STATUS', { SERVICE_CHECK_TCP: 'true', SERVICE_CHECK_INITIAL_STATUS: 'unknown' }],
    ['SERVICE_CHECK_HTTP', { SERVICE_CHECK_HTTP: 'health' }],
    ['SERVICE_CHECK_HTTP', { SERVICE_CHECK_HTTP: 'http://evil/health' }],
  ])('a bad %s is refused', (key, env) => {
    const r = services({ env });
    expect(r.instances).toEqual([]);
    singleError(r, key);
  });

  it('a non-numeric port key like SERVICE_80x_NAME is reported once and ignored; every port still registers', () => {
    const r = services({ ports: TWO_PORTS, env: { SERVICE_80x_NAME: 'web' } });
    expect(r.instances.map((i) => i.name)).toEqual(['foobar-80', 'foobar-443']);
    const e = singleError(r, 'env SERVICE_80x_NAME');
    expect(e).toContain('not a port number');
    expect(e).toMatch(/; key ignored$/);
  });

  it('a meta key with a dot drops that key only', () => {
    const r = services({ labels: { 'SERVICE_foo.bar': 'x', SERVICE_NAME: 'web' } });
    expect(r.instances.map((i) => [i.name, i.meta])).toEqual([['web', {}]]);
    expect(singleError(r, 'label SERVICE_foo.bar')).toContain('foo.bar');
  });

  it('a meta key starting with "consul" drops that key only', () => {
    const r = services({ env: { SERVICE_CONSUL_TOKEN: 'x' } });
    expect(r.instances).toHaveLength(1);
    singleError(r, 'env SERVICE_CONSUL_TOKEN');
  });

  it('bad keys of an ignored port or container are not reported', () => {
    expect(services({ env: { SERVICE_IGNORE: '1', 'SERVICE_A.B': 'x', SERVICE_80x_NAME: 'y' } })).toEqual({ instances: [], errors: [] });
  });

  it('a SERVICE_ID with a slash is refused', () => {
    const r = services({ env: { SERVICE_ID: 'a/b' } });
    expect(r.instances).toEqual([]);
    singleError(r, 'SERVICE_ID');
  });

  it('an image without a usable base name asks for SERVICE_NAME', () => {
    const r = services({ image: 'acme/___:1' });
    expect(r.instances).toEqual([]);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain('container web1');
    expect(r.errors[0]).toContain('SERVICE_NAME');
  });

  it('errors of other containers do not leak: each call reports its own container', () => {
    const r = containerServices(container({ name: 'db1', env: { SERVICE_NAME: 'bad_name' } }), modelOpts());
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain('container db1');
  });
});
