// `harbormaster run`: the whole thing on one host in one process. The registrator watches the
// local Docker into a registry (the embedded memory:// one unless --registry names another), the
// built-in proxy routes to what that registry holds, and the status API reports on all of it.
import { watchProbe } from '../../api/probes.js';
import { CatalogWatch } from '../../catalog/watch.js';
import { createLogger } from '../../log/logger.js';
import { HEALTH_STATUSES } from '../../model/service-instance.js';
import { UsageError } from '../../registry/types.js';
import { formatAddress } from '../../api/listen-address.js';
import { checkTemplateFiles, DEFAULT_TIMEOUT_MS, DEFAULT_WAIT, parseWithTokens, startRender, TEMPLATE_OPTIONS, templateFlags, type RenderConfig, type RenderHandle } from '../../render/index.js';
import type { Options } from '../args.js';
import { PROXY_FLAGS_HELP, PROXY_OPTIONS, proxySettings, startProxy, type ProxyHandle, type ProxySettings } from './proxy.js';
import { parseRegisterArgs, sourceProbes, startRegister, type RegisterConfig, type RegisterHandle } from './register.js';
import { nextSignal, onHangup } from '../signals.js';
import { startCatalogApi, type StatusServer } from '../../api/status-server.js';
import { withdrawalControl } from '../../sources/docker/withdrawals.js';
import type { Logger } from '../../log/logger.js';
import { DNS_FLAGS_HELP, DNS_OPTIONS, dnsSettings, startDns, type DnsSettings } from './dns.js';

type DnsHandle = Awaited<ReturnType<typeof startDns>>;

/**
 * DNS beside the proxy. Its default address is Consul's own DNS port: when that is taken (a Consul
 * agent on this host) and --dns was not given, run goes on without DNS and says so once.
 */
async function startRunDns(s: DnsSettings & { explicit: boolean }, watch: CatalogWatch, log: Logger): Promise<DnsHandle | undefined> {
  try {
    return await startDns(s, watch, log);
  } catch (err) {
    if (s.explicit || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    log.warn({ event: 'dns-off', address: formatAddress(s.listen) }, `DNS not started: ${formatAddress(s.listen)} is in use (a Consul agent?); give --dns <host:port>, or --dns off`);
    return undefined;
  }
}

export const RUN_HELP = `Usage: harbormaster run [options]

Everything on one host: watches the local Docker and registers containers (as 'register' does)
into the embedded registry, routes HTTP to them with the built-in proxy (as 'proxy' does), and
serves the status API. Without a reachable Docker it still starts and keeps retrying.

Options:
  --registry <uri>           registry to use instead of the embedded one (default memory://)
${PROXY_FLAGS_HELP}

DNS (as 'dns' does, from the same catalog; --status applies to it too):
  --dns <host:port|off>      DNS address, UDP and TCP (default 127.0.0.1:8600; when that default is
                             taken, by a Consul agent say, run goes on without DNS and says so)
  --dns-domain <domain>      domain answered (default consul)
${DNS_FLAGS_HELP}

Templates (as for 'render', from the same catalog; --status and --domain apply to them too):
  --template <src>:<dest>[:<cmd>]  --check <cmd>  --verify <kind>:<path>  --wait <min>[:<max>]
  --timeout <duration>  --perms <mode>  --backup  --haproxy-runtime <sock>

Registrator options (as for 'register'):
  --hostname <name>  --ip <addr>  --internal  --explicit  --tags <a,b>  --ttl <s>  --ttl-refresh <s>
  --resync <s>  --deregister <always|on-success>  --cleanup  --retry-attempts <n>  --retry-interval <ms>
  --docker <uri|off>  --docker-timeout <duration>  --no-health-gate  --keep-on-exit  --services-dir <dir>

  --log-format <json|pretty> (default json)
  --log-level <level>        fatal, error, warn, info, debug, trace (default info)
  -h, --help                 this help
`;

const RUN_DNS_OPTIONS = {
  dns: { type: 'string' },
  'dns-domain': { type: 'string' },
  datacenter: DNS_OPTIONS.datacenter,
  'dns-ttl': DNS_OPTIONS['dns-ttl'],
  recursor: DNS_OPTIONS.recursor,
} as const satisfies Options;

const RUN_OPTIONS = { registry: { type: 'string' }, help: { type: 'boolean', short: 'h' }, ...PROXY_OPTIONS, ...RUN_DNS_OPTIONS, ...TEMPLATE_OPTIONS } as const satisfies Options;

export interface RunConfig {
  register: RegisterConfig;
  proxy: ProxySettings;
  /** undefined: --dns off. */
  dns?: DnsSettings & { explicit: boolean };
  /** Templates kept rendered from the same catalog, as `render` does. */
  render?: RenderConfig;
}

/** Split argv into run's own flags and the rest, which go to the register parser unchanged. */
function splitArgs(argv: string[], own: Options): { own: string[]; rest: string[] } {
  const out = { own: [] as string[], rest: [] as string[] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.rest.push(...argv.slice(i));
      break;
    }
    const m = /^--([^=]+)(=[\s\S]*)?$/.exec(a);
    const def = m ? own[m[1]] : a === '-h' ? own.help : undefined;
    if (!def) {
      out.rest.push(a);
      continue;
    }
    out.own.push(a);
    if (def.type === 'string' && m?.[2] === undefined && i + 1 < argv.length) out.own.push(argv[++i]);
  }
  return out;
}

/** Flags → validated config; throws UsageError naming the flag. Returns undefined for --help. */
export function parseRunArgs(argv: string[], env: Record<string, string | undefined> = process.env): RunConfig | undefined {
  const split = splitArgs(argv, RUN_OPTIONS);
  const { values: v, positionals, tokens } = parseWithTokens(split.own, RUN_OPTIONS);
  if (v.help) return undefined;
  if (positionals.length > 0) throw new UsageError(`run takes no arguments, got ${positionals.join(' ')}`);
  const registry = v.registry ?? 'memory://';
  let register: RegisterConfig | undefined;
  try {
    register = parseRegisterArgs([...split.rest, registry], env);
  } catch (err) {
    if (err instanceof UsageError && err.message.startsWith('register takes one registry URI')) {
      const extra = split.rest.filter((a) => !a.startsWith('-'));
      throw new UsageError(`run takes no arguments (the registry is --registry <uri>), got ${extra.join(' ')}`);
    }
    throw err;
  }
  if (!register) return undefined;
  const proxy = proxySettings(v, env);
  let dns: RunConfig['dns'];
  if (v.dns === 'off') {
    for (const name of ['dns-domain', 'datacenter', 'dns-ttl', 'recursor'] as const) if (v[name] !== undefined) throw new UsageError(`--${name}: only meaningful without --dns off`);
  } else {
    const s = dnsSettings({ listen: v.dns, domain: v['dns-domain'], datacenter: v.datacenter, 'dns-ttl': v['dns-ttl'], recursor: v.recursor, status: v.status }, { listen: 'dns', domain: 'dns-domain' });
    dns = { ...s, explicit: v.dns !== undefined };
  }
  const flags = templateFlags(tokens, v);
  if (flags.templates.length === 0) {
    for (const name of ['wait', 'timeout', 'perms', 'backup'] as const) if (v[name] !== undefined) throw new UsageError(`--${name}: only meaningful with --template`);
    return { register, proxy, dns };
  }
  checkTemplateFiles(flags.templates);
  const render: RenderConfig = {
    templates: flags.templates,
    wait: flags.wait ?? DEFAULT_WAIT,
    timeoutMs: flags.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    statuses: proxy.statuses,
    domain: proxy.domain,
    once: false,
    dry: false,
  };
  return { register, proxy, dns, render };
}

export async function runCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const cfg = parseRunArgs(argv);
  if (!cfg) {
    out(RUN_HELP);
    return 0;
  }
  const log = createLogger(cfg.register.logFormat, cfg.register.logLevel);
  const registry = cfg.register.registry;
  const watch = CatalogWatch.forUri(registry, { statuses: [...HEALTH_STATUSES], log });
  const signal = nextSignal();
  let proxy: ProxyHandle | undefined;
  let api: StatusServer | undefined;
  let reg: RegisterHandle | undefined;
  let render: RenderHandle | undefined;
  let dns: DnsHandle | undefined;
  try {
    // Listeners first: a port in use is a reason not to start at all.
    proxy = await startProxy(cfg.proxy, watch, log);
    if (cfg.dns) dns = await startRunDns(cfg.dns, watch, log);
    if (cfg.render) render = await startRender(cfg.render, watch, log);
    reg = await startRegister(cfg.register, log);
    const { source, registrar } = reg;
    const p = proxy.proxy;
    const probes = sourceProbes(cfg.register, reg);
    const r = render;
    api = await startCatalogApi(
      cfg.proxy.api,
      watch,
      {
        ...probes,
        catalog: watchProbe(watch, registry),
        proxy: () => p.health(),
        ...(dns ? { dns: () => dns!.server.health() } : {}),
        ...(r ? { render: () => ({ ok: r.last?.ok ?? true, runs: r.runs, written: r.last?.written.length ?? 0 }) } : {}),
      },
      log,
      source ? withdrawalControl(source, registrar) : undefined,
    );
  } catch (err) {
    proxy?.freeze();
    await proxy?.proxy.close(0);
    await dns?.stop();
    await render?.stop();
    await reg?.stop(false);
    await watch.stop();
    throw err;
  }
  const listen = proxy.proxy.health().listen ?? formatAddress(cfg.proxy.listen);
  const dnsAt = dns ? formatAddress(dns.address) : null;
  log.info(
    { event: 'ready', registry, proxy: listen, dns: dnsAt, api: cfg.proxy.api ? formatAddress(cfg.proxy.api) : null },
    `harbormaster run: Docker ${cfg.register.docker} → ${registry} → proxy http://${listen}${dnsAt ? `, DNS ${dnsAt}` : ''}${cfg.proxy.api ? `, status http://${formatAddress(cfg.proxy.api)}` : ''}`,
  );
  const r2 = reg;
  onHangup(log, 'listing Docker, reading the service files and comparing with the registry again', () => r2.resync());
  const sig = await signal;
  log.info(
    { event: 'stop', signal: sig },
    `${sig}: no new connections; requests in flight may finish within ${cfg.proxy.drainTimeoutMs} ms; ${cfg.register.keepOnExit ? 'leaving registrations to their TTL' : "withdrawing this host's services"}`,
  );
  // The table in place keeps serving the requests still arriving on open connections while they drain.
  proxy.freeze();
  await Promise.all([proxy.proxy.close(cfg.proxy.drainTimeoutMs), reg.stop(!cfg.register.keepOnExit), render?.stop(), dns?.stop()]);
  await api?.close();
  await watch.stop();
  return 0;
}
