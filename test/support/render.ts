// Real nginx and HAProxy processes for the render tests, on loopback ports, with every file in
// a temp folder; plus plain HTTP requests with a Host header.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { waitFor } from './wait.js';

const exec = promisify(execFile);
export const TEMPLATES = fileURLToPath(new URL('../../templates/', import.meta.url));

/** A temp folder that nginx workers (www-data) can enter. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

/** Copies of the shipped templates, so a test may edit them. */
export function copyTemplates(dir: string): { nginx: string; haproxy: string } {
  copyFileSync(join(TEMPLATES, 'nginx.conf.hbs'), join(dir, 'nginx.conf.hbs'));
  copyFileSync(join(TEMPLATES, 'haproxy.cfg.hbs'), join(dir, 'haproxy.cfg.hbs'));
  return { nginx: join(dir, 'nginx.conf.hbs'), haproxy: join(dir, 'haproxy.cfg.hbs') };
}

/** The env the shipped templates read, pointing every path into `dir`. */
export function templateEnv(dir: string, nginxPort: number, haproxyPort: number): Record<string, string> {
  return {
    HM_NGINX_LISTEN: `127.0.0.1:${nginxPort}`,
    HM_NGINX_PID: join(dir, 'nginx.pid'),
    HM_NGINX_ERROR_LOG: join(dir, 'nginx-error.log'),
    HM_NGINX_ACCESS_LOG: 'off',
    HM_NGINX_TEMP_DIR: dir,
    HM_NGINX_WORKERS: '1',
    HM_HAPROXY_BIND: `127.0.0.1:${haproxyPort}`,
    HM_HAPROXY_PIDFILE: join(dir, 'haproxy.pid'),
    HM_HAPROXY_SOCKET: join(dir, 'haproxy-admin.sock'),
  };
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** nginx daemonizes: its master pid is in the pid file. */
export class Nginx {
  constructor(
    readonly conf: string,
    readonly pidFile: string,
  ) {}

  async start(): Promise<void> {
    await exec('nginx', ['-c', this.conf]);
    await waitFor('nginx pid file', () => this.pid(), 10_000, 50);
  }

  pid(): number | undefined {
    if (!existsSync(this.pidFile)) return undefined;
    const pid = Number(readFileSync(this.pidFile, 'utf8').trim());
    return pid > 0 && alive(pid) ? pid : undefined;
  }

  async stop(): Promise<void> {
    const pid = this.pid();
    if (!pid) return;
    process.kill(pid, 'SIGQUIT');
    await waitFor('nginx to exit', () => !alive(pid), 10_000, 50).catch(() => process.kill(pid, 'SIGKILL'));
  }
}

/** HAProxy in master-worker mode in the foreground (-W), master CLI on a socket (-S). */
export class Haproxy {
  private child?: ChildProcess;
  readonly masterSocket: string;
  private stderr = '';

  constructor(
    readonly cfg: string,
    dir: string,
  ) {
    this.masterSocket = join(dir, 'haproxy-master.sock');
  }

  async start(): Promise<void> {
    this.child = spawn('haproxy', ['-W', '-S', this.masterSocket, '-f', this.cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    await waitFor(`haproxy master socket (${this.stderr})`, () => existsSync(this.masterSocket), 10_000, 50);
  }

  log(): string {
    return this.stderr;
  }

  async stop(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

export interface Reply {
  status: number;
  body: string;
}

/** GET through a proxy on 127.0.0.1 with a Host header (no keep-alive: every request is new). */
export function get(port: number, host: string, path = '/'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { Host: host }, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body.trim() }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${host}${path} via ${port}: timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** Bodies seen over `n` requests (2xx only). */
export async function bodies(port: number, host: string, n: number, path = '/'): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    const r = await get(port, host, path).catch(() => undefined);
    if (r && r.status === 200) seen.add(r.body);
  }
  return seen;
}

/** Wait until requests through a proxy reach exactly these backends. */
export async function waitForBodies(port: number, host: string, expected: string[], timeoutMs = 30_000, path = '/'): Promise<void> {
  const want = [...expected].sort().join(',');
  let last = '';
  await waitFor(
    `${host}${path} via 127.0.0.1:${port} to reach ${want}`,
    async () => {
      last = [...(await bodies(port, host, expected.length * 4, path))].sort().join(',');
      return last === want;
    },
    timeoutMs,
    200,
  ).catch((err: Error) => {
    throw new Error(`${err.message}; last seen: ${last || 'nothing'}`);
  });
}

/** Lines of a counter file (one per reload). */
export function countLines(file: string): number {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).length : 0;
}

export async function nginxTest(conf: string): Promise<{ ok: boolean; output: string }> {
  return exec('nginx', ['-t', '-c', conf]).then(
    (r) => ({ ok: true, output: r.stderr }),
    (e: { stderr?: string }) => ({ ok: false, output: e.stderr ?? String(e) }),
  );
}

export async function haproxyCheck(cfg: string): Promise<{ ok: boolean; output: string }> {
  return exec('haproxy', ['-c', '-f', cfg]).then(
    (r) => ({ ok: true, output: r.stdout + r.stderr }),
    (e: { stdout?: string; stderr?: string }) => ({ ok: false, output: (e.stdout ?? '') + (e.stderr ?? String(e)) }),
  );
}
