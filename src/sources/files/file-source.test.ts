import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Logger } from '../../log/logger.js';
import type { ServiceInstance } from '../../model/service-instance.js';
import { FileSource, ownerOf } from './file-source.js';

interface Recorded {
  sets: Array<{ owner: string; ids: string[]; reason?: string }>;
  completes: number;
  errors: string[];
  /** Owner → ids as the sink holds them now. */
  now: Map<string, string[]>;
  moves: Array<{ from: string; to: string; ids: string[] }>;
}

function harness(dir: string, settleMs = 60) {
  const rec: Recorded = { sets: [], completes: 0, errors: [], now: new Map(), moves: [] };
  const log = {
    info: () => undefined,
    debug: () => undefined,
    warn: (_o: unknown, m: string) => rec.errors.push(m),
    error: (_o: unknown, m: string) => rec.errors.push(m),
  } as unknown as Logger;
  const src = new FileSource({
    dir,
    hostname: 'h',
    hostAddress: '10.0.0.5',
    resyncMs: 0,
    settleMs,
    log,
    sink: {
      set: (owner: string, instances: ServiceInstance[], reason?: string) => {
        rec.sets.push({ owner, ids: instances.map((i) => i.id), reason });
        if (instances.length) rec.now.set(owner, instances.map((i) => i.id));
        else rec.now.delete(owner);
      },
      move: (from: string, to: string, instances: ServiceInstance[]) => {
        rec.moves.push({ from, to, ids: instances.map((i) => i.id) });
        rec.now.delete(from);
        if (instances.length) rec.now.set(to, instances.map((i) => i.id));
      },
      complete: () => void rec.completes++,
    },
  });
  return { src, rec, all: () => [...rec.now.values()].flat().sort() };
}

async function until<T>(what: string, fn: () => T | undefined | false, ms = 3_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const svc = (name: string, port: number) => JSON.stringify({ service: { name, port } });
const dirs: string[] = [];
const sources: FileSource[] = [];
afterEach(async () => {
  for (const s of sources.splice(0)) await s.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function folder(): string {
  const d = mkdtempSync(join(tmpdir(), 'hm-files-'));
  dirs.push(d);
  return d;
}

describe('file source', () => {
  it('reads the folder at start, then follows adds, edits, renames and deletes within a second', async () => {
    const dir = folder();
    writeFileSync(join(dir, 'b.yaml'), 'service: { name: beta, port: 2 }\n');
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'sub', 'a.json'), svc('alpha', 1));
    writeFileSync(join(dir, '.hidden.json'), svc('hidden', 3));
    writeFileSync(join(dir, 'c.yaml~'), 'service: { name: backup, port: 4 }\n');
    writeFileSync(join(dir, 'notes.txt'), 'not a service');
    const { src, rec, all } = harness(dir);
    sources.push(src);
    src.start();
    await until('first complete view', () => rec.completes >= 1);
    expect(all()).toEqual(['h:file:alpha', 'h:file:beta']);

    let t0 = Date.now();
    writeFileSync(join(dir, 'c.yml'), 'service: { name: gamma, port: 3 }\n');
    await until('added', () => all().includes('h:file:gamma'));
    const added = Date.now() - t0;

    t0 = Date.now();
    writeFileSync(join(dir, 'c.yml'), 'service: { name: gamma, port: 33 }\n');
    await until('edited', () => rec.sets.filter((s) => s.owner === ownerOf(join(dir, 'c.yml'))).length === 2);
    const edited = Date.now() - t0;

    t0 = Date.now();
    renameSync(join(dir, 'c.yml'), join(dir, 'd.yml'));
    await until('renamed', () => rec.now.has(ownerOf(join(dir, 'd.yml'))) && !rec.now.has(ownerOf(join(dir, 'c.yml'))));
    expect(all()).toEqual(['h:file:alpha', 'h:file:beta', 'h:file:gamma']);

    t0 = Date.now();
    unlinkSync(join(dir, 'b.yaml'));
    await until('deleted', () => !all().includes('h:file:beta'));
    const deleted = Date.now() - t0;

    rmSync(join(dir, 'sub'), { recursive: true });
    await until('folder deleted', () => !all().includes('h:file:alpha'));
    expect(all()).toEqual(['h:file:gamma']);
    expect(rec.errors).toEqual([]);
    console.log(`PROBE file source: added in ${added} ms, edited in ${edited} ms, deleted in ${deleted} ms (settle 60 ms)`);
    for (const ms of [added, edited, deleted]) expect(ms).toBeLessThan(1_000);
  });

  it('keeps the services of a file that turns invalid until it is valid again, and never reads a half-written file as truth', async () => {
    const dir = folder();
    const f = join(dir, 'db.yaml');
    writeFileSync(f, 'services:\n  - { name: pg, port: 5432 }\n  - { name: redis, port: 6379 }\n');
    const { src, rec, all } = harness(dir);
    sources.push(src);
    src.start();
    await until('read', () => all().length === 2);
    const setsBefore = rec.sets.length;
    writeFileSync(f, 'services:\n  - { name: pg, port: 5432 }\n  - { name: redis, port: 99999 }\n');
    await until('error reported', () => rec.errors.length === 1);
    expect(rec.errors[0]).toBe('db.yaml:3: port: expected a number from 1 to 65535; its services stay as they were until it is valid');
    // A write cut in the middle: what was read before stays.
    writeFileSync(f, 'services:\n  - { name: pg, port: 5432 }\n  - { name: red');
    await until('second error', () => rec.errors.length === 2);
    expect(rec.sets.length).toBe(setsBefore);
    expect(all()).toEqual(['h:file:pg', 'h:file:redis']);
    writeFileSync(f, 'services:\n  - { name: pg, port: 5432 }\n');
    await until('valid again', () => all().length === 1);
    expect(all()).toEqual(['h:file:pg']);
  });

  it('a file written slowly is read once, when it has stopped changing', async () => {
    const dir = folder();
    const { src, rec, all } = harness(dir, 300);
    sources.push(src);
    src.start();
    await until('start', () => rec.completes >= 1);
    const f = join(dir, 'slow.json');
    const text = JSON.stringify({ services: Array.from({ length: 20 }, (_, i) => ({ name: `s${i}`, port: 1000 + i })) });
    writeFileSync(f, text.slice(0, 40));
    for (let i = 40; i < text.length; i += 60) {
      await new Promise((r) => setTimeout(r, 40));
      writeFileSync(f, text.slice(0, i + 60));
    }
    await until('read', () => all().length === 20, 5_000);
    expect(rec.errors).toEqual([]);
    expect(rec.sets.filter((s) => s.owner === ownerOf(f))).toHaveLength(1);
  });

  it('two files with the same ID: the first by path keeps it (the registrar logs the conflict)', async () => {
    const dir = folder();
    writeFileSync(join(dir, 'a.yaml'), 'service: { name: x, id: same, port: 1 }\n');
    writeFileSync(join(dir, 'b.yaml'), 'service: { name: y, id: same, port: 2 }\n');
    const { src, rec } = harness(dir);
    sources.push(src);
    src.start();
    await until('both read', () => rec.sets.length === 2);
    expect(rec.sets.map((s) => s.owner)).toEqual([ownerOf(join(dir, 'a.yaml')), ownerOf(join(dir, 'b.yaml'))]);
  });

  it('a folder that is not there: one error, an empty complete view, and it is read once it appears', async () => {
    const dir = join(folder(), 'later');
    const { src, rec, all } = harness(dir);
    sources.push(src);
    src.start();
    await until('complete', () => rec.completes >= 1);
    expect(rec.errors).toHaveLength(1);
    expect(rec.errors[0]).toMatch(/services folder .*later: ENOENT.*withdrawn until it is back/);
    mkdirSync(dir);
    writeFileSync(join(dir, 'a.yaml'), 'service: { name: late, port: 1 }\n');
    // Found by itself (no resync here): the folder is looked for every half second.
    const t0 = Date.now();
    await until('read by itself', () => all().length === 1, 2_000);
    expect(all()).toEqual(['h:file:late']);
    expect(Date.now() - t0).toBeLessThan(1_000);
  });

  it('a folder swapped with mv: everything goes, and what the new folder holds comes back within a second, watched again', async () => {
    const parent = folder();
    const dir = join(parent, 'svc');
    mkdirSync(dir);
    writeFileSync(join(dir, 'a.yaml'), 'service: { name: a, port: 1 }\n');
    const { src, all } = harness(dir);
    sources.push(src);
    src.start();
    await until('read', () => all().length === 1);
    await new Promise((r) => setTimeout(r, 300));
    renameSync(dir, join(parent, 'svc.old'));
    await until('withdrawn', () => all().length === 0);
    mkdirSync(dir);
    writeFileSync(join(dir, 'b.yaml'), 'service: { name: b, port: 2 }\n');
    const t0 = Date.now();
    await until('the new folder read', () => all().join() === 'h:file:b', 2_000);
    const back = Date.now() - t0;
    writeFileSync(join(dir, 'c.yaml'), 'service: { name: c, port: 3 }\n');
    await until('watched again', () => all().length === 2, 2_000);
    console.log(`PROBE file source: folder swapped with mv, the new one read after ${back} ms`);
    expect(back).toBeLessThan(1_000);
  });

  it('an emptied file, or one rewritten with a pause at a line boundary, withdraws nothing', async () => {
    const dir = folder();
    const f = join(dir, 'db.yaml');
    const full = 'services:\n  - {name: w1, port: 1}\n  - {name: w2, port: 2}\n  - {name: w3, port: 3}\n  - {name: w4, port: 4}\n';
    writeFileSync(f, full);
    const { src, rec, all } = harness(dir);
    sources.push(src);
    src.start();
    await until('read', () => all().length === 4);
    await new Promise((r) => setTimeout(r, 200));
    // Truncated, then written again 600 ms later (10 × settle).
    writeFileSync(f, '');
    await new Promise((r) => setTimeout(r, 600));
    writeFileSync(f, full);
    await new Promise((r) => setTimeout(r, 400));
    // Half of the list, a pause of 400 ms, then the rest.
    const cut = full.indexOf('  - {name: w3');
    writeFileSync(f, full.slice(0, cut));
    await new Promise((r) => setTimeout(r, 400));
    writeFileSync(f, full);
    await new Promise((r) => setTimeout(r, 1_000));
    const withdrawn = rec.sets.filter((x) => x.ids.length < 4).length;
    console.log(`PROBE file source: emptied for 600 ms, then cut at a line boundary for 400 ms: sets with fewer than 4 services: ${withdrawn}; errors ${rec.errors.length}`);
    expect(withdrawn).toBe(0);
    expect(all()).toHaveLength(4);
    // A real shrink is believed once it stays: within a second.
    writeFileSync(f, full.slice(0, cut));
    const t0 = Date.now();
    await until('shrunk', () => all().length === 2, 2_000);
    expect(Date.now() - t0).toBeLessThan(1_000);
  });

  it('a rename hands the services over in one step: no withdrawal in between', async () => {
    const dir = folder();
    writeFileSync(join(dir, 'db.yaml'), 'services:\n  - {name: a, port: 1}\n  - {name: b, port: 2}\n');
    const { src, rec, all } = harness(dir);
    sources.push(src);
    src.start();
    await until('read', () => all().length === 2);
    await new Promise((r) => setTimeout(r, 200));
    renameSync(join(dir, 'db.yaml'), join(dir, 'db2.yaml'));
    await until('moved', () => rec.moves.length === 1, 2_000);
    await new Promise((r) => setTimeout(r, 700));
    expect(rec.moves[0]).toEqual({ from: ownerOf(join(dir, 'db.yaml')), to: ownerOf(join(dir, 'db2.yaml')), ids: ['h:file:a', 'h:file:b'] });
    expect(rec.sets.filter((x) => x.ids.length === 0)).toEqual([]);
    expect(all()).toEqual(['h:file:a', 'h:file:b']);
  });

  it('a file deleted and written again at the same path (a save that deletes first, or mv to a backup) keeps its services', async () => {
    const dir = folder();
    const f = join(dir, 'a.yaml');
    writeFileSync(f, 'service: { name: alpha, port: 1 }\n');
    const { src, rec, all } = harness(dir);
    sources.push(src);
    src.start();
    await until('read', () => all().length === 1);
    await new Promise((r) => setTimeout(r, 200));
    for (const gap of [150, 300]) {
      renameSync(f, `${f}~`);
      await new Promise((r) => setTimeout(r, gap));
      writeFileSync(f, `service: { name: alpha, port: 1, tags: [g${gap}] }\n`);
      await new Promise((r) => setTimeout(r, 1_000));
    }
    expect(rec.sets.filter((x) => x.ids.length === 0)).toEqual([]);
    expect(all()).toEqual(['h:file:alpha']);
  });

  it('follows a symlinked folder at start and at every full read, as the watcher does; a link loop is read once', async () => {
    const dir = folder();
    const ext = folder();
    writeFileSync(join(ext, 'x.yaml'), 'service: { name: x, port: 1 }\n');
    symlinkSync(ext, join(dir, 'extlink'));
    symlinkSync(dir, join(ext, 'loop'));
    const { src, all } = harness(dir);
    sources.push(src);
    src.start();
    await until('read', () => all().length === 1);
    await src.fullRead();
    await src.fullRead();
    expect(all()).toEqual(['h:file:x']);
  });
});
