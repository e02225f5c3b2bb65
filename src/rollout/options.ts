// `harbormaster rollout` flags → a validated plan of how to roll. Every problem is one UsageError
// naming the flag, so the command exits 2 before it touches a container.
import { apiToken } from '../api/api-token.js';
import { redact } from '../log/redact.js';
import os from 'node:os';
import { COMMON_OPTIONS, choiceFlag, intFlag, parse } from '../cli/args.js';
import { parseDuration } from '../render/template-spec.js';
import { parseRegistryUri } from '../registry/uri.js';
import { UsageError } from '../registry/types.js';
import { defaultDockerEndpoint } from '../sources/docker/docker-endpoint.js';
import { isHostname, isIpAddress } from '../util/net.js';
import { printable } from '../model/validate.js';

export const ROLLOUT_OPTIONS = {
  ...COMMON_OPTIONS,
  'compose-service': { type: 'boolean' },
  image: { type: 'string' },
  pull: { type: 'string' },
  batch: { type: 'string' },
  order: { type: 'string' },
  pause: { type: 'string' },
  via: { type: 'string' },
  'via-host': { type: 'string' },
  'health-timeout': { type: 'string' },
  monitor: { type: 'string' },
  'drain-timeout': { type: 'string' },
  'stop-timeout': { type: 'string' },
  keep: { type: 'string' },
  rollback: { type: 'boolean' },
  'failure-action': { type: 'string' },
  'dry-run': { type: 'boolean' },
  json: { type: 'boolean' },
  registry: { type: 'string' },
  api: { type: 'string' },
  'api-token': { type: 'string' },
  'api-token-file': { type: 'string' },
  docker: { type: 'string' },
  hostname: { type: 'string' },
  ip: { type: 'string' },
  internal: { type: 'boolean' },
  explicit: { type: 'boolean' },
  'state-dir': { type: 'string' },
} as const;

export type Order = 'start-first' | 'stop-first';
export type FailureAction = 'pause' | 'rollback';
export type PullPolicy = 'missing' | 'always' | 'never';

export interface RolloutConfig {
  service: string;
  /** Match by the compose service label instead of the registered service name. */
  composeService: boolean;
  image?: string;
  pull: PullPolicy;
  batch: { count: number; percent: boolean };
  /** undefined: start-first unless a container holds a fixed host port or address. */
  order?: Order;
  pauseMs: number;
  via?: { url: URL; host?: string };
  healthTimeoutMs: number;
  monitorMs: number;
  drainMs: number;
  stopTimeoutS: number;
  keep: number;
  rollback: boolean;
  failureAction: FailureAction;
  dryRun: boolean;
  json: boolean;
  /** Where readiness and withdrawal are read: a registry URI, or memory:// = the sidecar's status API. */
  registry: string;
  /** The sidecar's status API (withdrawals; the catalog for memory://). */
  api: URL;
  /** Bearer token of the sidecar's status API, if it has one. */
  apiToken?: string;
  docker: string;
  hostname: string;
  ip?: string;
  internal: boolean;
  explicit: boolean;
  stateDir: string;
  /** The command line, recorded so that another spelling of the same rollout can be told how to resume it. */
  command?: string;
}

export const ROLLOUT_HELP = `Usage: harbormaster rollout <service> [options]

Replaces every container of <service> on this host with one built from the same configuration
(env, labels, ports, volumes, networks, restart policy, healthcheck, resources) and --image, a
batch at a time: start the replacement, wait until it is ready, withdraw the old one from the
registry, let it drain, stop it. Nothing is lost: a replacement that does not become ready is
removed and the old containers keep serving.

Which containers:
  <service>                  the registered service name (same rules as 'register')
  --compose-service          <service> is a docker compose service name instead

What to run:
  --image <image>            image of the replacements (default: the image the containers were
                             created from)
  --pull <missing|always|never>  missing (default): pull the image when it is not present, and
                             pull again a tag that came from a registry, so that a moved tag is
                             used (a failed pull falls back to the local image, with a note);
                             always: pull first; never: the local image only

How:
  --batch <n|n%>             containers replaced at a time (default 1)
  --order <start-first|stop-first>  start the replacement before stopping the old one (default),
                             or after; containers with a fixed host port or address need
                             stop-first (chosen by itself when --order is not given)
  --pause <duration>         wait between batches (default 0)
  --health-timeout <duration>  how long a replacement gets to become ready (default 60s)
  --monitor <duration>       keep watching a ready replacement before the old one goes (default 5s)
  --via <url>                ready also means: this URL answers (status < 500) through the proxy
  --via-host <host>          Host header for --via (default the URL's host)
  --drain-timeout <duration>  time an old container keeps running after its withdrawal
                             (default 10s, 0 = none)
  --stop-timeout <seconds>   SIGTERM → SIGKILL grace when stopping an old container (default 10)
  --keep <n>                 keep the n last replaced containers of each replica, stopped, so
                             that --rollback can put them back (default 0)
  --failure-action <rollback|pause>  on a replacement that does not become ready: roll back the
                             batches already replaced (default), or stop where it is
  --rollback                 put back the kept previous containers the same way (needs --keep
                             on the rollout), or roll back an unfinished rollout
  --dry-run                  print the plan and change nothing (pulls nothing either)
  --json                     one JSON event per line instead of text

Where readiness is read:
  --registry <uri>           registry the sidecar writes to (default memory://: the catalog of
                             the 'run' whose status API is --api)
  --api <url|host:port>      the sidecar's status API, for withdrawals (default http://127.0.0.1:8081)
  --api-token <token>        the sidecar's status API token (also HM_API_TOKEN)
  --api-token-file <file>    the same, read from a file (also HM_API_TOKEN_FILE)
  --docker <uri>             Docker endpoint (default DOCKER_HOST or the local socket)
  --hostname <name>  --ip <addr>  --internal  --explicit   as given to the sidecar ('register')
  --state-dir <dir>          where an unfinished rollout is recorded so that a second run resumes it
                             (default $XDG_STATE_HOME/harbormaster or ~/.local/state/harbormaster)
  -h, --help                 this help

Exit codes: 0 done, 1 a replacement failed (rolled back or paused), 2 refused (bad flags, unknown
service, image not available, Swarm-managed or --rm container, another rollout of the same
containers running), 130 interrupted
(run again to resume, or with --rollback).
`;

/** Flags → config; undefined for --help. */
export function parseRolloutArgs(argv: string[], env: Record<string, string | undefined> = process.env): RolloutConfig | undefined {
  const { values: v, positionals } = parse(argv, ROLLOUT_OPTIONS);
  if (v.help) return undefined;
  if (positionals.length !== 1) throw new UsageError(`rollout takes one service name, got ${positionals.length === 0 ? 'none' : positionals.map((p) => printable(p)).join(' ')}`);
  const service = positionals[0];
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$/.test(service)) throw new UsageError(`service "${printable(service)}": not a service name (letters, digits, - _ .)`);
  const batch = parseBatch(v.batch);
  const image = v.image;
  if (image !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,511}$/.test(image)) throw new UsageError(`--image ${printable(image)}: not an image reference`);
  const registry = v.registry ?? 'memory://';
  parseRegistryUri(registry);
  // The sidecar's --api takes host:port: the same form is accepted here.
  const apiRaw = v.api ?? 'http://127.0.0.1:8081';
  const api = parseHttpUrl('api', apiRaw.includes('://') ? apiRaw : `http://${apiRaw}`, apiRaw);
  let via: RolloutConfig['via'];
  if (v.via !== undefined) via = { url: parseHttpUrl('via', v.via), host: v['via-host'] };
  else if (v['via-host'] !== undefined) throw new UsageError('--via-host: needs --via');
  if (via?.host !== undefined && !/^[A-Za-z0-9.-]+(:\d{1,5})?$/.test(via.host)) throw new UsageError(`--via-host ${printable(via.host)}: not a host name`);
  const hostname = v.hostname ?? os.hostname();
  if (!isHostname(hostname)) throw new UsageError(`--hostname ${printable(hostname)}: not a host name`);
  if (v.ip !== undefined && !isIpAddress(v.ip)) throw new UsageError(`--ip ${printable(v.ip)}: not an IP address`);
  const order = v.order === undefined ? undefined : choiceFlag('order', v.order, ['start-first', 'stop-first'] as const, 'start-first');
  if (v.rollback && image !== undefined) throw new UsageError('--rollback: puts back the previous containers as they were; --image does not apply');
  return {
    service,
    composeService: !!v['compose-service'],
    image,
    pull: choiceFlag('pull', v.pull, ['missing', 'always', 'never'] as const, 'missing'),
    batch,
    order,
    pauseMs: v.pause === undefined ? 0 : parseDuration(`--pause ${printable(v.pause)}`, v.pause, 0, 3_600_000),
    via,
    healthTimeoutMs: v['health-timeout'] === undefined ? 60_000 : parseDuration(`--health-timeout ${printable(v['health-timeout'])}`, v['health-timeout'], 1_000, 3_600_000),
    monitorMs: v.monitor === undefined ? 5_000 : parseDuration(`--monitor ${printable(v.monitor)}`, v.monitor, 0, 3_600_000),
    drainMs: v['drain-timeout'] === undefined ? 10_000 : parseDuration(`--drain-timeout ${printable(v['drain-timeout'])}`, v['drain-timeout'], 0, 3_600_000),
    stopTimeoutS: intFlag('stop-timeout', v['stop-timeout'], 10, 0, 3_600),
    keep: intFlag('keep', v.keep, 0, 0, 100),
    rollback: !!v.rollback,
    failureAction: choiceFlag('failure-action', v['failure-action'], ['rollback', 'pause'] as const, 'rollback'),
    dryRun: !!v['dry-run'],
    json: !!v.json,
    registry,
    api,
    apiToken: apiToken(v, env),
    docker: v.docker ?? defaultDockerEndpoint(env),
    hostname,
    ip: v.ip,
    internal: !!v.internal,
    explicit: !!v.explicit,
    stateDir: v['state-dir'] ?? defaultStateDir(env),
  };
}

function parseBatch(raw: string | undefined): RolloutConfig['batch'] {
  if (raw === undefined) return { count: 1, percent: false };
  const m = /^(\d{1,4})(%?)$/.exec(raw);
  const n = m ? Number(m[1]) : NaN;
  if (!m || n < 1 || (m[2] === '%' && n > 100)) throw new UsageError(`--batch ${printable(raw)}: expected a count (1 or more) or a percentage (1% to 100%)`);
  return { count: n, percent: m[2] === '%' };
}

function parseHttpUrl(flag: string, url: string, raw = url): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(`--${flag} ${printable(raw)}: not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`--${flag} ${printable(raw)}: expected an http:// or https:// URL`);
  if (u.username || u.password) throw new UsageError(`--${flag} ${printable(raw)}: credentials in the URL are not supported`);
  return u;
}

function defaultStateDir(env: Record<string, string | undefined>): string {
  const base = env.XDG_STATE_HOME || `${env.HOME || os.homedir()}/.local/state`;
  return `${base}/harbormaster`;
}

/**
 * The command line recorded in the journal and lock files. Each argument is masked before it is
 * quoted: quoting first would split a token holding a quote ('a'\''b') so that no mask matches it.
 */
export function recordedCommand(argv: string[]): string {
  return ['harbormaster', 'rollout', ...argv.map((raw) => {
    const a = redact(raw);
    return /^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`;
  })].join(' ');
}

/** How many containers one batch replaces, out of `total`. */
export function batchSize(batch: RolloutConfig['batch'], total: number): number {
  if (!batch.percent) return Math.max(1, Math.min(batch.count, total));
  return Math.max(1, Math.min(total, Math.floor((total * batch.count) / 100)));
}
