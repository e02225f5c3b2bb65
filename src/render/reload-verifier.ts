// Did the reload take? A reload command usually only sends a signal and exits 0 even when the
// proxy then refuses the new configuration (nginx keeps its old workers when a bind fails;
// HAProxy's master counts a failed reload). Each strategy snapshots the proxy before the reload
// and then waits for a new generation of workers.
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { sleep } from '../util/time.js';
import type { VerifySpec } from './types.js';

export interface ReloadVerifier {
  readonly description: string;
  /** Whether a proxy is running at all (false: nothing has loaded any configuration); undefined: cannot tell. */
  running(): Promise<boolean | undefined>;
  /** Snapshot taken before the reload command runs. */
  before(): Promise<unknown>;
  /** Undefined when the reload took, else why it did not. */
  confirm(snapshot: unknown, timeoutMs: number): Promise<string | undefined>;
}

/** Polling starts fast (a reload usually takes tens of ms) and slows down. */
const POLL_FIRST_MS = 40;
const POLL_MAX_MS = 500;
const nextPoll = (ms: number) => Math.min(POLL_MAX_MS, ms * 2);

/** Always confirms: the command's exit status is the only signal. */
export const plainVerifier: ReloadVerifier = {
  description: 'exit status',
  running: async () => undefined,
  before: async () => undefined,
  confirm: async () => undefined,
};

/** Kernels built with CONFIG_PROC_CHILDREN list a task's children; others need a scan of /proc. */
let childrenFiles: boolean | undefined;

/** Child pids of a process: from /proc/<pid>/task/<tid>/children when the kernel has it, else a /proc scan. */
export async function childrenOf(parent: number): Promise<number[]> {
  if (childrenFiles !== false) {
    const tasks = await readdir(`/proc/${parent}/task`).catch(() => undefined);
    if (tasks) {
      const lists = await Promise.all(tasks.map((t) => readFile(`/proc/${parent}/task/${t}/children`, 'utf8').catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : ''))));
      if (lists.every((l) => l !== undefined)) {
        childrenFiles = true;
        return lists.flatMap((l) => l!.split(' ').filter(Boolean).map(Number)).sort((a, b) => a - b);
      }
      if (childrenFiles === undefined) childrenFiles = false;
    }
  }
  return scanChildren(parent);
}

/** Parent pid → child pids, from every /proc/<pid>/stat (the command name may hold spaces and parentheses). */
export async function scanChildren(parent: number): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(rest[1]) === parent) out.push(Number(name));
  }
  return out.sort((a, b) => a - b);
}

/** Whether a process exists: EPERM (another user's process) is alive too. */
export function alive(pid: number, kill: (pid: number, sig: number) => void = process.kill): boolean {
  try {
    kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The nginx master named by a pid file: alive and titled "nginx: master process". A stale pid
 * file whose number now belongs to another process names no master.
 */
export async function livePid(pidFile: string): Promise<number | undefined> {
  const text = await readFile(pidFile, 'utf8').catch(() => '');
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return undefined;
  const title = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
  // Without /proc the liveness check is all there is.
  if (title === undefined) return existsSync('/proc/self') ? undefined : pid;
  return title.startsWith('nginx: master process') ? pid : undefined;
}

/** A process's start time (clock ticks since boot): a reused pid has another one. */
async function startTime(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
}

/** Children of the master as pid@starttime. */
async function workersOf(master: number): Promise<string[]> {
  return Promise.all((await childrenOf(master)).map(async (p) => `${p}@${await startTime(p)}`));
}

interface NginxSnapshot {
  master?: number;
  workers: string[];
}

/** nginx: the master from the pid file starts new workers once it accepted the configuration. */
export function nginxVerifier(pidFile: string): ReloadVerifier {
  return {
    description: `nginx master from ${pidFile}`,
    running: async () => (await livePid(pidFile)) !== undefined,
    async before(): Promise<NginxSnapshot> {
      const master = await livePid(pidFile);
      return { master, workers: master ? await workersOf(master) : [] };
    },
    async confirm(snapshot, timeoutMs) {
      const s = snapshot as NginxSnapshot;
      const deadline = Date.now() + timeoutMs;
      let master: number | undefined;
      let wait = POLL_FIRST_MS;
      do {
        master = await livePid(pidFile);
        if (master) {
          const workers = await workersOf(master);
          // A new master (first start, binary upgrade) or a new worker of the same master.
          if (workers.length > 0 && (master !== s.master || workers.some((w) => !s.workers.includes(w)))) return undefined;
        }
        await sleep(Math.min(wait, Math.max(0, deadline - Date.now())));
        wait = nextPoll(wait);
      } while (Date.now() < deadline);
      if (!master) return `no nginx master running (pid file ${pidFile}) after ${timeoutMs} ms`;
      return `nginx master ${master} started no new workers within ${timeoutMs} ms: it refused the new configuration (see its error log)`;
    },
  };
}

export interface HaproxyProcs {
  master: number;
  failed: number;
  workers: number[];
}

/** Parse the master CLI's `show proc`. */
export function parseShowProc(text: string): HaproxyProcs | undefined {
  let master: number | undefined;
  let failed = 0;
  const workers: number[] = [];
  let section = '';
  for (const line of text.split('\n')) {
    if (line.startsWith('# ')) {
      section = line.slice(2).trim();
      continue;
    }
    const m = /^(\d+)\s+(\S+)\s+(.*)$/.exec(line);
    if (!m) continue;
    if (m[2] === 'master') {
      master = Number(m[1]);
      failed = Number(/failed:\s*(\d+)/.exec(m[3])?.[1] ?? 0);
    } else if (m[2] === 'worker' && section !== 'old workers') workers.push(Number(m[1]));
  }
  return master === undefined ? undefined : { master, failed, workers };
}

/** One command on HAProxy's master CLI socket. */
export function masterCli(socket: string, command: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const c = connect(socket, () => c.end(`${command}\n`));
    c.setTimeout(timeoutMs, () => c.destroy(new Error(`master CLI ${socket}: no answer within ${timeoutMs} ms`)));
    c.on('data', (d) => (out += d.toString()));
    c.on('error', reject);
    c.on('close', () => resolve(out));
  });
}

/** HAProxy master-worker: the master CLI lists a worker that was not there, or counts a failure. */
export function haproxyVerifier(masterSocket: string): ReloadVerifier {
  const procs = async () => parseShowProc(await masterCli(masterSocket, 'show proc').catch(() => ''));
  return {
    description: `haproxy master CLI ${masterSocket}`,
    running: async () => (await procs()) !== undefined,
    before: procs,
    async confirm(snapshot, timeoutMs) {
      const s = snapshot as HaproxyProcs | undefined;
      const deadline = Date.now() + timeoutMs;
      let last: HaproxyProcs | undefined;
      let wait = POLL_FIRST_MS;
      do {
        // While the master re-executes itself the socket refuses connections: keep polling.
        last = await procs();
        if (last) {
          if (s && last.failed > s.failed) return `haproxy master ${last.master} refused the new configuration (failed reloads: ${last.failed})`;
          if (last.workers.some((w) => !s?.workers.includes(w))) return undefined;
        }
        await sleep(Math.min(wait, Math.max(0, deadline - Date.now())));
        wait = nextPoll(wait);
      } while (Date.now() < deadline);
      if (!last) return `haproxy master CLI ${masterSocket} did not answer within ${timeoutMs} ms`;
      return `haproxy master ${last.master} started no new worker within ${timeoutMs} ms`;
    },
  };
}

export function verifierFor(spec: VerifySpec): ReloadVerifier {
  switch (spec.kind) {
    case 'plain':
      return plainVerifier;
    case 'nginx':
      return nginxVerifier(spec.pidFile);
    case 'haproxy':
      return haproxyVerifier(spec.masterSocket);
  }
}
