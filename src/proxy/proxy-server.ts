// The built-in HTTP proxy. The routing table is one reference, read once per request and
// replaced in one assignment when the catalog changes, so a request never sees half a change;
// a request keeps the instance it started on, and pools of instances that left drain.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { formatAddress, type ListenAddress } from '../api/listen-address.js';
import type { Catalog } from '../catalog/catalog.js';
import { metrics } from '../metrics/metrics.js';
import { DEFAULT_EJECTION, InstanceState, recordFailure, recordReset, type Upstream } from './balancer.js';
import { DEFAULT_HEADER_TIMEOUT_MS, DEFAULT_MAX_HEADER_SIZE, rawReply, reply, type ProxyContext, type ProxyOptions } from './context.js';
import { Exchange } from './exchange.js';
import { HealthChecker } from './health-checker.js';
import type { FailureKind } from './failures.js';
import { upstreamRequestHeaders } from './headers.js';
import { hasBody, headWithoutUpgrade, isWebSocketUpgrade, refusedRequest, type Refusal } from './request-checks.js';
import { compileTable, requestHost, requestTarget, RoutingTable, type CompiledRoute, type RequestTarget } from './route-table.js';
import { TrustedProxies } from './trusted-proxies.js';
import { DEFAULT_MAX_TEMP_BYTES, TempStore } from './spool.js';
import { UpgradeExchange } from './upgrade.js';
import { UpstreamPools } from './upstream-pools.js';

export type { ProxyOptions } from './context.js';

export class ProxyServer implements ProxyContext {
  readonly pools: UpstreamPools;
  readonly temp: TempStore;
  private current = RoutingTable.EMPTY;
  private readonly states = new Map<string, InstanceState>();
  private readonly server: http.Server;
  private readonly upgraded = new Set<Duplex>();
  private readonly counters = new Map<string, { inc(): void }>();
  private inFlight = 0;
  private closing?: Promise<number>;
  private address?: ListenAddress;
  private readonly checker?: HealthChecker;
  private readonly trusted: TrustedProxies;
  private readonly counted = new WeakSet<Socket>();
  /** Connections whose unparsable bytes are being answered. */
  private readonly refusing = new WeakSet<Duplex>();
  /** Connections closing after a refusal: requests pipelined behind it are not routed. */
  private readonly refused = new WeakSet<Duplex>();
  /** Connections that have the error listener upgrade handling needs (replays come back on the same socket). */
  private readonly guarded = new WeakSet<Duplex>();
  draining = false;
  /** Routing tables installed so far. */
  swaps = 0;

  constructor(readonly opts: ProxyOptions) {
    this.pools = new UpstreamPools(opts);
    this.temp = new TempStore(opts.maxTempSize ?? DEFAULT_MAX_TEMP_BYTES, opts.log);
    this.trusted = new TrustedProxies(opts.trustedProxies ?? []);
    for (const w of this.trusted.warnings) opts.log.warn({ event: 'trusted-proxies' }, w);
    const headersTimeout = opts.headerTimeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS;
    this.server = http.createServer(
      {
        maxHeaderSize: opts.maxHeaderSize ?? DEFAULT_MAX_HEADER_SIZE,
        // Slow headers get 408 (HAProxy's `timeout http-request`); checked often enough to be near the mark.
        headersTimeout,
        connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(headersTimeout / 4))),
        // No cap on a whole request (Node's default cuts uploads at 300 s): a body that stops moving
        // for the idle timeout is cut instead.
        requestTimeout: 0,
        // A missing Host is refused by resolve() (400, counted, nothing pipelined behind it routed);
        // Node's own 400 would be neither counted nor stop the requests after it.
        requireHostHeader: false,
      },
      (req, res) => this.handle(req, res),
    );
    // Node keeps only the first 1000 headers in req.headers/rawHeaders but frames the request with
    // all of them: a Content-Length or second Host past the cap would be invisible to the checks
    // and to an Upgrade replay. The head's size is bounded by maxHeaderSize instead.
    this.server.maxHeadersCount = 0;
    this.server.keepAliveTimeout = opts.idleTimeoutMs;
    this.server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.handleUpgrade(req, socket as Socket, head));
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.clientError(err, socket));
    this.server.on('connect', (req: http.IncomingMessage, socket: Duplex) => this.refuseRaw(req, socket, 405, `method not allowed: CONNECT`));
    // An Expect other than 100-continue: Node would answer 417 past the counters.
    this.server.on('checkExpectation', (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.refuse(req);
      reply(res, 417, `expectation failed: ${String(req.headers.expect).slice(0, 60)}\n`, this, 'none', true);
    });
    this.server.on('connection', (socket: Socket) => {
      // A request replayed without its Upgrade header comes through here a second time.
      if (this.counted.has(socket)) return;
      this.counted.add(socket);
      metrics.activeConnections.inc();
      socket.once('close', () => metrics.activeConnections.dec());
    });
    if (opts.healthCheck) {
      const { path, intervalMs } = opts.healthCheck;
      this.checker = new HealthChecker(() => this.current.upstreams.values(), { path, intervalMs, timeoutMs: Math.max(500, Math.min(intervalMs, opts.responseTimeoutMs)), log: opts.log });
    }
  }

  /** For the status API. */
  health(): { ok: boolean; listen: string | null; hosts: number; routes: number; instances: number; inFlight: number; tables: number } {
    const t = this.current;
    return {
      ok: this.address !== undefined && !this.draining,
      listen: this.address ? formatAddress(this.address) : null,
      hosts: t.hostCount,
      routes: t.routeCount,
      instances: t.upstreams.size,
      inFlight: this.inFlight,
      tables: this.swaps,
    };
  }

  table(): RoutingTable {
    return this.current;
  }

  /** Requests being answered now. */
  get pending(): number {
    return this.inFlight;
  }

  /** Build the table for a new catalog off to the side, then install it in one assignment. */
  setCatalog(catalog: Catalog): void {
    if (this.closing) return;
    const previous = this.current;
    const next = compileTable(catalog, this.opts, this.states, previous);
    this.current = next;
    this.swaps++;
    // Built from the previous table without dropping an instance (an addition): every pool stays.
    if (next.dropped?.length !== 0) this.pools.retain(new Set([...next.upstreams.values()].map((u) => u.origin)));
    for (const c of next.conflicts) {
      if (previous.conflicts.includes(c)) continue;
      this.opts.log.warn({ event: 'route-conflict', route: c }, `route ${c} is claimed by more than one service; the first by name keeps it`);
    }
    this.opts.log.info(
      { event: 'routes', hosts: next.hostCount, routes: next.routeCount, instances: next.upstreams.size },
      `routing table: ${next.hostCount} hosts, ${next.routeCount} routes, ${next.upstreams.size} instances`,
    );
  }

  async listen(addr: ListenAddress): Promise<ListenAddress> {
    // A TMPDIR that cannot take a temp file is said at once (the proxy works without one).
    await this.temp.check();
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(new Error(`proxy: cannot listen on ${formatAddress(addr)}: ${err.message}`));
      this.server.once('error', onError);
      this.server.listen(addr.port, addr.host, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    this.address = { host: addr.host, port: (this.server.address() as AddressInfo).port };
    this.checker?.start();
    this.opts.log.info({ event: 'listen', component: 'proxy', addr: formatAddress(this.address) }, `proxy on http://${formatAddress(this.address)} (${this.opts.balance}, default domain ${this.opts.domain})`);
    return this.address;
  }

  /**
   * Stop accepting, let requests in flight finish for up to `drainMs`, then close what is left
   * (upgraded connections included). Resolves with the number of requests that were cut.
   */
  close(drainMs: number): Promise<number> {
    this.closing ??= this.shutdown(drainMs);
    return this.closing;
  }

  private async shutdown(drainMs: number): Promise<number> {
    this.draining = true;
    const checked = this.checker?.stop();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const deadline = Date.now() + drainMs;
    while (this.inFlight > 0 && Date.now() < deadline) {
      this.server.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 25));
    }
    const cut = this.inFlight;
    this.server.closeAllConnections();
    for (const s of this.upgraded) s.destroy();
    await closed;
    await checked;
    await this.pools.closeAll(1_000);
    this.opts.log.info({ event: 'stopped', component: 'proxy', cut }, cut ? `proxy stopped; ${cut} requests still running were cut` : 'proxy stopped; every request in flight finished');
    return cut;
  }

  count(service: string, status: number): void {
    const key = `${service} ${status}`;
    let c = this.counters.get(key);
    if (!c) this.counters.set(key, (c = metrics.proxyRequests.labels(service, String(status))));
    c.inc();
  }

  upstreamFailed(u: Upstream, err: Error, kind: FailureKind): boolean {
    metrics.upstreamErrors.inc({ service: u.service });
    const code = (err as { code?: string }).code ?? err.message;
    const where = `instance ${u.id} (${u.address}:${u.port}) of ${u.service}`;
    if (kind === 'timeout' || kind === 'other') {
      this.opts.log.warn({ event: 'upstream-error', service: u.service, id: u.id, addr: `${u.address}:${u.port}`, err: code }, `${where}: ${err.message}`);
      return false;
    }
    const policy = this.opts.ejection ?? DEFAULT_EJECTION;
    const now = Date.now();
    const ms = kind === 'connect' ? recordFailure(u.state, now, policy) : recordReset(u.state, now, policy);
    if (ms > 0) this.opts.log.warn({ event: 'ejected', service: u.service, id: u.id, addr: `${u.address}:${u.port}`, err: code, ms }, `${where} ejected for ${ms} ms after ${code}`);
    else this.opts.log.debug({ event: 'upstream-error', service: u.service, id: u.id, err: code }, `${where}: ${code}`);
    return u.state.ejectedUntil > now;
  }

  requestDone(): void {
    this.inFlight--;
  }

  trackUpgrade(socket: Duplex): void {
    if (this.upgraded.has(socket)) return;
    this.upgraded.add(socket);
    socket.once('close', () => this.upgraded.delete(socket));
  }

  requestHeaders(req: http.IncomingMessage, target: RequestTarget, upgrade = false): Record<string, string | string[]> {
    const socket = req.socket;
    return upstreamRequestHeaders(req.headers, socket.remoteAddress, { trusted: this.trusted.has(socket.remoteAddress), isTrusted: (a) => this.trusted.has(a), port: socket.localPort ?? this.address?.port ?? 0, host: target.authority }, upgrade);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    // Node closes the connection once the refusal before it is written; this one gets no answer.
    if (this.refused.has(req.socket)) return this.dropped();
    const resolved = this.resolve(req);
    if ('status' in resolved) {
      // A refused request may carry a body whose framing cannot be trusted: the connection ends with the answer.
      const close = this.draining || resolved.status !== 404;
      if (close) this.refuse(req);
      return reply(res, resolved.status, `${resolved.message}\n`, this, 'none', close);
    }
    this.inFlight++;
    if (hasBody(req)) this.watchBody(req, res);
    new Exchange(this, req, res, resolved.host, resolved.target, resolved.route).begin();
  }

  /** A request body that stops moving for the idle timeout is cut (nginx's client_body_timeout). */
  private watchBody(req: http.IncomingMessage, res: http.ServerResponse): void {
    req.setTimeout(this.opts.idleTimeoutMs, () => {
      this.opts.log.debug({ event: 'body-timeout', url: req.url?.slice(0, 200) }, `request body idle for ${this.opts.idleTimeoutMs} ms: connection closed`);
      req.socket.destroy();
    });
    // Once the body is in, waiting for the instance is the response timeout's business; a
    // finished response has set the keep-alive timeout already.
    req.once('end', () => {
      if (!res.writableFinished) req.socket.setTimeout(0);
    });
  }

  /**
   * The connection ends with this refusal. Node has often parsed the requests pipelined behind it
   * already (same read) and would hand them over next: they are dropped, never routed.
   */
  private refuse(req: http.IncomingMessage): void {
    this.refused.add(req.socket);
    req.socket.pause();
  }

  private dropped(): void {
    this.opts.log.debug({ event: 'pipelined-after-refusal' }, 'request pipelined after a refused one: dropped');
  }

  /** Answered on the raw socket (CONNECT, upgrades), counted, connection closed. */
  private refuseRaw(req: http.IncomingMessage, socket: Duplex, status: number, message: string): void {
    this.refused.add(socket);
    this.count('none', status);
    rawReply(socket, status, `${message}\n`);
  }

  private handleUpgrade(req: http.IncomingMessage, socket: Socket, head: Buffer): void {
    if (!this.guarded.has(socket)) {
      this.guarded.add(socket);
      socket.on('error', () => socket.destroy());
    }
    if (this.refused.has(socket)) {
      // The socket is out of Node's hands now: it is closed here once the refusal is written.
      this.dropped();
      const close = () => (socket as Socket & { destroySoon(): void }).destroySoon();
      const busy = (socket as Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage;
      return busy && !busy.writableFinished ? void busy.once('finish', close) : close();
    }
    if (!isWebSocketUpgrade(req)) {
      // The replay rebuilds the head from rawHeaders: they must be all the headers there were.
      const cut = refusedRequest(req, this.server.maxHeadersCount ?? 0);
      if (cut?.status === 431) return this.refuseRaw(req, socket, cut.status, cut.message);
      return this.replayWithoutUpgrade(req, socket, head);
    }
    // From here the HTTP server no longer owns the socket: shutdown must close it (answer, handshake or tunnel).
    this.trackUpgrade(socket);
    if (this.draining) return rawReply(socket, 503, 'shutting down\n');
    const resolved = this.resolve(req);
    if ('status' in resolved) return this.refuseRaw(req, socket, resolved.status, resolved.message);
    new UpgradeExchange(this, req, socket, head, resolved.host, resolved.target).send(resolved.route);
  }

  /**
   * Node hands every Upgrade request over as a raw socket. One the proxy does not tunnel is put
   * back in front of the HTTP parser without its Upgrade header, so it is answered as a plain
   * request (what nginx does for an Upgrade it is not configured to pass), keep-alive included.
   */
  private replayWithoutUpgrade(req: http.IncomingMessage, socket: Socket, head: Buffer): void {
    const replay = () => {
      if (socket.destroyed) return;
      // Still answering an earlier pipelined request on this connection: wait for its end.
      const busy = (socket as Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage;
      if (busy && !busy.writableFinished) return void busy.once('finish', () => setImmediate(replay));
      socket.setTimeout(0);
      socket.unshift(head.length > 0 ? Buffer.concat([headWithoutUpgrade(req), head]) : headWithoutUpgrade(req));
      this.server.emit('connection', socket);
    };
    replay();
  }

  /**
   * Node's parser refused the request (or its headers were too slow): answered as Node would
   * (400, 408, 413, 431, then close), and counted. Bytes that fail to parse after a good request
   * on the same connection wait for that request's answer first, as nginx does.
   */
  private clientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    const code = err.code ?? '';
    if (this.refusing.has(socket)) return;
    if (code === 'ECONNRESET' || code === 'EPIPE' || !socket.writable) return void socket.destroy();
    this.refusing.add(socket);
    const status = code === 'HPE_HEADER_OVERFLOW' ? 431 : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW' ? 413 : 400;
    this.count('none', status);
    this.opts.log.debug({ event: 'client-error', status, err: code || err.message }, `request refused: ${status} (${code || err.message})`);
    const answer = () => {
      if (!socket.writable) return void socket.destroy();
      socket.write(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
      socket.destroy();
    };
    const inFlight = (socket as Duplex & { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (!inFlight || inFlight.writableFinished) return answer();
    // The error is inside that request (its body): it cannot be answered any more (Node's own rule).
    if (!inFlight.req.complete) return inFlight.headersSent ? void socket.destroy() : answer();
    socket.pause();
    inFlight.once('close', () => (inFlight.writableFinished ? answer() : socket.destroy()));
  }

  private resolve(req: http.IncomingMessage): { host: string; target: RequestTarget; route: CompiledRoute } | Refusal {
    const refused = refusedRequest(req, this.server.maxHeadersCount ?? 0);
    if (refused) return refused;
    const target = requestTarget(req.url);
    if ('refused' in target) return { status: 400, message: `bad request: ${target.refused}` };
    // Host is required (RFC 9112 §3.2), also beside an absolute-form target, whose authority must
    // then name the same host and port (HAProxy refuses any other; nginx is made to by the template).
    const host = requestHost(req.headers.host);
    if (host === undefined) return { status: 400, message: 'bad request: missing or malformed Host header' };
    if (target.authority !== undefined && !sameAuthority(target.authority, req.headers.host!)) return { status: 400, message: 'bad request: the request target names another host than Host' };
    const route = this.current.match(host, target.match);
    if (route) return { host, target, route };
    // The path as the client wrote it: the decoded one may hold control characters.
    const q = target.forward.indexOf('?');
    return { status: 404, message: `no route for ${`${host}${q < 0 ? target.forward : target.forward.slice(0, q)}`.slice(0, 200)}` };
  }
}

/** An authority without the default port 80, lowercase: `X.test:80` and `x.test` are one. */
function authorityKey(a: string): string {
  const lower = a.toLowerCase();
  return lower.endsWith(':80') ? lower.slice(0, -3) : lower;
}

/** An absolute-form target's authority and the Host header name the same host and port (case and a default :80 aside, as HAProxy compares them). */
export function sameAuthority(authority: string, host: string): boolean {
  return authorityKey(authority) === authorityKey(host);
}
