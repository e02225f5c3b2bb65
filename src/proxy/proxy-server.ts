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
import { rawReply, reply, type ProxyContext, type ProxyOptions } from './context.js';
import { Exchange } from './exchange.js';
import { HealthChecker } from './health-checker.js';
import type { FailureKind } from './failures.js';
import { compileTable, requestHost, requestTarget, RoutingTable, type CompiledRoute, type RequestTarget } from './route-table.js';
import { UpgradeExchange } from './upgrade.js';
import { UpstreamPools } from './upstream-pools.js';

export type { ProxyOptions } from './context.js';

export class ProxyServer implements ProxyContext {
  readonly pools: UpstreamPools;
  private current = RoutingTable.EMPTY;
  private readonly states = new Map<string, InstanceState>();
  private readonly server: http.Server;
  private readonly upgraded = new Set<Duplex>();
  private readonly counters = new Map<string, { inc(): void }>();
  private inFlight = 0;
  private closing?: Promise<number>;
  private address?: ListenAddress;
  private readonly checker?: HealthChecker;
  draining = false;
  /** Routing tables installed so far. */
  swaps = 0;

  constructor(readonly opts: ProxyOptions) {
    this.pools = new UpstreamPools(opts);
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.keepAliveTimeout = opts.idleTimeoutMs;
    this.server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.handleUpgrade(req, socket, head));
    this.server.on('connection', (socket: Socket) => {
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
    this.pools.retain(new Set([...next.upstreams.values()].map((u) => u.origin)));
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
    this.upgraded.add(socket);
    socket.once('close', () => this.upgraded.delete(socket));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const resolved = this.resolve(req);
    if (typeof resolved === 'string') return reply(res, resolved === 'bad-request' ? 400 : 404, resolved === 'bad-request' ? 'bad request: missing or malformed Host header or target\n' : `no route for ${routeText(req)}\n`, this, 'none', this.draining);
    this.inFlight++;
    new Exchange(this, req, res, resolved.host, resolved.target, resolved.route).send(resolved.route);
  }

  private handleUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    if (this.draining) return rawReply(socket, 503, 'shutting down\n');
    const resolved = this.resolve(req);
    if (typeof resolved === 'string') {
      this.count('none', resolved === 'bad-request' ? 400 : 404);
      return rawReply(socket, resolved === 'bad-request' ? 400 : 404, resolved === 'bad-request' ? 'bad request\n' : `no route for ${routeText(req)}\n`);
    }
    new UpgradeExchange(this, req, socket, head, resolved.host, resolved.target).send(resolved.route);
  }

  private resolve(req: http.IncomingMessage): { host: string; target: RequestTarget; route: CompiledRoute } | 'bad-request' | 'no-route' {
    const host = requestHost(req.headers.host);
    const target = requestTarget(req.url, req.method);
    if (host === undefined || target === undefined) return 'bad-request';
    const route = this.current.match(host, target.match);
    return route ? { host, target, route } : 'no-route';
  }
}

function routeText(req: http.IncomingMessage): string {
  const host = requestHost(req.headers.host) ?? '';
  const path = requestTarget(req.url, req.method)?.match ?? '';
  return `${host}${path}`.slice(0, 200);
}

