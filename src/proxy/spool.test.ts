import { readdirSync } from 'node:fs';
import os from 'node:os';
import { PassThrough } from 'node:stream';
import type http from 'node:http';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BODY_TOO_LARGE, BodyReader, BUFFER_BYTES, DEFAULT_MAX_TEMP_BYTES, type RequestBody, ResponseSpool, TempStore } from './spool.js';

const store = new TempStore(DEFAULT_MAX_TEMP_BYTES);
/** A TMPDIR that does not exist: every temp file fails. */
const missing = () => new TempStore(DEFAULT_MAX_TEMP_BYTES, undefined, '/nonexistent-harbormaster-tmp');

const take = (s: ResponseSpool) => new Promise<Buffer | undefined>((resolve, reject) => s.take((err, c) => (err ? reject(err) : resolve(c))));
const leftovers = () => readdirSync(os.tmpdir()).filter((n) => n.startsWith(`harbormaster-${process.pid}-`));

async function drain(r: NodeJS.ReadableStream | Buffer): Promise<Buffer> {
  if (Buffer.isBuffer(r)) return r;
  const parts: Buffer[] = [];
  for await (const p of r) parts.push(p as Buffer);
  return Buffer.concat(parts);
}

function read(chunks: Buffer[], temp = store, max = 0): Promise<RequestBody> {
  const req = new PassThrough() as unknown as http.IncomingMessage;
  const p = new Promise<RequestBody>((resolve, reject) => new BodyReader(req, (err, body) => (body ? resolve(body) : reject(err)), temp, max));
  const w = req as unknown as PassThrough;
  (async () => {
    for (const c of chunks) if (!w.write(c)) await new Promise((r) => w.once('drain', r));
    w.end();
  })();
  return p;
}

describe('ResponseSpool', () => {
  it('gives back every byte in order across memory and temp file, with pushes and takes interleaved', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.integer({ min: 1, max: 40_000 }), fc.integer({ min: 0, max: 3 })), { minLength: 1, maxLength: 40 }), async (steps) => {
        const s = new ResponseSpool(store);
        const sent: Buffer[] = [];
        const got: Buffer[] = [];
        let n = 0;
        for (const [size, takes] of steps) {
          const chunk = Buffer.alloc(size, n++ % 251);
          sent.push(chunk);
          expect(s.push(chunk)).toBe(true);
          for (let i = 0; i < takes; i++) {
            const c = await take(s);
            if (c) got.push(c);
          }
        }
        for (let c = await take(s); c; c = await take(s)) got.push(c);
        expect(Buffer.concat(got).equals(Buffer.concat(sent))).toBe(true);
        expect(s.buffered).toBe(0);
        s.close();
      }),
      { numRuns: 60 },
    );
    // Every temp file was unlinked at once.
    expect(leftovers()).toEqual([]);
  });

  it('keeps up to BUFFER_BYTES in memory and counts what waits', async () => {
    const s = new ResponseSpool(store);
    s.push(Buffer.alloc(BUFFER_BYTES));
    expect(s.buffered).toBe(BUFFER_BYTES);
    s.push(Buffer.alloc(10));
    expect(s.buffered).toBe(BUFFER_BYTES + 10);
    expect((await take(s))?.length).toBe(BUFFER_BYTES);
    expect((await take(s))?.length).toBe(10);
    expect(await take(s)).toBeUndefined();
    s.close();
  });
});

describe('BodyReader', () => {

  it('keeps a small body in memory and a large one in a temp file, each readable from the start for every attempt', async () => {
    const small = await read([Buffer.from('hello '), Buffer.from('world')]);
    expect(small.inFile).toBe(false);
    expect(small.size).toBe(11);
    expect((await drain(small.source())).toString()).toBe('hello world');
    const parts = Array.from({ length: 30 }, (_, i) => Buffer.alloc(10_000, 65 + i));
    const large = await read(parts);
    expect(large.inFile).toBe(true);
    expect(large.size).toBe(300_000);
    const [one, two] = await Promise.all([drain(large.source()), drain(large.source())]);
    expect(one.equals(Buffer.concat(parts))).toBe(true);
    expect(two.equals(one)).toBe(true);
    large.release();
    expect(leftovers()).toEqual([]);
  });

  it('closes its descriptor once, after the last read: a stream destroyed midway (an aborted attempt) leaves it to the next', async () => {
    const fds = () => readdirSync('/proc/self/fd').length;
    const before = fds();
    const parts = Array.from({ length: 20 }, (_, i) => Buffer.alloc(20_000, 97 + i));
    const body = await read(parts);
    expect(fds()).toBe(before + 1);
    const aborted = body.source() as NodeJS.ReadableStream & { destroy(): void };
    aborted.once('data', () => aborted.destroy());
    await new Promise((r) => setTimeout(r, 50));
    const again = await drain(body.source());
    expect(again.equals(Buffer.concat(parts))).toBe(true);
    const pending = drain(body.source()).catch((err: Error) => err.message);
    body.release();
    await pending;
    await new Promise((r) => setTimeout(r, 50));
    expect(fds()).toBe(before);
  });
});

describe('without temp files', () => {
  it('a response spool whose file cannot be opened keeps BUFFER_BYTES in memory and asks for a pause, every byte in order', async () => {
    const s = new ResponseSpool(missing());
    const sent: Buffer[] = [];
    let paused = 0;
    for (let i = 0; i < 6; i++) {
      const chunk = Buffer.alloc(30_000, i);
      sent.push(chunk);
      if (!s.push(chunk)) paused++;
      // Let the failed open land (however long a busy machine takes to say ENOENT).
      if (i === 2) for (let t = 0; t < 500 && !s.fallenBack; t++) await new Promise((r) => setTimeout(r, 10));
    }
    expect(s.fallenBack).toBe(true);
    expect(paused).toBeGreaterThan(0);
    expect(s.canResume).toBe(false);
    const got: Buffer[] = [];
    for (let c = await take(s); c; c = await take(s)) got.push(c);
    expect(Buffer.concat(got).equals(Buffer.concat(sent))).toBe(true);
    expect(s.canResume).toBe(true);
  });

  it('a response spool over its budget keeps what is in its file and goes on in memory, every byte in order', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 300_000 }), fc.array(fc.tuple(fc.integer({ min: 1, max: 50_000 }), fc.integer({ min: 0, max: 2 })), { minLength: 1, maxLength: 30 }), async (budget, steps) => {
        const small = new TempStore(budget);
        const s = new ResponseSpool(small);
        const sent: Buffer[] = [];
        const got: Buffer[] = [];
        let n = 0;
        for (const [size, takes] of steps) {
          const chunk = Buffer.alloc(size, n++ % 251);
          sent.push(chunk);
          s.push(chunk);
          for (let i = 0; i < takes; i++) {
            const c = await take(s);
            if (c) got.push(c);
          }
          expect(small.used).toBeLessThanOrEqual(budget);
        }
        for (let c = await take(s); c; c = await take(s)) got.push(c);
        expect(Buffer.concat(got).equals(Buffer.concat(sent))).toBe(true);
        s.close();
        expect(small.used).toBe(0);
      }),
      { numRuns: 60 },
    );
    expect(leftovers()).toEqual([]);
  });

  it('a request body streams when no temp file can be had: the part read so far first, then the rest as it comes', async () => {
    const parts = Array.from({ length: 30 }, (_, i) => Buffer.alloc(10_000, 65 + i));
    const body = await read(parts, missing());
    expect(body.streamed).toBe(true);
    expect(body.size).toBeUndefined();
    expect(body.consumed).toBe(false);
    const got = await drain(body.source());
    expect(got.equals(Buffer.concat(parts))).toBe(true);
    expect(body.consumed).toBe(true);
  });

  it('a request body over the budget: what is in the temp file goes first, then the rest streams; the budget goes back', async () => {
    const small = new TempStore(150_000);
    const parts = Array.from({ length: 40 }, (_, i) => Buffer.alloc(10_000, 97 + (i % 26)));
    const body = await read(parts, small);
    expect(body.streamed).toBe(true);
    expect(small.used).toBeGreaterThan(0);
    expect(small.used).toBeLessThanOrEqual(150_000);
    const got = await drain(body.source());
    expect(got.equals(Buffer.concat(parts))).toBe(true);
    body.release();
    expect(small.used).toBe(0);
  });

  it('past --max-body-size: a buffered body fails with BODY_TOO_LARGE, a streamed one ends with that error', async () => {
    const parts = Array.from({ length: 20 }, () => Buffer.alloc(10_000, 120));
    const err = await read(parts, store, 150_000).then(() => undefined, (e: Error) => e);
    expect((err as { code?: string } | undefined)?.code).toBe(BODY_TOO_LARGE);
    const streamed = await read(parts, missing(), 150_000);
    const failed = await drain(streamed.source()).then(() => undefined, (e: Error) => e);
    expect((failed as { code?: string } | undefined)?.code).toBe(BODY_TOO_LARGE);
  });
});
