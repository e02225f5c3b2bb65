// cloneSpec + createClone on the real dockerd: a replacement built from `docker inspect` of a
// running container matches it field by field, takes a new image's defaults only where the user
// had set nothing, reports what two containers cannot hold at once, stays in its compose project,
// and leaves nothing behind when it cannot be made.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cloneSpec, createClone, type ClonePlan } from '../src/rollout/clone-spec.js';
import { defaultDockerEndpoint, dockerClient } from '../src/sources/docker/docker-endpoint.js';
import { docker, IMAGE } from './support/docker.js';
import { uniq, waitFor } from './support/wait.js';

const exec = promisify(execFile);
const P = uniq('hm-clone');
const OLD = `${P}-img:old`;
const NEW = `${P}-img:new`;
const FIXED_PORT = 28310;
const ROLLOUT = 'io.harbormaster.rollout.';
const DIR = mkdtempSync(join(tmpdir(), 'hm-clone-'));
const api = dockerClient(defaultDockerEndpoint());
let subnet = '';

const inspect = (name: string) => api.getContainer(name).inspect();
const image = (ref: string) => api.getImage(ref).inspect();

/** An image from the test image with the defaults a Dockerfile would set, by committing a created container. */
async function makeImage(tag: string, settings: string[], cmd: string[] = []): Promise<void> {
  const builder = `${P}-build-${tag.split(':')[1]}`;
  await docker('create', '--name', builder, ...settings, IMAGE, ...cmd);
  await docker('commit', builder, tag);
  await docker('rm', builder);
}

async function answer(port: number): Promise<string> {
  return waitFor(`an answer on 127.0.0.1:${port}`, async () => {
    const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(1000) });
    return res.ok ? (await res.text()).trim() : undefined;
  }, 10_000);
}

const hostPortOf = (c: Docker.ContainerInspectInfo) => Number(c.NetworkSettings.Ports['80/tcp']?.[0]?.HostPort);

/** Plan, create and start the replacement of `oldName` on `ref`. */
async function replace(oldName: string, name: string, ref?: string): Promise<{ old: Docker.ContainerInspectInfo; plan: ClonePlan; neu: Docker.ContainerInspectInfo }> {
  const old = await inspect(oldName);
  const newRef = ref ?? old.Config.Image;
  const plan = cloneSpec({
    container: old,
    oldImage: await image(old.Image),
    newImage: await image(newRef),
    newImageRef: newRef,
    name,
    labels: { [`${ROLLOUT}generation`]: '2' },
    dropLabelPrefixes: [ROLLOUT],
  });
  const id = await createClone(api, plan);
  await api.getContainer(id).start();
  return { old, plan, neu: await inspect(id) };
}

beforeAll(async () => {
  await makeImage(OLD, ['-e', 'APP_MODE=old', '-e', 'TIER=base', '-l', 'org.example.version=1', '-l', 'tier=web', '--workdir', '/www', '--stop-signal', 'SIGQUIT',
    '--health-cmd', 'test -f /www/index.html', '--health-interval', '5s', '--expose', '8080']);
  await makeImage(NEW, ['-e', 'APP_MODE=new', '-e', 'TIER=base2', '-l', 'org.example.version=2', '-l', 'tier=web2', '--workdir', '/tmp', '--stop-signal', 'SIGINT',
    '--health-cmd', 'test -d /www', '--health-interval', '7s', '--expose', '8081'], ['/bin/sh', '-c', 'NAME=new-default exec /bin/serve']);
  await docker('network', 'create', `${P}-a`);
  await docker('network', 'create', `${P}-b`);
  // Static addresses need a subnet of one's own; another test may hold the one drawn.
  for (let i = 0; !subnet; i++) {
    const s = `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 250)}`;
    const ok = await docker('network', 'create', '--subnet', `${s}.0/24`, `${P}-c`).then(() => true, (err: Error) => (i < 5 ? false : Promise.reject(err)));
    if (ok) subnet = s;
  }
  await docker('volume', 'create', `${P}-vol`);
  await docker('run', '-d', '--name', `${P}-main`,
    '-e', 'FOO=bar', '-e', 'TIER=custom', '-l', 'a=b', '-l', 'tier=api', '-l', `${ROLLOUT}replaces=something-older`,
    '-v', `${P}-vol:/data`, '-v', `${DIR}:/bind:ro`, '-v', '/anon', '-p', '127.0.0.1::80',
    '--network', `${P}-a`, '--network-alias', 'web', '--restart', 'on-failure:3',
    '--health-cmd', 'wget -q -O /dev/null http://127.0.0.1/', '--health-interval', '1s', '-m', '64m', '--cap-drop', 'NET_RAW',
    OLD, '/bin/sh', '-c', 'NAME=custom exec /bin/serve');
  await docker('network', 'connect', '--alias', 'second', `${P}-b`, `${P}-main`);
  await docker('run', '-d', '--name', `${P}-plain`, '-p', '127.0.0.1::80', OLD);
});

afterAll(async () => {
  const ids = (await docker('ps', '-aq', '--filter', `name=^/${P}`)).split('\n').filter(Boolean);
  // -v: the anonymous volumes were the test's own.
  if (ids.length > 0) await docker('rm', '-fv', ...ids).catch(() => undefined);
  for (const n of ['a', 'b', 'c']) await docker('network', 'rm', `${P}-${n}`).catch(() => undefined);
  await docker('volume', 'rm', `${P}-vol`).catch(() => undefined);
  await docker('rmi', OLD, NEW).catch(() => undefined);
  rmSync(DIR, { recursive: true, force: true });
});

describe('a replacement on the same image', () => {
  it('has the old container configuration, its own ephemeral port and a fresh anonymous volume', async () => {
    const t0 = Date.now();
    const { old, plan, neu } = await replace(`${P}-main`, `${P}-main-2`);
    const madeMs = Date.now() - t0;

    expect(neu.Image).toBe(old.Image);
    const same = ['Image', 'Env', 'Cmd', 'Entrypoint', 'WorkingDir', 'User', 'StopSignal', 'Healthcheck', 'ExposedPorts', 'Volumes', 'Domainname', 'Tty', 'OpenStdin', 'StdinOnce', 'AttachStdin', 'AttachStdout', 'AttachStderr'] as const;
    for (const k of same) expect(neu.Config[k as keyof typeof neu.Config], `Config.${k}`).toEqual(old.Config[k as keyof typeof old.Config]);
    const labels = (c: Docker.ContainerInspectInfo) => Object.fromEntries(Object.entries(c.Config.Labels).filter(([k]) => !k.startsWith(ROLLOUT)));
    expect(labels(neu)).toEqual(labels(old));
    expect(neu.Config.Labels[`${ROLLOUT}generation`]).toBe('2');
    expect(neu.Config.Labels[`${ROLLOUT}replaces`]).toBeUndefined();
    expect(neu.Config.Hostname).toBe(neu.Id.slice(0, 12));

    // Binds, port bindings, restart policy, memory, capabilities, log config, network mode: all of it.
    expect(neu.HostConfig).toEqual(old.HostConfig);

    const nets = (c: Docker.ContainerInspectInfo) =>
      Object.fromEntries(
        Object.entries(c.NetworkSettings.Networks).map(([n, ep]) => [n, { aliases: ((ep.Aliases ?? []) as string[]).filter((a) => a !== c.Id.slice(0, 12)), ipam: ep.IPAMConfig ?? {} }]),
      );
    expect(nets(neu)).toEqual(nets(old));
    expect(Object.keys(nets(neu)).sort()).toEqual([`${P}-a`, `${P}-b`]);

    const oldPort = hostPortOf(old);
    const newPort = hostPortOf(neu);
    expect(newPort).toBeGreaterThan(0);
    expect(newPort).not.toBe(oldPort);
    expect(await answer(oldPort)).toBe('custom');
    expect(await answer(newPort)).toBe('custom');

    const mounts = (c: Docker.ContainerInspectInfo) => Object.fromEntries(c.Mounts.map((m) => [m.Destination, m.Type === 'bind' ? m.Source : m.Name]));
    const [om, nm] = [mounts(old), mounts(neu)];
    expect(nm['/data']).toBe(`${P}-vol`);
    expect(nm['/bind']).toBe(om['/bind']);
    expect(nm['/anon']).toMatch(/^[0-9a-f]{64}$/);
    expect(nm['/anon']).not.toBe(om['/anon']);
    expect(plan.notes).toEqual([`anonymous volume at /anon (${om['/anon']!.slice(0, 12)}): the replacement gets a new one, the data is not shared`]);
    expect(plan.fixedHostPorts).toEqual([]);
    expect(plan.staticAddresses).toEqual([]);

    await docker('exec', `${P}-main`, 'sh', '-c', 'echo shared >/data/x && echo own >/anon/y');
    expect(await docker('exec', `${P}-main-2`, 'cat', '/data/x')).toBe('shared');
    expect(await docker('exec', `${P}-main-2`, 'sh', '-c', 'test -e /anon/y && echo there || echo absent')).toBe('absent');
    const healthy = await waitFor('the replacement healthy', async () => ((await inspect(`${P}-main-2`)).State.Health?.Status === 'healthy' ? Date.now() - t0 : undefined), 15_000);
    console.log(
      `PROBE clone same image: created+started in ${madeMs} ms, healthy after ${healthy} ms; Config (${same.length} fields, labels), HostConfig and network aliases equal; ` +
        `port 80 old ${oldPort} new ${newPort}; /data shared, /anon ${om['/anon']!.slice(0, 12)} -> ${nm['/anon']!.slice(0, 12)}; notes: ${plan.notes.length}`,
    );
  });
});

describe('a replacement on a new image', () => {
  it("keeps the user's settings and takes the new image's defaults for the rest", async () => {
    const { neu, plan } = await replace(`${P}-main`, `${P}-main-3`, NEW);
    expect(neu.Config.Image).toBe(NEW);
    expect(neu.Image).toBe((await image(NEW)).Id);
    expect(neu.Config.Env).toEqual(expect.arrayContaining(['FOO=bar', 'TIER=custom', 'APP_MODE=new']));
    expect(neu.Config.Env).not.toContain('APP_MODE=old');
    expect(neu.Config.Labels).toMatchObject({ a: 'b', tier: 'api', 'org.example.version': '2' });
    expect(neu.Config.Cmd).toEqual(['/bin/sh', '-c', 'NAME=custom exec /bin/serve']);
    expect(neu.Config.Healthcheck).toEqual({ Test: ['CMD-SHELL', 'wget -q -O /dev/null http://127.0.0.1/'], Interval: 1_000_000_000 });
    expect(neu.Config.WorkingDir).toBe('/tmp');
    expect((neu.Config as { StopSignal?: string }).StopSignal).toBe('SIGINT');
    expect(Object.keys(neu.Config.ExposedPorts).sort()).toEqual(['80/tcp', '8081/tcp']);
    expect(await answer(hostPortOf(neu))).toBe('custom');

    const plain = await replace(`${P}-plain`, `${P}-plain-2`, NEW);
    const n = plain.neu;
    // The engine merges the image's and the container's Env in no promised order.
    expect(n.Config.Env.filter((e) => !e.startsWith('PATH=')).sort()).toEqual(['APP_MODE=new', 'TIER=base2']);
    expect(n.Config.Labels).toEqual({ 'org.example.version': '2', tier: 'web2', [`${ROLLOUT}generation`]: '2' });
    expect(n.Config.Cmd).toEqual(['/bin/sh', '-c', 'NAME=new-default exec /bin/serve']);
    expect(n.Config.Healthcheck).toEqual({ Test: ['CMD-SHELL', 'test -d /www'], Interval: 7_000_000_000 });
    expect(Object.keys(n.Config.ExposedPorts).sort()).toEqual(['80/tcp', '8081/tcp']);
    expect(await answer(hostPortOf(n))).toBe('new-default');
    console.log(
      `PROBE clone new image: overridden container env ${JSON.stringify(neu.Config.Env)} cmd answers "custom"; plain container env ${JSON.stringify(n.Config.Env)} ` +
        `labels ${JSON.stringify(n.Config.Labels)} answers "new-default"; notes ${plan.notes.length}`,
    );
  });
});

describe('what old and new cannot hold at once', () => {
  it('reports a fixed host port and a static address; the replacement starts once the old one stopped', async () => {
    const ip = `${subnet}.10`;
    await docker('run', '-d', '--name', `${P}-fixed`, '--network', `${P}-c`, '--ip', ip, '-p', `127.0.0.1:${FIXED_PORT}:80`, '-e', 'NAME=fixed', IMAGE);
    const old = await inspect(`${P}-fixed`);
    const plan = cloneSpec({ container: old, oldImage: await image(old.Image), newImage: await image(IMAGE), newImageRef: IMAGE, name: `${P}-fixed-2` });
    expect(plan.fixedHostPorts).toEqual([`127.0.0.1:${FIXED_PORT}->80/tcp`]);
    expect(plan.staticAddresses).toEqual([`${ip} on ${P}-c`]);

    const id = await createClone(api, plan);
    const refused = await api.getContainer(id).start().then(() => 'started', (err: { json?: { message?: string }; message: string }) => err.json?.message ?? err.message);
    expect(refused).toMatch(/already (allocated|in use)|address in use/i);
    await docker('stop', '-t', '1', `${P}-fixed`);
    await api.getContainer(id).start();
    const neu = await inspect(id);
    expect(neu.NetworkSettings.Networks[`${P}-c`]?.IPAddress).toBe(ip);
    expect(await answer(FIXED_PORT)).toBe('fixed');
    console.log(`PROBE fixed port/static address: plan ${JSON.stringify(plan.fixedHostPorts)} ${JSON.stringify(plan.staticAddresses)}; start beside the old one: "${refused.trim()}"; after the old one stopped: running at ${ip}, 127.0.0.1:${FIXED_PORT} answers`);
  });
});

describe('a compose service', () => {
  it('keeps the replacement in `docker-compose ps` and `down`', async () => {
    const file = join(DIR, 'docker-compose.yml');
    writeFileSync(file, `version: "2.4"\nservices:\n  web:\n    image: ${IMAGE}\n    environment:\n      NAME: composed\n    ports:\n      - "127.0.0.1::80"\n`);
    const compose = (...args: string[]) => exec('docker-compose', ['-p', P, '-f', file, ...args], { cwd: DIR }).then((r) => r.stdout);
    try {
      await compose('up', '-d');
      const { neu, plan } = await replace(`${P}_web_1`, `${P}-web-next`);
      expect(plan.create.NetworkingConfig).toEqual({ EndpointsConfig: { [`${P}_default`]: { Aliases: ['web'] } } });
      const ps = await compose('ps');
      expect(ps).toContain(`${P}_web_1`);
      expect(ps).toContain(`${P}-web-next`);
      expect((await compose('ps', '-q')).split('\n')).toContain(neu.Id);
      expect(await answer(hostPortOf(neu))).toBe('composed');
      // The service alias now finds both: ask Docker's resolver from the old container.
      const lookup = await docker('exec', `${P}_web_1`, 'nslookup', 'web');
      expect(lookup).toContain(neu.NetworkSettings.Networks[`${P}_default`]!.IPAddress);
      await compose('down', '-t', '1');
      expect(await docker('ps', '-aq', '--filter', `name=^/${P}-web-next$`)).toBe('');
      console.log(`PROBE compose: docker-compose ps lists ${P}_web_1 and ${P}-web-next, alias web resolves to the replacement too, down removes both`);
    } finally {
      await compose('down', '-t', '1').catch(() => undefined);
    }
  });
});

describe('createClone failures', () => {
  it('says which container and why in one line, and leaves no half-made container', async () => {
    const old = await inspect(`${P}-plain`);
    const base = cloneSpec({ container: old, oldImage: await image(old.Image), newImage: await image(OLD), newImageRef: OLD, name: `${P}-plain` });
    const taken = await createClone(api, base).then(() => 'created', (err: Error) => err.message);
    expect(taken).toMatch(new RegExp(`^creating container ${P}-plain: Conflict\\. The container name "/${P}-plain" is already in use`));
    expect(taken).not.toContain('\n');
    expect((await inspect(`${P}-plain`)).State.Running).toBe(true);

    const missing = await createClone(api, { ...base, create: { ...base.create, name: `${P}-nonet` }, extraNetworks: [{ name: `${P}-missing`, endpoint: {} }] }).then(
      () => 'created',
      (err: Error) => err.message,
    );
    expect(missing).toMatch(new RegExp(`^creating container ${P}-nonet: network ${P}-missing not found$`));
    expect(missing).not.toContain('\n');
    expect(await docker('ps', '-aq', '--filter', `name=^/${P}-nonet$`)).toBe('');

    // A static address on a network without a subnet of its own fails the connect after the create.
    const half = { ...base, create: { ...base.create, name: `${P}-half` }, extraNetworks: [{ name: `${P}-a`, endpoint: { IPAMConfig: { IPv4Address: '192.0.2.1' } } }] };
    const badIp = await createClone(api, half).then(() => 'created', (err: Error) => err.message);
    expect(badIp).toMatch(new RegExp(`^creating container ${P}-half: connecting it to network ${P}-a: .*user configured subnets`));
    expect(badIp).not.toContain('\n');
    expect(await docker('ps', '-aq', '--filter', `name=^/${P}-half$`)).toBe('');
    console.log(`PROBE createClone errors: "${taken}" / "${missing}" / "${badIp}"`);
  });
});
