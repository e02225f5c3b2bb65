// The status API every long-running command serves (loopback by default): the catalog it works
// from, the connectivity of its parts, and the Prometheus metrics of the process. A sidecar's
// API also takes containers out of rotation and back (/v1/withdraw, POST and DELETE), the only
// requests that change anything: a web page's request to them is refused. With a bearer token,
// every request must carry it; /v1/health without it answers only its status and {"ok":…}, so
// that a liveness probe, which cannot easily send a header, still works and learns nothing else.
import http from 'node:http';
import { type AddressInfo, isIP } from 'node:net';
import type { Catalog } from '../catalog/catalog.js';
import type { Logger } from '../log/logger.js';
import { redactMetrics, redactOutput } from '../log/redact.js';
import { type ApiAddress, bearerMatches } from './api-token.js';
import { registry } from '../metrics/metrics.js';
import { formatAddress } from './listen-address.js';
import type { CatalogWatch } from '../catalog/watch.js';
import { printable } from '../model/validate.js';
import { parseWithdrawFor, type WithdrawalControl, WithdrawalError } from '../sources/docker/withdrawals.js';

/** One part's view of its own health: `ok` plus whatever it can tell (lastSync, lastError…). */
export interface ComponentHealth {
  ok: boolean;
  lastSync?: Date;
  lastError?: string;
  [detail: string]: unknown;
}

export interface StatusSources {
  /** The catalog this process follows, once it has one. */
  catalog(): Catalog | undefined;
  /** Named probes, e.g. docker, registry, catalog, proxy. */
  components: Record<string, () => ComponentHealth>;
  /** The sidecar's withdrawals; without it there is no /v1/withdraw. */
  withdrawals?: WithdrawalControl;
}

/** A POST body is not read: this much is thrown away, then the client is held off and the connection closed after the answer. */
const MAX_IGNORED_BODY = 64 * 1024;
const WITHDRAW_METHODS = 'GET, HEAD, POST, DELETE';

export interface HealthReport {
  ok: boolean;
  /** The most recent successful sync of any part. */
  lastSync: string | null;
  /** The first part's last error, named by the part. */
  lastError: string | null;
  components: Record<string, ComponentHealth>;
}

export function healthReport(sources: StatusSources): HealthReport {
  const components: Record<string, ComponentHealth> = {};
  let lastSync: Date | undefined;
  let lastError: string | null = null;
  for (const [name, probe] of Object.entries(sources.components)) {
    const c = probe();
    components[name] = c;
    if (c.lastSync && (!lastSync || c.lastSync > lastSync)) lastSync = c.lastSync;
    if (c.lastError && lastError === null) lastError = `${name}: ${c.lastError}`;
  }
  return { ok: Object.values(components).every((c) => c.ok), lastSync: lastSync?.toISOString() ?? null, lastError, components };
}

export class StatusServer {
  private readonly server: http.Server;
  /** Listening on loopback only: a request that changes something must name the host by address or as localhost. */
  private loopback = true;
  private token?: string;

  constructor(
    private readonly sources: StatusSources,
    private readonly log: Logger,
  ) {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 5_000;
  }

  async listen(addr: ApiAddress): Promise<ApiAddress> {
    this.token = addr.token;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(new Error(`status API: cannot listen on ${formatAddress(addr)}: ${err.message}`));
      this.server.once('error', onError);
      this.server.listen(addr.port, addr.host, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    const a = this.server.address() as AddressInfo;
    const bound = { host: addr.host, port: a.port };
    this.loopback = isLoopback(a.address);
    const paths = `/v1/services, /v1/health, /metrics${this.sources.withdrawals ? ', /v1/withdraw' : ''}`;
    this.log.info({ event: 'listen', component: 'api', addr: formatAddress(bound) }, `status API on http://${formatAddress(bound)} (${paths})${this.token ? ', bearer token required' : ''}`);
    return bound;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const withdrawals = this.sources.withdrawals;
    if (this.token && !bearerMatches(req.headers.authorization, this.token)) {
      if (path === '/v1/health' && (req.method === 'GET' || req.method === 'HEAD')) {
        const { ok } = healthReport(this.sources);
        return send(res, ok ? 200 : 503, 'application/json', `${JSON.stringify({ ok })}\n`);
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') ignoreBody(req);
      return send(res, 401, 'text/plain; charset=utf-8', 'a bearer token is required (Authorization: Bearer <token>)\n', { 'www-authenticate': 'Bearer realm="harbormaster"' });
    }
    if (path === '/v1/withdraw' && withdrawals) return this.withdraw(req, res, withdrawals);
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain; charset=utf-8', 'only GET and HEAD\n', { allow: 'GET, HEAD' });
    try {
      switch (path) {
        case '/v1/services': {
          const c = this.sources.catalog();
          return send(res, c ? 200 : 503, 'application/json', redactOutput(`${JSON.stringify({ complete: !!c, services: c?.services ?? [] }, null, 2)}\n`));
        }
        case '/v1/health': {
          const h = healthReport(this.sources);
          return send(res, h.ok ? 200 : 503, 'application/json', redactOutput(`${JSON.stringify(h, null, 2)}\n`));
        }
        case '/metrics':
          return send(res, 200, registry.contentType, redactMetrics(await registry.metrics()));
        default:
          return send(res, 404, 'text/plain; charset=utf-8', 'not found (try /v1/services, /v1/health, /metrics)\n');
      }
    } catch (err) {
      this.log.error({ event: 'error', component: 'api', err: (err as Error).message }, `status API ${path}: ${(err as Error).message}`);
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
      else res.destroy();
    }
  }

  /** GET lists the withdrawals, POST withdraws a container, DELETE re-admits it. */
  private async withdraw(req: http.IncomingMessage, res: http.ServerResponse, control: WithdrawalControl): Promise<void> {
    const text = 'text/plain; charset=utf-8';
    const json = (status: number, body: unknown) => send(res, status, 'application/json', `${JSON.stringify(body, null, 2)}\n`);
    const method = req.method ?? '';
    if (method === 'GET' || method === 'HEAD') return json(200, { withdrawals: control.list() });
    if (method !== 'POST' && method !== 'DELETE') return send(res, 405, text, `only ${WITHDRAW_METHODS} on /v1/withdraw\n`, { allow: WITHDRAW_METHODS });
    ignoreBody(req);
    const refused = browserRequest(req, this.loopback);
    if (refused) {
      this.log.warn({ event: 'refused', component: 'api', method, reason: refused }, `status API: ${method} /v1/withdraw refused: ${refused}`);
      return send(res, 403, text, `${refused}\n`);
    }
    try {
      const q = query(req.url ?? '', method === 'POST' ? ['container', 'for'] : ['container']);
      if (!q.container) throw new WithdrawalError(400, 'container: missing (give ?container=<id, id prefix or name>)');
      if (method === 'POST') return json(200, await control.withdraw(q.container, parseWithdrawFor(q.for)));
      return json(200, await control.readmit(q.container));
    } catch (err) {
      if (err instanceof WithdrawalError) return send(res, err.status, text, `${err.message}\n`);
      this.log.error({ event: 'error', component: 'api', err: (err as Error).message }, `status API ${method} /v1/withdraw: ${(err as Error).message}`);
      if (!res.headersSent) send(res, 500, text, 'internal error\n');
      else res.destroy();
    }
  }
}

/** The query's parameters; an unknown, repeated or undecodable one is a 400 naming it. */
function query(target: string, allowed: readonly string[]): Record<string, string | undefined> {
  const q = target.includes('?') ? target.slice(target.indexOf('?') + 1) : '';
  const out: Record<string, string | undefined> = {};
  for (const part of q.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    let key: string;
    let value: string;
    try {
      key = decodeURIComponent((eq < 0 ? part : part.slice(0, eq)).replace(/\+/g, ' '));
      value = eq < 0 ? '' : decodeURIComponent(part.slice(eq + 1).replace(/\+/g, ' '));
    } catch {
      throw new WithdrawalError(400, `query "${printable(part)}": malformed percent-encoding`);
    }
    if (!allowed.includes(key)) throw new WithdrawalError(400, `${printable(key)}: unknown parameter (expected ${allowed.join(', ')})`);
    if (out[key] !== undefined) throw new WithdrawalError(400, `${key}: given more than once`);
    out[key] = value;
  }
  return out;
}

/**
 * Why a request that changes something looks like a web page's (cross-site request forgery,
 * DNS rebinding), or undefined. Browsers send Origin with every POST and DELETE; other
 * clients (curl, scripts, rollout) do not.
 */
function browserRequest(req: http.IncomingMessage, loopback: boolean): string | undefined {
  if (req.headers.origin !== undefined) return `a request with an Origin header (${printable(req.headers.origin)}) may not change withdrawals`;
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'none') return `a browser's request (Sec-Fetch-Site ${printable(String(site))}) may not change withdrawals`;
  const host = hostOf(req.headers.host);
  if (loopback && host !== undefined && host !== 'localhost' && isIP(host) === 0) {
    return `Host ${printable(host)}: on a loopback API only an IP address or localhost may be named (a DNS name here is how a web page reaches it)`;
  }
  return undefined;
}

/** The host part of a Host header, without port or IPv6 brackets. */
function hostOf(header: string | undefined): string | undefined {
  if (header === undefined || header === '') return undefined;
  const m = /^\[([^\]]*)\](?::\d*)?$/.exec(header);
  if (m) return m[1];
  return header.replace(/:\d*$/, '').toLowerCase();
}

function isLoopback(address: string): boolean {
  return /^127\./.test(address) || address === '::1' || /^::ffff:127\./i.test(address);
}

/** Requests whose body has not all arrived yet. */
const unread = new WeakSet<http.IncomingMessage>();

/** The body is not used: drained up to a bound, never waited for. */
function ignoreBody(req: http.IncomingMessage): void {
  if (req.headers['transfer-encoding'] === undefined && !(Number(req.headers['content-length']) > 0)) return;
  unread.add(req);
  req.on('end', () => unread.delete(req));
  let seen = 0;
  req.on('data', (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > MAX_IGNORED_BODY) req.pause();
  });
  req.on('error', () => undefined);
  req.resume();
}

function send(res: http.ServerResponse, status: number, type: string, body: string, extra: http.OutgoingHttpHeaders = {}): void {
  // A request body still arriving is not read to its end: the connection closes after the answer.
  const close = unread.has(res.req) ? { connection: 'close' } : {};
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...close, ...extra });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

/** Serve the status API over a catalog watch and component probes; undefined address = off. */
export async function startCatalogApi(
  addr: ApiAddress | undefined,
  watch: CatalogWatch,
  components: Record<string, () => ComponentHealth>,
  log: Logger,
  withdrawals?: WithdrawalControl,
): Promise<StatusServer | undefined> {
  if (!addr) return undefined;
  const api = new StatusServer({ catalog: () => watch.catalog, components, withdrawals }, log);
  await api.listen(addr);
  return api;
}
