// Replacing a live configuration file: stage a complete copy next to it (same folder, so the
// rename is atomic), fsync it, rename it over the destination, then fsync the folder so that the
// rename itself survives a crash. A single-file bind mount cannot be renamed over (EBUSY), nor
// can a file on another device (EXDEV): then the content is written in place.
import { randomBytes } from 'node:crypto';
import { chmod, type FileHandle, lstat, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export interface CurrentFile {
  content: Buffer | null;
  mode?: number;
  uid?: number;
  gid?: number;
}

/** The destination as it is now (content null when it does not exist). */
export async function readCurrent(path: string): Promise<CurrentFile> {
  try {
    const [content, st] = await Promise.all([readFile(path), stat(path)]);
    return { content, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { content: null };
    throw err;
  }
}

/** fsync a folder: makes a rename, creation or removal in it durable. */
export async function syncFolder(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Write a new file in `dest`'s folder (O_EXCL: never an existing file or a symlink); returns its
 * path.
 */
export async function stageFile(dest: string, content: string | Buffer, mode: number, owner?: { uid?: number; gid?: number }): Promise<string> {
  const staged = join(dirname(dest), `.${basename(dest)}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await open(staged, 'wx', mode);
  try {
    await fh.writeFile(content);
    await fh.chmod(mode); // not narrowed by the umask
    if (owner?.uid !== undefined && process.getuid?.() === 0) await fh.chown(owner.uid, owner.gid ?? -1).catch(() => undefined);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await unlink(staged).catch(() => undefined);
    throw err;
  }
  await fh.close();
  return staged;
}

export interface Replaced {
  how: 'renamed' | 'in-place';
  /** The file is in place, but making the rename durable failed (folder fsync): worth a warning, not a failure. */
  warning?: string;
}

/**
 * Move the staged copy over the destination. Once the rename succeeded the new file is live:
 * a failing folder fsync after it is reported as a warning, so that the caller still reloads.
 * In place (EBUSY, EXDEV) the file is overwritten without truncating first, cut to length, and
 * read back; on any failure `previous` is written back, so the live file is never left half new.
 */
export async function replaceFile(staged: string, dest: string, previous?: Buffer | null): Promise<Replaced> {
  try {
    await rename(staged, dest);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EBUSY' && code !== 'EXDEV') {
      await unlink(staged).catch(() => undefined);
      throw err;
    }
    try {
      const content = await readFile(staged);
      const mode = (await stat(staged)).mode & 0o7777;
      await overwrite(dest, content, previous ?? null);
      await chmod(dest, mode).catch(() => undefined);
      return { how: 'in-place' };
    } finally {
      await unlink(staged).catch(() => undefined);
    }
  }
  try {
    await syncFolder(dirname(dest));
    return { how: 'renamed' };
  } catch (err) {
    return { how: 'renamed', warning: `${dest} is written, but syncing its folder failed: ${(err as Error).message}` };
  }
}

async function writeAll(fh: FileHandle, content: Buffer): Promise<void> {
  for (let at = 0; at < content.length; ) at += (await fh.write(content, at, content.length - at, at)).bytesWritten;
  await fh.truncate(content.length);
  await fh.sync();
}

/** Write `content` over `dest` in place; on failure put `previous` back. */
async function overwrite(dest: string, content: Buffer, previous: Buffer | null): Promise<void> {
  const fh = await open(dest, 'r+');
  try {
    try {
      await writeAll(fh, content);
      const back = await readFile(dest);
      if (!back.equals(content)) throw new Error(`${dest} reads back ${back.length} bytes that differ from the ${content.length} written`);
    } catch (err) {
      if (previous) await writeAll(fh, previous).catch(() => undefined);
      throw err;
    }
  } finally {
    await fh.close();
  }
}

/** Staged copies this module names `.<name>.<8 hex>.tmp`; ones older than this were left by a crash. */
const STALE_STAGED_MS = 60_000;

/** Remove staged copies of `dest` left by a process that died before renaming them. */
export async function sweepStaged(dest: string): Promise<string[]> {
  const dir = dirname(dest);
  const pattern = new RegExp(`^\\.${basename(dest).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.[0-9a-f]{8}\\.tmp$`);
  const removed: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!pattern.test(name)) continue;
    const path = join(dir, name);
    const st = await lstat(path).catch(() => undefined);
    if (!st?.isFile() || Date.now() - st.mtimeMs < STALE_STAGED_MS) continue;
    if (await unlink(path).then(() => true, () => false)) removed.push(path);
  }
  return removed;
}

/** Put a previous state back: its content (atomically), or no file at all. */
export async function restoreFile(dest: string, previous: CurrentFile): Promise<void> {
  if (previous.content === null) {
    await unlink(dest).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    await syncFolder(dirname(dest));
    return;
  }
  const staged = await stageFile(dest, previous.content, previous.mode ?? 0o644, previous);
  await replaceFile(staged, dest, null);
}

/**
 * Keep `previous` as `<dest>.bak`: written as a new file and renamed over the old backup, so a
 * `.bak` that is a symlink (planted to make us overwrite another file) is replaced, never followed.
 */
export async function backupFile(dest: string, previous: CurrentFile): Promise<void> {
  if (previous.content === null) return;
  const staged = await stageFile(dest, previous.content, previous.mode ?? 0o644, previous);
  try {
    await rename(staged, `${dest}.bak`);
  } catch (err) {
    await unlink(staged).catch(() => undefined);
    throw err;
  }
  await syncFolder(dirname(dest));
}
