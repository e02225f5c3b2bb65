// The status API every long-running command serves (loopback by default): the catalog it works
// from, the connectivity of its parts, and the Prometheus metrics of the process.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Catalog } from '../catalog/catalog.js';
import type { Logger } from '../log/logger.js';
import { registry } from '../metrics/metrics.js';
import { formatAddress, type ListenAddress } from './listen-address.js';
import type { CatalogWatch } from '../catalog/watch.js';

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
}

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

  constructor(
    private readonly sources: StatusSources,
    private readonly log: Logger,
  ) {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 5_000;
  }

  async listen(addr: ListenAddress): Promise<ListenAddress> {
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
    this.log.info({ event: 'listen', component: 'api', addr: formatAddress(bound) }, `status API on http://${formatAddress(bound)} (/v1/services, /v1/health, /metrics)`);
    return bound;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain; charset=utf-8', 'only GET and HEAD\n', { allow: 'GET, HEAD' });
    const path = (req.url ?? '/').split('?')[0];
    try {
      switch (path) {
        case '/v1/services': {
          const c = this.sources.catalog();
          return send(res, c ? 200 : 503, 'application/json', `${JSON.stringify({ complete: !!c, services: c?.services ?? [] }, null, 2)}\n`);
        }
        case '/v1/health': {
          const h = healthReport(this.sources);
          return send(res, h.ok ? 200 : 503, 'application/json', `${JSON.stringify(h, null, 2)}\n`);
        }
        case '/metrics':
          return send(res, 200, registry.contentType, await registry.metrics());
        default:
          return send(res, 404, 'text/plain; charset=utf-8', 'not found (try /v1/services, /v1/health, /metrics)\n');
      }
    } catch (err) {
      this.log.error({ event: 'error', component: 'api', err: (err as Error).message }, `status API ${path}: ${(err as Error).message}`);
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
      else res.destroy();
    }
  }
}

function send(res: http.ServerResponse, status: number, type: string, body: string, extra: http.OutgoingHttpHeaders = {}): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...extra });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

/** Serve the status API over a catalog watch and component probes; undefined address = off. */
export async function startCatalogApi(
  addr: ListenAddress | undefined,
  watch: CatalogWatch,
  components: Record<string, () => ComponentHealth>,
  log: Logger,
): Promise<StatusServer | undefined> {
  if (!addr) return undefined;
  const api = new StatusServer({ catalog: () => watch.catalog, components }, log);
  await api.listen(addr);
  return api;
}
