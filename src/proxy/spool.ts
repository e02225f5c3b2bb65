// Buffers for the two slow peers a proxy meets, as nginx has them by default
// (proxy_request_buffering, proxy_buffering): a request body is read whole before a connection to
// the instance is taken, and a response the client takes slower than the instance sends it is
// taken whole from the instance, so that the instance's connection goes back at once. Each keeps
// up to BUFFER_BYTES in memory and the rest in a temp file in os.tmpdir() (TMPDIR), opened with
// O_EXCL and mode 600 and unlinked at once, so nothing is left behind, even after a crash.
//
// Temp files are a help, never a condition: when one cannot be opened or written (TMPDIR missing
// or read-only, out of descriptors, disk full) or the process's temp file budget is spent, the
// proxy does what it did without them: a request body is streamed to the instance as it comes
// (the part already read first), and a response is passed on at the client's pace, at most
// BUFFER_BYTES of it in memory, the instance paused meanwhile. The failure is logged once (until
// temp files work again), and no file is tried again for a second.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Logger } from '../log/logger.js';

/** Bytes of one request body or one response kept in memory; beyond this, a temp file. */
export const BUFFER_BYTES = 64 * 1024;
/** A response spooled beyond this (nginx's proxy_max_temp_file_size 1024m) pauses the instance instead. */
export const MAX_TEMP_FILE_BYTES = 1024 ** 3;
/** Default budget of all temp files of the process together (--max-temp-size). */
export const DEFAULT_MAX_TEMP_BYTES = 2 * 1024 ** 3;
/** Default largest request body (--max-body-size; 0: no limit). */
export const DEFAULT_MAX_BODY_BYTES = 1024 ** 3;
/** Bytes read back from a temp file at a time. */
const READ_BYTES = 64 * 1024;
/** After a temp file could not be opened or written, none is tried for this long. */
const RETRY_MS = 1_000;

const codeOf = (err: Error): string => (err as { code?: string }).code ?? err.message;

/**
 * Where temp files go, and how much of it this process may use at once (the --max-temp-size
 * budget, shared by every request body and response). A failure to open or write one is logged
 * once, then no file is tried for RETRY_MS; the first one that works again is logged too.
 */
export class TempStore {
  /** Bytes in temp files now. */
  used = 0;
  private failingSince = 0;
  private retryAt = 0;
  private lastError?: Error;
  private full = false;

  constructor(
    /** 0: no temp files at all. */
    readonly maxBytes: number,
    private readonly log?: Logger,
    readonly dir: string = os.tmpdir(),
  ) {}

  /** A temp file, or an error: failed (or failing within the last second), or no budget at all. */
  open(cb: (err: Error | null, file?: TempFile) => void): void {
    if (this.maxBytes === 0) return process.nextTick(cb, Object.assign(new Error('temp files are off (--max-temp-size 0)'), { code: 'HM_NO_TEMP_FILES' }));
    if (Date.now() < this.retryAt) return process.nextTick(cb, this.lastError!);
    const name = path.join(this.dir, `harbormaster-${process.pid}-${randomBytes(8).toString('hex')}`);
    fs.open(name, 'wx+', 0o600, (err, fd) => {
      if (err) {
        this.failed(err, 'opened');
        return cb(err);
      }
      fs.unlink(name, () => cb(null, new TempFile(fd, this)));
    });
  }

  /** Take `n` bytes of the budget for a write: false when that would pass it. */
  reserve(n: number): boolean {
    if (this.used + n > this.maxBytes) {
      if (!this.full) {
        this.full = true;
        this.log?.warn({ event: 'temp-files-full', bytes: this.used, max: this.maxBytes }, `temp files hold ${this.used} bytes, the --max-temp-size budget: further request bodies are streamed to instances and responses follow their clients' pace`);
      }
      return false;
    }
    this.used += n;
    return true;
  }

  release(n: number): void {
    this.used -= n;
    if (this.full && this.used < this.maxBytes / 2) this.full = false;
  }

  /** A write or open failed: logged once, and no file is tried for RETRY_MS. */
  failed(err: Error, what: 'opened' | 'written'): void {
    this.lastError = err;
    this.retryAt = Date.now() + RETRY_MS;
    if (this.failingSince !== 0) return;
    this.failingSince = Date.now();
    this.log?.warn(
      { event: 'temp-files-failed', dir: this.dir, err: codeOf(err) },
      `a temp file in ${this.dir} could not be ${what} (${err.message}): request bodies over ${BUFFER_BYTES} bytes are streamed to instances and responses follow their clients' pace, until temp files work again`,
    );
  }

  /** A temp file took a write: if they were failing, they work again. */
  worked(): void {
    if (this.failingSince === 0) return;
    this.log?.info({ event: 'temp-files-ok', dir: this.dir, ms: Date.now() - this.failingSince }, `temp files in ${this.dir} work again`);
    this.failingSince = 0;
  }

  /** At startup: open, write and drop one temp file; a failure is logged (once) as any other. */
  check(): Promise<boolean> {
    if (this.maxBytes === 0) return Promise.resolve(false);
    return new Promise((resolve) =>
      this.open((err, file) => {
        if (err || !file) return resolve(false);
        file.write(Buffer.from('x'), 0, (werr) => {
          file.close();
          resolve(!werr);
        });
      }),
    );
  }
}

/**
 * An open temp file, already unlinked: its name is gone, its descriptor stays until close(). The
 * descriptor is closed only once no read, write or stream is under way on it: a number closed
 * under a pending write could be reused by another file or socket before the write lands. Every
 * byte written counts against its store's budget until close().
 */
export class TempFile {
  private closed = false;
  private ops = 0;
  /** Bytes taken from the budget. */
  private bytes = 0;

  constructor(
    readonly fd: number,
    private readonly store: TempStore,
  ) {}

  /**
   * Write `buf` at `position`; `cb` gets how many bytes landed (all of them, unless an error says
   * why not). A write past the budget fails at once with code HM_TEMP_BUDGET, nothing written.
   */
  write(buf: Buffer, position: number, cb: (err: Error | null, written: number) => void): void {
    if (this.closed) return cb(new Error('temp file closed'), 0);
    if (!this.store.reserve(buf.length)) return cb(Object.assign(new Error('temp file budget spent'), { code: 'HM_TEMP_BUDGET' }), 0);
    this.bytes += buf.length;
    this.ops++;
    let done = 0;
    const more = () =>
      fs.write(this.fd, buf, done, buf.length - done, position + done, (err, n) => {
        if (!err && (done += n) < buf.length && !this.closed) return more();
        this.opDone();
        if (err) this.store.failed(err, 'written');
        else if (done === buf.length) this.store.worked();
        // What did not land does not count (once closed, close() gave back all of it already).
        if (!this.closed) {
          this.store.release(buf.length - done);
          this.bytes -= buf.length - done;
        }
        cb(err ?? (done < buf.length ? new Error('temp file closed') : null), done);
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
    this.store.release(this.bytes);
    this.bytes = 0;
    if (this.ops === 0) fs.close(this.fd, () => undefined);
  }

  private opDone(): void {
    if (--this.ops === 0 && this.closed) fs.close(this.fd, () => undefined);
  }
}

/** A request body: read whole (in memory, or in a temp file), or streamed as it comes. */
export class RequestBody {
  constructor(
    /** Bytes of a body read whole; undefined for a streamed one. */
    readonly size: number | undefined,
    private readonly memory?: Buffer,
    private readonly file?: TempFile,
    private readonly live?: StreamedBody,
  ) {}

  /** The body for one attempt (each attempt of a body read whole reads it from the start). */
  source(): Buffer | Readable {
    if (this.live) return this.live;
    return this.file ? this.file.stream(this.size!) : this.memory!;
  }

  get inFile(): boolean {
    return this.file !== undefined;
  }

  get streamed(): boolean {
    return this.live !== undefined;
  }

  /** Part of a streamed body went out (or its stream is gone): it cannot be sent again. */
  get consumed(): boolean {
    return this.live !== undefined && (this.live.started || this.live.destroyed);
  }

  /** Nothing more is sent of it: its file closes, a stream still reading the client stops. */
  release(): void {
    this.file?.close();
    if (this.live && !this.live.readableEnded && !this.live.destroyed) this.live.destroy();
  }
}

/** The code of the error a body over --max-body-size ends with. */
export const BODY_TOO_LARGE = 'HM_BODY_TOO_LARGE';

/**
 * A request body streamed to the instance as it comes: first what was read before temp files
 * failed (a temp file prefix, then buffers), then the client's bytes, which wait in memory up to
 * BUFFER_BYTES (the client is paused beyond).
 */
class StreamedBody extends Readable {
  /** Part of it was read (by the connection to the instance). */
  started = false;
  private filePos = 0;
  private wanting = false;
  private reading = false;

  constructor(
    private file: TempFile | undefined,
    private readonly fileSize: number,
    private readonly reader: BodyReader,
  ) {
    super({ highWaterMark: READ_BYTES });
    // Nobody may be reading it when it fails (the request waits for a connection, or undici let
    // go of it after a connect error): the failure is the reader's to report, never a crash.
    this.on('error', () => undefined);
  }

  override _read(): void {
    this.started = true;
    this.wanting = true;
    this.fill();
  }

  /** Push what there is while the consumer wants more. */
  fill(): void {
    if (this.destroyed || this.reading) return;
    while (this.wanting) {
      if (this.file && this.filePos < this.fileSize) {
        this.reading = true;
        this.file.read(this.filePos, Math.min(READ_BYTES, this.fileSize - this.filePos), (err, chunk) => {
          this.reading = false;
          if (this.destroyed) return;
          if (err || chunk!.length === 0) return void this.destroy(err ?? new Error('temp file shorter than its body'));
          this.filePos += chunk!.length;
          this.wanting = this.push(chunk);
          this.fill();
        });
        return;
      }
      if (this.file) {
        // The prefix is out: its disk space goes back now.
        this.file.close();
        this.file = undefined;
      }
      const next = this.reader.nextQueued();
      if (next === undefined) {
        if (this.reader.ended) {
          this.wanting = false;
          this.push(null);
        }
        return;
      }
      this.wanting = this.push(next);
    }
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.file?.close();
    this.file = undefined;
    this.reader.abort();
    cb(err);
  }
}

/**
 * Reads a request body whole, BUFFER_BYTES in memory and the rest in a temp file (the client is
 * paused while a write is under way). `done` is called once: with the body, or with the error
 * that kept it from being buffered (code BODY_TOO_LARGE past `maxBytes`). When a temp file cannot
 * be had or written (or the budget is spent), `done` gets a streamed body instead, which goes on
 * reading the client; past `maxBytes` that stream ends with a BODY_TOO_LARGE error. abort() (the
 * client left) closes what was opened.
 */
export class BodyReader {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private file?: TempFile;
  private opening = false;
  private pending: Buffer[] = [];
  private written = 0;
  private writing = false;
  ended = false;
  private over = false;
  /** The client left, or the body is no longer wanted: what still comes is dropped. */
  private aborted = false;
  /** Streaming: the body went to `done` as a stream; `queue` holds what the stream has not taken. */
  private live?: StreamedBody;
  private queue: Buffer[] = [];
  private queueBytes = 0;
  /** The body passed --max-body-size. */
  tooLarge = false;

  constructor(
    private readonly req: http.IncomingMessage,
    private readonly done: (err: Error | undefined, body?: RequestBody) => void,
    private readonly store: TempStore,
    /** 0: no limit. */
    private readonly maxBytes = 0,
    /** A streamed body (already handed to `done`) passed maxBytes. */
    private readonly onTooLarge?: () => void,
  ) {
    req.on('data', (d: Buffer) => this.onData(d));
    req.once('end', () => {
      this.ended = true;
      if (this.live) this.live.fill();
      else this.flush();
    });
  }

  private onData(d: Buffer): void {
    if (this.aborted || (this.over && !this.live)) return;
    this.bytes += d.length;
    if (this.maxBytes > 0 && this.bytes > this.maxBytes) return this.overLimit();
    if (this.live) {
      this.queue.push(d);
      this.queueBytes += d.length;
      if (this.queueBytes > BUFFER_BYTES) this.req.pause();
      this.live.fill();
      return;
    }
    if (!this.file && !this.opening && this.bytes <= BUFFER_BYTES) {
      this.chunks.push(d);
      return;
    }
    this.pending.push(d);
    this.req.pause();
    if (this.file || this.opening) return this.flush();
    this.opening = true;
    this.store.open((err, file) => {
      this.opening = false;
      if (this.over) return file?.close();
      if (err || !file) return this.stream();
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
      this.file.write(buf, this.written, (err, n) => {
        this.writing = false;
        this.written += n;
        if (err) {
          // The part that did not land goes first in what is streamed after the file.
          this.pending = [buf.subarray(n), ...this.pending];
          return this.stream();
        }
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

  /** No temp file to be had: the body goes on as a stream, what was read so far first. */
  private stream(): void {
    if (this.over) return;
    this.over = true;
    this.queue = [...this.chunks, ...this.pending];
    this.queueBytes = this.queue.reduce((n, b) => n + b.length, 0);
    this.chunks = [];
    this.pending = [];
    const file = this.written > 0 ? this.file : undefined;
    if (!file) this.file?.close();
    this.file = undefined;
    this.live = new StreamedBody(file, this.written, this);
    this.done(undefined, new RequestBody(undefined, undefined, undefined, this.live));
    if (this.queueBytes <= BUFFER_BYTES) this.req.resume();
  }

  /** The next buffer for the stream; the client resumes once little waits. */
  nextQueued(): Buffer | undefined {
    const b = this.queue.shift();
    if (b) this.queueBytes -= b.length;
    if (!this.ended && this.queueBytes <= BUFFER_BYTES / 2 && this.req.isPaused()) this.req.resume();
    return b;
  }

  /** Past --max-body-size: nothing more is kept; whoever has the body hears of it. */
  private overLimit(): void {
    if (this.tooLarge) return;
    this.tooLarge = true;
    const err = Object.assign(new Error(`request body larger than ${this.maxBytes} bytes`), { code: BODY_TOO_LARGE });
    if (this.live) {
      this.queue = [];
      this.queueBytes = 0;
      this.live.destroy(err);
      this.onTooLarge?.();
      return;
    }
    this.over = true;
    this.file?.close();
    this.chunks = [];
    this.pending = [];
    this.done(err);
  }

  /** The client left before the end: nothing more is kept. */
  abort(): void {
    this.aborted = true;
    this.queue = [];
    this.queueBytes = 0;
    if (this.live && !this.live.destroyed) this.live.destroy();
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
 * a chunk from the instance (false: pause the instance until canResume); take() gives the next
 * chunk for the client. Once a temp file cannot be had or written (or the budget is spent), what
 * comes after stays in memory behind the file's part, and push() asks for a pause beyond
 * BUFFER_BYTES of it: the instance then goes at the client's pace.
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
  /** No temp file for this response any more: chunks after the file's part, in memory. */
  private noFile = false;
  private tail: Buffer[] = [];
  private tailBytes = 0;
  /** A take() waiting for a write to land. */
  private waiter?: (err: Error | null, chunk?: Buffer) => void;
  private closed = false;

  constructor(private readonly store: TempStore) {}

  /** Bytes not yet taken. */
  get buffered(): number {
    return this.memoryBytes + (this.written - this.readPos) + this.inFlightBytes + this.pendingBytes + this.tailBytes;
  }

  /** A paused instance may send again. */
  get canResume(): boolean {
    return this.noFile ? this.tailBytes <= BUFFER_BYTES / 2 : this.buffered < MAX_TEMP_FILE_BYTES / 2;
  }

  /** Temp files failed for this response: it goes at the client's pace. */
  get fallenBack(): boolean {
    return this.noFile;
  }

  push(chunk: Buffer): boolean {
    if (this.closed) return true;
    if (this.noFile) {
      this.tail.push(chunk);
      this.tailBytes += chunk.length;
      return this.tailBytes <= BUFFER_BYTES;
    }
    if (!this.file && !this.opening && this.memoryBytes + chunk.length <= BUFFER_BYTES) {
      this.memory.push(chunk);
      this.memoryBytes += chunk.length;
      return true;
    }
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (!this.file && !this.opening) {
      this.opening = true;
      this.store.open((err, file) => {
        this.opening = false;
        if (this.closed) return file?.close();
        if (err || !file) return this.fallBack();
        this.file = file;
        this.writeNext();
      });
    } else this.writeNext();
    return this.buffered <= MAX_TEMP_FILE_BYTES;
  }

  /** The next chunk, or undefined when everything pushed so far has been taken. */
  take(cb: (err: Error | null, chunk?: Buffer) => void): void {
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
    if (this.tail.length > 0) {
      const chunk = this.tail.shift()!;
      this.tailBytes -= chunk.length;
      return cb(null, chunk);
    }
    cb(null, undefined);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.file?.close();
    this.memory = [];
    this.pending = [];
    this.tail = [];
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
    this.file.write(buf, at, (err, n) => {
      this.writing = false;
      this.inFlightBytes = 0;
      if (this.closed) return;
      this.written += n;
      if (err) {
        // What did not land goes first in memory, after the file's part.
        this.pending = [buf.subarray(n), ...this.pending];
        this.pendingBytes += buf.length - n;
        return this.fallBack();
      }
      this.wake();
      this.writeNext();
    });
  }

  /** No more temp file for this response: what waited to be written waits in memory instead. */
  private fallBack(): void {
    this.noFile = true;
    this.tail = [...this.pending, ...this.tail];
    this.tailBytes += this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    if (this.written === 0) {
      this.file?.close();
      this.file = undefined;
    }
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    if (w) this.take(w);
  }

  /** Everything in the file was taken and nothing is on its way: back to memory for what comes next. */
  private recycle(): void {
    if (this.readPos < this.written || this.pending.length > 0 || this.writing || this.reading) return;
    this.file?.close();
    this.file = undefined;
    this.written = 0;
    this.readPos = 0;
  }
}
