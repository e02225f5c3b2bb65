// One plain HTTP request through the proxy, on an undici connection pool.
import type http from 'node:http';
import type { Dispatcher } from 'undici';
import { metrics } from '../metrics/metrics.js';
import { recordSuccess, type Upstream } from './balancer.js';
import { reply, type ProxyContext } from './context.js';
import { failureKind, safeToRetry } from './failures.js';
import { stripResponseHeaders } from './headers.js';
import type { CompiledRoute, RequestTarget } from './route-table.js';
import { BODY_TOO_LARGE, BodyReader, DEFAULT_MAX_BODY_BYTES, type RequestBody, ResponseSpool } from './spool.js';
import { DEFAULT_BODY_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS_PER_INSTANCE, type InstancePool, type SlotUser } from './upstream-pools.js';

const EXCHANGE = Symbol('exchange');
/**
 * A response announced at most this long (to a request without a body) is held until it is
 * complete or HOLD_MS have passed, so that an instance dying inside it can still be replaced.
 */
const HOLD_BYTES = 64 * 1024;
/** How long a small announced response is held at most before its head and what came go out. */
export const HOLD_MS = 100;
const HOLD_SWEEP_MS = 20;
/** Trailer fields that never pass: framing, hop-by-hop and proxy fields (RFC 9110 §6.5.1). */
const BLOCKED_TRAILERS = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'te', 'trailer', 'upgrade', 'host']);
type TrackedResponse = http.ServerResponse & { [EXCHANGE]?: Exchange };
type Head = { statusCode: number; statusMessage?: string; headers: Record<string, string | string[] | undefined> };

/** One listener function for every response (no closure per request). */
function onResponseClose(this: TrackedResponse): void {
  this[EXCHANGE]?.onClientClose();
}

/** The head goes out on its own when no body byte follows in the same read (SSE, long polls). */
function flushHead(ex: Exchange): void {
  ex.flushHead();
}

/** The client's socket took the bytes written so far: the instance's response may flow again. */
function onResponseDrain(this: TrackedResponse): void {
  this[EXCHANGE]?.resume();
}

// Held responses whose body did not come with their head are watched by one shared timer (none
// per response): those still incomplete after HOLD_MS are passed on as they are. A response
// that arrives whole in one read is never registered (adoption waits for setImmediate).
const fresh: Exchange[] = [];
let adopting = false;
const holding = new Set<Exchange>();
let sweeper: NodeJS.Timeout | undefined;

function watchHeld(ex: Exchange): void {
  fresh.push(ex);
  if (adopting) return;
  adopting = true;
  setImmediate(adoptHeld);
}

function adoptHeld(): void {
  adopting = false;
  for (const ex of fresh) if (ex.isHeld) holding.add(ex);
  fresh.length = 0;
  if (holding.size > 0 && sweeper === undefined) {
    sweeper = setInterval(sweepHeld, HOLD_SWEEP_MS);
    sweeper.unref();
  }
}

function sweepHeld(): void {
  const now = Date.now();
  for (const ex of holding) {
    if (!ex.isHeld) holding.delete(ex);
    else if (now - ex.heldAt >= HOLD_MS) {
      holding.delete(ex);
      ex.releaseHeld();
    }
  }
  if (holding.size === 0) {
    clearInterval(sweeper);
    sweeper = undefined;
  }
}

/** Field names a Connection header lists (they are hop-by-hop for this message). */
function connectionTokens(v: string | string[] | undefined): Set<string> | undefined {
  if (v === undefined) return undefined;
  const out = new Set<string>();
  for (const part of Array.isArray(v) ? v : [v]) for (const t of part.split(',')) if (t.trim()) out.add(t.trim().toLowerCase());
  return out;
}

function codedError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/**
 * One client request through the proxy. It is its own undici dispatch handler (no closures per
 * attempt); a connection failure before any response byte moves it to another instance when safe.
 * A request body is read whole before a connection slot is taken (memory, then a temp file), and
 * the route is resolved again once it is in: the table may have changed meanwhile; without a temp
 * file to be had it is streamed instead (and then sent once). A body past --max-body-size is 413,
 * announced or counted, and the connection ends with that answer. The response
 * head is passed on as soon as it arrives (as nginx does), except for a small response with an
 * announced length, held until complete or HOLD_MS, so a GET can still go elsewhere if the
 * instance dies inside it. What a client takes slower than the instance sends is spooled (memory,
 * then a temp file), so the instance's connection goes back when the instance is done, not when
 * the client is; without a temp file the instance is paused while BUFFER_BYTES wait. The response timeout covers the wait for a free connection and for the head
 * together; the body timeout covers each silence inside the body, and also a client that takes
 * nothing of what is waiting for it (nginx's send_timeout).
 */
export class Exchange implements Dispatcher.DispatchHandler, SlotUser {
  private upstream?: Upstream;
  /** The pool of the current attempt, whose slot it holds (`slot`) or waits for. */
  private pool?: InstancePool;
  private slot = false;
  /** The current attempt is counted in its instance's in-flight requests. */
  private attemptOpen = false;
  /** When the current attempt was handed to its connection pool. */
  private sentAt = 0;
  private tried?: Set<Upstream>;
  private controller?: Dispatcher.DispatchController;
  private attempts = 0;
  /** Attempts whose connection was refused: they never reached an instance, so they use up no retry (each instance is tried once). */
  private refused = 0;
  private status = 0;
  /** The head of a small response, held with its body until it is complete. */
  private head?: Head;
  private held?: Buffer[];
  /** Something was written to the client: from here on a failure can only cut the response. */
  private committed = false;
  private wroteBody = false;
  private clientGone = false;
  /** The current attempt's request was handed to a connection (it may have reached the instance). */
  private requestStarted = false;
  /** Epoch ms by which the head of the current attempt must arrive. */
  private deadline = 0;
  /** Sent again after its pool closed: it keeps the deadline it had. */
  private rerouting = false;
  /** Fires when the client has not taken what waits for it for the body timeout. */
  private stallTimer?: NodeJS.Timeout;
  /** The request body, read whole before a connection is taken. */
  private body?: RequestBody;
  private reader?: BodyReader;
  /** When the held head arrived. */
  heldAt = 0;
  /** What the client has not taken yet, once it fell behind. */
  private spool?: ResponseSpool;
  private pumping = false;
  /** The instance was paused: the spool is full. */
  private upstreamPaused = false;
  /** The instance's answer is complete (the spool still holds some of it). */
  private upstreamDone = false;
  private trailers?: Record<string, string | string[] | undefined>;
  /** Names the response's Connection header listed: not passed on as trailers either. */
  private hopNames?: Set<string>;
  private readonly hasBody: boolean;
  private readonly headers: Record<string, string | string[]>;

  constructor(
    private readonly ctx: ProxyContext,
    private readonly req: http.IncomingMessage,
    private readonly res: http.ServerResponse,
    private readonly host: string,
    private readonly target: RequestTarget,
    private route: CompiledRoute,
  ) {
    const h = req.headers;
    this.hasBody = h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0');
    this.headers = ctx.requestHeaders(req, target);
    (res as TrackedResponse)[EXCHANGE] = this;
    res.on('close', onResponseClose);
    res.on('drain', onResponseDrain);
  }

  /** Read the body if there is one, then send. */
  begin(): void {
    if (!this.hasBody) return this.send(this.route);
    const max = this.ctx.opts.maxBodySize ?? DEFAULT_MAX_BODY_BYTES;
    if (max > 0 && Number(this.req.headers['content-length']) > max) return this.tooLarge();
    this.reader = new BodyReader(this.req, (err, body) => this.bodyRead(err, body), this.ctx.temp, max, () => this.streamTooLarge());
  }

  /** The body is (or is announced) larger than --max-body-size: 413, and the connection ends with it (the rest is not read). */
  private tooLarge(): void {
    const max = this.ctx.opts.maxBodySize ?? DEFAULT_MAX_BODY_BYTES;
    this.ctx.opts.log.debug({ event: 'body-too-large', service: this.route.service, max }, `request body for ${this.route.service} larger than ${max} bytes: 413`);
    reply(this.res, 413, `request body larger than ${max} bytes\n`, this.ctx, this.route.service, true);
  }

  /**
   * A streamed body passed --max-body-size. Waiting for a connection (first attempt or a retry),
   * the request never left: 413 now. Sent, the instance's request fails and onResponseError says 413.
   */
  private streamTooLarge(): void {
    if (this.clientGone || !this.attemptOpen || this.slot || !this.pool?.cancel(this)) return;
    this.endAttempt(false);
    this.tooLarge();
  }

  /**
   * The body is in (or could not be kept). The route is resolved again: the table may have
   * changed while the body arrived, and an instance removed meanwhile must not get it.
   */
  private bodyRead(err: Error | undefined, body: RequestBody | undefined): void {
    // A streamed body's reader goes on reading the client.
    if (!body?.streamed) this.reader = undefined;
    if (this.clientGone) return body?.release();
    if ((err as { code?: string } | undefined)?.code === BODY_TOO_LARGE) return this.tooLarge();
    if (!body) {
      this.ctx.opts.log.error({ event: 'body-buffer-failed', service: this.route.service, err: (err as { code?: string } | undefined)?.code ?? err?.message }, `request body for ${this.route.service} could not be buffered: ${err?.message}`);
      return this.fail(500, 'internal server error: the request body could not be buffered\n');
    }
    this.body = body;
    if (body.size !== undefined) this.headers['content-length'] = String(body.size);
    const route = this.ctx.table().match(this.host, this.target.match);
    if (!route) {
      const q = this.target.forward.indexOf('?');
      return reply(this.res, 404, `no route for ${`${this.host}${q < 0 ? this.target.forward : this.target.forward.slice(0, q)}`.slice(0, 200)}\n`, this.ctx, 'none', this.ctx.draining);
    }
    this.send(route);
  }

  send(route: CompiledRoute): void {
    this.route = route;
    const now = Date.now();
    if (!this.rerouting) this.deadline = now + this.ctx.opts.responseTimeoutMs;
    // An instance with a free connection first: one whose connections are all busy only when every one is.
    const u = route.balancer.pick(now, this.tried, this.ctx.pools.hasRoom);
    if (!u) {
      if (this.attempts === 0) return this.fail(503, `no healthy instance of ${route.service}\n`);
      return this.fail(502, `bad gateway: no instance of ${route.service} could be reached\n`);
    }
    this.upstream = u;
    this.attempts++;
    u.state.active++;
    this.attemptOpen = true;
    this.requestStarted = false;
    this.pool = this.ctx.pools.get(u.origin);
    if (this.pool.acquire(this, Math.max(1, this.deadline - now))) return;
    // Its line is full (4 × its connections): the request never left.
    this.endAttempt(false);
    this.fail(503, `service unavailable: every connection to ${route.service} is busy and too many requests are waiting\n`);
  }

  /** A connection slot of the instance is ours. */
  start(pool: Dispatcher): void {
    this.slot = true;
    const now = Date.now();
    this.sentAt = now;
    const opts: Dispatcher.DispatchOptions = {
      path: this.target.forward,
      method: this.req.method as Dispatcher.HttpMethod,
      headers: this.headers,
      body: this.body ? this.body.source() : null,
      // One response timeout covers the wait for a connection and for the head together.
      headersTimeout: Math.max(1, this.deadline - now),
    };
    try {
      pool.dispatch(opts, this);
    } catch (err) {
      this.onResponseError(undefined, err as Error);
    }
  }

  /**
   * Every connection to the instance stayed busy for the whole response timeout. The request never
   * left: another instance gets it (with a fresh response timeout), until each has been tried.
   */
  waitTimedOut(): void {
    const u = this.upstream!;
    this.endAttempt(false);
    const ms = this.ctx.opts.responseTimeoutMs;
    this.ctx.upstreamFailed(u, codedError('HM_QUEUE_TIMEOUT', `no free connection within ${ms} ms (all ${this.ctx.opts.maxConnectionsPerInstance ?? DEFAULT_MAX_CONNECTIONS_PER_INSTANCE} busy)`), 'timeout');
    if (!this.ctx.draining) {
      (this.tried ??= new Set()).add(u);
      const route = this.ctx.table().match(this.host, this.target.match);
      if (route && route.balancer.upstreams.some((x) => !this.tried!.has(x))) {
        this.attempts--;
        return this.send(route);
      }
    }
    this.fail(504, `gateway timeout: ${this.route.service} did not answer in time\n`);
  }

  /**
   * The pool it waited on left the routing table (its instance is gone): the request never left,
   * so it goes through the table now, whatever its method, keeping its response timeout.
   */
  poolClosed(): void {
    this.endAttempt(false);
    this.attempts--;
    const route = this.ctx.draining ? undefined : this.ctx.table().match(this.host, this.target.match);
    if (!route) return this.fail(503, `no healthy instance of ${this.route.service}\n`);
    this.rerouting = true;
    this.send(route);
    this.rerouting = false;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    this.requestStarted = true;
    if (this.clientGone) controller.abort(new Error('client closed the connection'));
  }

  onResponseStart(c: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void {
    // Informational answers (100, 103) stay on this hop; the final one follows.
    if (statusCode < 200) return;
    const len = Number(headers['content-length']);
    if (!this.hasBody && Number.isInteger(len) && len <= HOLD_BYTES) {
      this.head = { statusCode, statusMessage, headers };
      this.heldAt = Date.now();
      watchHeld(this);
      return;
    }
    const err = this.commit({ statusCode, statusMessage, headers });
    if (err) return c.abort(err);
    process.nextTick(flushHead, this);
  }

  /** A small response is being held (its head came, its body is not complete). */
  get isHeld(): boolean {
    return this.head !== undefined && !this.clientGone;
  }

  /** Held for HOLD_MS without being complete: the head and what came go out, the rest streams. */
  releaseHeld(): void {
    const head = this.head;
    if (!head || this.clientGone) return;
    this.head = undefined;
    const held = this.held;
    this.held = undefined;
    const err = this.commit(head);
    if (err) return void this.controller?.abort(err);
    if (held) for (const chunk of held) this.writeBody(chunk);
    else this.flushHead();
  }

  /** The client took what was written: what waits for it goes on. */
  resume(): void {
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
    if (this.spool) this.pump();
  }

  /** The client took nothing for the body timeout: its response is cut (and the instance's, if it still sends). */
  private stalled(): void {
    this.stallTimer = undefined;
    const ms = this.ctx.opts.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS;
    this.ctx.opts.log.debug({ event: 'send-timeout', service: this.route.service, ms }, `client of ${this.route.service} read nothing for ${ms} ms: response cut`);
    this.res.destroy();
  }

  private armStall(): void {
    if (this.stallTimer === undefined) this.stallTimer = setTimeout(() => this.stalled(), this.ctx.opts.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS);
  }

  onResponseData(_c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.head) {
      (this.held ??= []).push(chunk);
      return;
    }
    this.writeBody(chunk);
  }

  /** To the client while it keeps up; once it falls behind, to the spool (the instance is not slowed). */
  private writeBody(chunk: Buffer): void {
    this.wroteBody = true;
    if (this.spool) {
      if (!this.spool.push(chunk) && !this.upstreamPaused) {
        // The spool is full (MAX_TEMP_FILE_BYTES, or BUFFER_BYTES without a temp file): the instance waits too, holding its connection.
        this.upstreamPaused = true;
        this.controller?.pause();
      }
      return;
    }
    if (!this.res.write(chunk)) {
      this.spool = new ResponseSpool(this.ctx.temp);
      this.armStall();
    }
  }

  private pump(): void {
    if (this.pumping || !this.spool) return;
    this.pumping = true;
    this.pumpLoop();
  }

  /** Move spooled chunks to the client until it pushes back or the spool is empty (file reads resume the loop). */
  private pumpLoop(): void {
    for (;;) {
      const spool = this.spool;
      if (!spool) return void (this.pumping = false);
      let taken: { err: Error | null; chunk?: Buffer } | undefined;
      let waiting = false;
      spool.take((err, chunk) => {
        if (!waiting) taken = { err, chunk };
        else if (this.afterTake(err, chunk)) this.pumpLoop();
      });
      if (!taken) {
        waiting = true;
        return;
      }
      if (!this.afterTake(taken.err, taken.chunk)) return;
    }
  }

  /** One chunk from the spool (undefined: it is empty); true to take the next one. */
  private afterTake(err: Error | null, chunk: Buffer | undefined): boolean {
    const spool = this.spool;
    if (!spool || this.res.destroyed) {
      this.pumping = false;
      return false;
    }
    if (err) {
      this.pumping = false;
      this.ctx.opts.log.error({ event: 'spool-failed', service: this.route.service, err: (err as { code?: string }).code ?? err.message }, `response of ${this.route.service} could not be read back from its temp file: ${err.message}; cut`);
      this.res.destroy();
      return false;
    }
    if (chunk === undefined) {
      this.pumping = false;
      spool.close();
      this.spool = undefined;
      if (this.upstreamDone) this.finish();
      else if (this.upstreamPaused) {
        this.upstreamPaused = false;
        this.controller?.resume();
      }
      return false;
    }
    if (this.upstreamPaused && spool.canResume) {
      this.upstreamPaused = false;
      this.controller?.resume();
    }
    if (this.res.write(chunk)) return true;
    this.pumping = false;
    this.armStall();
    return false;
  }

  onResponseEnd(c: Dispatcher.DispatchController, trailers?: Record<string, string | string[] | undefined>): void {
    if (this.head) {
      const err = this.commit(this.head);
      this.head = undefined;
      if (err) {
        this.held = undefined;
        return this.onResponseError(c, err);
      }
      const held = this.held;
      this.held = undefined;
      if (held) for (const chunk of held) this.writeBody(chunk);
    }
    // The instance is done: its connection goes back now, whether or not the client has everything.
    this.endAttempt(true);
    this.ctx.count(this.route.service, this.status);
    if (this.spool) {
      this.upstreamDone = true;
      this.trailers = trailers;
      return;
    }
    if (trailers) this.passTrailers(trailers);
    this.res.end();
  }

  /** The spool ran dry after the instance's end: the response is complete. */
  private finish(): void {
    if (this.trailers) this.passTrailers(this.trailers);
    this.res.end();
  }

  /** Send the head now unless body bytes already carried it. */
  flushHead(): void {
    if (!this.wroteBody && !this.res.writableEnded && !this.res.destroyed) this.res.flushHeaders();
  }

  /** Write the response head; an error when Node refuses it (a header with invalid characters). */
  private commit({ statusCode, statusMessage, headers }: Head): Error | undefined {
    // Trailer is end-to-end (RFC 9110 §6.6.2), but Node refuses it on a response it will not chunk.
    const trailer = headers.trailer;
    this.hopNames = connectionTokens(headers.connection);
    stripResponseHeaders(headers);
    if (this.ctx.draining) headers.connection = 'close';
    try {
      if (trailer !== undefined) {
        try {
          this.writeHead(statusCode, statusMessage, { ...headers, trailer });
        } catch (err) {
          if ((err as { code?: string }).code !== 'ERR_HTTP_TRAILER_INVALID') throw err;
          this.writeHead(statusCode, statusMessage, headers);
        }
      } else this.writeHead(statusCode, statusMessage, headers);
    } catch (err) {
      return codedError('HM_INVALID_RESPONSE', `invalid response: ${(err as Error).message}`);
    }
    this.committed = true;
    this.status = statusCode;
    return undefined;
  }

  private writeHead(statusCode: number, statusMessage: string | undefined, headers: Head['headers']): void {
    if (statusMessage) this.res.writeHead(statusCode, statusMessage, headers);
    else this.res.writeHead(statusCode, headers);
  }

  /** Trailer fields go on when the client's response is chunked (Node drops them otherwise). */
  private passTrailers(trailers: Record<string, string | string[] | undefined>): void {
    let out: Record<string, string | string[]> | undefined;
    for (const name in trailers) {
      const v = trailers[name];
      if (v !== undefined && !BLOCKED_TRAILERS.has(name) && !this.hopNames?.has(name)) (out ??= {})[name] = v;
    }
    if (!out) return;
    try {
      this.res.addTrailers(out);
    } catch {
      // A field Node will not write: the body is complete without it.
    }
  }

  onResponseError(c: Dispatcher.DispatchController | undefined, err: Error): void {
    // A 204 or 304 carries no body whatever its Content-Length says (RFC 9110 §8.6): undici
    // reports the missing body as a mismatch, but the answer is complete.
    const status = this.head?.statusCode ?? this.status;
    if ((err as { code?: string }).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' && (status === 204 || status === 304) && !this.clientGone) {
      return this.onResponseEnd(c as Dispatcher.DispatchController);
    }
    const u = this.upstream!;
    if (this.reader?.tooLarge) {
      // The streamed body passed --max-body-size: not the instance's failure.
      this.endAttempt(false);
      if (this.clientGone) return this.ctx.count(this.route.service, 499);
      this.head = undefined;
      this.held = undefined;
      return this.committed ? void this.res.destroy() : this.tooLarge();
    }
    // A failure on a connection that already carried the request (ETIMEDOUT, EHOSTUNREACH on an
    // established connection) may have reached the instance: a reset, never a connection failure.
    const started = this.requestStarted;
    this.endAttempt(false);
    if (this.clientGone) {
      this.ctx.count(this.route.service, 499);
      return;
    }
    const heldHead = this.head;
    const heldBytes = (this.held ?? []).reduce((n, b) => n + b.length, 0);
    this.head = undefined;
    this.held = undefined;
    if (this.committed) {
      // Part of the response is already with the client: all that is left is to cut it.
      this.ctx.upstreamFailed(u, err, failureKind(err));
      this.ctx.count(this.route.service, this.status);
      this.res.destroy();
      return;
    }
    const code = (err as { code?: string }).code;
    let kind = failureKind(err);
    if (kind === 'connect' && started) kind = 'reset';
    // A held answer whose body stopped short of its Content-Length when the connection closed is an
    // instance that died mid-answer (busybox httpd killed after its head): retried like a reset,
    // on another instance, but not counted towards ejection (a buggy endpoint could do the same).
    const truncated = code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' && heldHead !== undefined && heldBytes < Number(heldHead.headers['content-length']);
    const ejected = this.ctx.upstreamFailed(u, err, truncated ? 'other' : kind);
    if (truncated) {
      const tried = (this.tried ??= new Set()).add(u);
      if (this.ctx.table().match(this.host, this.target.match)?.balancer.upstreams.some((x) => !tried.has(x))) kind = 'reset';
    }
    if (kind === 'timeout') return this.fail(504, `gateway timeout: ${this.route.service} did not answer in time\n`);
    if (kind === 'other' && code !== 'UND_ERR_ABORTED') {
      return this.fail(502, `bad gateway: ${this.route.service} sent an answer that cannot be passed on\n`);
    }
    // A buffered body can go again whenever the method allows; a streamed one only if none of it went out.
    if (kind === 'connect') this.refused++;
    if ((kind === 'connect' || kind === 'reset') && this.attempts - this.refused <= this.ctx.opts.retries && safeToRetry(kind, this.req.method ?? 'GET', this.body?.consumed ?? false)) {
      // Resolve again against the table now: the route may have changed since the first attempt.
      const route = this.ctx.table().match(this.host, this.target.match);
      if (route) {
        // A first reset may have been a stale pooled connection: that instance may be tried again.
        if (kind === 'connect' || ejected) (this.tried ??= new Set()).add(u);
        metrics.retries.inc({ service: route.service });
        return this.send(route);
      }
    }
    this.fail(502, `bad gateway: ${this.route.service} could not be reached\n`);
  }

  /** The current attempt is over: its in-flight count and connection slot go back, once. */
  private endAttempt(ok: boolean): void {
    if (!this.attemptOpen) return;
    this.attemptOpen = false;
    this.controller = undefined;
    this.upstreamPaused = false;
    const u = this.upstream!;
    u.state.active--;
    if (this.slot) {
      this.slot = false;
      this.pool!.release();
    }
    if (ok && recordSuccess(u.state, this.sentAt)) {
      this.ctx.opts.log.info({ event: 'ejection-ended', service: u.service, id: u.id }, `instance ${u.id} (${u.address}:${u.port}) of ${u.service} answered again; back in rotation`);
    }
  }

  private fail(status: number, body: string): void {
    reply(this.res, status, body, this.ctx, this.route.service, this.ctx.draining);
  }

  /** The response closed: finished, or the client went away first. */
  onClientClose(): void {
    (this.res as TrackedResponse)[EXCHANGE] = undefined;
    this.ctx.requestDone();
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
    this.body?.release();
    this.spool?.close();
    this.spool = undefined;
    if (this.res.writableFinished) return;
    this.clientGone = true;
    this.reader?.abort();
    if (this.attemptOpen && !this.slot && this.pool?.cancel(this)) {
      // It was still waiting for a free connection: it never left.
      this.endAttempt(false);
      this.ctx.count(this.route.service, 499);
      return;
    }
    this.controller?.abort(new Error('client closed the connection'));
  }
}
