// Replacing a live configuration file: stage a complete copy next to it (same folder, so the
// rename is atomic), fsync it, rename it over the destination, then fsync the folder so that the
// rename itself survives a crash. A single-file bind mount cannot be renamed over (EBUSY), nor
// can a file on another device (EXDEV): then the content is written in place.
import { randomBytes } from 'node:crypto';
import { chmod, open, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
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

/** Move the staged copy over the destination; returns how. */
export async function replaceFile(staged: string, dest: string): Promise<'renamed' | 'in-place'> {
  try {
    await rename(staged, dest);
    await syncFolder(dirname(dest));
    return 'renamed';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EBUSY' && code !== 'EXDEV') {
      await unlink(staged).catch(() => undefined);
      throw err;
    }
  }
  try {
    const content = await readFile(staged);
    const mode = (await stat(staged)).mode & 0o7777;
    await writeFile(dest, content);
    await chmod(dest, mode).catch(() => undefined);
    const fh = await open(dest, 'r');
    await fh.sync().finally(() => fh.close());
    return 'in-place';
  } finally {
    await unlink(staged).catch(() => undefined);
  }
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
  await replaceFile(staged, dest);
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
