// The record of a rollout in progress, written before every step that changes Docker, so that a
// second run after an interrupt (or a kill) knows which pairs are half done and finishes or undoes
// them. One file per service; written to a temporary file and renamed, so it is never half written.
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** One old container and its replacement, and how far the swap got. */
export interface Pair {
  old: { id: string; name: string };
  new?: { id: string; name: string };
  /**
   * planned → created (replacement exists) → ready → withdrawn (old out of rotation) → stopped (old
   * stopped, replacement serving: done). stop-first: planned → withdrawn → stopped-first → created → ready → stopped.
   * rolled-back: the old serves again and the replacement is gone.
   */
  phase: 'planned' | 'created' | 'ready' | 'withdrawn' | 'stopped-first' | 'stopped' | 'rolled-back';
  /** The old container goes before its replacement starts (stop-first): in created and ready it is stopped. */
  stopFirst?: boolean;
  /** The old container's restart policy, recorded before the rollout set it to "no" to stop it; put back when it is started again. */
  oldRestart?: { Name: string; MaximumRetryCount?: number };
}

export interface JournalData {
  version: 1;
  service: string;
  composeService: boolean;
  /** What the plan said the replacements run (for messages). */
  image: string;
  /** The --image given, if any: a second run without --image resumes with it. */
  targetImage?: string;
  /** The command line that started it (for the message that refuses another spelling). */
  command?: string;
  imageId: string;
  order: 'start-first' | 'stop-first';
  /** --rollback after a finished rollout: the "new" container of each pair is the kept previous one. */
  restore?: boolean;
  startedAt: string;
  pid: number;
  host: string;
  status: 'running' | 'interrupted' | 'paused' | 'failed' | 'done' | 'rolled-back';
  pairs: Pair[];
}

export class Journal {
  private constructor(
    readonly file: string,
    public data: JournalData,
  ) {}

  static fileFor(dir: string, service: string, compose: boolean): string {
    return path.join(dir, 'rollouts', `${compose ? 'compose-' : ''}${service.replace(/[^A-Za-z0-9_.-]/g, '_')}.json`);
  }

  /** The unfinished rollout of this service, if one was recorded. A file that does not parse is reported, not ignored. */
  static load(dir: string, service: string, compose: boolean): Journal | undefined {
    const file = Journal.fileFor(dir, service, compose);
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new Error(`rollout record ${file}: ${(err as Error).message}`);
    }
    let data: JournalData;
    try {
      data = JSON.parse(text) as JournalData;
    } catch {
      throw new Error(`rollout record ${file}: not valid JSON (remove it if no rollout of ${service} is unfinished)`);
    }
    if (data?.version !== 1 || !Array.isArray(data.pairs) || typeof data.imageId !== 'string') throw new Error(`rollout record ${file}: not a record this version writes`);
    for (const p of data.pairs) p.stopFirst ??= data.order === 'stop-first';
    return new Journal(file, data);
  }

  static create(dir: string, data: Omit<JournalData, 'version' | 'pid' | 'host' | 'startedAt' | 'status'>): Journal {
    const j = new Journal(Journal.fileFor(dir, data.service, data.composeService), { version: 1, pid: process.pid, host: os.hostname(), startedAt: new Date().toISOString(), status: 'running', ...data });
    j.save();
    return j;
  }

  /** Every unfinished record in `dir` other than `except`: another spelling of the same rollout may have left one. */
  static others(dir: string, except: string): Journal[] {
    const folder = path.join(dir, 'rollouts');
    let names: string[];
    try {
      names = readdirSync(folder).filter((n) => n.endsWith('.json'));
    } catch {
      return [];
    }
    const out: Journal[] = [];
    for (const n of names) {
      const file = path.join(folder, n);
      if (file === except) continue;
      try {
        const data = JSON.parse(readFileSync(file, 'utf8')) as JournalData;
        const j = new Journal(file, data);
        if (data?.version === 1 && Array.isArray(data.pairs) && j.unfinished()) out.push(j);
      } catch {
        // Not a record (or half a file of another version): not ours to judge here.
      }
    }
    return out;
  }

  /** The container ids this record knows (old and new of every pair not rolled back). */
  containerIds(): string[] {
    return this.data.pairs.flatMap((p) => (p.phase === 'rolled-back' ? [p.old.id] : [p.old.id, ...(p.new?.id ? [p.new.id] : [])]));
  }

  /** Another process of this host is still working on it. */
  ownedByLiveProcess(): boolean {
    if (this.data.pid === process.pid || this.data.host !== os.hostname()) return false;
    if (this.data.status !== 'running') return false;
    try {
      process.kill(this.data.pid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EPERM';
    }
  }

  unfinished(): boolean {
    return this.data.status === 'running' || this.data.status === 'interrupted' || this.data.status === 'paused';
  }

  take(): void {
    this.data.pid = process.pid;
    this.data.host = os.hostname();
    this.data.status = 'running';
    this.save();
  }

  pair(oldId: string): Pair | undefined {
    return this.data.pairs.find((p) => p.old.id === oldId);
  }

  set(p: Pair, phase: Pair['phase']): void {
    p.phase = phase;
    this.save();
  }

  add(p: Pair): Pair {
    this.data.pairs.push(p);
    this.save();
    return p;
  }

  finish(status: JournalData['status']): void {
    this.data.status = status;
    if (status === 'done' || status === 'rolled-back') {
      rmSync(this.file, { force: true });
      return;
    }
    this.save();
  }

  save(): void {
    mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(this.data, null, 2)}\n`);
    renameSync(tmp, this.file);
  }
}
