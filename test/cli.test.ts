// The command line as a user meets it: help texts, usage errors (exit 2, one line) and the
// services listing against the real Consul and etcd.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it, onTestFinished } from 'vitest';
import { removeContainers, run } from './support/docker.js';
import { runCli, spawnHm } from './support/harbormaster.js';
import { CONSUL, ETCD_ENDPOINT, consulServices } from './support/registries.js';
import { uniq, waitFor } from './support/wait.js';

const exec = promisify(execFile);

describe('harbormaster CLI', () => {
  it('prints the commands with --help, and `npx harbormaster` resolves the bin entry', async () => {
    // A private npm cache: a half-written shared one (another npx killed mid-way) makes npx fail with ENOENT.
    const cache = mkdtempSync(join(tmpdir(), 'hm-npx-'));
    onTestFinished(() => rmSync(cache, { recursive: true, force: true }));
    const { stdout } = await exec('npx', ['--no-install', 'harbormaster', '--help'], { cwd: new URL('..', import.meta.url).pathname, env: { ...process.env, npm_config_cache: cache } });
    expect(stdout).toContain('Usage: harbormaster <command>');
    expect(stdout).toMatch(/register\s+watch Docker/);
    expect(stdout).toMatch(/services\s+list what a registry holds/);
  });

  it.each(['register', 'services'])('%s --help describes its options and exits 0', async (cmd) => {
    const r = await runCli([cmd, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Usage: harbormaster ${cmd}`);
  });

  it.each([
    [['frobnicate'], 'unknown command "frobnicate"'],
    [['register'], 'register takes one registry URI'],
    [['register', 'zookeeper://h:1'], 'unknown scheme "zookeeper"'],
    [['register', 'consul://h:99999'], 'out of range'],
    [['register', '--ttl', 'ten', 'consul://'], '--ttl ten: not a whole number'],
    [['register', '--ttl', '5', '--ttl-refresh', '5', 'consul://'], '--ttl-refresh 5: must be shorter than --ttl 5'],
    [['register', '--deregister', 'never', 'consul://'], '--deregister never: expected one of always, on-success'],
    [['register', '--ip', '1.2.3', 'consul://'], '--ip 1.2.3: not an IP address'],
    [['register', '--docker', 'ftp://x', 'consul://'], '--docker ftp://x'],
    [['register', '--nope', 'consul://'], "Unknown option '--nope'"],
    [['services'], 'services takes one registry URI'],
  ])('usage error %j exits 2 with one line', async (args, text) => {
    const r = await runCli(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(text);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^harbormaster: /);
  });

  it('exits 1 with a reason when the registry stays unreachable past --retry-attempts', async () => {
    const r = await runCli(['register', '--retry-attempts', '1', '--retry-interval', '50', 'consul://127.0.0.1:1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('unreachable after 2 attempts');
  });

  it('services lists what Consul and etcd hold, as a table and as JSON', async () => {
    const HOST = uniq('itcli');
    try {
      spawnHm(['register', '--hostname', HOST, CONSUL]);
      spawnHm(['register', '--hostname', HOST, `etcd://${ETCD_ENDPOINT}/${HOST}`]);
      await run(`${HOST}-s`, { env: { SERVICE_NAME: 'listed', SERVICE_TAGS: 't1,t2' } });
      const id = `${HOST}:${HOST}-s:80`;
      await waitFor('consul entry', async () => (await consulServices(HOST))[id]);
      for (const uri of [CONSUL, `etcd://${ETCD_ENDPOINT}/${HOST}`]) {
        const table = await waitFor(`${uri} lists it`, async () => {
          const r = await runCli(['services', uri]);
          return r.stdout.includes(id) ? r : undefined;
        });
        expect(table.code).toBe(0);
        expect(table.stdout.split('\n')[0]).toMatch(/^SERVICE\s+ID\s+ADDRESS\s+TAGS\s+STATUS$/);
        expect(table.stdout).toMatch(new RegExp(`listed\\s+${id}\\s+127\\.0\\.0\\.1:\\d+\\s+t1,t2\\s+passing`));
        const json = await runCli(['services', uri, '--json']);
        const list = JSON.parse(json.stdout) as Array<Record<string, unknown>>;
        expect(list.find((s) => s.id === id)).toMatchObject({ name: 'listed', address: '127.0.0.1', tags: ['t1', 't2'], host: HOST, protocol: 'tcp' });
      }
    } finally {
      await removeContainers(`${HOST}-`);
    }
  });

  it('register --api serves what this host registered, its health and metrics', async () => {
    const HOST = uniq('itapi');
    try {
      const hm = spawnHm(['register', '--hostname', HOST, '--api', '127.0.0.1:19991', CONSUL]);
      await hm.waitForLog('api listening', (l) => l.event === 'listen');
      await run(`${HOST}-a`, { env: { SERVICE_NAME: 'apisvc' } });
      const id = `${HOST}:${HOST}-a:80`;
      const body = await waitFor('service in /v1/services', async () => {
        const b = (await (await fetch('http://127.0.0.1:19991/v1/services')).json()) as { services: Array<{ name: string; instances: Array<{ id: string }> }> };
        return b.services.find((s) => s.name === 'apisvc') ? b : undefined;
      });
      expect(body.services.find((s) => s.name === 'apisvc')!.instances.map((i) => i.id)).toEqual([id]);
      const health = await fetch('http://127.0.0.1:19991/v1/health');
      expect(health.status).toBe(200);
      const h = (await health.json()) as { ok: boolean; components: Record<string, { ok: boolean }> };
      expect(h.ok).toBe(true);
      expect(Object.keys(h.components).sort()).toEqual(['docker', 'registry']);
      const metrics = await (await fetch('http://127.0.0.1:19991/metrics')).text();
      expect(metrics).toMatch(/^harbormaster_registrations_total \d+/m);
      expect(metrics).toContain('harbormaster_registry_op_seconds_bucket');
      expect(metrics).not.toContain('harbormaster_process_process');
    } finally {
      await removeContainers(`${HOST}-`);
    }
  });
});
