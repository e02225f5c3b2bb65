// `harbormaster dns <registry-uri>`: Consul's DNS interface over any registry, answered from the
// catalog snapshot (also started by `run`).
import { API_TOKEN_HELP, API_TOKEN_OPTIONS, apiAddress, type ApiAddress } from '../../api/api-token.js';
import { parseListenAddress, formatAddress, type ListenAddress } from '../../api/listen-address.js';
import { watchProbe } from '../../api/probes.js';
import { startCatalogApi, type StatusServer } from '../../api/status-server.js';
import { CatalogWatch } from '../../catalog/watch.js';
import { DnsServer } from '../../dns/server.js';
import { createLogger, LOG_LEVELS, type Logger } from '../../log/logger.js';
import { HEALTH_STATUSES, type HealthStatus } from '../../model/service-instance.js';
import { UsageError } from '../../registry/types.js';
import { parseRegistryUri } from '../../registry/uri.js';
import { isIpAddress } from '../../util/net.js';
import { RESERVED_DATACENTERS } from '../../dns/names.js';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { choiceFlag, COMMON_OPTIONS, intFlag, parse } from '../args.js';
import { nextSignal, onHangup } from '../signals.js';

export const DNS_FLAGS_HELP = `  --datacenter <name>        datacenter name accepted in names, <service>.service.<dc>.<domain> (default dc1;
                             not service, node, addr, query, connect, ingress, virtual)
  --dns-ttl <s>              TTL of answers and of negative answers (default 0, as Consul; 5 is a sensible choice)
  --recursor <ip:port>       forward names outside the domain there (default: refuse them); not this
                             server's own address. With a listen address others reach, this makes an
                             open resolver for them`;

export const DNS_HELP = `Usage: harbormaster dns <registry-uri> [options]

Answers DNS questions about the services the registry holds, with Consul's names, over UDP and TCP:
  <service>.service.<domain>              A / AAAA of the instances, SRV (targets in the additional
                                          section), TXT (meta as key=value)
  <tag>.[<tag>.]<service>.service.<domain>  only instances with every tag named
  _<service>._<tag|tcp|udp>.service.<domain>  RFC 2782 SRV form (_tcp: no filter; _udp: udp instances)
  <host>.node.<domain>                    addresses of a registering host
Unknown names: NXDOMAIN; a known service with no instance to answer: NOERROR with no record;
names outside the domain: REFUSED (or forwarded with --recursor); before the first catalog
snapshot: SERVFAIL.

Options:
  --listen <host:port>       DNS address, UDP and TCP (default 127.0.0.1:8600)
  --domain <domain>          domain answered (default consul)
${DNS_FLAGS_HELP}
  --status <list>            instance statuses answered (default passing; Consul's own default, with
                             only_passing off, is passing,warning)
  --api <host:port|off>      status API: /v1/services, /v1/health, /metrics (default off)
${API_TOKEN_HELP}
  --log-format <json|pretty> (default json)
  --log-level <level>        fatal, error, warn, info, debug, trace (default info)
  -h, --help                 this help
`;

export const DNS_OPTIONS = {
  listen: { type: 'string' },
  domain: { type: 'string' },
  datacenter: { type: 'string' },
  'dns-ttl': { type: 'string' },
  recursor: { type: 'string' },
  status: { type: 'string' },
  api: { type: 'string' },
  ...API_TOKEN_OPTIONS,
} as const;

export interface DnsSettings {
  listen: ListenAddress;
  domain: string;
  datacenter: string;
  ttl: number;
  statuses: HealthStatus[];
  recursor?: ListenAddress;
}

const DNS_NAME = /^(?=.{1,200}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** Values of the DNS flags → settings; `names` maps each setting to its flag (they differ in `run`). */
export function dnsSettings(
  v: { listen?: string; domain?: string; datacenter?: string; 'dns-ttl'?: string; recursor?: string; status?: string },
  names: { listen: string; domain: string } = { listen: 'listen', domain: 'domain' },
): DnsSettings {
  const domain = (v.domain ?? 'consul').toLowerCase().replace(/\.$/, '');
  if (!DNS_NAME.test(domain)) throw new UsageError(`--${names.domain} ${v.domain}: not a DNS name`);
  const datacenter = (v.datacenter ?? 'dc1').toLowerCase();
  if (!LABEL.test(datacenter)) throw new UsageError(`--datacenter ${v.datacenter}: not a DNS label (letters, digits, -)`);
  if (RESERVED_DATACENTERS.includes(datacenter)) throw new UsageError(`--datacenter ${v.datacenter}: a type label of DNS names (${RESERVED_DATACENTERS.join(', ')}) would make names ambiguous`);
  const listen = parseListenAddress(names.listen, v.listen ?? '127.0.0.1:8600');
  let recursor: ListenAddress | undefined;
  if (v.recursor !== undefined) {
    recursor = parseListenAddress('recursor', v.recursor);
    if (!isIpAddress(recursor.host) || recursor.port === 0) throw new UsageError(`--recursor ${v.recursor}: expected ip:port of a DNS server, e.g. 127.0.0.53:53`);
    if (isOwnAddress(recursor, listen)) throw new UsageError(`--recursor ${v.recursor}: that is this server's own --${names.listen} address; it would forward questions to itself`);
  }
  return {
    listen,
    domain,
    datacenter,
    ttl: intFlag('dns-ttl', v['dns-ttl'], 0, 0, 86_400),
    statuses: statusesFlag(v.status),
    recursor,
  };
}

/** Whether a recursor at `r` would be this server listening at `listen` (same port; the same host, any loopback or unspecified address, or an address of this host when listening on all). */
export function isOwnAddress(r: ListenAddress, listen: ListenAddress): boolean {
  if (r.port !== listen.port) return false;
  const norm = (h: string) => h.toLowerCase().replace(/^\[|\]$/g, '').replace(/^::ffff:/, '');
  const rh = norm(r.host);
  const lh = norm(listen.host);
  if (rh === lh) return true;
  const local = (h: string) => isLoopbackOrUnspecified(h) || h === 'localhost';
  if (local(rh) && local(lh)) return true;
  if (isUnspecified(lh)) {
    const mine = Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => norm(i.address)));
    return local(rh) || mine.includes(rh);
  }
  return false;
}

function isUnspecified(h: string): boolean {
  return h === '0.0.0.0' || (isIP(h) === 6 && /^[0:]+$/.test(h));
}

function isLoopbackOrUnspecified(h: string): boolean {
  if (isUnspecified(h)) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return isIP(h) === 6 && /^(?:0{0,4}:){2,7}0{0,3}1$/.test(h);
}

function statusesFlag(raw: string | undefined): HealthStatus[] {
  const list = (raw ?? 'passing').split(',').map((s) => s.trim()).filter(Boolean);
  if (list.length === 0) throw new UsageError('--status: expected a comma list of passing, warning, critical');
  for (const s of list) if (!(HEALTH_STATUSES as readonly string[]).includes(s)) throw new UsageError(`--status ${raw}: "${s}" is not one of ${HEALTH_STATUSES.join(', ')}`);
  return [...new Set(list)] as HealthStatus[];
}

export interface DnsConfig extends DnsSettings {
  registry: string;
  api?: ApiAddress;
  logFormat: 'json' | 'pretty';
  logLevel: (typeof LOG_LEVELS)[number];
}

/** Flags → validated config; throws UsageError naming the flag. Returns undefined for --help. */
export function parseDnsArgs(argv: string[]): DnsConfig | undefined {
  const { values: v, positionals } = parse(argv, { ...COMMON_OPTIONS, ...DNS_OPTIONS });
  if (v.help) return undefined;
  if (positionals.length !== 1) throw new UsageError(`dns takes one registry URI, got ${positionals.length === 0 ? 'none' : positionals.join(' ')}`);
  parseRegistryUri(positionals[0]);
  const s = dnsSettings(v);
  const api = apiAddress(v.api === undefined || v.api === 'off' ? undefined : parseListenAddress('api', v.api), v);
  return {
    registry: positionals[0],
    ...s,
    api,
    logFormat: choiceFlag('log-format', v['log-format'], ['json', 'pretty'] as const, 'json'),
    logLevel: choiceFlag('log-level', v['log-level'], LOG_LEVELS, 'info'),
  };
}

/** A DNS server answering from a catalog watch; the watch must carry every status (known vs. unhealthy). */
export async function startDns(s: DnsSettings, watch: CatalogWatch, log: Logger): Promise<{ server: DnsServer; address: ListenAddress; stop(): Promise<void> }> {
  const server = new DnsServer({ domain: s.domain, datacenter: s.datacenter, ttl: s.ttl, statuses: s.statuses, recursor: s.recursor, log });
  const address = await server.listen(s.listen);
  const off = watch.subscribe((c) => server.setCatalog(c));
  return {
    server,
    address,
    stop: async () => {
      off();
      await server.close();
    },
  };
}

export async function dnsCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const cfg = parseDnsArgs(argv);
  if (!cfg) {
    out(DNS_HELP);
    return 0;
  }
  const log = createLogger(cfg.logFormat, cfg.logLevel);
  // Every status is watched: a service whose instances are all unhealthy is known (NOERROR), not unknown (NXDOMAIN).
  const watch = CatalogWatch.forUri(cfg.registry, { statuses: [...HEALTH_STATUSES], log });
  const signal = nextSignal();
  onHangup(log, 'nothing to reload (answers follow the registry); send SIGTERM to stop');
  let dns: Awaited<ReturnType<typeof startDns>> | undefined;
  let api: StatusServer | undefined;
  try {
    dns = await startDns(cfg, watch, log);
    const server = dns.server;
    api = await startCatalogApi(cfg.api, watch, { registry: watchProbe(watch, cfg.registry), dns: () => server.health() }, log);
  } catch (err) {
    await dns?.stop();
    await watch.stop();
    throw err;
  }
  log.info(
    { event: 'ready', registry: cfg.registry, dns: formatAddress(dns.address), domain: cfg.domain },
    `harbormaster dns: ${cfg.registry} → ${cfg.domain} on ${formatAddress(dns.address)} (UDP and TCP)`,
  );
  const sig = await signal;
  log.info({ event: 'stop', signal: sig }, `${sig}: stopping`);
  await dns.stop();
  await api?.close();
  await watch.stop();
  return 0;
}
