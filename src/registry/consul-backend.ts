// Consul through its local agent's HTTP API. Each instance is an agent service; with a TTL, a
// heartbeat TTL check that harbormaster passes every round, with DeregisterCriticalServiceAfter,
// so a dead host's services turn critical and then vanish. A container's own state (critical
// under --deregister on-success) lives in a separate status check that is never reaped, so a
// failed container stays listed as critical for as long as its host is alive.
// The read side (catalog watches) uses the `consul` package's blocking-query helper.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import Consul from 'consul';
import type { HealthStatus, ServiceInstance } from '../model/service-instance.js';
import { compareInstances, OWN_META_KEYS } from '../model/service-instance.js';
import { type ConsulCheckBody, consulCheck } from './consul-check.js';
import { ConsulHttp, ConsulHttpError } from './consul-http.js';
import { instanceDigest } from './digest.js';
import { eachLimited } from './each.js';
import type { BackendOptions, HeartbeatResult, InstanceRef, OwnRecord, RegistryBackend } from './types.js';

const [HOST_META, DIGEST_META] = OWN_META_KEYS;
const REQUEST_TIMEOUT_MS = 8_000;
/** A status check never expires by itself: only a new registration changes it. */
const STATUS_CHECK_TTL = '87600h';
/** Consul reaps critical services no sooner than one minute. */
const MIN_DEREGISTER_S = 60;

export interface ConsulTarget {
  host: string;
  port: number;
  secure: boolean;
}

type Env = Record<string, string | undefined>;

export function ttlCheckId(serviceId: string): string {
  return `harbormaster-ttl:${serviceId}`;
}

/** The SERVICE_CHECK_* check keeps the ID Consul gives a service's own check, as registrator's did,
 *  so that `PUT /v1/agent/check/pass/service:<id>` works for SERVICE_CHECK_TTL users. */
export function userCheckId(serviceId: string): string {
  return `service:${serviceId}`;
}

/** Carries a non-passing container state (critical after a failure under on-success). */
export function statusCheckId(serviceId: string): string {
  return `harbormaster-status:${serviceId}`;
}

export function consulDescription(t: ConsulTarget): string {
  return `${t.secure ? 'consul-tls' : 'consul'}://${t.host}:${t.port}`;
}

/** A client for the agent at `target`, with ACL token and TLS material from the CONSUL_* env. */
export function consulClient(target: ConsulTarget, env: Env = process.env): Consul {
  const token = env.CONSUL_HTTP_TOKEN;
  let agent: https.Agent | undefined;
  if (target.secure) {
    const read = (name: string) => {
      const file = env[name];
      if (!file) return undefined;
      try {
        return readFileSync(file);
      } catch (err) {
        throw new Error(`${name}=${file}: ${(err as Error).message}`);
      }
    };
    agent = new https.Agent({ keepAlive: true, ca: read('CONSUL_CACERT'), cert: read('CONSUL_CLIENT_CERT'), key: read('CONSUL_CLIENT_KEY') });
  }
  return new Consul({
    host: target.host.replace(/^\[|\]$/g, ''),
    port: target.port,
    secure: target.secure,
    ...(agent ? { agent } : {}),
    // `timeout` is honoured by the client though its typings omit it.
    defaults: { timeout: REQUEST_TIMEOUT_MS, ...(token ? { token } : {}) } as Record<string, unknown>,
  });
}

export interface AgentService {
  ID: string;
  Service: string;
  Tags?: string[] | null;
  Meta?: Record<string, string> | null;
  Address: string;
  Port: number;
}

export interface HealthEntry {
  Node: { Node: string; Address: string };
  Service: AgentService;
  Checks: Array<{ Status: string }>;
}

/** The worst status among an entry's checks (node and service checks). */
export function worstStatus(statuses: string[]): HealthStatus {
  if (statuses.includes('critical')) return 'critical';
  if (statuses.includes('warning')) return 'warning';
  return 'passing';
}

export function instanceFromConsul(s: AgentService, status: HealthStatus, nodeAddress: string): ServiceInstance {
  const meta = { ...(s.Meta ?? {}) };
  const host = meta[HOST_META] ?? '';
  for (const k of OWN_META_KEYS) delete meta[k];
  const tags = s.Tags ?? [];
  return {
    id: s.ID,
    name: s.Service,
    address: s.Address || nodeAddress,
    port: s.Port,
    protocol: tags.includes('udp') ? 'udp' : 'tcp',
    tags,
    meta,
    host,
    status,
  };
}

export class ConsulBackend implements RegistryBackend {
  readonly description: string;
  private readonly consul: Consul;
  private readonly http: ConsulHttp;
  private readonly ttl: number;

  constructor(target: ConsulTarget, opts: BackendOptions, env: Env = process.env) {
    this.description = consulDescription(target);
    this.ttl = opts.ttl;
    this.consul = consulClient(target, env);
    this.http = new ConsulHttp(target, env, REQUEST_TIMEOUT_MS);
  }

  /** Any answer means reachable: an ACL or rate-limit refusal is not an outage of the network. */
  async ping(): Promise<void> {
    try {
      await this.http.call('GET', '/status/leader');
    } catch (err) {
      if (!(err instanceof ConsulHttpError)) throw err;
    }
  }

  /** The TTL shapes the heartbeat check, so a changed --ttl registers again. */
  digest(s: ServiceInstance): string {
    return instanceDigest(s, `consul ttl=${this.ttl}`);
  }

  async register(s: ServiceInstance): Promise<void> {
    const checks: ConsulCheckBody[] = [];
    // A failed container (on-success) has nothing left to check, and a critical user check with
    // DeregisterCriticalServiceAfter would have Consul reap what the user asked to keep.
    if (s.check && s.status === 'passing') checks.push({ ...consulCheck(s.check), CheckID: userCheckId(s.id) });
    if (this.ttl > 0) {
      // The host's heartbeat: critical (then reaped) only when this host stops passing it.
      checks.push({
        CheckID: ttlCheckId(s.id),
        Name: 'harbormaster heartbeat',
        TTL: `${this.ttl}s`,
        Status: 'passing',
        DeregisterCriticalServiceAfter: `${Math.max(MIN_DEREGISTER_S, this.ttl * 2)}s`,
      });
    }
    if (s.status !== 'passing') {
      checks.push({ CheckID: statusCheckId(s.id), Name: 'harbormaster container status', TTL: STATUS_CHECK_TTL, Status: s.status });
    }
    await this.http.call('PUT', '/agent/service/register', {
      ID: s.id,
      Name: s.name,
      Address: s.address,
      Port: s.port,
      Tags: s.tags,
      Meta: { ...s.meta, [HOST_META]: s.host, [DIGEST_META]: this.digest(s) },
      Checks: checks,
    });
  }

  async deregister(ref: InstanceRef): Promise<void> {
    try {
      await this.http.call('PUT', `/agent/service/deregister/${encodeURIComponent(ref.id)}`);
    } catch (err) {
      if (!isUnknown(err)) throw err;
    }
  }

  /** One pass per TTL check, 16 at a time; the round ends early if aborted or the agent stops answering. */
  async heartbeat(refs: InstanceRef[], signal?: AbortSignal): Promise<HeartbeatResult> {
    if (this.ttl <= 0) return { lost: [] };
    const lost: string[] = [];
    let failure: unknown;
    let unreachable = false;
    await eachLimited(
      refs,
      16,
      async (ref) => {
        try {
          await this.http.call('PUT', `/agent/check/pass/${encodeURIComponent(ttlCheckId(ref.id))}`, undefined, signal);
        } catch (err) {
          // An unknown check: the agent lost it (restart, reaped); register again.
          if (isUnknown(err)) lost.push(ref.id);
          else {
            failure ??= err;
            if (!(err instanceof ConsulHttpError)) unreachable = true;
          }
        }
      },
      () => unreachable || !!signal?.aborted,
    );
    return failure === undefined ? { lost } : { lost, error: failure };
  }

  async list(): Promise<ServiceInstance[]> {
    const names = Object.keys((await this.consul.catalog.service.list()) as Record<string, string[]>).filter((n) => n !== 'consul');
    const out: ServiceInstance[] = [];
    for (const name of names) {
      const entries = (await this.consul.health.service({ service: name })) as HealthEntry[];
      for (const e of entries) out.push(instanceFromConsul(e.Service, worstStatus(e.Checks.map((c) => c.Status)), e.Node.Address));
    }
    return out.sort(compareInstances);
  }

  /** This host's services on the local agent only (a filtered read), with whether their heartbeat check exists. */
  async listOwn(host: string): Promise<OwnRecord[]> {
    const filter = encodeURIComponent(`Meta.${HOST_META} == ${JSON.stringify(host)}`);
    const services = (await this.http.call<Record<string, AgentService> | undefined>('GET', `/agent/services?filter=${filter}`)) ?? {};
    let checks: Set<string> | undefined;
    if (this.ttl > 0) {
      const nameFilter = encodeURIComponent('Name == "harbormaster heartbeat"');
      checks = new Set(Object.keys((await this.http.call<Record<string, unknown> | undefined>('GET', `/agent/checks?filter=${nameFilter}`)) ?? {}));
    }
    return Object.values(services)
      .filter((s) => s.Meta?.[HOST_META] === host)
      .map((s) => ({ id: s.ID, name: s.Service, digest: s.Meta?.[DIGEST_META] ?? '', renew: checks ? !checks.has(ttlCheckId(s.ID)) : false }));
  }

  async close(): Promise<void> {
    this.consul.destroy();
    await this.http.close();
  }
}

/**
 * Consul's answers for a service or check it does not hold: 404 in recent versions; 1.8 answers a
 * pass of an unknown check with 500 `CheckID "…" does not have associated TTL` (and a deregister
 * of an unknown service with 200). Only these: a 403 "ACL not found" is a refusal, not an absence.
 */
export function isUnknown(err: unknown): boolean {
  if (!(err instanceof ConsulHttpError)) return false;
  if (err.status === 404) return true;
  return err.status === 500 && /: 500 (CheckID "[^"]*" does not have associated TTL|Unknown (service|check) ID)/i.test(err.message);
}
