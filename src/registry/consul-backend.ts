// Consul through its agent HTTP API (the `consul` package). Each instance is an agent service;
// with a TTL, a TTL check harbormaster passes on every heartbeat, with
// DeregisterCriticalServiceAfter, so a dead host's services turn critical and then vanish.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import Consul from 'consul';
import type { HealthStatus, ServiceInstance } from '../model/service-instance.js';
import { type ConsulCheckBody, consulCheck } from './consul-check.js';
import { compareInstances } from '../model/service-instance.js';
import { type BackendOptions, type HeartbeatResult, type RegistryBackend, RejectedError } from './types.js';

const HOST_META = 'hm_host';
const REQUEST_TIMEOUT_MS = 10_000;
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
  delete meta[HOST_META];
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
  private readonly ttl: number;

  constructor(target: ConsulTarget, opts: BackendOptions, env: Env = process.env) {
    this.description = consulDescription(target);
    this.ttl = opts.ttl;
    this.consul = consulClient(target, env);
  }

  async ping(): Promise<void> {
    await this.consul.agent.self();
  }

  async register(s: ServiceInstance): Promise<void> {
    const checks: ConsulCheckBody[] = [];
    if (s.check) checks.push({ ...consulCheck(s.check), CheckID: userCheckId(s.id) });
    if (this.ttl > 0) {
      checks.push({
        CheckID: ttlCheckId(s.id),
        Name: 'harbormaster heartbeat',
        TTL: `${this.ttl}s`,
        Status: s.status === 'passing' ? 'passing' : s.status,
        DeregisterCriticalServiceAfter: s.check?.deregisterAfter ?? `${Math.max(MIN_DEREGISTER_S, this.ttl * 2)}s`,
      });
    }
    // The raw body goes through `_put` so that every Consul check field (GRPC, Args…) passes as is.
    try {
      await this.request('PUT', '/agent/service/register', {
      ID: s.id,
      Name: s.name,
      Address: s.address,
      Port: s.port,
      Tags: s.tags,
      Meta: { ...s.meta, [HOST_META]: s.host },
      Checks: checks,
      });
    } catch (err) {
      const code = (err as { statusCode?: number }).statusCode;
      if (code !== undefined && code >= 400 && code < 500) throw new RejectedError((err as Error).message);
      throw err;
    }
  }

  async deregister(s: ServiceInstance): Promise<void> {
    try {
      await this.consul.agent.service.deregister({ id: s.id });
    } catch (err) {
      if (!/unknown service|not found/i.test(String((err as Error).message))) throw err;
    }
  }

  async heartbeat(instances: ServiceInstance[]): Promise<HeartbeatResult> {
    if (this.ttl <= 0) return { lost: [] };
    const lost: string[] = [];
    // A handful at a time: a host can run hundreds of services.
    for (let i = 0; i < instances.length; i += 16) {
      await Promise.all(
        instances.slice(i, i + 16).map(async (s) => {
          const verb = s.status === 'critical' ? 'fail' : s.status === 'warning' ? 'warn' : 'pass';
          try {
            await this.request('PUT', `/agent/check/${verb}/${encodeURIComponent(ttlCheckId(s.id))}`);
          } catch (err) {
            // Any answer from the agent (unknown check after a restart, a 500 while it recovers) means
            // this registration needs to be made again; only an unreachable agent is an outage.
            if ((err as { statusCode?: number }).statusCode !== undefined) lost.push(s.id);
            else throw err;
          }
        }),
      );
    }
    return { lost };
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

  async listOwn(host: string): Promise<ServiceInstance[]> {
    const services = (await this.consul.agent.service.list().catch((err: Error) => {
      err.message = `GET /agent/services: ${err.message}`;
      throw err;
    })) as Record<string, AgentService>;
    return Object.values(services)
      .filter((s) => s.Meta?.[HOST_META] === host)
      .map((s) => instanceFromConsul(s, 'passing', ''))
      .sort(compareInstances);
  }

  async close(): Promise<void> {
    this.consul.destroy();
  }

  private async request(method: 'PUT', path: string, body?: unknown): Promise<void> {
    try {
      await this.put(method, path, body);
    } catch (err) {
      const e = err as Error & { statusCode?: number };
      e.message = `${method} ${path}: ${e.message}`;
      throw e;
    }
  }

  private async put(method: 'PUT', path: string, body?: unknown): Promise<void> {
    const c = this.consul as unknown as {
      _put(req: Record<string, unknown>, next: (request: unknown, next: unknown) => void): Promise<unknown>;
      _defaults?: Record<string, unknown>;
    };
    const req: Record<string, unknown> = { name: `consul ${method} ${path}`, path, type: 'json', body: body ?? {} };
    const d = c._defaults ?? {};
    if (d.token) req.headers = { 'x-consul-token': d.token };
    if (d.timeout) req.timeout = d.timeout;
    await c._put(req, (request: unknown, next: unknown) => {
      const r = request as { err?: Error };
      const n = next as (stop: boolean, err?: Error, result?: unknown) => void;
      if (r.err) n(false, r.err);
      else n(false, undefined, undefined);
    });
  }
}
