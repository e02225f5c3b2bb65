// Buffers for the two slow peers a proxy meets, as nginx has them by default
// (proxy_request_buffering, proxy_buffering): a request body is read whole before a connection to
// the instance is taken, and a response the client takes slower than the instance sends it is
// taken whole from the instance, so that the instance's connection goes back at once. Each keeps
// up to BUFFER_BYTES in memory and the rest in a temp file in os.tmpdir() (TMPDIR), opened with
// O_EXCL and mode 600 and unlinked at once, so nothing is left behind, even after a crash.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';

/** Bytes of one request body or one response kept in memory; beyond this, a temp file. */
export const BUFFER_BYTES = 64 * 1024;
/** A response spooled beyond this (nginx's proxy_max_temp_file_size 1024m) pauses the instance instead. */
export const MAX_TEMP_FILE_BYTES = 1024 ** 3;
/** Bytes read back from a temp file at a time. */
const READ_BYTES = 64 * 1024;

/**
 * An open temp file, already unlinked: its name is gone, its descriptor stays until close(). The
 * descriptor is closed only once no read, write or stream is under way on it: a number closed
 * under a pending write could be reused by another file or socket before the write lands.
 */
export class TempFile {
  private closed = false;
  private ops = 0;

  private constructor(readonly fd: number) {}

  static open(cb: (err: Error | null, file?: TempFile) => void): void {
    const name = path.join(os.tmpdir(), `harbormaster-${process.pid}-${randomBytes(8).toString('hex')}`);
    fs.open(name, 'wx+', 0o600, (err, fd) => {
      if (err) return cb(err);
      fs.unlink(name, () => cb(null, new TempFile(fd)));
    });
  }

  write(buf: Buffer, position: number, cb: (err: Error | null) => void): void {
    if (this.closed) return cb(new Error('temp file closed'));
    this.ops++;
    let done = 0;
    const more = () =>
      fs.write(this.fd, buf, done, buf.length - done, position + done, (err, n) => {
        if (!err && (done += n) < buf.length && !this.closed) return more();
        this.opDone();
        cb(err ?? (done < buf.length ? new Error('temp file closed') : null));
      });
    more();
  }

  read(position: number, length: number, cb: (err: Error | null, chunk?: Buffer) => void): void {
    if (this.closed) return cb(new Error('temp file closed'));
    this.ops++;
    const buf = Buffer.allocUnsafe(length);
    fs.read(this.fd, buf, 0, length, position, (err, n) => {
      this.opDone();
      if (err) cb(err);
      else cb(null, n === length ? buf : buf.subarray(0, n));
    });
  }

  /**
   * A stream of the first `size` bytes, by positional reads (several may run at once). Not an
   * fs.ReadStream: destroying one of those closes the descriptor it was given.
   */
  stream(size: number): Readable {
    let pos = 0;
    const file = this;
    return new Readable({
      highWaterMark: READ_BYTES,
      read() {
        if (pos >= size) return void this.push(null);
        file.read(pos, Math.min(READ_BYTES, size - pos), (err, chunk) => {
          if (this.destroyed) return;
          if (err || chunk!.length === 0) return void this.destroy(err ?? new Error('temp file shorter than its body'));
          pos += chunk!.length;
          this.push(chunk);
        });
      },
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.ops === 0) fs.close(this.fd, () => undefined);
  }

  private opDone(): void {
    if (--this.ops === 0 && this.closed) fs.close(this.fd, () => undefined);
  }
}

/** A request body read whole: in memory, or in a temp file. */
export class RequestBody {
  constructor(
    readonly size: number,
    private readonly memory?: Buffer,
    private readonly file?: TempFile,
  ) {}

  /** The body for one attempt (each attempt reads it from the start). */
  source(): Buffer | Readable {
    return this.file ? this.file.stream(this.size) : this.memory!;
  }

  get inFile(): boolean {
    return this.file !== undefined;
  }

  release(): void {
    this.file?.close();
  }
}

/**
 * Reads a request body whole, BUFFER_BYTES in memory and the rest in a temp file (the client is
 * paused while a write is under way). `done` is called once: with the body, or with the error
 * that kept it from being buffered. abort() (the client left) closes what was opened.
 */
export class BodyReader {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private file?: TempFile;
  private opening = false;
  private pending: Buffer[] = [];
  private written = 0;
  private writing = false;
  private ended = false;
  private over = false;

  constructor(
    private readonly req: http.IncomingMessage,
    private readonly done: (err: Error | undefined, body?: RequestBody) => void,
  ) {
    req.on('data', (d: Buffer) => this.onData(d));
    req.once('end', () => {
      this.ended = true;
      this.flush();
    });
  }

  private onData(d: Buffer): void {
    if (this.over) return;
    this.bytes += d.length;
    if (!this.file && !this.opening && this.bytes <= BUFFER_BYTES) {
      this.chunks.push(d);
      return;
    }
    this.pending.push(d);
    this.req.pause();
    if (this.file || this.opening) return this.flush();
    this.opening = true;
    TempFile.open((err, file) => {
      this.opening = false;
      if (err || this.over) {
        file?.close();
        return this.fail(err ?? undefined);
      }
      this.file = file;
      this.pending = [...this.chunks, ...this.pending];
      this.chunks = [];
      this.flush();
    });
  }

  /** Write what is pending; resume the client when nothing is; finish at the end. */
  private flush(): void {
    if (this.over || this.writing || this.opening) return;
    if (this.file && this.pending.length > 0) {
      const buf = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending);
      this.pending = [];
      this.writing = true;
      this.file.write(buf, this.written, (err) => {
        this.writing = false;
        if (err) return this.fail(err);
        this.written += buf.length;
        this.flush();
      });
      return;
    }
    if (!this.ended) return void this.req.resume();
    this.over = true;
    if (this.file) this.done(undefined, new RequestBody(this.written, undefined, this.file));
    else this.done(undefined, new RequestBody(this.bytes, this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.bytes)));
    this.chunks = [];
  }

  private fail(err: Error | undefined): void {
    if (this.over) return;
    this.over = true;
    this.file?.close();
    this.chunks = [];
    this.pending = [];
    this.done(err ?? new Error('aborted'));
  }

  /** The client left before the end: nothing more is kept. */
  abort(): void {
    if (this.over) return;
    this.over = true;
    this.file?.close();
    this.chunks = [];
    this.pending = [];
  }
}

/**
 * A response on its way to a client that reads slower than the instance sends: what the client
 * has not taken yet, in order, BUFFER_BYTES in memory and the rest in a temp file. push() takes
 * a chunk from the instance (false once more than MAX_TEMP_FILE_BYTES wait: pause the instance
 * until buffered() is back under half of it); take() gives the next chunk for the client.
 */
export class ResponseSpool {
  /** Chunks before the file (everything after the first chunk that went to the file goes there too). */
  private memory: Buffer[] = [];
  private memoryBytes = 0;
  private file?: TempFile;
  private opening = false;
  /** Chunks waiting to be written to the file, in order. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private writing = false;
  /** Bytes of the write under way. */
  private inFlightBytes = 0;
  private written = 0;
  private readPos = 0;
  private reading = false;
  /** A take() waiting for a write to land. */
  private waiter?: (err: Error | null, chunk?: Buffer) => void;
  private closed = false;
  private error?: Error;

  /** Bytes not yet taken. */
  get buffered(): number {
    return this.memoryBytes + (this.written - this.readPos) + this.inFlightBytes + this.pendingBytes;
  }

  push(chunk: Buffer): boolean {
    if (this.closed) return true;
    if (!this.file && !this.opening && this.memoryBytes + chunk.length <= BUFFER_BYTES) {
      this.memory.push(chunk);
      this.memoryBytes += chunk.length;
      return true;
    }
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (!this.file && !this.opening) {
      this.opening = true;
      TempFile.open((err, file) => {
        this.opening = false;
        if (this.closed) return file?.close();
        if (err) return this.failed(err);
        this.file = file;
        this.writeNext();
      });
    } else this.writeNext();
    return this.buffered <= MAX_TEMP_FILE_BYTES;
  }

  /** The next chunk, or undefined when everything pushed so far has been taken. */
  take(cb: (err: Error | null, chunk?: Buffer) => void): void {
    if (this.error) return cb(this.error);
    if (this.memory.length > 0) {
      const chunk = this.memory.shift()!;
      this.memoryBytes -= chunk.length;
      return cb(null, chunk);
    }
    if (this.readPos < this.written) {
      this.reading = true;
      return this.file!.read(this.readPos, Math.min(READ_BYTES, this.written - this.readPos), (err, chunk) => {
        this.reading = false;
        if (err) return cb(err);
        this.readPos += chunk!.length;
        this.recycle();
        cb(null, chunk);
      });
    }
    // Bytes on their way into the file: wait for them.
    if (this.pendingBytes > 0 || this.writing || this.opening) {
      this.waiter = cb;
      return;
    }
    cb(null, undefined);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.file?.close();
    this.memory = [];
    this.pending = [];
    this.waiter = undefined;
  }

  private writeNext(): void {
    if (this.writing || !this.file || this.pending.length === 0 || this.closed) return;
    const buf = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    this.writing = true;
    const at = this.written;
    this.inFlightBytes = buf.length;
    this.file.write(buf, at, (err) => {
      this.writing = false;
      this.inFlightBytes = 0;
      if (this.closed) return;
      if (err) return this.failed(err);
      this.written += buf.length;
      const w = this.waiter;
      this.waiter = undefined;
      this.writeNext();
      if (w) this.take(w);
    });
  }

  /** Everything in the file was taken and nothing is on its way: back to memory for what comes next. */
  private recycle(): void {
    if (this.readPos < this.written || this.pending.length > 0 || this.writing || this.reading) return;
    this.file?.close();
    this.file = undefined;
    this.written = 0;
    this.readPos = 0;
  }

  private failed(err: Error): void {
    this.error = err;
    const w = this.waiter;
    this.waiter = undefined;
    w?.(err);
  }
}
