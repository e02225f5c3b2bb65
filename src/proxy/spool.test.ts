import { readdirSync } from 'node:fs';
import os from 'node:os';
import { PassThrough } from 'node:stream';
import type http from 'node:http';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BodyReader, BUFFER_BYTES, type RequestBody, ResponseSpool } from './spool.js';

const take = (s: ResponseSpool) => new Promise<Buffer | undefined>((resolve, reject) => s.take((err, c) => (err ? reject(err) : resolve(c))));
const leftovers = () => readdirSync(os.tmpdir()).filter((n) => n.startsWith(`harbormaster-${process.pid}-`));

async function drain(r: NodeJS.ReadableStream | Buffer): Promise<Buffer> {
  if (Buffer.isBuffer(r)) return r;
  const parts: Buffer[] = [];
  for await (const p of r) parts.push(p as Buffer);
  return Buffer.concat(parts);
}

describe('ResponseSpool', () => {
  it('gives back every byte in order across memory and temp file, with pushes and takes interleaved', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.integer({ min: 1, max: 40_000 }), fc.integer({ min: 0, max: 3 })), { minLength: 1, maxLength: 40 }), async (steps) => {
        const s = new ResponseSpool();
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
    const s = new ResponseSpool();
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
  function read(chunks: Buffer[]): Promise<RequestBody> {
    const req = new PassThrough() as unknown as http.IncomingMessage;
    const p = new Promise<RequestBody>((resolve, reject) => new BodyReader(req, (err, body) => (body ? resolve(body) : reject(err))));
    const w = req as unknown as PassThrough;
    (async () => {
      for (const c of chunks) if (!w.write(c)) await new Promise((r) => w.once('drain', r));
      w.end();
    })();
    return p;
  }

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
