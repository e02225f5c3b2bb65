import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ContainerLocks } from './lock.js';

const owner = { journal: '/tmp/x.json', command: 'harbormaster rollout web' };

describe('rollout container locks', () => {
  it('lets one holder have a container: a second acquisition is refused with the holder named, and free again once released', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'hm-lock-'));
    const a = await ContainerLocks.acquire(dir, ['c2', 'c1'], owner);
    await expect(ContainerLocks.acquire(dir, ['c3', 'c1'], { ...owner, command: 'harbormaster rollout --compose-service web' })).rejects.toThrow(
      new RegExp(`^a rollout of these containers is running \\(pid ${process.pid} on .*: harbormaster rollout web\\)$`),
    );
    // The refused run left nothing of its own (c3 was not taken: c1 comes first in id order).
    expect(readdirSync(ContainerLocks.dirFor(dir)).sort()).toEqual(['c1.lock', 'c2.lock']);
    expect(ContainerLocks.holder(dir, 'c1')?.pid).toBe(process.pid);
    await a.add('c9');
    a.release();
    expect(readdirSync(ContainerLocks.dirFor(dir))).toEqual([]);
    const b = await ContainerLocks.acquire(dir, ['c1'], owner);
    b.release();
  });

  it('takes over the lock of a process that is gone, and of a pid now used by another process', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'hm-lock-'));
    const locks = ContainerLocks.dirFor(dir);
    await ContainerLocks.acquire(dir, [], owner);
    // A process that has exited: its pid is free.
    const dead = spawnSync(process.execPath, ['-e', 'process.exit(0)']).pid!;
    writeFileSync(path.join(locks, 'c1.lock'), JSON.stringify({ pid: dead, host: os.hostname(), since: '1', ...owner }));
    // This process's pid with another start time: a reused pid.
    writeFileSync(path.join(locks, 'c2.lock'), JSON.stringify({ pid: process.pid, host: os.hostname(), since: '1', ...owner }));
    expect(ContainerLocks.holder(dir, 'c1')).toBeUndefined();
    expect(ContainerLocks.holder(dir, 'c2')).toBeUndefined();
    const taken = await ContainerLocks.acquire(dir, ['c1', 'c2'], owner);
    expect(ContainerLocks.holder(dir, 'c1')?.pid).toBe(process.pid);
    taken.release();
    expect(existsSync(path.join(locks, 'c1.lock'))).toBe(false);
  });
});
