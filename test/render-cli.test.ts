// The render command as a user runs it: usage errors, --dry, --once exit codes, a --config file,
// a single-file bind mount as destination (written in place), and a clean stop on SIGTERM.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServiceInstance } from '../src/model/service-instance.js';
import { createBackend } from '../src/registry/index.js';
import type { RegistryBackend } from '../src/registry/types.js';
import { runCli, spawnHm } from './support/harbormaster.js';
import { ETCD_ENDPOINT, privateEtcd } from './support/registries.js';
import { uniq, waitFor } from './support/wait.js';
import { TEMPLATES, tempDir } from './support/render.js';

const DIR = tempDir('hm-rc-');
const URI = `etcd://${ETCD_ENDPOINT}/${uniq('hmrc')}`;
const SVC = uniq('cli');
const TPL = join(DIR, 'list.hbs');
const MARKER = join(DIR, 'ran');
let backend: RegistryBackend;
const instances: ServiceInstance[] = [];

const inst = (id: string, port: number, status: ServiceInstance['status']): ServiceInstance => ({
  id,
  name: SVC,
  address: '127.0.0.1',
  port,
  protocol: 'tcp',
  tags: [],
  meta: {},
  host: 'render-cli',
  status,
});

beforeAll(async () => {
  writeFileSync(TPL, `{{#each services}}{{#if (eq name "${SVC}")}}{{#each instances}}{{hostPort address port}} {{status}}\n{{/each}}{{/if}}{{/each}}domain={{domain}}\n`);
  backend = createBackend(URI, { ttl: 0 });
  instances.push(inst(`${SVC}:1`, 30001, 'passing'), inst(`${SVC}:2`, 30002, 'warning'));
  for (const i of instances) await backend.register(i);
});

afterAll(async () => {
  for (const i of instances) await backend.deregister(i).catch(() => undefined);
  await backend.close();
  rmSync(DIR, { recursive: true, force: true });
});

describe('render usage errors: exit 2 with one line naming the flag, file or field', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['no template', ['render', 'memory://'], /needs at least one --template/],
    ['no registry', ['render', '--template', `${TEMPLATES}nginx.conf.hbs:${DIR}/x`], /needs a registry URI/],
    ['bad registry', ['render', 'zk://x', '--template', `${TEMPLATES}nginx.conf.hbs:${DIR}/x`], /unknown scheme "zk"/],
    ['check first', ['render', 'memory://', '--check', 'true', '--template', `${TEMPLATES}nginx.conf.hbs:${DIR}/x`], /^--check true: must follow the --template/],
    ['bad wait', ['render', 'memory://', '--template', `${TEMPLATES}nginx.conf.hbs:${DIR}/x`, '--wait', '3s:1s'], /^--wait 3s:1s: max must not be shorter/],
    ['bad verify', ['render', 'memory://', '--template', `${TEMPLATES}nginx.conf.hbs:${DIR}/x`, '--verify', 'apache'], /^--verify apache:/],
    ['bad status', ['render', 'memory://', '--template', `${TEMPLATES}nginx.conf.hbs:${DIR}/x`, '--status', 'healthy'], /^--status healthy: "healthy" is not one of/],
    ['missing template', ['render', 'memory://', '--template', `${DIR}/nope.hbs:${DIR}/x`], /nope\.hbs: template file does not exist/],
    ['missing folder', ['render', 'memory://', '--template', `${TEMPLATES}nginx.conf.hbs:${DIR}/no/x`], /destination folder .* does not exist/],
    ['unknown flag', ['render', 'memory://', '--tempalte', 'x'], /Unknown option '--tempalte'/],
  ];
  it.each(cases)('%s', async (_what, args, message) => {
    const r = await runCli(args);
    expect(r.code).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0].replace(/^harbormaster: /, '')).toMatch(message);
  });

  it('a --config file field, named with the file', async () => {
    const file = join(DIR, 'bad.yaml');
    writeFileSync(file, `templates:\n  - source: ${TPL}\n    destination: ${DIR}/out\n    verify: nginx\n`);
    const r = await runCli(['render', 'memory://', '--config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`harbormaster: ${file}: templates[0].verify: expected nginx:<pid-file>, haproxy:<master-socket> or plain`);
  });

  it('a template that does not compile, as file:line', async () => {
    const bad = join(DIR, 'bad.hbs');
    writeFileSync(bad, 'line one\n{{#each services}}\n{{name}\n{{/each}}\n');
    const r = await runCli(['render', 'memory://', '--template', `${bad}:${DIR}/out`]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(new RegExp(`^harbormaster: ${bad}:3: parse error`));
  });
});

describe('render --dry and --once', () => {
  it('--dry prints what would be written and writes or runs nothing (logs go to stderr)', async () => {
    const dest = join(DIR, 'dry.out');
    const r = await runCli(['render', URI, '--once', '--dry', '--template', `${TPL}:${dest}:touch ${MARKER}`, '--check', `touch ${MARKER}`]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('127.0.0.1:30001 passing\ndomain=localhost\n');
    expect(r.stderr).toContain('"event":"render","result":"dry"');
    expect(existsSync(dest)).toBe(false);
    expect(existsSync(MARKER)).toBe(false);
  });

  it('--once exits 0 after writing and reloading, 1 when the check fails (the file is kept)', async () => {
    const dest = join(DIR, 'once.out');
    const ok = await runCli(['render', URI, '--once', '--template', `${TPL}:${dest}:echo reloaded > ${MARKER}`, '--check', 'grep -q passing {{src}}']);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(readFileSync(dest, 'utf8')).toBe('127.0.0.1:30001 passing\ndomain=localhost\n');
    expect(readFileSync(MARKER, 'utf8')).toBe('reloaded\n');
    rmSync(MARKER);
    const bad = await runCli(['render', URI, '--once', '--domain', 'example.org', '--template', `${TPL}:${dest}:touch ${MARKER}`, '--check', 'echo "nope: bad config" >&2; exit 1']);
    expect(bad.code).toBe(1);
    const failed = bad.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { event?: string; msg: string }).find((l) => l.event === 'check-failed');
    expect(failed?.msg).toContain('nope: bad config');
    expect(readFileSync(dest, 'utf8')).toContain('domain=localhost');
    expect(existsSync(MARKER)).toBe(false);
  });

  it('--config (YAML) gives templates, status and domain', async () => {
    const dest = join(DIR, 'config.out');
    const file = join(DIR, 'render.yaml');
    writeFileSync(
      file,
      [`registry: ${URI}`, 'status: [passing, warning]', 'domain: example.org', 'wait: 100ms:1s', 'templates:', `  - source: ${TPL}`, `    destination: ${dest}`, '    perms: "0600"', ''].join('\n'),
    );
    const r = await runCli(['render', '--config', file, '--once']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(readFileSync(dest, 'utf8')).toBe('127.0.0.1:30001 passing\n127.0.0.1:30002 warning\ndomain=example.org\n');
    expect(statSync(dest).mode & 0o777).toBe(0o600);
  });

  it('a single-file bind mount as destination is written in place (rename gives EBUSY)', async () => {
    const dest = join(DIR, 'mounted.conf');
    const source = join(DIR, 'mount-source.conf');
    writeFileSync(dest, 'old\n');
    writeFileSync(source, 'old\n');
    execFileSync('mount', ['--bind', source, dest]); // needs root, as the test environment has
    try {
      const r = await runCli(['render', URI, '--once', '--template', `${TPL}:${dest}`]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain('"how":"in-place"');
      expect(readFileSync(dest, 'utf8')).toBe('127.0.0.1:30001 passing\ndomain=localhost\n');
      // the write went through the mount into the mounted file
      expect(readFileSync(source, 'utf8')).toBe('127.0.0.1:30001 passing\ndomain=localhost\n');
    } finally {
      execFileSync('umount', [dest]);
    }
  });

  it('follows changes and stops cleanly on SIGTERM', async () => {
    const dest = join(DIR, 'follow.out');
    const hm = spawnHm(['render', URI, '--template', `${TPL}:${dest}`, '--wait', '100ms:500ms']);
    await waitFor('first render', () => existsSync(dest) && readFileSync(dest, 'utf8').includes('30001'), 20_000);
    const extra = inst(`${SVC}:3`, 30003, 'passing');
    instances.push(extra);
    await backend.register(extra);
    await waitFor('second instance rendered', () => readFileSync(dest, 'utf8').includes('127.0.0.1:30003 passing'), 20_000);
    expect(await hm.stop('SIGTERM')).toBe(0);
    expect(hm.logs.some((l) => l.event === 'stop')).toBe(true);
  });

  it('follows a registry that restarts, without restarting', async () => {
    const etcd = privateEtcd(19460);
    await etcd.start();
    const uri = `etcd://${etcd.endpoint}/hmrc`;
    const b = createBackend(uri, { ttl: 0 });
    try {
      await b.register(inst(`${SVC}:r1`, 31001, 'passing'));
      const dest = join(DIR, 'restart.out');
      const hm = spawnHm(['render', uri, '--template', `${TPL}:${dest}`, '--wait', '100ms:500ms']);
      await waitFor('first render', () => existsSync(dest) && readFileSync(dest, 'utf8').includes('31001'), 20_000);
      await etcd.kill();
      await hm.waitForLog('watch error', (l) => l.event === 'error', 20_000);
      await etcd.start();
      await b.register(inst(`${SVC}:r2`, 31002, 'passing'));
      await waitFor('change after the restart rendered', () => readFileSync(dest, 'utf8').includes('127.0.0.1:31002 passing'), 40_000);
      expect(hm.logs.some((l) => l.event === 'watch-up')).toBe(true);
    } finally {
      await b.close();
      await etcd.kill();
      etcd.cleanup();
    }
  });
});
