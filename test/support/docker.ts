// The real Docker engine through its CLI, as an operator would drive it.
import { execFile, spawn } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';

const exec = promisify(execFile);
export const IMAGE = 'hm-test:2';

export async function docker(...args: string[]): Promise<string> {
  const { stdout } = await exec('docker', args, { maxBuffer: 16 * 1024 * 1024 });
  return stdout.trim();
}

export interface RunOptions {
  env?: Record<string, string>;
  labels?: Record<string, string>;
  /** `-p` values; ports are published on 127.0.0.1 unless the value names an address. */
  publish?: string[];
  extra?: string[];
  cmd?: string[];
  /** Another engine than this lane's DOCKER_HOST (e.g. the cluster's host 2). */
  host?: string;
}

export async function run(name: string, o: RunOptions = {}): Promise<string> {
  const args = [...(o.host ? ['-H', o.host] : []), 'run', '-d', '--name', name];
  for (const [k, v] of Object.entries(o.env ?? {})) args.push('-e', `${k}=${v}`);
  for (const [k, v] of Object.entries(o.labels ?? {})) args.push('-l', `${k}=${v}`);
  for (const p of o.publish ?? ['80']) args.push('-p', /^\d+\.\d+\.\d+\.\d+:/.test(p) ? p : `127.0.0.1::${p}`);
  args.push(...(o.extra ?? []), IMAGE, ...(o.cmd ?? []));
  return docker(...args);
}

/** Published host port of a container port, e.g. hostPort('web', '80/tcp'). */
export async function hostPort(name: string, port = '80/tcp'): Promise<number> {
  const out = await docker('inspect', '-f', `{{(index (index .NetworkSettings.Ports "${port}") 0).HostPort}}`, name);
  return Number(out);
}

export async function removeContainers(prefix: string, host?: string): Promise<void> {
  const h = host ? ['-H', host] : [];
  const ids = (await docker(...h, 'ps', '-aq', '--filter', `name=^${prefix}`)).split('\n').filter(Boolean);
  if (ids.length > 0) await docker(...h, 'rm', '-f', ...ids).catch(() => undefined);
}

export async function isRunning(name: string): Promise<boolean> {
  return (await docker('inspect', '-f', '{{.State.Running}}', name).catch(() => 'false')) === 'true';
}

/** The engine this test lane talks to (DOCKER_HOST, set per lane by vitest.config.ts). */
export const DOCKER_HOST = process.env.DOCKER_HOST || 'unix:///var/run/docker.sock';
/** Its socket path, for fault proxies placed in front of it. */
export const DOCKER_SOCKET = DOCKER_HOST.replace(/^unix:\/\//, '');

interface Engine {
  socket: string;
  pidfile: string;
  log: string;
  args: string[];
}

/** Restart this lane's dockerd the way the test environment started it (scripts/test-env.sh). */
export async function restartDockerd(): Promise<void> {
  const state = process.env.HM_TEST_STATE ?? '/tmp/harbormaster-test';
  const engines = JSON.parse(readFileSync(`${state}/dockerds.json`, 'utf8')) as Record<string, Engine>;
  const engine = Object.values(engines).find((e) => e.socket === DOCKER_SOCKET);
  if (!engine) throw new Error(`no engine in ${state}/dockerds.json serves ${DOCKER_HOST}`);
  const pid = Number(readFileSync(engine.pidfile, 'utf8').trim());
  process.kill(pid, 'SIGTERM');
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  for (let i = 0; i < 240 && alive(); i++) await new Promise((r) => setTimeout(r, 250));
  if (alive()) throw new Error(`dockerd ${pid} did not exit within 60s`);
  const [cmd, ...args] = engine.args;
  const child = spawn('setsid', [cmd, ...args], { detached: true, stdio: ['ignore', openSync(engine.log, 'a'), openSync(engine.log, 'a')] });
  child.unref();
  for (let i = 0; i < 240; i++) {
    if (await exec('docker', ['info']).then(() => true, () => false)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`dockerd (${DOCKER_HOST}) did not come back within 60s`);
}
