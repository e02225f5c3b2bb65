import { describe, it, expect } from 'vitest';
import type { ContainerDetails, PortBinding } from './container.js';
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

  it('port-specific env beats a generic label, whatever the order', () => {
    const r = services({ env: { SERVICE_80_NAME: 'from-port' }, labels: { SERVICE_NAME: 'generic' } });
    expect(r.instances.map((i) => i.name)).toEqual(['from-port']);
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

  it('a control character in a label value skips the service', () => {
    const r = services({ labels: { SERVICE_REGION: 'us\u0007east' } });
    expect(r.instances).toEqual([]);
    expect(singleError(r, 'label SERVICE_REGION')).toContain('control characters');
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

  it('a non-numeric port key like SERVICE_80x_NAME is refused', () => {
    const r = services({ env: { SERVICE_80x_NAME: 'web' } });
    expect(r.instances).toEqual([]);
    expect(singleError(r, 'SERVICE_80x_NAME')).toContain('not a port number');
  });

  it('a meta key with a dot is refused', () => {
    const r = services({ labels: { 'SERVICE_foo.bar': 'x' } });
    expect(r.instances).toEqual([]);
    expect(singleError(r, 'SERVICE_foo.bar')).toContain('foo.bar');
  });

  it('a meta key starting with "consul" is refused', () => {
    const r = services({ env: { SERVICE_CONSUL_TOKEN: 'x' } });
    expect(r.instances).toEqual([]);
    singleError(r, 'SERVICE_CONSUL_TOKEN');
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
