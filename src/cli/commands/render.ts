// `harbormaster render <registry-uri> --template <src>:<dest>[:<reload-cmd>] ...`: keep proxy
// configurations (nginx, HAProxy, anything) rendered from the registry, checked and reloaded.
import { CatalogWatch } from '../../catalog/watch.js';
import { createLogger, LOG_LEVELS, type LogFormat, type LogLevel } from '../../log/logger.js';
import { printable } from '../../model/validate.js';
import { UsageError } from '../../registry/types.js';
import { parseRegistryUri } from '../../registry/uri.js';
import {
  checkTemplateFiles,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_WAIT,
  loadRenderFile,
  parseDomain,
  parseStatuses,
  parseWithTokens,
  RENDER_WATCH_STATUSES,
  type RenderConfig,
  renderOnce,
  startRender,
  TEMPLATE_OPTIONS,
  templateFlags,
} from '../../render/index.js';
import { choiceFlag, COMMON_OPTIONS } from '../args.js';
import { onHangup, stopOnSignal } from '../signals.js';
import { API_TOKEN_HELP, API_TOKEN_OPTIONS, apiAddress, type ApiAddress } from '../../api/api-token.js';
import { parseListenAddress } from '../../api/listen-address.js';
import { watchProbe } from '../../api/probes.js';
import { startCatalogApi } from '../../api/status-server.js';

export const RENDER_HELP = `Usage: harbormaster render <registry-uri> --template <src>:<dest>[:<reload-cmd>] [options]

Follows the registry and keeps files rendered from Handlebars templates: on every change it
renders, skips identical output, checks the staged file, replaces the destination atomically,
runs the reload command once and confirms that the proxy took the new configuration; a failed
reload puts the previous file back and reloads again.

Options:
  --template <src>:<dest>[:<cmd>]  template, destination and reload command (run with /bin/sh -c;
                                   the command may contain colons); repeat for several templates
  --check <cmd>              check the staged file before it replaces the destination; {{src}}
                             is its path, e.g. 'nginx -t -c {{src}}' (applies to the --template before it)
  --verify <kind>:<path>     confirm the reload: nginx:<pid-file> (a new worker generation),
                             haproxy:<master-socket> (master CLI shows a new worker), or plain
                             (exit status only, the default); applies to the --template before it
  --haproxy-runtime <sock>   HAProxy admin socket, e.g. /run/haproxy/admin.sock (applies to the
                             --template before it): the template gets server slots, instance
                             changes go through the runtime API without a reload; backend/route
                             changes and full backends reload (server state kept in <dest>.state);
                             a failing socket falls back to a reload
  --wait <min>[:<max>]       quiescence: render once changes stopped for min, at the latest max
                             after the first one, and at most once per max (default 500ms:3s)
  --timeout <duration>       limit for every check and reload command and its confirmation (default 30s)
  --status <list>            statuses that make an instance routable (default passing)
  --domain <domain>          default host of a service: <name>.<domain> (default localhost)
  --perms <mode>             file mode of the destinations, e.g. 0644 (default: keep, 0644 for new files)
  --backup                   keep the previous destination as <dest>.bak
  --once                     render when the catalog is first complete, run the commands, exit 0 or 1
  --dry                      print what would be written to stdout; write and run nothing
  --config <file>            JSON or YAML file with templates, wait, timeout, status, domain, registry
  --api <host:port|off>      status API: /v1/services, /v1/health, /metrics (default off)
${API_TOKEN_HELP}
  --log-format <json|pretty> (default json)
  --log-level <level>        fatal, error, warn, info, debug, trace (default info)
  -h, --help                 this help

Shipped templates: templates/nginx.conf.hbs and templates/haproxy.cfg.hbs.
`;

const OPTIONS = {
  ...COMMON_OPTIONS,
  ...TEMPLATE_OPTIONS,
  status: { type: 'string' },
  domain: { type: 'string' },
  once: { type: 'boolean' },
  dry: { type: 'boolean' },
  config: { type: 'string' },
  api: { type: 'string' },
  ...API_TOKEN_OPTIONS,
} as const;

export interface RenderCommandConfig extends RenderConfig {
  registry: string;
  /** Status API address; undefined = off. */
  api?: ApiAddress;
  logFormat: LogFormat;
  logLevel: LogLevel;
}

/** Flags (and --config) → validated config; throws UsageError. Returns undefined for --help. */
export function parseRenderArgs(argv: string[]): RenderCommandConfig | undefined {
  const { values: v, positionals, tokens } = parseWithTokens(argv, OPTIONS);
  if (v.help) return undefined;
  const file = v.config === undefined ? undefined : loadRenderFile(v.config);
  const flags = templateFlags(tokens, v);
  if (positionals.length > 1) throw new UsageError(`render takes one registry URI, got ${positionals.join(' ')}`);
  const registry = positionals[0] ?? file?.registry;
  if (!registry) throw new UsageError('render needs a registry URI (argument, or "registry" in --config)');
  parseRegistryUri(registry);
  const templates = [...(file?.templates ?? []), ...flags.templates];
  if (templates.length === 0) throw new UsageError('render needs at least one --template <src>:<dest>[:<reload-cmd>] (or templates in --config)');
  checkTemplateFiles(templates);
  return {
    registry,
    templates,
    wait: flags.wait ?? file?.wait ?? DEFAULT_WAIT,
    timeoutMs: flags.timeoutMs ?? file?.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    statuses: v.status !== undefined ? parseStatuses(v.status, `--status ${printable(v.status)}`) : file?.statuses ?? ['passing'],
    domain: v.domain !== undefined ? parseDomain(v.domain, `--domain ${printable(v.domain)}`) : file?.domain ?? 'localhost',
    once: !!v.once,
    dry: !!v.dry,
    api: apiAddress(v.api === undefined || v.api === 'off' ? undefined : parseListenAddress('api', v.api), v),
    logFormat: choiceFlag('log-format', v['log-format'], ['json', 'pretty'] as const, 'json'),
    logLevel: choiceFlag('log-level', v['log-level'], LOG_LEVELS, 'info'),
  };
}

export async function renderCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const cfg = parseRenderArgs(argv);
  if (!cfg) {
    out(RENDER_HELP);
    return 0;
  }
  // With --dry the rendered text owns stdout: log lines go to stderr.
  const log = createLogger(cfg.logFormat, cfg.logLevel, cfg.dry ? 2 : 1);
  const watch = CatalogWatch.forUri(cfg.registry, { statuses: RENDER_WATCH_STATUSES, log });
  if (cfg.once) {
    try {
      const r = await renderOnce(cfg, watch, log, { out });
      return r.ok ? 0 : 1;
    } finally {
      await watch.stop();
    }
  }
  const handle = await startRender(cfg, watch, log, { out }).catch(async (err: unknown) => {
    await watch.stop();
    throw err;
  });
  const api = await startCatalogApi(cfg.api, watch, { registry: watchProbe(watch, cfg.registry) }, log).catch(async (err: unknown) => {
    await handle.stop();
    await watch.stop();
    throw err;
  });
  onHangup(log, 'nothing to reload (templates are watched); send SIGTERM to stop');
  return stopOnSignal(
    log,
    'stopping',
    async () => {
      await api?.close();
      await handle.stop();
      await watch.stop();
    },
    cfg.timeoutMs * 2 + 5000,
  );
}
