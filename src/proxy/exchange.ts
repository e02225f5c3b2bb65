// One plain HTTP request through the proxy, on an undici connection pool.
import type http from 'node:http';
import type { Dispatcher } from 'undici';
import { metrics } from '../metrics/metrics.js';
import { recordSuccess, type Upstream } from './balancer.js';
import { reply, type ProxyContext } from './context.js';
import { failureKind, safeToRetry } from './failures.js';
import { stripResponseHeaders } from './headers.js';
import type { CompiledRoute, RequestTarget } from './route-table.js';

const EXCHANGE = Symbol('exchange');
/** A response announced at most this long is held whole before anything reaches the client, so an instance dying mid-body can still be replaced. */
const HOLD_BYTES = 64 * 1024;
type TrackedResponse = http.ServerResponse & { [EXCHANGE]?: Exchange };

/** One listener function for every response (no closure per request). */
function onResponseClose(this: TrackedResponse): void {
  this[EXCHANGE]?.onClientClose();
}

/**
 * One client request through the proxy. It is its own undici dispatch handler (no closures per
 * attempt); a connection failure before any response byte moves it to another instance when safe.
 */
export class Exchange implements Dispatcher.DispatchHandler {
  private upstream?: Upstream;
  private tried?: Set<Upstream>;
  private controller?: Dispatcher.DispatchController;
  private attempts = 0;
  private status = 0;
  /** The response head from the instance, held until its first body byte (or its end). */
  private head?: { statusCode: number; statusMessage?: string; headers: Record<string, string | string[] | undefined> };
  /** Body chunks of a small response, held until it is complete. */
  private held?: Buffer[];
  /** Something was written to the client: from here on a failure can only cut the response. */
  private committed = false;
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
    const opts: Dispatcher.DispatchOptions = {
      path: this.target.forward,
      method: this.req.method as Dispatcher.HttpMethod,
      headers: this.headers,
      body: this.hasBody ? this.req : null,
    };
    try {
      this.ctx.pools.get(u.origin).dispatch(opts, this);
    } catch (err) {
      this.onResponseError(undefined, err as Error);
    }
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.clientGone) controller.abort(new Error('client closed the connection'));
  }

  onResponseStart(_c: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void {
    // Informational answers (100, 103) stay on this hop; the final one follows.
    if (statusCode < 200) return;
    // Held back until the body starts: an instance that dies between its head and its body can
    // still be replaced by another one for an idempotent request.
    this.head = { statusCode, statusMessage, headers };
  }

  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.committed) {
      if (this.holdable()) {
        (this.held ??= []).push(chunk);
        return;
      }
      const err = this.commit();
      if (err) return c.abort(err);
    }
    if (!this.res.write(chunk)) {
      c.pause();
      this.res.once('drain', () => c.resume());
    }
  }

  onResponseEnd(c: Dispatcher.DispatchController): void {
    if (!this.committed) {
      const err = this.commit();
      if (err) return this.onResponseError(c, err);
    }
    this.flushHeld();
    this.release(this.upstream!, true);
    this.res.end();
    this.ctx.count(this.route.service, this.status);
  }

  /** A response with a small announced length, for a request that could go to another instance. */
  private holdable(): boolean {
    const len = Number(this.head?.headers['content-length']);
    return Number.isInteger(len) && len <= HOLD_BYTES && !this.hasBody;
  }

  private flushHeld(): void {
    for (const chunk of this.held ?? []) this.res.write(chunk);
    this.held = undefined;
  }

  /** Write the held response head; an error when Node refuses it (a header with invalid characters). */
  private commit(): Error | undefined {
    const { statusCode, statusMessage, headers } = this.head!;
    stripResponseHeaders(headers);
    if (this.ctx.draining) headers.connection = 'close';
    try {
      if (statusMessage) this.res.writeHead(statusCode, statusMessage, headers);
      else this.res.writeHead(statusCode, headers);
    } catch (err) {
      return Object.assign(new Error(`invalid response: ${(err as Error).message}`), { code: 'HM_INVALID_RESPONSE' });
    }
    this.committed = true;
    this.status = statusCode;
    return undefined;
  }

  onResponseError(c: Dispatcher.DispatchController | undefined, err: Error): void {
    // A 204 or 304 carries no body whatever its Content-Length says (RFC 9110 §8.6): undici
    // reports the missing body as a mismatch, but the answer is complete.
    const status = this.head?.statusCode;
    if ((err as { code?: string }).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' && (status === 204 || status === 304) && !this.committed && !this.clientGone) {
      return this.onResponseEnd(c as Dispatcher.DispatchController);
    }
    const u = this.upstream!;
    this.release(u, false);
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

  private release(u: Upstream, ok: boolean): void {
    u.state.active--;
    if (ok) recordSuccess(u.state);
    this.controller = undefined;
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
    this.controller?.abort(new Error('client closed the connection'));
  }
}
