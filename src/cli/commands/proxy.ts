// `harbormaster proxy <registry-uri>`: the built-in HTTP proxy, routing by Host and path prefix to
// what the registry holds, with the status API beside it.
import { API_TOKEN_HELP, API_TOKEN_OPTIONS, apiAddress, type ApiAddress } from '../../api/api-token.js';
import { parseListenAddress, type ListenAddress } from '../../api/listen-address.js';
import { watchProbe } from '../../api/probes.js';
import { startCatalogApi, type StatusServer } from '../../api/status-server.js';
import { CatalogWatch } from '../../catalog/watch.js';
import { createLogger, LOG_LEVELS, type LogFormat, type Logger, type LogLevel } from '../../log/logger.js';
import { HEALTH_STATUSES, type HealthStatus } from '../../model/service-instance.js';
import { UsageError } from '../../registry/types.js';
import { parseRegistryUri } from '../../registry/uri.js';
import { parseSize, SIZE_HINT } from '../../util/size.js';
import { BALANCE_MODES, type BalanceMode } from '../../proxy/balancer.js';
import { DEFAULT_HEADER_TIMEOUT_MS, DEFAULT_MAX_HEADER_SIZE } from '../../proxy/context.js';
import { DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_TEMP_BYTES } from '../../proxy/spool.js';
import { ProxyServer } from '../../proxy/proxy-server.js';
import { parseTrustedProxies } from '../../proxy/trusted-proxies.js';
import { choiceFlag, COMMON_OPTIONS, intFlag, parse } from '../args.js';
import { nextSignal, onHangup } from '../signals.js';

export const PROXY_FLAGS_HELP = `  --listen <host:port>       proxy address (default 127.0.0.1:8080)
  --domain <domain>          default host of a service: <service>.<domain> (default localhost)
  --balance <mode>           round-robin | least-conn (default round-robin); meta weight per instance
  --connect-timeout <ms>     connecting to an instance (default 5000)
  --response-timeout <ms>    waiting for response headers, and for a free connection (default 60000)
  --idle-timeout <ms>        idle keep-alive connections, client and instance side, and a request
                             body that stops moving (default 60000)
  --body-timeout <ms>        longest silence inside a response body (default 60000)
  --max-connections-per-instance <n>
                             connections to one instance at most; more requests wait for one, up
                             to the response timeout (default 256)
  --tunnel-idle-timeout <ms> WebSocket/upgraded connections quiet both ways this long are closed
                             (default 3600000)
  --retries <n>              other instances tried after a connection error, when safe (default 2);
                             a refused connection uses up none: each instance is tried once
  --health-check <path>      actively GET this path on every instance; failing ones leave rotation
  --health-interval <ms>     period of those checks (default 5000)
  --status <list>            registry statuses that receive traffic (default passing)
  --trusted-proxies <cidrs>  peers whose X-Forwarded-* and Forwarded are kept, comma list of
                             addresses and CIDRs, e.g. '10.0.0.0/8,::1' (default none: always replaced)
  --max-header-size <bytes>  request line and headers together; larger → 431 (default 16384)
  --header-timeout <ms>      from a request's first byte to the end of its headers; longer → 408 (default 10000)
  --max-body-size <bytes>    largest request body, announced or counted; larger → 413 and the
                             connection closes; k, m, g suffixes, e.g. 512m (default 1g); 0 = no limit
  --max-temp-size <bytes>    request bodies and slow responses spill over from memory into temp
                             files in TMPDIR, all together at most this much; beyond, bodies go on
                             streamed and responses at the client's pace (default 2g); 0 = no temp files
  --api <host:port|off>      status API: /v1/services, /v1/health, /metrics (default 127.0.0.1:8081)
${API_TOKEN_HELP}
  --drain-timeout <ms>       on SIGTERM, how long requests in flight may finish (default 30000)`;

export const PROXY_HELP = `Usage: harbormaster proxy <registry-uri> [options]

Routes HTTP requests by Host header and path prefix to the instances the registry holds
(meta http_host, default <service>.<domain>; meta http_path, default /). Unknown host: 404;
a known route with no healthy instance: 503. A path with an empty or dot segment, or an encoded
dot, slash, backslash or NUL: 400. WebSocket upgrades are passed through; other Upgrade requests
go on as plain requests.

Options:
${PROXY_FLAGS_HELP}
  --log-format <json|pretty> (default json)
  --log-level <level>        fatal, error, warn, info, debug, trace (default info)
  -h, --help                 this help
`;

export const PROXY_OPTIONS = {
  listen: { type: 'string' },
  domain: { type: 'string' },
  balance: { type: 'string' },
  'connect-timeout': { type: 'string' },
  'response-timeout': { type: 'string' },
  'idle-timeout': { type: 'string' },
  'body-timeout': { type: 'string' },
  'max-connections-per-instance': { type: 'string' },
  'tunnel-idle-timeout': { type: 'string' },
  retries: { type: 'string' },
  'health-check': { type: 'string' },
  'health-interval': { type: 'string' },
  status: { type: 'string' },
  'trusted-proxies': { type: 'string' },
  'max-header-size': { type: 'string' },
  'header-timeout': { type: 'string' },
  'max-body-size': { type: 'string' },
  'max-temp-size': { type: 'string' },
  api: { type: 'string' },
  ...API_TOKEN_OPTIONS,
  'drain-timeout': { type: 'string' },
} as const;

export interface ProxySettings {
  listen: ListenAddress;
  /** undefined: no status API. */
  api?: ApiAddress;
  domain: string;
  balance: BalanceMode;
  connectTimeoutMs: number;
  responseTimeoutMs: number;
  idleTimeoutMs: number;
  bodyTimeoutMs: number;
  maxConnectionsPerInstance: number;
  tunnelIdleTimeoutMs: number;
  retries: number;
  healthCheck?: { path: string; intervalMs: number };
  statuses: HealthStatus[];
  /** Normalized CIDRs; empty: no peer is trusted. */
  trustedProxies: string[];
  maxHeaderSize: number;
  headerTimeoutMs: number;
  /** Bytes; 0: no limit. */
  maxBodySize: number;
  /** Bytes; 0: no temp files. */
  maxTempSize: number;
  drainTimeoutMs: number;
}

export interface ProxyConfig extends ProxySettings {
  registry: string;
  logFormat: LogFormat;
  logLevel: LogLevel;
}

const DOMAIN = /^(?=.{1,200}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;
const CHECK_PATH = /^\/[\x21-\x7e]{0,1023}$/;
const HOUR = 3_600_000;

type ProxyValues = { [K in Exclude<keyof typeof PROXY_OPTIONS, 'api-insecure'>]?: string } & { 'api-insecure'?: boolean };

/** The proxy flags → validated settings (shared by `proxy` and `run`). */
export function proxySettings(v: ProxyValues, env: Record<string, string | undefined> = process.env): ProxySettings {
  const domain = v.domain ?? 'localhost';
  if (!DOMAIN.test(domain)) throw new UsageError(`--domain ${domain}: not a lowercase DNS name`);
  const statuses = (v.status ?? 'passing').split(',').map((s) => s.trim()).filter(Boolean);
  if (statuses.length === 0) throw new UsageError('--status: expected a comma list of passing, warning, critical');
  for (const s of statuses) if (!(HEALTH_STATUSES as readonly string[]).includes(s)) throw new UsageError(`--status ${v.status}: "${s}" is not one of ${HEALTH_STATUSES.join(', ')}`);
  if (v['health-check'] !== undefined && !CHECK_PATH.test(v['health-check'])) throw new UsageError(`--health-check ${v['health-check']}: expected a URL path starting with / (no spaces)`);
  if (v['health-interval'] !== undefined && v['health-check'] === undefined) throw new UsageError('--health-interval: only meaningful with --health-check <path>');
  const healthInterval = intFlag('health-interval', v['health-interval'], 5_000, 100, HOUR);
  const listen = parseListenAddress('listen', v.listen ?? '127.0.0.1:8080');
  const api = apiAddress(v.api === 'off' ? undefined : parseListenAddress('api', v.api ?? '127.0.0.1:8081'), v, env);
  if (api && api.port !== 0 && api.port === listen.port && api.host === listen.host) throw new UsageError(`--api ${v.api ?? '127.0.0.1:8081'}: the same address as --listen`);
  return {
    listen,
    api,
    domain,
    balance: choiceFlag('balance', v.balance, BALANCE_MODES, 'round-robin'),
    connectTimeoutMs: intFlag('connect-timeout', v['connect-timeout'], 5_000, 1, HOUR),
    responseTimeoutMs: intFlag('response-timeout', v['response-timeout'], 60_000, 1, HOUR),
    idleTimeoutMs: intFlag('idle-timeout', v['idle-timeout'], 60_000, 1, HOUR),
    bodyTimeoutMs: intFlag('body-timeout', v['body-timeout'], 60_000, 1, HOUR),
    maxConnectionsPerInstance: intFlag('max-connections-per-instance', v['max-connections-per-instance'], 256, 1, 65_536),
    tunnelIdleTimeoutMs: intFlag('tunnel-idle-timeout', v['tunnel-idle-timeout'], HOUR, 1, 24 * HOUR),
    retries: intFlag('retries', v.retries, 2, 0, 10),
    healthCheck: v['health-check'] === undefined ? undefined : { path: v['health-check'], intervalMs: healthInterval },
    statuses: [...new Set(statuses)] as HealthStatus[],
    trustedProxies: trustedProxiesFlag(v['trusted-proxies']),
    maxHeaderSize: intFlag('max-header-size', v['max-header-size'], DEFAULT_MAX_HEADER_SIZE, 1_024, 1_048_576),
    headerTimeoutMs: intFlag('header-timeout', v['header-timeout'], DEFAULT_HEADER_TIMEOUT_MS, 100, HOUR),
    maxBodySize: sizeFlag('max-body-size', v['max-body-size'], DEFAULT_MAX_BODY_BYTES),
    maxTempSize: sizeFlag('max-temp-size', v['max-temp-size'], DEFAULT_MAX_TEMP_BYTES),
    drainTimeoutMs: intFlag('drain-timeout', v['drain-timeout'], 30_000, 0, HOUR),
  };
}

/** A size as nginx writes one (512m); 0 allowed. */
function sizeFlag(name: string, raw: string | undefined, def: number): number {
  if (raw === undefined) return def;
  const n = parseSize(raw);
  if (n === undefined) throw new UsageError(`--${name} ${raw}: ${SIZE_HINT}`);
  return n;
}

function trustedProxiesFlag(raw: string | undefined): string[] {
  if (raw === undefined) return [];
  try {
    return parseTrustedProxies(raw);
  } catch (err) {
    throw new UsageError(`--trusted-proxies ${raw}: ${(err as Error).message}`);
  }
}

/** Flags → validated config; throws UsageError naming the flag. Returns undefined for --help. */
export function parseProxyArgs(argv: string[]): ProxyConfig | undefined {
  const { values: v, positionals } = parse(argv, { ...COMMON_OPTIONS, ...PROXY_OPTIONS });
  if (v.help) return undefined;
  if (positionals.length !== 1) throw new UsageError(`proxy takes one registry URI, got ${positionals.length === 0 ? 'none' : positionals.join(' ')}`);
  parseRegistryUri(positionals[0]);
  return {
    registry: positionals[0],
    ...proxySettings(v),
    logFormat: choiceFlag('log-format', v['log-format'], ['json', 'pretty'] as const, 'json'),
    logLevel: choiceFlag('log-level', v['log-level'], LOG_LEVELS, 'info'),
  };
}

/** A running proxy following a catalog watch. */
export interface ProxyHandle {
  proxy: ProxyServer;
  /** Stop following the catalog: the table in place stays as it is. */
  freeze(): void;
}

export async function startProxy(s: ProxySettings, watch: CatalogWatch, log: Logger): Promise<ProxyHandle> {
  const proxy = new ProxyServer({
    domain: s.domain,
    balance: s.balance,
    statuses: s.statuses,
    connectTimeoutMs: s.connectTimeoutMs,
    responseTimeoutMs: s.responseTimeoutMs,
    idleTimeoutMs: s.idleTimeoutMs,
    bodyTimeoutMs: s.bodyTimeoutMs,
    maxConnectionsPerInstance: s.maxConnectionsPerInstance,
    tunnelIdleTimeoutMs: s.tunnelIdleTimeoutMs,
    retries: s.retries,
    healthCheck: s.healthCheck,
    trustedProxies: s.trustedProxies,
    maxHeaderSize: s.maxHeaderSize,
    headerTimeoutMs: s.headerTimeoutMs,
    maxBodySize: s.maxBodySize,
    maxTempSize: s.maxTempSize,
    log,
  });
  await proxy.listen(s.listen);
  const off = watch.subscribe((c) => proxy.setCatalog(c));
  return { proxy, freeze: off };
}

export async function proxyCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const cfg = parseProxyArgs(argv);
  if (!cfg) {
    out(PROXY_HELP);
    return 0;
  }
  const log = createLogger(cfg.logFormat, cfg.logLevel);
  log.info({ event: 'start', registry: cfg.registry }, `harbormaster proxy: following ${cfg.registry}`);
  // Every instance is watched, whatever its status, so that a host whose instances are all unhealthy answers 503 rather than 404.
  const watch = CatalogWatch.forUri(cfg.registry, { statuses: [...HEALTH_STATUSES], log });
  const signal = nextSignal();
  onHangup(log, 'nothing to reload (routes follow the registry); send SIGTERM to stop');
  let handle: ProxyHandle | undefined;
  let api: StatusServer | undefined;
  try {
    handle = await startProxy(cfg, watch, log);
    const proxy = handle.proxy;
    api = await startCatalogApi(cfg.api, watch, { registry: watchProbe(watch, cfg.registry), proxy: () => proxy.health() }, log);
  } catch (err) {
    await handle?.proxy.close(0);
    await watch.stop();
    throw err;
  }
  const sig = await signal;
  log.info({ event: 'stop', signal: sig }, `${sig}: no new connections; requests in flight may finish within ${cfg.drainTimeoutMs} ms`);
  handle.freeze();
  await handle.proxy.close(cfg.drainTimeoutMs);
  await api?.close();
  await watch.stop();
  return 0;
}
