// One plain HTTP request through the proxy, on an undici connection pool.
import type http from 'node:http';
import type { Dispatcher } from 'undici';
import { metrics } from '../metrics/metrics.js';
import { recordSuccess, type Upstream } from './balancer.js';
import { reply, type ProxyContext } from './context.js';
import { failureKind, safeToRetry } from './failures.js';
import { stripResponseHeaders } from './headers.js';
import type { CompiledRoute, RequestTarget } from './route-table.js';
import { DEFAULT_MAX_CONNECTIONS_PER_INSTANCE, type InstancePool, type SlotUser } from './upstream-pools.js';

const EXCHANGE = Symbol('exchange');
/** A response announced at most this long is held whole before anything reaches the client, so an instance dying mid-body can still be replaced. */
const HOLD_BYTES = 64 * 1024;
/** Trailer fields that never pass: framing and hop-by-hop fields (RFC 9110 §6.5.1). */
const BLOCKED_TRAILERS = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'host']);
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

function codedError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/**
 * One client request through the proxy. It is its own undici dispatch handler (no closures per
 * attempt); a connection failure before any response byte moves it to another instance when safe.
 * The response head is passed on as soon as it arrives (as nginx does), except for a small
 * response with an announced length, which is held whole so a GET can still go elsewhere if the
 * instance dies inside it. The response timeout covers the wait for the head (and for a free
 * connection); the body timeout covers each silence inside the body.
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
  private status = 0;
  /** The head of a small response, held with its body until it is complete. */
  private head?: Head;
  private held?: Buffer[];
  /** Something was written to the client: from here on a failure can only cut the response. */
  private committed = false;
  private wroteBody = false;
  private clientGone = false;
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
  }

  send(route: CompiledRoute): void {
    this.route = route;
    const u = route.balancer.pick(Date.now(), this.tried);
    if (!u) {
      if (this.attempts === 0) return this.fail(503, `no healthy instance of ${route.service}\n`);
      return this.fail(502, `bad gateway: no instance of ${route.service} could be reached\n`);
    }
    this.upstream = u;
    this.attempts++;
    u.state.active++;
    this.attemptOpen = true;
    this.pool = this.ctx.pools.get(u.origin);
    this.pool.acquire(this);
  }

  /** A connection slot of the instance is ours. */
  start(pool: Dispatcher): void {
    this.slot = true;
    this.sentAt = Date.now();
    const opts: Dispatcher.DispatchOptions = {
      path: this.target.forward,
      method: this.req.method as Dispatcher.HttpMethod,
      headers: this.headers,
      body: this.hasBody ? this.req : null,
    };
    try {
      pool.dispatch(opts, this);
    } catch (err) {
      this.onResponseError(undefined, err as Error);
    }
  }

  /** Every connection to the instance stayed busy for the whole response timeout. */
  waitTimedOut(): void {
    const u = this.upstream!;
    this.endAttempt(false);
    const ms = this.ctx.opts.responseTimeoutMs;
    this.ctx.upstreamFailed(u, codedError('HM_QUEUE_TIMEOUT', `no free connection within ${ms} ms (all ${this.ctx.opts.maxConnectionsPerInstance ?? DEFAULT_MAX_CONNECTIONS_PER_INSTANCE} busy)`), 'timeout');
    this.fail(504, `gateway timeout: ${this.route.service} did not answer in time\n`);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.clientGone) controller.abort(new Error('client closed the connection'));
  }

  onResponseStart(c: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void {
    // Informational answers (100, 103) stay on this hop; the final one follows.
    if (statusCode < 200) return;
    const len = Number(headers['content-length']);
    if (!this.hasBody && Number.isInteger(len) && len <= HOLD_BYTES) {
      this.head = { statusCode, statusMessage, headers };
      return;
    }
    const err = this.commit({ statusCode, statusMessage, headers });
    if (err) return c.abort(err);
    process.nextTick(flushHead, this);
  }

  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.head) {
      (this.held ??= []).push(chunk);
      return;
    }
    this.wroteBody = true;
    if (!this.res.write(chunk)) {
      c.pause();
      this.res.once('drain', () => c.resume());
    }
  }

  onResponseEnd(c: Dispatcher.DispatchController, trailers?: Record<string, string | string[] | undefined>): void {
    if (this.head) {
      const err = this.commit(this.head);
      this.head = undefined;
      if (err) {
        this.held = undefined;
        return this.onResponseError(c, err);
      }
      for (const chunk of this.held ?? []) this.res.write(chunk);
      this.held = undefined;
    }
    this.endAttempt(true);
    if (trailers) this.passTrailers(trailers);
    this.res.end();
    this.ctx.count(this.route.service, this.status);
  }

  /** Send the head now unless body bytes already carried it. */
  flushHead(): void {
    if (!this.wroteBody && !this.res.writableEnded && !this.res.destroyed) this.res.flushHeaders();
  }

  /** Write the response head; an error when Node refuses it (a header with invalid characters). */
  private commit({ statusCode, statusMessage, headers }: Head): Error | undefined {
    // Trailer is end-to-end (RFC 9110 §6.6.2), but Node refuses it on a response it will not chunk.
    const trailer = headers.trailer;
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
      if (v !== undefined && !BLOCKED_TRAILERS.has(name)) (out ??= {})[name] = v;
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
    this.endAttempt(false);
    if (this.clientGone) {
      this.ctx.count(this.route.service, 499);
      return;
    }
    this.head = undefined;
    this.held = undefined;
    if (this.committed) {
      // Part of the response is already with the client: all that is left is to cut it.
      this.ctx.upstreamFailed(u, err, failureKind(err));
      this.ctx.count(this.route.service, this.status);
      this.res.destroy();
      return;
    }
    const kind = failureKind(err);
    const ejected = this.ctx.upstreamFailed(u, err, kind);
    if (kind === 'timeout') return this.fail(504, `gateway timeout: ${this.route.service} did not answer in time\n`);
    if ((err as { code?: string }).code === 'HM_INVALID_RESPONSE' || err.name === 'HTTPParserError') {
      return this.fail(502, `bad gateway: ${this.route.service} sent an answer that cannot be passed on\n`);
    }
    const bodyRead = this.hasBody && this.req.readableDidRead;
    if ((kind === 'connect' || kind === 'reset') && this.attempts <= this.ctx.opts.retries && safeToRetry(kind, this.req.method ?? 'GET', bodyRead)) {
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
    if (this.res.writableFinished) return;
    this.clientGone = true;
    if (this.attemptOpen && !this.slot && this.pool?.cancel(this)) {
      // It was still waiting for a free connection: it never left.
      this.endAttempt(false);
      this.ctx.count(this.route.service, 499);
      return;
    }
    this.controller?.abort(new Error('client closed the connection'));
  }
}
