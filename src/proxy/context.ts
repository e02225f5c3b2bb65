// What a request exchange needs from the proxy server, and the short answers the proxy gives itself.
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log/logger.js';
import type { HealthStatus } from '../model/service-instance.js';
import type { BalanceMode, EjectionPolicy, Upstream } from './balancer.js';
import type { FailureKind } from './failures.js';
import type { RequestTarget, RoutingTable } from './route-table.js';
import type { TempStore } from './spool.js';
import type { UpstreamPools } from './upstream-pools.js';

export interface ProxyOptions {
  /** Default host of a service without http_host: `<service>.<domain>`. */
  domain: string;
  balance: BalanceMode;
  /** Registry statuses that receive traffic. */
  statuses: HealthStatus[];
  connectTimeoutMs: number;
  responseTimeoutMs: number;
  /** Idle keep-alive time of client connections and of pooled instance connections. */
  idleTimeoutMs: number;
  /** Longest silence between two pieces of a response body (default 60 s). */
  bodyTimeoutMs?: number;
  /** Connections to one instance at most (default 256); further requests wait for one. */
  maxConnectionsPerInstance?: number;
  /** An upgraded connection (WebSocket) quiet both ways this long is closed (default 1 h). */
  tunnelIdleTimeoutMs?: number;
  /** Further attempts on other instances after a connection error, when safe. */
  retries: number;
  ejection?: EjectionPolicy;
  /** Active checks: GET `path` on every instance each `intervalMs`. */
  healthCheck?: { path: string; intervalMs: number };
  /** Peers (normalized CIDRs) whose X-Forwarded-* and Forwarded are believed (X-Real-IP is derived from their X-Forwarded-For); default none. */
  trustedProxies?: readonly string[];
  /** Request line and headers together, in bytes: larger → 431 (default 16384). */
  maxHeaderSize?: number;
  /** Time from a request's first byte to the end of its headers: longer → 408 (default 10000). */
  headerTimeoutMs?: number;
  /** Largest request body, announced or counted: larger → 413 (default 1 GiB; 0: no limit). */
  maxBodySize?: number;
  /** Temp files of request bodies and slow responses together, at most (default 2 GiB; 0: none). */
  maxTempSize?: number;
  log: Logger;
}

export const DEFAULT_MAX_HEADER_SIZE = 16_384;
export const DEFAULT_HEADER_TIMEOUT_MS = 10_000;

/** What the exchanges need from the server. */
export interface ProxyContext {
  readonly opts: ProxyOptions;
  readonly draining: boolean;
  /** The table now (retries resolve against it: the instance they try must still be routed to). */
  table(): RoutingTable;
  pools: UpstreamPools;
  /** Where request bodies and slow responses spill over, within the --max-temp-size budget. */
  readonly temp: TempStore;
  /** A failure of an instance: counted, logged, and for connection failures maybe ejected (returns whether it was). */
  upstreamFailed(u: Upstream, err: Error, kind: FailureKind): boolean;
  count(service: string, status: number): void;
  /** The headers to send upstream for a client request (forwarding headers by the trust in its peer). */
  requestHeaders(req: http.IncomingMessage, target: RequestTarget, upgrade?: boolean): Record<string, string | string[]>;
  trackUpgrade(socket: Duplex): void;
  /** A request ended (answered or abandoned): graceful shutdown waits for these. */
  requestDone(): void;
}

export function reply(res: http.ServerResponse, status: number, body: string, ctx: ProxyContext, service: string, close: boolean): void {
  ctx.count(service, status);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const headers: http.OutgoingHttpHeaders = { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) };
  if (close) headers.connection = 'close';
  res.writeHead(status, headers);
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

/** How long a client gets to read a closing answer on a raw socket and close its side. */
export const LINGER_MS = 2_000;

export function rawReply(socket: Duplex, status: number, body: string): void {
  if (!socket.writable) return void socket.destroy();
  socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  closeSoon(socket);
}

/**
 * After the proxy ended its side of a raw socket: what the client still sends is read and
 * dropped (so its end is seen), and a client that neither reads nor closes is cut after the
 * linger time (a half-open socket would otherwise stay forever).
 */
export function closeSoon(socket: Duplex, ms = LINGER_MS): void {
  socket.resume();
  const timer = setTimeout(() => socket.destroy(), ms);
  socket.once('close', () => clearTimeout(timer));
}
