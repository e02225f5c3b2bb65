// `harbormaster register [options] <registry-uri>`: the sidecar. Flags keep registrator's
// names and meanings so that its users can switch.
import os from 'node:os';
import { createLogger, LOG_LEVELS, type LogFormat, type Logger, type LogLevel } from '../../log/logger.js';
import { API_TOKEN_HELP, API_TOKEN_OPTIONS, apiAddress, type ApiAddress } from '../../api/api-token.js';
import { parseListenAddress } from '../../api/listen-address.js';
import { dockerProbe, registrarProbe } from '../../api/probes.js';
import { StatusServer, type ComponentHealth } from '../../api/status-server.js';
import { buildCatalog } from '../../catalog/catalog.js';
import { HEALTH_STATUSES } from '../../model/service-instance.js';
import { checkText } from '../../model/validate.js';
import { Registrar } from '../../registrar/registrar.js';
import { createBackend } from '../../registry/index.js';
import type { RegistryBackend } from '../../registry/types.js';
import { UsageError } from '../../registry/types.js';
import { parseRegistryUri } from '../../registry/uri.js';
import { checkDockerEndpoint, defaultDockerEndpoint, dockerClient } from '../../sources/docker/docker-endpoint.js';
import { DockerSource } from '../../sources/docker/docker-source.js';
import { FileSource } from '../../sources/files/file-source.js';
import { SinkJoin } from '../../sources/sink-join.js';
import { splitTags } from '../../sources/docker/service-model.js';
import { withdrawalControl } from '../../sources/docker/withdrawals.js';
import { hostAddress, isHostname, isIpAddress } from '../../util/net.js';
import { HeapTrim } from '../../util/heap-trim.js';
import { sleep } from '../../util/time.js';
import { parseTimeout } from '../../render/template-spec.js';
import { choiceFlag, COMMON_OPTIONS, intFlag, parse } from '../args.js';
import { onHangup, stopOnSignal } from '../signals.js';

export const REGISTER_HELP = `Usage: harbormaster register [options] <registry-uri>

Watches Docker and registers every container's published ports in a registry (and, with
--services-dir, the services a folder of definition files describes), with TTL heartbeats so
that registrations vanish by themselves if this host dies.

Registry URIs:
  consul://host:8500            Consul agent (CONSUL_HTTP_TOKEN, consul-tls:// with CONSUL_CACERT,
                                CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY)
  etcd://host:2379[,host:port]/prefix    etcd v3, keys <prefix>/<name>/<id> on a lease
                                (ETCDCTL_USER; etcd-tls:// with ETCDCTL_CACERT, ETCDCTL_CERT,
                                ETCDCTL_KEY)
  etcd2://host:2379/prefix      etcd v2 API, keys with a TTL
  memory://                     in-process registry

Options:
  --hostname <name>          first part of every service ID (default: this host's name)
  --ip <addr>                address for ports published on a wildcard address
  --internal                 register exposed ports with the container's IP
  --explicit                 only containers with SERVICE_NAME / SERVICE_<port>_NAME
  --tags <a,b>               tags added to every service
  --ttl <s>                  registration TTL in seconds, 0 = none (default 30)
  --ttl-refresh <s>          heartbeat period in seconds (default ttl/3)
  --resync <s>               full resync period in seconds, 0 = never (default 60)
  --deregister <mode>        always | on-success (default always)
  --cleanup                  remove this host's registrations no running container backs
  --retry-attempts <n>       registry connection attempts at start, -1 = forever (default -1)
  --retry-interval <ms>      first retry delay, doubled up to 30s (default 2000)
  --docker <uri|off>         Docker endpoint (default DOCKER_HOST, then unix:///var/run/docker.sock);
                             off: no Docker, only --services-dir
  --services-dir <dir>       also register the services defined in the JSON / YAML files of this
                             folder (Consul's service definition shape), following every change
  --docker-timeout <duration>  longest wait for one Docker API answer (default 10s)
  --registry-timeout <duration>  longest wait for one registry operation (default 10s); a later
                             answer is a slow registry (fewer writes at once), none an outage
  --no-health-gate           register containers with a HEALTHCHECK at start, not once healthy
  --keep-on-exit             leave registrations to their TTL on SIGTERM/SIGINT
  --api <host:port|off>      status API: /v1/services, /v1/health, /metrics, and
                             POST/DELETE /v1/withdraw to take a container out of rotation (default off)
${API_TOKEN_HELP}
  --log-format <json|pretty> (default json)
  --log-level <level>        fatal, error, warn, info, debug, trace (default info)
  -h, --help                 this help
`;

const OPTIONS = {
  ...COMMON_OPTIONS,
  hostname: { type: 'string' },
  ip: { type: 'string' },
  internal: { type: 'boolean' },
  explicit: { type: 'boolean' },
  tags: { type: 'string' },
  ttl: { type: 'string' },
  'ttl-refresh': { type: 'string' },
  resync: { type: 'string' },
  deregister: { type: 'string' },
  cleanup: { type: 'boolean' },
  'retry-attempts': { type: 'string' },
  'retry-interval': { type: 'string' },
  docker: { type: 'string' },
  'docker-timeout': { type: 'string' },
  'registry-timeout': { type: 'string' },
  'no-health-gate': { type: 'boolean' },
  'keep-on-exit': { type: 'boolean' },
  api: { type: 'string' },
  ...API_TOKEN_OPTIONS,
  'services-dir': { type: 'string' },
} as const;

export interface RegisterConfig {
  registry: string;
  hostname: string;
  ip?: string;
  internal: boolean;
  explicit: boolean;
  tags: string[];
  ttl: number;
  ttlRefresh: number;
  resync: number;
  deregister: 'always' | 'on-success';
  cleanup: boolean;
  retryAttempts: number;
  retryInterval: number;
  /** The Docker endpoint, or 'off'. */
  docker: string;
  /** Folder of service definition files; undefined = none. */
  servicesDir?: string;
  /** Timeout of one Docker API call, ms. */
  dockerTimeoutMs: number;
  /** Timeout of one registry operation, ms (the registry client's own calls end a fifth sooner). */
  registryTimeoutMs: number;
  healthGate: boolean;
  keepOnExit: boolean;
  /** Status API address and token; undefined = off. */
  api?: ApiAddress;
  logFormat: LogFormat;
  logLevel: LogLevel;
}

/** Flags → validated config; throws UsageError naming the flag. Returns undefined for --help. */
export function parseRegisterArgs(argv: string[], env: Record<string, string | undefined> = process.env): RegisterConfig | undefined {
  const { values: v, positionals } = parse(argv, OPTIONS);
  if (v.help) return undefined;
  if (positionals.length !== 1) throw new UsageError(`register takes one registry URI, got ${positionals.length === 0 ? 'none' : positionals.join(' ')}`);
  parseRegistryUri(positionals[0]);
  const hostname = v.hostname ?? os.hostname();
  if (!isHostname(hostname)) throw new UsageError(`--hostname ${hostname}: not a host name`);
  if (v.ip !== undefined && !isIpAddress(v.ip)) throw new UsageError(`--ip ${v.ip}: not an IP address`);
  const tags = splitTags(v.tags ?? '');
  for (const t of tags) {
    const err = checkText(t, 255);
    if (err) throw new UsageError(`--tags: a tag ${err}`);
  }
  const ttl = intFlag('ttl', v.ttl, 30, 0, 86_400);
  if (ttl === 1) throw new UsageError('--ttl 1: must be 0 (no TTL) or at least 2, so that a heartbeat fits inside it');
  const ttlRefresh = intFlag('ttl-refresh', v['ttl-refresh'], Math.max(1, Math.floor(ttl / 3)), 1, 86_400);
  if (ttl > 0 && ttlRefresh >= ttl) throw new UsageError(`--ttl-refresh ${ttlRefresh}: must be shorter than --ttl ${ttl}`);
  const docker = v.docker ?? defaultDockerEndpoint(env);
  if (docker !== 'off') checkDockerEndpoint(docker);
  const servicesDir = v['services-dir'];
  if (servicesDir !== undefined && (servicesDir === '' || /[\x00-\x1f]/.test(servicesDir))) throw new UsageError(`--services-dir: expected a folder path`);
  if (docker === 'off' && servicesDir === undefined) throw new UsageError('--docker off: nothing would be registered without --services-dir <dir>');
  return {
    registry: positionals[0],
    hostname,
    ip: v.ip,
    internal: !!v.internal,
    explicit: !!v.explicit,
    tags,
    ttl,
    ttlRefresh,
    resync: intFlag('resync', v.resync, 60, 0, 86_400),
    deregister: choiceFlag('deregister', v.deregister, ['always', 'on-success'] as const, 'always'),
    cleanup: !!v.cleanup,
    retryAttempts: intFlag('retry-attempts', v['retry-attempts'], -1, -1),
    retryInterval: intFlag('retry-interval', v['retry-interval'], 2000, 10, 3_600_000),
    docker,
    servicesDir,
    dockerTimeoutMs: v['docker-timeout'] === undefined ? 10_000 : parseTimeout(v['docker-timeout'], `--docker-timeout ${v['docker-timeout']}`),
    registryTimeoutMs: v['registry-timeout'] === undefined ? 10_000 : parseTimeout(v['registry-timeout'], `--registry-timeout ${v['registry-timeout']}`),
    healthGate: !v['no-health-gate'],
    keepOnExit: !!v['keep-on-exit'],
    api: apiAddress(v.api === undefined || v.api === 'off' ? undefined : parseListenAddress('api', v.api), v, env),
    logFormat: choiceFlag('log-format', v['log-format'], ['json', 'pretty'] as const, 'json'),
    logLevel: choiceFlag('log-level', v['log-level'], LOG_LEVELS, 'info'),
  };
}

/** A running registrator: Docker source and / or service files → registrar → backend. */
export interface RegisterHandle {
  registrar: Registrar;
  /** undefined with --docker off. */
  source?: DockerSource;
  files?: FileSource;
  backend: RegistryBackend;
  /** List Docker and read the service files again (SIGHUP). */
  resync(): void;
  stop(withdraw: boolean): Promise<void>;
}

export async function startRegister(cfg: RegisterConfig, log: Logger): Promise<RegisterHandle> {
  const backend = createBackend(cfg.registry, {
    ttl: cfg.ttl,
    host: cfg.hostname,
    warn: (m) => log.warn({ event: 'error' }, m),
    // The call ends by itself before the registrar's watchdog, so that its error says what happened.
    timeoutMs: Math.round(cfg.registryTimeoutMs * 0.8),
  });
  const from = [cfg.docker === 'off' ? undefined : `docker ${cfg.docker}`, cfg.servicesDir === undefined ? undefined : `services ${cfg.servicesDir}`].filter(Boolean).join(' + ');
  log.info(
    { event: 'start', docker: cfg.docker, servicesDir: cfg.servicesDir ?? null, registry: backend.description, hostname: cfg.hostname, ttl: cfg.ttl },
    `harbormaster register: ${from} → registry ${backend.description} (host ${cfg.hostname}, ttl ${cfg.ttl}s)`,
  );
  if (cfg.retryAttempts >= 0) await waitForRegistry(backend, cfg, log);
  const registrar = new Registrar(backend, {
    hostname: cfg.hostname,
    ttlRefreshMs: cfg.ttl > 0 ? cfg.ttlRefresh * 1000 : 0,
    cleanup: cfg.cleanup,
    retryIntervalMs: cfg.retryInterval,
    opTimeoutMs: cfg.registryTimeoutMs,
    // Retry at least every ttl/3 during an outage, so that registrations are renewed before their
    // TTL runs out once the registry answers again.
    maxRetryMs: cfg.ttl > 0 ? Math.min(30_000, Math.max(1000, (cfg.ttl * 1000) / 3)) : 30_000,
    log,
  });
  // With both sources the registrar compares with the registry only once both have listed everything.
  const names = [cfg.docker === 'off' ? undefined : 'docker', cfg.servicesDir === undefined ? undefined : 'files'].filter((n): n is string => !!n);
  const join = new SinkJoin(registrar, names);
  const source =
    cfg.docker === 'off'
      ? undefined
      : new DockerSource({
          docker: dockerClient(cfg.docker),
          endpoint: cfg.docker,
          model: { hostname: cfg.hostname, hostIp: cfg.ip, hostAddress: cfg.ip ?? hostAddress(), internal: cfg.internal, explicit: cfg.explicit, tags: cfg.tags },
          healthGate: cfg.healthGate,
          deregister: cfg.deregister,
          resyncMs: cfg.resync * 1000,
          callTimeoutMs: cfg.dockerTimeoutMs,
          log,
          sink: join.for('docker'),
        });
  const files =
    cfg.servicesDir === undefined
      ? undefined
      : new FileSource({ dir: cfg.servicesDir, hostname: cfg.hostname, hostAddress: cfg.ip ?? hostAddress(), resyncMs: cfg.resync * 1000, log, sink: join.for('files') });
  registrar.start();
  source?.start();
  files?.start();
  const trim = new HeapTrim({
    idle: () => {
      const st = registrar.status;
      return st.pending === 0 && st.retrying === 0;
    },
  });
  trim.start();
  return {
    registrar,
    source,
    files,
    backend,
    resync() {
      void source?.resync().catch(() => undefined);
      void files?.fullRead();
    },
    async stop(withdraw: boolean) {
      trim.stop();
      await Promise.all([source?.stop(), files?.stop()]);
      await registrar.stop(withdraw);
      await backend.close();
    },
  };
}

async function waitForRegistry(backend: RegistryBackend, cfg: RegisterConfig, log: Logger): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await backend.ping();
      return;
    } catch (err) {
      if (attempt >= cfg.retryAttempts) {
        throw new Error(`registry ${backend.description} unreachable after ${attempt + 1} attempts: ${(err as Error).message}`);
      }
      log.warn({ event: 'error', registry: backend.description, err: (err as Error).message }, `registry ${backend.description} unreachable (${(err as Error).message}); attempt ${attempt + 1} of ${cfg.retryAttempts + 1}`);
      await sleep(cfg.retryInterval);
    }
  }
}

export async function registerCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const cfg = parseRegisterArgs(argv);
  if (!cfg) {
    out(REGISTER_HELP);
    return 0;
  }
  const log = createLogger(cfg.logFormat, cfg.logLevel);
  const handle = await startRegister(cfg, log);
  const api = cfg.api ? await startRegisterApi(cfg, cfg.api, handle, log) : undefined;
  const what = cfg.keepOnExit ? 'leaving registrations to their TTL' : "withdrawing this host's services";
  onHangup(log, 'listing Docker, reading the service files and comparing with the registry again', () => handle.resync());
  return stopOnSignal(log, what, async () => {
    await api?.close();
    await handle.stop(!cfg.keepOnExit);
  }, 20_000);
}

/** The status API of a registrator: what this host registered, Docker and registry health. */
async function startRegisterApi(cfg: RegisterConfig, addr: ApiAddress, handle: RegisterHandle, log: Logger): Promise<StatusServer> {
  const api = new StatusServer(
    {
      catalog: () => buildCatalog(handle.registrar.current(), [...HEALTH_STATUSES]),
      components: sourceProbes(cfg, handle),
      withdrawals: handle.source ? withdrawalControl(handle.source, handle.registrar) : undefined,
    },
    log,
  );
  try {
    await api.listen(addr);
  } catch (err) {
    await handle.stop(false);
    throw err;
  }
  return api;
}

/** Health of the registrator's parts: Docker (unless off), the service files (if any), the registry. */
export function sourceProbes(cfg: RegisterConfig, handle: RegisterHandle): Record<string, () => ComponentHealth> {
  const { source, files } = handle;
  return {
    ...(source ? { docker: dockerProbe(source.status, cfg.docker, () => source.withdrawals()) } : {}),
    ...(files ? { files: () => ({ ok: files.status.connected, dir: cfg.servicesDir, ...files.status }) } : {}),
    registry: registrarProbe(handle.registrar, handle.backend.description),
  };
}
