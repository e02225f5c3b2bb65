// Replacing a live file where it cannot be renamed over (a single-file bind mount: EBUSY), on a
// real tmpfs too small for the new content; staged copies left by a crash.
import { execSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readCurrent, replaceFile, stageFile, sweepStaged } from './atomic-file.js';

const root = mkdtempSync(join(tmpdir(), 'hm-atomic-'));
const mounts: string[] = [];
afterAll(() => {
  for (const m of mounts.reverse()) execSync(`umount ${m}`);
  rmSync(root, { recursive: true, force: true });
});

describe('replaceFile', () => {
  it('in place on a full file system: the live file keeps its previous content', async () => {
    const small = join(root, 'small');
    mkdirSync(small);
    execSync(`mount -t tmpfs -o size=32k tmpfs ${small}`);
    mounts.push(small);
    const previous = Buffer.from(`# previous config\n${'p'.repeat(12_000)}\n`);
    writeFileSync(join(small, 'live.conf'), previous);
    const dest = join(root, 'dest.conf');
    writeFileSync(dest, '');
    execSync(`mount --bind ${join(small, 'live.conf')} ${dest}`);
    mounts.push(dest);
    const content = Buffer.from(`# new config\n${'x'.repeat(64 * 1024)}\n`);
    const staged = await stageFile(dest, content, 0o644);
    const err = await replaceFile(staged, dest, previous).then(() => undefined, (e: NodeJS.ErrnoException) => e.code);
    const after = readFileSync(dest);
    console.log(`PROBE in-place write of ${content.length} bytes over a ${previous.length}-byte bind-mounted file on a 32k tmpfs: ${err}; live file now ${after.length} bytes, previous content: ${after.equals(previous)}`);
    expect(err).toBe('ENOSPC');
    expect(after.equals(previous)).toBe(true);
    expect(readdirSync(root).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    // A content that fits goes in place, cut to its length.
    const fits = Buffer.from('# fits\n');
    expect((await replaceFile(await stageFile(dest, fits, 0o644), dest, previous)).how).toBe('in-place');
    expect((await readCurrent(dest)).content?.toString()).toBe('# fits\n');
  });
});

describe('sweepStaged', () => {
  it('removes only its own staged copies older than a minute', async () => {
    const dir = join(root, 'sweep');
    mkdirSync(dir);
    const dest = join(dir, 'nginx.conf');
    const old = join(dir, '.nginx.conf.0123abcd.tmp');
    const fresh = join(dir, '.nginx.conf.89abcdef.tmp');
    const other = join(dir, '.haproxy.cfg.0123abcd.tmp');
    for (const f of [old, fresh, other]) writeFileSync(f, 'x');
    const twoMinutesAgo = new Date(Date.now() - 120_000);
    utimesSync(old, twoMinutesAgo, twoMinutesAgo);
    utimesSync(other, twoMinutesAgo, twoMinutesAgo);
    expect(await sweepStaged(dest)).toEqual([old]);
    expect(readdirSync(dir).sort()).toEqual(['.haproxy.cfg.0123abcd.tmp', '.nginx.conf.89abcdef.tmp']);
  });
});
