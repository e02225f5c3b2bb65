// One rollout at a time per container: a lock file per container id (made atomically: written
// under another name, then hard-linked, which fails when it exists; it holds the pid, the host and
// the process's start time), taken before anything is read or changed. Two
// runs that name the same containers differently (`rollout web` and `rollout --compose-service web`)
// still meet on the container ids. A lock whose process is gone (killed, or its pid reused by
// another program) is stale and is taken over.
import { linkSync, mkdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from '../registry/types.js';

export interface LockOwner {
  pid: number;
  host: string;
  /** The process's start time (clock ticks since boot, from /proc), to tell a reused pid. */
  since?: string;
  /** The record (journal) file of the rollout that holds it, and how it was started. */
  journal: string;
  command: string;
}

const BREAK_STALE_MS = 5_000;

export class ContainerLocks {
  private readonly held = new Set<string>();

  private constructor(
    private readonly dir: string,
    private readonly owner: LockOwner,
  ) {}

  static dirFor(stateDir: string): string {
    return path.join(stateDir, 'rollouts', 'locks');
  }

  /** Locks every id (in sorted order, so that two runs meet on the same first one), or throws UsageError naming the holder. */
  static async acquire(stateDir: string, ids: string[], owner: Omit<LockOwner, 'pid' | 'host' | 'since'>): Promise<ContainerLocks> {
    const locks = new ContainerLocks(ContainerLocks.dirFor(stateDir), { pid: process.pid, host: os.hostname(), since: startTime(process.pid), ...owner });
    mkdirSync(locks.dir, { recursive: true });
    try {
      for (const id of [...new Set(ids)].sort()) await locks.add(id);
    } catch (err) {
      locks.release();
      throw err;
    }
    return locks;
  }

  /** Who holds the lock of `id` now (a live process), if anyone; changes nothing. */
  static holder(stateDir: string, id: string): LockOwner | undefined {
    const owner = readOwner(path.join(ContainerLocks.dirFor(stateDir), `${id}.lock`));
    return owner && alive(owner) ? owner : undefined;
  }

  /** Locks one more container (a replacement just created). */
  async add(id: string): Promise<void> {
    if (this.held.has(id)) return;
    const file = path.join(this.dir, `${id}.lock`);
    // Written whole under another name, then linked: a lock file is never seen half written.
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(this.owner)}\n`);
    try {
      for (let attempt = 0; attempt < 50; attempt++) {
        try {
          linkSync(tmp, file);
          this.held.add(id);
          return;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        }
        const owner = readOwner(file);
        if (owner === undefined) continue;
        if (alive(owner)) throw new UsageError(`a rollout of these containers is running (pid ${owner.pid} on ${owner.host}: ${owner.command})`);
        await breakStale(file, owner);
      }
    } finally {
      rmSync(tmp, { force: true });
    }
    throw new UsageError(`could not take the rollout lock ${file}: it keeps changing`);
  }

  release(): void {
    for (const id of this.held) rmSync(path.join(this.dir, `${id}.lock`), { force: true });
    this.held.clear();
  }
}

function readOwner(file: string): LockOwner | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const o = JSON.parse(text) as LockOwner;
    if (typeof o.pid === 'number' && typeof o.host === 'string') return o;
  } catch {
    // Not written by this version: taken as stale.
  }
  return { pid: 0, host: os.hostname(), journal: '', command: '(unreadable lock)' };
}

/** The process of `owner` still runs (the same process: not a reused pid). Another host's lock is taken as live. */
function alive(owner: LockOwner): boolean {
  if (owner.host !== os.hostname()) return true;
  if (owner.pid <= 0) return false;
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const since = startTime(owner.pid);
  return owner.since === undefined || since === undefined || since === owner.since;
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); undefined where there is no /proc. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/**
 * Removes a stale lock, unless another process replaced it meanwhile: only the holder of the
 * `.break` file (O_EXCL too) may remove it, after reading it again. True when this call removed it.
 */
async function breakStale(file: string, seen: LockOwner): Promise<boolean> {
  const breaker = `${file}.break`;
  try {
    writeFileSync(breaker, `${process.pid}\n`, { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // Another process is breaking it; a breaker that died leaves its file, which ages out.
    try {
      if (Date.now() - statSync(breaker).mtimeMs > BREAK_STALE_MS) rmSync(breaker, { force: true });
    } catch {
      // Gone meanwhile.
    }
    await new Promise((r) => setTimeout(r, 20));
    return false;
  }
  try {
    const now = readOwner(file);
    if (now && now.pid === seen.pid && now.since === seen.since && now.host === seen.host && !alive(now)) {
      unlinkSync(file);
      return true;
    }
    return false;
  } finally {
    rmSync(breaker, { force: true });
  }
}
