// Consul through its local agent's HTTP API. Each instance is an agent service. With a TTL, the
// host registers one heartbeat service (`harbormaster:<host>`, role heartbeat) whose TTL check it
// passes every round, and every instance gets an alias check of it, with
// DeregisterCriticalServiceAfter: one request per round whatever the number of instances (a
// Consul 1.8 agent takes ~50 ms per check update at 2,000 services, so a pass per instance
// cannot keep up), and a dead host's services still turn critical and then vanish. A container's own state (critical
// under --deregister on-success) lives in a separate status check that is never reaped, so a
// failed container stays listed as critical for as long as its host is alive.
// The read side (catalog watches) uses the `consul` package's blocking-query helper.
import https from 'node:https';
import Consul from 'consul';
import type { HealthStatus, ServiceInstance } from '../model/service-instance.js';
import { compareInstances, isReservedId, OWN_META_KEYS } from '../model/service-instance.js';
import { type ConsulCheckBody, consulCheck } from './consul-check.js';
import { ConsulHttp, ConsulHttpError, consulConnection } from './consul-http.js';
import { instanceDigest } from './digest.js';
import { eachLimited } from './each.js';
import { NoAnswerError } from '../util/time.js';
import { type BackendOptions, type HeartbeatResult, type InstanceRef, type OwnRecord, RefusedError, type RegistryBackend, RejectedError } from './types.js';

const [HOST_META, DIGEST_META] = OWN_META_KEYS;
const REQUEST_TIMEOUT_MS = 8_000;
/** Every this many heartbeat rounds, the host's services are read back (one filtered read). */
const VERIFY_EVERY = 6;
/** A status check never expires by itself: only a new registration changes it. */
const STATUS_CHECK_TTL = '87600h';
/** Consul reaps critical services no sooner than one minute. */
const MIN_DEREGISTER_S = 60;
/** A listing of the agent's services waits this much longer per 1,000 services of this host (its cost grows with them). */
const LIST_SCALE_PER = 1_000;
/** Deregistrations at once on shutdown: the agent serializes them (measured plateau 4–16). */
const DEREGISTER_WIDTH = 8;

export interface ConsulTarget {
  host: string;
  port: number;
  secure: boolean;
}

type Env = Record<string, string | undefined>;

/** Each instance's alias of its host's heartbeat. */
export function ttlCheckId(serviceId: string): string {
  return `harbormaster-ttl:${serviceId}`;
}

/** The one service per host whose TTL check the heartbeat passes; never an instance. */
export function heartbeatServiceId(host: string): string {
  return `harbormaster:${host}`;
}

export function heartbeatCheckId(host: string): string {
  return `harbormaster-host:${host}`;
}

/** Meta marking the heartbeat service, so readers skip it. */
export const ROLE_META = 'hm_role';

export function isHeartbeatService(s: { Meta?: Record<string, string> | null }): boolean {
  return s.Meta?.[ROLE_META] === 'heartbeat';
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
  const { token, tls } = consulConnection(target, env);
  const agent = tls ? new https.Agent({ keepAlive: true, ...tls }) : undefined;
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
  private readonly host: string;
  /** The heartbeat service is registered (reset when the agent no longer knows it). */
  private hostReady?: Promise<void>;
  /** Sealed (shutting down): no registration, check or heartbeat service is written any more. */
  private closed = false;
  /**
   * IDs on the agent known to be this host's (registered by this process, or listed as this
   * host's): only an ID not known here is looked up before it is written or withdrawn, so that
   * a SERVICE_ID equal to a service someone else registered on the agent never replaces or
   * deletes it.
   */
  private readonly own = new Set<string>();
  private rounds = 0;
  /** The last look at the cluster found no leader: every round looks again until one is back. */
  private leaderless = false;
  /** Ids given a dying TTL check already (once per process: registering it again would restart its clock). */
  private readonly abandoned = new Set<string>();
  /**
   * Ids whose last registration got no answer: a slow agent may still have applied it. The next
   * write of such an id first reads what the agent holds, and writes nothing when it is already
   * this definition (a registration again would reset its checks and cost the agent as much).
   */
  private readonly unsure = new Set<string>();
  /** The same for the host's heartbeat service. */
  private hostUnsure = false;
  private readonly timeoutMs: number;

  constructor(target: ConsulTarget, opts: BackendOptions, env: Env = process.env) {
    this.description = consulDescription(target);
    this.ttl = opts.ttl;
    this.host = opts.host ?? '';
    this.consul = consulClient(target, env);
    this.timeoutMs = opts.timeoutMs ?? REQUEST_TIMEOUT_MS;
    this.http = new ConsulHttp(target, env, this.timeoutMs);
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
    return instanceDigest(s, `consul ttl=${this.ttl} alias`);
  }

  async register(s: ServiceInstance): Promise<void> {
    if (this.closed) throw new RefusedError(`not registering ${s.id}: shutting down`);
    if (isReservedId(s.id)) throw new RejectedError(`service id "${s.id}" is reserved for a host's heartbeat service; not registered`);
    const host = s.host || this.host;
    if (!this.own.has(s.id) || this.unsure.has(s.id)) {
      const holder = await this.holder(s.id);
      if (holder && this.unsure.has(s.id) && this.isOwn(holder, host) && holder.Meta?.[DIGEST_META] === this.digest(s)) {
        // The write that got no answer was applied after all, exactly as wanted.
        this.unsure.delete(s.id);
        this.own.add(s.id);
        return;
      }
      if (holder && !this.isOwn(holder, host)) {
        const by = holder.Meta?.[HOST_META] ? `by harbormaster of host ${holder.Meta[HOST_META]}` : 'by something other than harbormaster';
        throw new RejectedError(
          `SERVICE_ID "${s.id}" is already the ID of service "${holder.Service}" on the Consul agent, registered ${by}; it is not taken over (choose another SERVICE_ID)`,
        );
      }
    }
    const checks: ConsulCheckBody[] = [];
    // A failed container (on-success) has nothing left to check, and a critical user check with
    // DeregisterCriticalServiceAfter would have Consul reap what the user asked to keep.
    if (s.check && s.status === 'passing') checks.push({ ...consulCheck(s.check), CheckID: userCheckId(s.id) });
    if (this.ttl > 0) {
      // The host's heartbeat: critical (then reaped) only when this host stops passing it.
      await this.ensureHeartbeatService(host);
      checks.push({
        CheckID: ttlCheckId(s.id),
        Name: 'harbormaster heartbeat',
        AliasService: heartbeatServiceId(host),
        Status: 'passing',
        DeregisterCriticalServiceAfter: this.deregisterAfter(),
      });
    }
    if (s.status !== 'passing') {
      checks.push({ CheckID: statusCheckId(s.id), Name: 'harbormaster container status', TTL: STATUS_CHECK_TTL, Status: s.status });
    }
    this.abandoned.delete(s.id);
    // Consul keeps checks a new definition no longer lists unless told to drop them (a failed
    // container's user check, critical with DeregisterCriticalServiceAfter, would get it reaped).
    try {
      await this.http.call('PUT', '/agent/service/register?replace-existing-checks=true', {
        ID: s.id,
        Name: s.name,
        Address: s.address,
        Port: s.port,
        Tags: s.tags,
        Meta: { ...s.meta, [HOST_META]: s.host, [DIGEST_META]: this.digest(s) },
        Checks: checks,
      });
    } catch (err) {
      if (err instanceof NoAnswerError) this.unsure.add(s.id);
      throw err;
    }
    this.unsure.delete(s.id);
    this.own.add(s.id);
  }

  /**
   * Withdraw one of this host's services. An ID not known to be this host's is looked up first:
   * a service under it that is not this host's (a SERVICE_ID collision whose write was refused)
   * is left alone, and so is a host's heartbeat service.
   */
  async deregister(ref: InstanceRef): Promise<void> {
    if (isReservedId(ref.id)) return;
    if (!this.own.has(ref.id)) {
      const holder = await this.holder(ref.id);
      if (!holder || !this.isOwn(holder, this.host)) return;
    }
    await this.remove(ref.id);
    this.own.delete(ref.id);
    this.unsure.delete(ref.id);
  }

  private async remove(id: string): Promise<void> {
    try {
      await this.http.call('PUT', `/agent/service/deregister/${encodeURIComponent(id)}`);
    } catch (err) {
      if (!isUnknown(err)) throw err;
    }
  }

  /** The service the local agent holds under `id`, if any (one read). */
  private async holder(id: string): Promise<AgentService | undefined> {
    try {
      return await this.http.call<AgentService>('GET', `/agent/service/${encodeURIComponent(id)}`);
    } catch (err) {
      if (isUnknown(err)) return undefined;
      throw err;
    }
  }

  /** Registered by harbormaster for `host` (without a host, as a tool writing for others: any harbormaster entry). */
  private isOwn(s: AgentService, host: string): boolean {
    const by = s.Meta?.[HOST_META];
    return by !== undefined && (host === '' || by === host) && !isHeartbeatService(s);
  }

  private deregisterAfter(): string {
    return `${Math.max(MIN_DEREGISTER_S, this.ttl * 2)}s`;
  }

  /**
   * Register the host's heartbeat service once (again after the agent lost it). Its failures are
   * the host's, not an instance's: never a rejection of the instance being registered.
   */
  private ensureHeartbeatService(host: string): Promise<void> {
    if (this.closed) return Promise.reject(new RefusedError('shutting down: the heartbeat service is withdrawn'));
    const register = async () => {
      // The last registration got no answer: a slow agent may have applied it since.
      if (this.hostUnsure && isHeartbeatService((await this.holder(heartbeatServiceId(host))) ?? {})) return;
      try {
        await this.http.call<void>('PUT', '/agent/service/register?replace-existing-checks=true', {
          ID: heartbeatServiceId(host),
          Name: 'harbormaster',
          Tags: ['heartbeat'],
          Meta: { [HOST_META]: host, [ROLE_META]: 'heartbeat' },
          Checks: [{ CheckID: heartbeatCheckId(host), Name: 'harbormaster host heartbeat', TTL: `${this.ttl}s`, Status: 'passing', DeregisterCriticalServiceAfter: this.deregisterAfter() }],
        });
      } catch (err) {
        this.hostUnsure = err instanceof NoAnswerError;
        throw err;
      }
      this.hostUnsure = false;
    };
    const ready: Promise<void> = (this.hostReady ??= register()
      // The agent keeps the status of a check registered again: a heartbeat that lapsed while no
      // harbormaster ran stays critical (and so every instance aliasing it) until it is passed.
      .then(() => this.http.call<void>('PUT', `/agent/check/pass/${encodeURIComponent(heartbeatCheckId(host))}`))
      .catch((err: unknown) => {
        this.hostReady = undefined;
        const why = `registering this host's heartbeat service ${heartbeatServiceId(host)} (the token needs service:write on "harbormaster"): ${(err as Error).message}`;
        throw err instanceof RefusedError || err instanceof RejectedError ? new RefusedError(why, (err as RefusedError).status) : Object.assign(err as Error, { message: why });
      }));
    return ready;
  }

  /**
   * One pass of the host's heartbeat check, whatever the number of instances. Every few rounds
   * (and whenever the agent no longer knows the heartbeat) the host's services are read back, so
   * an instance the agent dropped by itself (reaped, removed by hand) is reported lost.
   */
  async heartbeat(refs: InstanceRef[], signal?: AbortSignal): Promise<HeartbeatResult> {
    if (this.ttl <= 0 || !this.host || this.closed || (!this.hostReady && refs.length === 0)) return { lost: [] };
    await this.ensureHeartbeatService(this.host);
    let verify = ++this.rounds % VERIFY_EVERY === 0;
    try {
      await this.http.call('PUT', `/agent/check/pass/${encodeURIComponent(heartbeatCheckId(this.host))}`, undefined, signal);
    } catch (err) {
      if (!isUnknown(err)) throw err;
      this.hostReady = undefined;
      await this.ensureHeartbeatService(this.host);
      verify = true;
    }
    // The agent takes every write and passes every check by itself, also while the servers have
    // lost their quorum: only the leader tells whether the catalog can take any of it.
    const error = verify || this.leaderless ? await this.leaderProblem(signal) : undefined;
    if (!verify || refs.length === 0) return { lost: [], error };
    const present = new Set((await this.listOwn(this.host)).filter((r) => !r.renew).map((r) => r.id));
    return { lost: refs.filter((r) => !present.has(r.id)).map((r) => r.id), error };
  }

  /** Why the catalog cannot take writes (no cluster leader), or undefined. */
  private async leaderProblem(signal?: AbortSignal): Promise<Error | undefined> {
    let leader: unknown;
    try {
      leader = await this.http.call<unknown>('GET', '/status/leader', undefined, signal);
    } catch (err) {
      this.leaderless = true;
      return err as Error;
    }
    this.leaderless = typeof leader !== 'string' || leader === '';
    if (!this.leaderless) return undefined;
    return new RefusedError(
      `the Consul cluster behind the agent ${this.description} has no leader (quorum lost?): the agent holds this host's registrations and checks, but the catalog takes none of them until a leader is elected`,
    );
  }

  /**
   * A registration nothing wants that another run of this host left (no --cleanup): its alias
   * would follow this run's heartbeat forever, so it gets a TTL check nobody passes and Consul
   * turns it critical, then reaps it, as it would have without this run.
   */
  async abandon(refs: InstanceRef[]): Promise<void> {
    if (this.ttl <= 0 || this.closed) return;
    await eachLimited(refs, 8, async (r) => {
      if (this.abandoned.has(r.id)) return;
      await this.http.call('PUT', '/agent/check/register', {
        ID: ttlCheckId(r.id),
        Name: 'harbormaster heartbeat (left to its TTL)',
        ServiceID: r.id,
        TTL: `${this.ttl}s`,
        Status: 'critical',
        DeregisterCriticalServiceAfter: this.deregisterAfter(),
      });
      this.abandoned.add(r.id);
    });
  }

  seal(): void {
    this.closed = true;
  }

  /**
   * The heartbeat service first: every alias turns critical at once, so the whole host is out of
   * every passing query in one request. Then every instance, a few at a time: the agent handles
   * one deregistration at a time and each costs it more the more services it holds (Consul 1.8
   * on 2 cores: ~3 ms each at 1,000, ~14 ms at 3,000), so more at once is no faster. A heartbeat
   * registration still in flight is withdrawn again once it has ended.
   */
  async deregisterAll(refs: InstanceRef[], done?: (ref: InstanceRef) => void): Promise<void> {
    this.closed = true;
    const registering = this.hostReady;
    if (this.ttl > 0 && this.host) {
      this.hostReady = undefined;
      await this.remove(heartbeatServiceId(this.host));
    }
    let failure: unknown;
    await eachLimited(refs, DEREGISTER_WIDTH, async (r) => {
      try {
        await this.deregister(r);
        done?.(r);
      } catch (err) {
        failure ??= err;
      }
    });
    if (registering && this.ttl > 0 && this.host) {
      const late = await registering.then(() => true, () => true);
      if (late) await this.remove(heartbeatServiceId(this.host));
    }
    if (failure !== undefined) throw failure;
  }

  async list(): Promise<ServiceInstance[]> {
    const names = Object.keys((await this.consul.catalog.service.list()) as Record<string, string[]>).filter((n) => n !== 'consul');
    const out: ServiceInstance[] = [];
    for (const name of names) {
      const entries = (await this.consul.health.service({ service: name })) as HealthEntry[];
      for (const e of entries) if (!isHeartbeatService(e.Service)) out.push(instanceFromConsul(e.Service, worstStatus(e.Checks.map((c) => c.Status)), e.Node.Address));
    }
    return out.sort(compareInstances);
  }

  /**
   * This host's services on the local agent only (a filtered read), with whether their heartbeat
   * check exists. The agent's time for it grows with what it holds: the wait does too, so that a
   * loaded agent's listing is read rather than taken for an outage.
   */
  async listOwn(host: string): Promise<OwnRecord[]> {
    const wait = this.listTimeoutMs();
    const filter = encodeURIComponent(`Meta.${HOST_META} == ${JSON.stringify(host)}`);
    const services = (await this.http.call<Record<string, AgentService> | undefined>('GET', `/agent/services?filter=${filter}`, undefined, undefined, wait)) ?? {};
    let checks: Set<string> | undefined;
    if (this.ttl > 0) {
      const nameFilter = encodeURIComponent('Name == "harbormaster heartbeat"');
      checks = new Set(Object.keys((await this.http.call<Record<string, unknown> | undefined>('GET', `/agent/checks?filter=${nameFilter}`, undefined, undefined, wait)) ?? {}));
    }
    const mine = Object.values(services).filter((s) => s.Meta?.[HOST_META] === host && !isHeartbeatService(s));
    if (host === this.host) {
      // What the agent no longer holds is no longer known to be ours.
      const listed = new Set(mine.map((s) => s.ID));
      for (const id of this.own) if (!listed.has(id)) this.own.delete(id);
      for (const id of listed) this.own.add(id);
    }
    return mine.map((s) => ({ id: s.ID, name: s.Service, digest: s.Meta?.[DIGEST_META] ?? '', renew: checks ? !checks.has(ttlCheckId(s.ID)) : false }));
  }

  /** The wait for one listing call: the request timeout, once more per 1,000 services this host is known to hold or to be writing. */
  listTimeoutMs(): number {
    return Math.round(this.timeoutMs * (1 + (this.own.size + this.unsure.size) / LIST_SCALE_PER));
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
  // With ACLs on, 1.8 words it `Unknown check "…"` / `Unknown service {"…" {}}`.
  return err.status === 500 && /: 500 (CheckID "[^"]*" does not have associated TTL|Unknown (service|check)\b)/i.test(err.message);
}
