// `--services-dir <dir>`: a watched folder of service definition files (*.json, *.yaml, *.yml,
// subfolders included) for what does not run in a container. Each file is one owner in the
// registrar: adding, editing or deleting it registers, updates or withdraws its services. A file
// that does not parse or validate is reported once (file:line: field: reason) and the services it
// defined before stay as they were until it is valid again, so that a half-written file or an
// editor's temporary state is never taken for the truth: an empty file is invalid, a file is read
// only once it has not changed for the settle time, and a valid version that drops services the
// file had is believed only when it is still the same a moment later (a write that paused at a
// line boundary). A deleted file's services go only if no file takes them over meanwhile: a rename
// hands them over without a withdrawal. A full read of the folder runs at start, whenever the
// watcher reports trouble, and every resync period; a folder that is missing is looked for again
// every half second.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from '../../log/logger.js';
import type { ServiceInstance } from '../../model/service-instance.js';
import type { DesiredSink } from '../../registrar/registrar.js';
import { decodeServiceFile, FileError, MAX_FILE_BYTES, parseServiceFile, type FileModelOptions } from './service-file.js';

const EXTENSIONS = /\.(json|ya?ml)$/i;
/** Editors' and tools' temporary files: backups, swap files, hidden files, vim's write test. */
const TEMPORARY = /(^\.|~$|^#.*#$|\.(swp|swx|swo|tmp|bak|orig|dpkg-[a-z]+|rpm[a-z]+)$|^4913$)/i;
const MAX_DEPTH = 8;
const MAX_FILES = 10_000;

export interface FileSourceOptions extends FileModelOptions {
  dir: string;
  sink: DesiredSink;
  log: Logger;
  /** Full read of the folder this often besides the watcher's events (0: only at start and on trouble). */
  resyncMs: number;
  /** A file must stop changing this long before it is read (default 150 ms). */
  settleMs?: number;
}

/** How often a missing folder is looked for. */
const MISSING_POLL_MS = 500;

export interface FileSourceStatus {
  /** The folder exists and was read. */
  connected: boolean;
  lastSync?: Date;
  lastError?: string;
  files: number;
  /** Files whose last version was refused (their previous services are kept). */
  invalid: number;
  services: number;
}

interface FileState {
  /** Hash of the content last read, valid or not: an unchanged file is not read into the model again. */
  hash: string;
  valid: boolean;
  services: number;
  /** The ids of the instances of its last valid version. */
  ids: Set<string>;
}

export class FileSource {
  readonly status: FileSourceStatus = { connected: false, files: 0, invalid: 0, services: 0 };
  private readonly dir: string;
  private readonly files = new Map<string, FileState>();
  private watcher?: FSWatcher;
  private resyncTimer?: NodeJS.Timeout;
  private stopped = false;
  /** Reads of one file run one after another; a change during a read is read again after it. */
  private readonly reading = new Map<string, Promise<void>>();
  private readonly again = new Set<string>();
  private missingLogged = false;
  private missingTimer?: NodeJS.Timeout;
  /** A valid version that drops services, waiting to be seen again unchanged: path → hash. */
  private readonly shrinking = new Map<string, string>();
  /** Deleted files whose services wait a moment for a file to take them over (a rename). */
  private readonly leaving = new Map<string, NodeJS.Timeout>();
  /** Which file defines an id (the first to): where a renamed file's services come from. */
  private readonly byId = new Map<string, Set<string>>();
  /** The timer that reads a shrinking file again. */
  private readonly shrinkTimers = new Map<string, NodeJS.Timeout>();

  constructor(private readonly opts: FileSourceOptions) {
    this.dir = resolve(opts.dir);
  }

  start(): void {
    void this.fullRead().then(() => this.watchFolder());
    if (this.opts.resyncMs > 0) {
      this.resyncTimer = setInterval(() => void this.fullRead().then(() => this.watcher || this.watchFolder()), this.opts.resyncMs);
      this.resyncTimer.unref();
    }
  }

  private get settleMs(): number {
    return this.opts.settleMs ?? 150;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.resyncTimer);
    clearTimeout(this.missingTimer);
    for (const t of this.leaving.values()) clearTimeout(t);
    this.leaving.clear();
    for (const t of this.shrinkTimers.values()) clearTimeout(t);
    this.shrinkTimers.clear();
    await this.watcher?.close();
    this.watcher = undefined;
    await Promise.all(this.reading.values());
  }

  /** Every file of the folder read again; files gone are withdrawn. Always ends with complete(). */
  async fullRead(): Promise<void> {
    if (this.stopped) return;
    let paths: string[] = [];
    try {
      paths = await this.list(this.dir, 0);
      this.status.connected = true;
      this.missingLogged = false;
    } catch (err) {
      const gone = (err as NodeJS.ErrnoException).code === 'ENOENT';
      this.status.connected = false;
      this.status.lastError = `${this.dir}: ${(err as Error).message}`;
      if (!this.missingLogged) {
        this.missingLogged = true;
        const what = gone ? 'its services are withdrawn until it is back' : 'its services stay as they were; reading it again later';
        this.opts.log.error({ event: 'services-dir-error', dir: this.dir }, `services folder ${this.dir}: ${(err as Error).message}; ${what}`);
      }
      // A folder that cannot be read for another reason (permissions, too many files) withdraws nothing.
      if (!gone) return this.opts.sink.complete({ partial: true });
    }
    // Sorted: when two files define the same ID, the first one read (by path) keeps it.
    paths.sort();
    const present = new Set(paths);
    for (const p of [...this.files.keys()]) {
      // Created after the listing began (the watcher may have read it already): not gone.
      if (!present.has(p) && !(await exists(p))) this.removed(p, 'file gone');
    }
    for (const p of paths) await this.read(p);
    this.status.lastSync = new Date();
    // While a file is refused, what it defined may still be registered from before (a restart):
    // nothing this registrar does not know of is cleaned up meanwhile.
    this.opts.sink.complete({ partial: this.status.invalid > 0 });
  }

  /** The service files under `dir`; symlinked folders are followed as the watcher does (each real folder once). */
  private async list(dir: string, depth: number, seen = new Set<string>()): Promise<string[]> {
    seen.add(await realpath(dir));
    const entries = await readdir(dir, { withFileTypes: true });
    const out: string[] = [];
    for (const e of entries) {
      if (TEMPORARY.test(e.name)) continue;
      const p = join(dir, e.name);
      let folder = e.isDirectory();
      if (e.isSymbolicLink()) {
        const target = await stat(p).catch(() => undefined);
        folder = !!target?.isDirectory() && !seen.has(await realpath(p).catch(() => p));
        if (target?.isDirectory() && !folder) continue;
      }
      if (folder) {
        if (depth < MAX_DEPTH) out.push(...(await this.list(p, depth + 1, seen)));
      } else if ((e.isFile() || e.isSymbolicLink()) && EXTENSIONS.test(e.name)) out.push(p);
      if (out.length > MAX_FILES) throw new Error(`more than ${MAX_FILES} service files`);
    }
    return out;
  }

  private watchFolder(): void {
    if (this.stopped || this.watcher) return;
    if (!existsSync(this.dir)) {
      // Looked for again until it is back (a folder swapped with mv), then read whole and watched.
      if (!this.missingTimer) {
        this.missingTimer = setTimeout(() => {
          this.missingTimer = undefined;
          if (this.stopped || this.watcher) return;
          if (existsSync(this.dir)) void this.fullRead().then(() => this.watchFolder());
          else this.watchFolder();
        }, MISSING_POLL_MS);
        this.missingTimer.unref();
      }
      return;
    }
    const settle = this.settleMs;
    const w = watch(this.dir, {
      ignoreInitial: true,
      depth: MAX_DEPTH,
      ignored: (p, stats) => {
        const name = p.slice(p.lastIndexOf(sep) + 1);
        if (p !== this.dir && TEMPORARY.test(name)) return true;
        return !!stats?.isFile() && !EXTENSIONS.test(name);
      },
      // A file is read once it stopped growing: a copy or a slow write is not read half done.
      awaitWriteFinish: { stabilityThreshold: settle, pollInterval: Math.max(20, Math.floor(settle / 3)) },
    });
    const changed = (p: string) => EXTENSIONS.test(p) && void this.read(resolve(p));
    w.on('add', changed);
    w.on('change', changed);
    w.on('unlink', (p) => this.leave(resolve(p)));
    w.on('unlinkDir', (d) => {
      const dir = resolve(d);
      for (const p of [...this.files.keys()]) if (p === dir || p.startsWith(dir + sep)) this.removed(p, 'folder deleted');
      if (dir === this.dir) void this.restartWatcher();
    });
    // What changed between the first read and the watcher being ready is seen by reading once more
    // (unchanged files are not parsed again).
    w.once('ready', () => void this.fullRead());
    w.on('error', (err) => {
      this.opts.log.warn({ event: 'services-dir-watch-error', dir: this.dir, err: (err as Error).message }, `watching ${this.dir}: ${(err as Error).message}; reading it again`);
      void this.restartWatcher();
    });
    this.watcher = w;
  }

  private async restartWatcher(): Promise<void> {
    const w = this.watcher;
    this.watcher = undefined;
    await w?.close();
    await this.fullRead();
    this.watchFolder();
  }

  private read(path: string): Promise<void> {
    const running = this.reading.get(path);
    if (running) {
      this.again.add(path);
      return running;
    }
    const p = this.readNow(path).finally(() => {
      this.reading.delete(path);
      if (this.again.delete(path) && !this.stopped) void this.read(path);
    });
    this.reading.set(path, p);
    return p;
  }

  private async readNow(path: string): Promise<void> {
    const name = relative(this.dir, path) || path;
    let text: string;
    try {
      const st = await this.settled(path);
      if (!st) return this.leave(path);
      // Deleted and written again at the same path (a save that deletes first): still there.
      const leaving = this.leaving.get(path);
      if (leaving) {
        clearTimeout(leaving);
        this.leaving.delete(path);
      }
      if (!st.isFile()) return this.removed(path, 'not a file');
      if (st.size > MAX_FILE_BYTES) throw new FileError(`1: larger than ${MAX_FILE_BYTES} bytes`);
      text = decodeServiceFile(await readFile(path));
    } catch (err) {
      // Gone while being read: withdrawn after the same grace as a deletion the watcher reports (it may be a rename).
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return this.leave(path);
      return this.invalid(name, (err as Error).message.startsWith('1: ') ? (err as Error).message : ` ${(err as Error).message}`);
    }
    const hash = createHash('sha1').update(text).digest('hex');
    const before = this.files.get(path);
    if (before?.hash === hash) return;
    let instances: ServiceInstance[];
    try {
      const parsed = parseServiceFile(text, this.opts);
      instances = parsed.instances;
      for (const i of parsed.ignored) {
        const [line, key] = i.split(': ');
        this.opts.log.info({ event: 'services-file-ignored', file: name, line: Number(line), key }, `${name}:${line}: ${key}: not used by harbormaster (ignored)`);
      }
    } catch (err) {
      this.shrinking.delete(path);
      this.files.set(path, { hash, valid: false, services: before?.services ?? 0, ids: before?.ids ?? new Set() });
      return this.invalid(name, err instanceof FileError ? err.message : ` ${(err as Error).message}`);
    }
    const ids = new Set(instances.map((i) => i.id));
    const drops = before !== undefined && [...before.ids].some((id) => !ids.has(id));
    if (drops && this.shrinking.get(path) !== hash) {
      // Believed once it is the same a moment later: a write cut at a line boundary parses too.
      this.shrinking.set(path, hash);
      clearTimeout(this.shrinkTimers.get(path));
      const t = setTimeout(() => {
        this.shrinkTimers.delete(path);
        if (!this.stopped) void this.read(path);
      }, Math.max(600, 4 * this.settleMs));
      t.unref();
      this.shrinkTimers.set(path, t);
      return;
    }
    this.shrinking.delete(path);
    const wasInvalid = before && !before.valid;
    if (before) this.unindex(path, before.ids);
    for (const id of ids) {
      let paths = this.byId.get(id);
      if (!paths) this.byId.set(id, (paths = new Set()));
      paths.add(path);
    }
    this.files.set(path, { hash, valid: true, services: instances.length, ids });
    this.count();
    if (wasInvalid) this.opts.log.info({ event: 'services-file-valid', file: name }, `${name}: valid again`);
    // A deleted file whose services this one defines too: a rename, handed over in one step.
    const from = before === undefined ? await this.takeOver(path, ids) : undefined;
    if (from && this.opts.sink.move) {
      this.opts.log.info({ event: 'services-file-renamed', from: relative(this.dir, from), file: name }, `${name}: takes over the services of ${relative(this.dir, from)}`);
      return this.opts.sink.move(ownerOf(from), ownerOf(path), instances, `services file ${name}`, name);
    }
    if (from) this.removed(from, `file deleted: ${relative(this.dir, from)}`);
    this.opts.sink.set(ownerOf(path), instances, `services file ${name}`, name);
  }

  /** The file's stat once it has not changed for the settle time (undefined: it went meanwhile). */
  private async settled(path: string): Promise<Awaited<ReturnType<typeof stat>> | undefined> {
    let st = await stat(path);
    for (let i = 0; i < 20 && !this.stopped; i++) {
      const age = Date.now() - st.mtimeMs;
      if (age >= this.settleMs || age < -1000) return st;
      await new Promise((r) => setTimeout(r, this.settleMs - age + 5));
      const now = await stat(path).catch(() => undefined);
      if (!now) return undefined;
      st = now;
    }
    return st;
  }

  /** A deleted file: its services go after a moment, unless another file takes them over first. */
  private leave(path: string): void {
    if (!this.files.has(path) || this.leaving.has(path)) return;
    const t = setTimeout(() => {
      void exists(path).then((back) => {
        if (this.leaving.get(path) !== t) return;
        this.leaving.delete(path);
        // Back already, its event not read yet: read it rather than withdraw it.
        if (back) void this.read(path);
        else this.removed(path, 'file deleted');
      });
    }, this.settleMs + 350);
    t.unref();
    this.leaving.set(path, t);
  }

  /**
   * A deleted file that defined one of `ids` (waiting to be withdrawn, or gone from disk with its
   * unlink not reported yet: the watcher may report the new name first): no longer ours, its path
   * returned.
   */
  private async takeOver(path: string, ids: Set<string>): Promise<string | undefined> {
    const candidates = new Set<string>();
    for (const id of ids) for (const p of this.byId.get(id) ?? []) if (p !== path) candidates.add(p);
    for (const p of candidates) {
      if (!this.leaving.has(p) && (await exists(p))) continue;
      clearTimeout(this.leaving.get(p));
      this.leaving.delete(p);
      this.forget(p);
      this.shrinking.delete(p);
      this.count();
      return p;
    }
    return undefined;
  }

  private forget(path: string): boolean {
    const f = this.files.get(path);
    if (!f) return false;
    this.unindex(path, f.ids);
    return this.files.delete(path);
  }

  private unindex(path: string, ids: Set<string>): void {
    for (const id of ids) {
      const paths = this.byId.get(id);
      paths?.delete(path);
      if (paths?.size === 0) this.byId.delete(id);
    }
  }

  /** Reported once per content; what the file defined before is left as it was. */
  private invalid(name: string, message: string): void {
    this.count();
    this.status.lastError = `${name}:${message}`;
    this.opts.log.error({ event: 'services-file-invalid', file: name, err: message.trim() }, `${name}:${message}; its services stay as they were until it is valid`);
  }

  private removed(path: string, why: string): void {
    const t = this.leaving.get(path);
    if (t) {
      clearTimeout(t);
      this.leaving.delete(path);
    }
    clearTimeout(this.shrinkTimers.get(path));
    this.shrinkTimers.delete(path);
    this.shrinking.delete(path);
    if (!this.forget(path)) return;
    this.count();
    const name = relative(this.dir, path) || path;
    this.opts.sink.set(ownerOf(path), [], `${why}: ${name}`, name);
  }

  private count(): void {
    let invalid = 0;
    let services = 0;
    for (const f of this.files.values()) {
      if (!f.valid) invalid++;
      services += f.services;
    }
    this.status.files = this.files.size;
    this.status.invalid = invalid;
    this.status.services = services;
  }
}

export const ownerOf = (path: string) => `file:${path}`;

const exists = (p: string) => stat(p).then(() => true, () => false);
