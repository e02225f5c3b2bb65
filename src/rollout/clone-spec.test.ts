import { readFileSync } from 'node:fs';
import type Docker from 'dockerode';
import { describe, expect, it } from 'vitest';
import { cloneSpec, describeRefusal, type CloneInput } from './clone-spec.js';

// Recorded from Docker 20.10 (API 1.41) through dockerode:
//   user-networks  hm-test:2, -e FOO=bar -e PATH=/bin -l a=b, named volume + ro bind + `-v /anon` +
//                  `--mount type=volume,target=/anon2`, -p 127.0.0.1::80 -p 127.0.0.1:28301:81,
//                  network n1 (alias web, --ip 172.31.99.7) then `network connect --alias other n2`,
//                  --restart on-failure:3, health cmd + interval, -m 64m, --cap-drop NET_RAW,
//                  --stop-timeout 7, cmd `/bin/serve x`
//   image-defaults an image committed with Env APP_MODE=prod + PATH, labels org.example.version=2
//                  and tier=web, healthcheck (3s, 2 retries), STOPSIGNAL SIGQUIT, WORKDIR /www,
//                  USER root, EXPOSE 8080, VOLUME /cache, ENTRYPOINT /bin/sh, CMD -c 'exec /bin/serve'
//   inherits       that image with no settings of its own
//   overrides      that image with every default overridden, a legacy --link, -P and many HostConfig flags
//   shared-netns   --network container:<inherits>
//   host-net       --network host
//   compose        `docker-compose up` (v1.29) of one service with a published port
const fx = <T>(name: string): T => JSON.parse(readFileSync(new URL(`./fixtures/clone-spec/${name}.json`, import.meta.url), 'utf8')) as T;
const container = (name: string) => fx<Docker.ContainerInspectInfo>(`container-${name}`);
const HM_TEST = fx<Docker.ImageInspectInfo>('image-hm-test');
const DEFAULTS = fx<Docker.ImageInspectInfo>('image-defaults');

function plan(c: Docker.ContainerInspectInfo, more: Partial<CloneInput> = {}) {
  const oldImage = c.Image === HM_TEST.Id ? HM_TEST : c.Image === DEFAULTS.Id ? DEFAULTS : undefined;
  return cloneSpec({ container: c, oldImage, newImage: oldImage ?? HM_TEST, newImageRef: c.Config.Image, name: 'web-2', ...more });
}

describe('cloneSpec on user networks, volumes and ports', () => {
  const c = container('user-networks');
  const p = plan(c, { labels: { 'io.harbormaster.rollout.generation': '2' } });

  it('keeps what the user set and takes the rest from the image', () => {
    expect(p.create).toMatchObject({
      name: 'web-2',
      Image: 'hm-test:2',
      Env: ['FOO=bar', 'PATH=/bin'],
      Cmd: ['/bin/serve', 'x'],
      Labels: { a: 'b', 'io.harbormaster.rollout.generation': '2' },
      ExposedPorts: { '80/tcp': {}, '81/tcp': {} },
      Volumes: { '/anon': {} },
      Healthcheck: { Test: ['CMD-SHELL', 'wget -q -O- http://127.0.0.1/'], Interval: 2_000_000_000 },
      StopTimeout: 7,
      AttachStdout: true,
      Tty: false,
    });
    // Docker's default hostname is the old container's short id: the replacement gets its own.
    expect(p.create.Hostname).toBeUndefined();
    expect(p.create.Entrypoint).toBeUndefined();
    expect(p.create.WorkingDir).toBeUndefined();
  });

  it('copies HostConfig without the fields Docker fills in itself', () => {
    const hc = p.create.HostConfig!;
    expect(hc).toMatchObject({
      Binds: ['hmclx-probe-vol:/data', '/tmp/hmclx-probe-bind:/bind:ro'],
      NetworkMode: 'hmclx-probe-n1',
      PortBindings: { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '' }], '81/tcp': [{ HostIp: '127.0.0.1', HostPort: '28301' }] },
      RestartPolicy: { Name: 'on-failure', MaximumRetryCount: 3 },
      Memory: 67108864,
      MemorySwap: 134217728,
      CapDrop: ['CAP_NET_RAW'],
      Mounts: [{ Type: 'volume', Target: '/anon2' }],
      LogConfig: { Type: 'json-file', Config: {} },
    });
    for (const k of ['MaskedPaths', 'ReadonlyPaths', 'ConsoleSize', 'ContainerIDFile', 'Links', 'PidsLimit']) expect(hc).not.toHaveProperty(k);
  });

  it('puts the network of NetworkMode in the create request and connects the others after', () => {
    expect(p.create.NetworkingConfig).toEqual({ EndpointsConfig: { 'hmclx-probe-n1': { Aliases: ['web'], IPAMConfig: { IPv4Address: '172.31.99.7' } } } });
    // The short id alias Docker added on n2 is not carried; nothing Docker assigns is.
    expect(p.extraNetworks).toEqual([{ name: 'hmclx-probe-n2', endpoint: { Aliases: ['other'] } }]);
  });

  it('reports the fixed host port and the static address, not the ephemeral port', () => {
    expect(p.fixedHostPorts).toEqual(['127.0.0.1:28301->81/tcp']);
    expect(p.staticAddresses).toEqual(['172.31.99.7 on hmclx-probe-n1']);
  });

  it('notes both anonymous volumes and nothing else', () => {
    expect(p.notes).toEqual([
      'anonymous volume at /anon2 (52dd2509adba): the replacement gets a new one, the data is not shared',
      'anonymous volume at /anon (a653873b48b6): the replacement gets a new one, the data is not shared',
    ]);
  });

  it('does not change its input', () => {
    const before = JSON.stringify(c);
    plan(c);
    expect(JSON.stringify(c)).toBe(before);
  });
});

describe('cloneSpec against the old image', () => {
  it('leaves out everything a container inherited, so the new image decides', () => {
    const p = plan(container('inherits'), { newImage: HM_TEST, newImageRef: 'hm-test:2' });
    expect(p.create.Image).toBe('hm-test:2');
    for (const k of ['Env', 'Cmd', 'Entrypoint', 'WorkingDir', 'User', 'StopSignal', 'Healthcheck', 'ExposedPorts', 'Volumes', 'Hostname', 'NetworkingConfig']) {
      expect(p.create, k).not.toHaveProperty(k);
    }
    expect(p.create.Labels).toEqual({});
    expect(p.create.HostConfig!.NetworkMode).toBe('default');
    expect(p.extraNetworks).toEqual([]);
    expect(p.notes).toEqual(['anonymous volume at /cache (48ee68baef30): the replacement gets a new one, the data is not shared']);
  });

  it('keeps every override, field by field', () => {
    const p = plan(container('overrides'));
    expect(p.create).toMatchObject({
      Hostname: 'myhost',
      Domainname: 'example.org',
      User: '0',
      WorkingDir: '/tmp',
      StopSignal: 'SIGTERM',
      Entrypoint: ['/bin/serve'],
      Env: ['APP_MODE=dev', 'EXTRA=1'],
      Labels: { tier: 'api' },
      ExposedPorts: { '9090/tcp': {} },
      Volumes: { '/cache2': {} },
      // Only the command was the user's; interval and retries came from the image.
      Healthcheck: { Test: ['CMD-SHELL', 'true'] },
    });
    // With the user's entrypoint Docker took no Cmd from the image, and neither may the replacement.
    expect(p.create.Cmd).toBeUndefined();
    expect(p.create.HostConfig).toMatchObject({
      Links: ['hmclx-probe-inh:db'],
      PublishAllPorts: true,
      Dns: ['127.0.0.1'],
      ExtraHosts: ['api.local:127.0.0.2'],
      Tmpfs: { '/run': 'size=1m' },
      Init: true,
      ShmSize: 33554432,
      Sysctls: { 'net.ipv4.ip_unprivileged_port_start': '0' },
      Ulimits: [{ Name: 'nofile', Hard: 2048, Soft: 1024 }],
      GroupAdd: ['10'],
      ReadonlyRootfs: true,
      SecurityOpt: ['no-new-privileges'],
      CpuShares: 512,
      PidsLimit: 100,
      CapAdd: ['CAP_NET_ADMIN'],
      LogConfig: { Type: 'json-file', Config: { 'max-size': '1m' } },
    });
    expect(p.fixedHostPorts).toEqual([]);
  });

  it("keeps a Cmd equal to the image's when the entrypoint is the user's (Docker would not fill it in)", () => {
    const c = container('overrides');
    c.Config.Cmd = ['-c', 'exec /bin/serve'];
    expect(plan(c).create.Cmd).toEqual(['-c', 'exec /bin/serve']);
  });

  it("keeps the user's Cmd under the image's entrypoint", () => {
    const c = container('inherits');
    c.Config.Cmd = ['-c', 'exec /bin/serve --other'];
    const p = plan(c);
    expect(p.create.Cmd).toEqual(['-c', 'exec /bin/serve --other']);
    expect(p.create.Entrypoint).toBeUndefined();
  });

  it('treats a null and an empty value alike when comparing with the image', () => {
    const c = container('inherits');
    const img = structuredClone(DEFAULTS);
    (img.Config as { Volumes: unknown }).Volumes = null;
    (c.Config as { Volumes: unknown }).Volumes = {};
    expect(plan(c, { oldImage: img }).create.Volumes).toBeUndefined();
  });
});

describe('cloneSpec without the old image', () => {
  it('keeps everything and says why', () => {
    const p = plan(container('inherits'), { oldImage: undefined, newImage: HM_TEST, newImageRef: 'hm-test:2' });
    expect(p.create).toMatchObject({
      Env: ['APP_MODE=prod', 'PATH=/usr/local/bin:/bin'],
      Cmd: ['-c', 'exec /bin/serve'],
      Entrypoint: ['/bin/sh'],
      WorkingDir: '/www',
      Labels: { 'org.example.version': '2', tier: 'web' },
      ExposedPorts: { '8080/tcp': {} },
    });
    expect(p.notes[0]).toMatch(/^the old image 4b8fe91ea608 is not available: .*kept as the old container had them$/);
    expect(p.notes).toContain('PATH=/usr/local/bin:/bin: kept as the old container had it (it may have come from the old image, which is not available)');
  });

  it("drops a PATH that is Docker's default or the new image's", () => {
    const c = container('inherits');
    c.Config.Env = ['APP_MODE=prod', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'];
    expect(plan(c, { oldImage: undefined, newImage: HM_TEST }).create.Env).toEqual(['APP_MODE=prod']);
    c.Config.Env = ['PATH=/usr/local/bin:/bin'];
    expect(plan(c, { oldImage: undefined, newImage: DEFAULTS }).create.Env).toBeUndefined();
  });
});

describe('cloneSpec labels', () => {
  it('drops the given prefixes from the old labels and lets the given labels win', () => {
    const c = container('compose');
    c.Config.Labels['io.harbormaster.rollout.replaces'] = 'abc';
    c.Config.Labels['io.harbormaster.rollout.generation'] = '1';
    const p = plan(c, { labels: { 'io.harbormaster.rollout.generation': '2', 'com.docker.compose.container-number': '1' }, dropLabelPrefixes: ['io.harbormaster.rollout.'] });
    expect(p.create.Labels!['io.harbormaster.rollout.replaces']).toBeUndefined();
    expect(p.create.Labels!['io.harbormaster.rollout.generation']).toBe('2');
  });

  it('keeps the compose labels, the service alias and the compose network', () => {
    const p = plan(container('compose'));
    expect(Object.keys(p.create.Labels!).filter((k) => k.startsWith('com.docker.compose.'))).toHaveLength(8);
    expect(p.create.Labels).toMatchObject({ 'com.docker.compose.project': 'hmclxprobe', 'com.docker.compose.service': 'web', 'com.docker.compose.oneoff': 'False' });
    expect(p.create.NetworkingConfig).toEqual({ EndpointsConfig: { hmclxprobe_default: { Aliases: ['web'] } } });
    expect(p.create.Env).toEqual(['NAME=composed']);
    expect(p.fixedHostPorts).toEqual([]);
  });
});

describe('cloneSpec network modes', () => {
  it('keeps a shared network namespace, without what Docker refuses with it, and notes it', () => {
    const p = plan(container('shared-netns'));
    expect(p.create.HostConfig!.NetworkMode).toBe('container:4f9c6adba96eedbf5b21b9d9459b37c32151aea8a2b991afac99ab3aae693d1f');
    // The hostname shown is the other container's.
    expect(p.create.Hostname).toBeUndefined();
    expect(p.create.NetworkingConfig).toBeUndefined();
    expect(p.notes).toEqual([expect.stringMatching(/^NetworkMode container:4f9c6adba96e: kept, the replacement joins that container's network namespace/)]);
  });

  it('drops exposed ports with a shared network namespace (Docker refuses them there)', () => {
    const c = container('shared-netns');
    c.Config.ExposedPorts = { '80/tcp': {} };
    expect(plan(c).create.ExposedPorts).toBeUndefined();
  });

  it('reports host networking as holding fixed ports', () => {
    const p = plan(container('host-net'));
    expect(p.fixedHostPorts).toEqual(['host network']);
    expect(p.create.HostConfig!.NetworkMode).toBe('host');
    expect(p.create.NetworkingConfig).toBeUndefined();
    expect(p.extraNetworks).toEqual([]);
  });

  it("carries an alias that was the container's own name as the new name", () => {
    const c = container('compose');
    c.NetworkSettings.Networks.hmclxprobe_default.Aliases = ['hmclxprobe_web_1', 'web', c.Id.slice(0, 12)];
    expect(plan(c, { name: 'hmclxprobe_web_2' }).create.NetworkingConfig).toEqual({ EndpointsConfig: { hmclxprobe_default: { Aliases: ['hmclxprobe_web_2', 'web'] } } });
  });

  it('joins the first remaining network when the old one left the network of its NetworkMode', () => {
    const c = container('user-networks');
    delete c.NetworkSettings.Networks['hmclx-probe-n1'];
    const p = plan(c);
    expect(p.create.HostConfig!.NetworkMode).toBe('hmclx-probe-n2');
    expect(p.create.NetworkingConfig).toEqual({ EndpointsConfig: { 'hmclx-probe-n2': { Aliases: ['other'] } } });
    expect(p.extraNetworks).toEqual([]);
    expect(p.notes).toContain('network mode hmclx-probe-n1: the old container is no longer on that network, so the replacement joins hmclx-probe-n2 first instead');
  });

  it('gets network mode none when the old container is on no network', () => {
    const c = container('inherits');
    c.NetworkSettings.Networks = {};
    const p = plan(c);
    expect(p.create.HostConfig!.NetworkMode).toBe('none');
    expect(p.notes).toContain('network mode default: the old container is on no network, so the replacement gets network mode none');
  });

  it('drops a MAC address and says why', () => {
    const c = container('inherits');
    (c.Config as { MacAddress?: string }).MacAddress = '02:42:ac:11:00:99';
    const p = plan(c);
    expect(p.create.MacAddress).toBeUndefined();
    expect(p.notes).toContain('MAC address 02:42:ac:11:00:99: not carried over (two containers on one network cannot share it)');
  });
});

describe('cloneSpec fixed host ports', () => {
  it('counts a fixed port on any address and a one-port range; not 0, empty or a wider range', () => {
    const c = container('user-networks');
    c.HostConfig.PortBindings = {
      '80/tcp': [{ HostIp: '', HostPort: '8080' }, { HostIp: '::1', HostPort: '8080' }],
      '81/tcp': [{ HostIp: '127.0.0.1', HostPort: '0' }],
      '82/tcp': [{ HostIp: '127.0.0.1', HostPort: '9000-9010' }],
      '83/udp': [{ HostIp: '127.0.0.1', HostPort: '9020-9020' }],
      '84/tcp': null,
    };
    expect(plan(c).fixedHostPorts).toEqual(['0.0.0.0:8080->80/tcp', '[::1]:8080->80/tcp', '127.0.0.1:9020->83/udp']);
  });
});

describe('cloneSpec on bad input', () => {
  it('names the container and the field', () => {
    const c = container('inherits') as unknown as Record<string, unknown>;
    delete c.HostConfig;
    expect(() => cloneSpec({ container: c as unknown as Docker.ContainerInspectInfo, newImage: HM_TEST, newImageRef: 'x', name: 'y' })).toThrow(
      'container hmclx-probe-inh: inspect has no HostConfig',
    );
    const d = container('inherits');
    (d.Config as { Env: unknown }).Env = 'A=1';
    expect(() => plan(d)).toThrow('container hmclx-probe-inh: Config.Env is not a list of strings');
  });
});

describe('describeRefusal', () => {
  const withLabels = (labels: Record<string, string>) => {
    const c = container('inherits');
    c.Config.Labels = { ...c.Config.Labels, ...labels };
    return c;
  };

  it('refuses a Swarm task', () => {
    expect(describeRefusal(withLabels({ 'com.docker.swarm.service.id': 'x1y2', 'com.docker.swarm.service.name': 'web', 'com.docker.swarm.task.id': 't1' }))).toBe(
      'managed by Swarm (service web): Swarm replaces its own tasks, use docker service update',
    );
    expect(describeRefusal(withLabels({ 'com.docker.swarm.task.id': 't1' }))).toBe('managed by Swarm: Swarm replaces its own tasks, use docker service update');
  });

  it('refuses a Kubernetes container and a compose one-off', () => {
    expect(describeRefusal(withLabels({ 'io.kubernetes.pod.name': 'web-0' }))).toMatch(/^managed by Kubernetes \(pod web-0\)/);
    expect(describeRefusal(withLabels({ 'com.docker.compose.oneoff': 'True' }))).toMatch(/one-off/);
  });

  it('accepts ordinary, compose and --rm containers', () => {
    expect(describeRefusal(container('inherits'))).toBeUndefined();
    expect(describeRefusal(container('compose'))).toBeUndefined();
    const rm = container('inherits');
    rm.HostConfig.AutoRemove = true;
    expect(describeRefusal(rm)).toBeUndefined();
  });

  it('refuses a dead container', () => {
    const c = container('inherits');
    c.State.Dead = true;
    expect(describeRefusal(c)).toMatch(/^dead/);
  });
});
