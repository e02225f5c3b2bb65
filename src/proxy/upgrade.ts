// Upgrade requests (WebSocket): a fresh connection to the chosen instance, the request passed on
// with its Upgrade header, and once the instance answers 101 the two sockets are piped together.
// An upgrade request carries no body, so a connection failure moves it to another instance.
// The tunnel passes a half-close on (an end from one side ends the other's writing), is over when
// both sockets have closed (an error or an abrupt close on one side destroys the other), and is
// closed when no byte has crossed it either way for the tunnel idle timeout (like nginx's
// proxy_read_timeout on upgraded connections, HAProxy's `timeout tunnel`).
import http from 'node:http';
import type { Socket } from 'node:net';
import { pipeline, type Duplex } from 'node:stream';
import { recordSuccess, type Upstream } from './balancer.js';
import { closeSoon, rawReply, type ProxyContext } from './context.js';
import { failureKind, safeToRetry } from './failures.js';
import type { CompiledRoute, RequestTarget } from './route-table.js';
import { DEFAULT_BODY_TIMEOUT_MS } from './upstream-pools.js';

/** HAProxy template's `timeout tunnel 1h`. */
export const DEFAULT_TUNNEL_IDLE_MS = 3_600_000;

const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade']);

function codedError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

export class UpgradeExchange {
  private tried?: Set<Upstream>;
  private attempts = 0;
  private pending?: http.ClientRequest;
  private clientClosed = false;

  constructor(
    private readonly ctx: ProxyContext,
    private readonly req: http.IncomingMessage,
    private readonly socket: Duplex,
    private readonly head: Buffer,
    private readonly host: string,
    private readonly target: RequestTarget,
  ) {
    socket.once('close', () => {
      this.clientClosed = true;
      this.pending?.destroy();
    });
  }

  send(route: CompiledRoute): void {
    if (this.ctx.draining) {
      this.ctx.count(route.service, 503);
      return rawReply(this.socket, 503, 'shutting down\n');
    }
    const u = route.balancer.pick(Date.now(), this.tried);
    if (!u) {
      const status = this.attempts === 0 ? 503 : 502;
      this.ctx.count(route.service, status);
      return rawReply(this.socket, status, status === 503 ? `no healthy instance of ${route.service}\n` : `bad gateway: ${route.service} could not be reached\n`);
    }
    this.attempts++;
    u.state.active++;
    const sentAt = Date.now();
    const { connectTimeoutMs, responseTimeoutMs } = this.ctx.opts;
    const up = http.request({
      host: u.address,
      port: u.port,
      method: this.req.method,
      path: this.target.forward,
      headers: this.ctx.requestHeaders(this.req, this.target, true),
      agent: false,
    });
    this.pending = up;
    let settled = false;
    let timer = setTimeout(() => up.destroy(codedError('HM_CONNECT_TIMEOUT', `connect timed out after ${connectTimeoutMs} ms`)), connectTimeoutMs);
    up.once('socket', (s: Socket) =>
      s.once('connect', () => {
        clearTimeout(timer);
        timer = setTimeout(() => up.destroy(codedError('HM_RESPONSE_TIMEOUT', `no answer within ${responseTimeoutMs} ms`)), responseTimeoutMs);
      }),
    );
    up.once('upgrade', (ures: http.IncomingMessage, usock: Socket, uhead: Buffer) => {
      settled = true;
      clearTimeout(timer);
      this.pending = undefined;
      recordSuccess(u.state, sentAt);
      this.tunnel(route, u, ures, usock, uhead);
    });
    up.once('response', (ures: http.IncomingMessage) => {
      // The instance declined to switch protocols: relay its answer and close.
      settled = true;
      clearTimeout(timer);
      this.pending = undefined;
      u.state.active--;
      recordSuccess(u.state, sentAt);
      this.ctx.count(route.service, ures.statusCode ?? 502);
      let head = `HTTP/1.1 ${ures.statusCode} ${ures.statusMessage ?? ''}\r\n`;
      for (let i = 0; i < ures.rawHeaders.length; i += 2) {
        const name = ures.rawHeaders[i];
        const lower = name.toLowerCase();
        if (!HOP.has(lower) && !(lower === 'content-length' && ures.headers['transfer-encoding'])) head += `${name}: ${ures.rawHeaders[i + 1]}\r\n`;
      }
      const client = this.socket as Socket;
      client.write(`${head}connection: close\r\n\r\n`);
      // A client that stops reading, or an instance that stops sending, is cut after the body
      // timeout; an error or close on either side destroys both; a finished answer lingers briefly.
      const bodyMs = this.ctx.opts.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS;
      const destroyBoth = () => {
        ures.destroy();
        client.destroy();
      };
      client.setTimeout?.(bodyMs, destroyBoth);
      ures.socket.setTimeout(bodyMs, destroyBoth);
      pipeline(ures, client, (err) => (err ? destroyBoth() : closeSoon(client)));
    });
    up.on('error', (err: Error) => {
      clearTimeout(timer);
      if (settled) return;
      settled = true;
      this.pending = undefined;
      u.state.active--;
      if (this.clientClosed) return void this.ctx.count(route.service, 499);
      const kind = failureKind(err);
      const ejected = this.ctx.upstreamFailed(u, err, kind);
      if ((kind === 'connect' || kind === 'reset') && this.attempts <= this.ctx.opts.retries && safeToRetry(kind, this.req.method ?? 'GET', false)) {
        const next = this.ctx.table().match(this.host, this.target.match);
        if (next) {
          if (kind === 'connect' || ejected) (this.tried ??= new Set()).add(u);
          return this.send(next);
        }
      }
      const status = kind === 'timeout' ? 504 : 502;
      this.ctx.count(route.service, status);
      rawReply(this.socket, status, status === 504 ? `gateway timeout: ${route.service} did not answer in time\n` : `bad gateway: ${route.service} could not be reached\n`);
    });
    up.end();
  }

  private tunnel(route: CompiledRoute, u: Upstream, ures: http.IncomingMessage, usock: Socket, uhead: Buffer): void {
    const client = this.socket as Socket;
    if (this.clientClosed || client.destroyed || this.ctx.draining) {
      // The proxy started shutting down while the instance was answering: no tunnel opens now.
      u.state.active--;
      usock.destroy();
      if (!client.destroyed) {
        this.ctx.count(route.service, 503);
        rawReply(client, 503, 'shutting down\n');
      }
      return;
    }
    // The instance's half-close must not end our writing to it (net's default for client sockets).
    usock.allowHalfOpen = true;
    let closed = 0;
    const destroyBoth = () => {
      client.destroy();
      usock.destroy();
    };
    const onClose = (s: Socket) => () => {
      // A socket that closed before its peer ended it (reset, error, shutdown) takes the other along;
      // one that finished both ways lets the other finish writing what it has.
      if (!s.readableEnded) destroyBoth();
      // The tunnel is over when both have closed: its in-flight count goes, once.
      if (++closed === 2) u.state.active--;
    };
    client.on('close', onClose(client));
    usock.on('close', onClose(usock));
    client.on('error', destroyBoth);
    usock.on('error', destroyBoth);
    this.ctx.count(route.service, 101);
    this.ctx.trackUpgrade(client);
    const idleMs = this.ctx.opts.tunnelIdleTimeoutMs ?? DEFAULT_TUNNEL_IDLE_MS;
    // Every byte crossing the tunnel is read on one socket and written on the other: each
    // socket's own inactivity timer is the tunnel's.
    client.setNoDelay?.(true);
    usock.setNoDelay(true);
    client.setTimeout?.(idleMs, destroyBoth);
    usock.setTimeout(idleMs, destroyBoth);
    let head = `HTTP/1.1 101 ${ures.statusMessage || 'Switching Protocols'}\r\n`;
    for (let i = 0; i < ures.rawHeaders.length; i += 2) head += `${ures.rawHeaders[i]}: ${ures.rawHeaders[i + 1]}\r\n`;
    client.write(`${head}\r\n`);
    if (uhead.length > 0) client.write(uhead);
    if (this.head.length > 0) usock.write(this.head);
    // pipe() ends the destination when the source ends: that is the half-close passed on.
    usock.pipe(client);
    client.pipe(usock);
  }
}
