// etcd v3 through `etcd3`. Each instance is the key <prefix>/<name>/<id> holding its JSON,
// attached to one lease per process that the heartbeat keeps alive: if this process or host
// dies, the lease expires and every key it held vanishes at once.
import { ConsecutiveBreaker, circuitBreaker, handleWhen, noop, retry } from 'cockatiel';
import { Etcd3, EtcdLeaseInvalidError, isRecoverableError, type IOptions, type Lease } from 'etcd3';
import { decodeInstance, encodeInstance } from '../model/codec.js';
import { compareInstances, type ServiceInstance } from '../model/service-instance.js';
import { withTimeout } from '../util/time.js';
import type { BackendOptions, HeartbeatResult, RegistryBackend } from './types.js';

const CALL_TIMEOUT_MS = 5_000;

/**
 * The client's own fault handling, tuned for a registrator that retries by itself: the default
 * circuit breaker stays open 5 s after a restart of etcd, longer than a short TTL, so a
 * registration could lapse after etcd was back. Retrying another host is kept for clusters.
 */
export function etcdFaultHandling(endpoints: number): IOptions['faultHandling'] {
  return {
    host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 300, breaker: new ConsecutiveBreaker(3) }),
    global: endpoints > 1 ? retry(handleWhen(isRecoverableError), { maxAttempts: endpoints - 1 }) : noop,
  };
}

export interface EtcdTarget {
  endpoints: string[];
  prefix: string;
}

export class EtcdBackend implements RegistryBackend {
  readonly description: string;
  private readonly client: Etcd3;
  private lease?: Lease;
  /** Keys written under the current lease; a new lease means they must be written again. */
  private leaseKeys = new Set<string>();

  constructor(
    private readonly target: EtcdTarget,
    private readonly opts: BackendOptions,
    env: Record<string, string | undefined> = process.env,
  ) {
    this.description = `etcd://${target.endpoints.map((e) => e.replace(/^https?:\/\//, '')).join(',')}${target.prefix}`;
    const user = env.ETCDCTL_USER;
    const [username, password] = user?.includes(':') ? [user.slice(0, user.indexOf(':')), user.slice(user.indexOf(':') + 1)] : [user, env.ETCDCTL_PASSWORD];
    this.client = new Etcd3({
      hosts: target.endpoints,
      dialTimeout: CALL_TIMEOUT_MS,
      faultHandling: etcdFaultHandling(target.endpoints.length),
      ...(username && password ? { auth: { username, password } } : {}),
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
    });
  }

  key(s: Pick<ServiceInstance, 'name' | 'id'>): string {
    return `${this.target.prefix}/${s.name}/${s.id}`;
  }

  async ping(): Promise<void> {
    await withTimeout(this.client.maintenance.status(), CALL_TIMEOUT_MS, 'etcd status');
  }

  async register(s: ServiceInstance): Promise<void> {
    const key = this.key(s);
    if (this.opts.ttl > 0) {
      const lease = await this.currentLease();
      await withTimeout(lease.put(key).value(encodeInstance(s)).exec(), CALL_TIMEOUT_MS, 'etcd put');
      this.leaseKeys.add(key);
    } else {
      await withTimeout(this.client.put(key).value(encodeInstance(s)).exec(), CALL_TIMEOUT_MS, 'etcd put');
    }
  }

  async deregister(s: ServiceInstance): Promise<void> {
    const key = this.key(s);
    await withTimeout(this.client.delete().key(key).exec(), CALL_TIMEOUT_MS, 'etcd delete');
    this.leaseKeys.delete(key);
  }

  async heartbeat(instances: ServiceInstance[]): Promise<HeartbeatResult> {
    if (this.opts.ttl <= 0 || instances.length === 0) return { lost: [] };
    const lease = this.lease;
    // No live lease: everything must be written again under a new one.
    if (!lease) return { lost: instances.map((i) => i.id) };
    try {
      await withTimeout(lease.keepaliveOnce(), CALL_TIMEOUT_MS, 'etcd lease keepalive');
    } catch (err) {
      if (err instanceof EtcdLeaseInvalidError) {
        this.dropLease();
        return { lost: instances.map((i) => i.id) };
      }
      throw err;
    }
    // Keys written under an older lease (or deleted by someone else) are re-registered.
    const lost = instances.filter((i) => !this.leaseKeys.has(this.key(i))).map((i) => i.id);
    return { lost };
  }

  async list(): Promise<ServiceInstance[]> {
    return this.read();
  }

  async listOwn(host: string): Promise<ServiceInstance[]> {
    return (await this.read()).filter((i) => i.host === host);
  }

  async close(): Promise<void> {
    this.lease?.release();
    this.client.close();
  }

  /** Revoke the lease so that every key of this process goes at once (clean exit). */
  async revoke(): Promise<void> {
    const lease = this.lease;
    this.dropLease();
    if (lease) await withTimeout(lease.revoke(), CALL_TIMEOUT_MS, 'etcd lease revoke');
  }

  private async read(): Promise<ServiceInstance[]> {
    const kv = await withTimeout(this.client.getAll().prefix(`${this.target.prefix}/`).strings(), CALL_TIMEOUT_MS, 'etcd range');
    const out: ServiceInstance[] = [];
    for (const [key, value] of Object.entries(kv)) {
      try {
        out.push(decodeInstance(JSON.parse(value)));
      } catch (err) {
        this.opts.warn?.(`etcd key ${key}: ${(err as Error).message}; skipped`);
      }
    }
    return out.sort(compareInstances);
  }

  private granting?: Promise<Lease>;

  /** The live lease, granting one when there is none; concurrent callers share one grant. */
  private async currentLease(): Promise<Lease> {
    if (this.lease) return this.lease;
    this.granting ??= this.grant().finally(() => (this.granting = undefined));
    return this.granting;
  }

  private async grant(): Promise<Lease> {
    const lease = this.client.lease(this.opts.ttl, { autoKeepAlive: false });
    lease.on('lost', () => {
      if (this.lease === lease) this.dropLease();
    });
    try {
      await withTimeout(lease.grant(), CALL_TIMEOUT_MS, 'etcd lease grant');
    } catch (err) {
      lease.release();
      throw err;
    }
    this.lease = lease;
    this.leaseKeys = new Set();
    return lease;
  }

  private dropLease(): void {
    this.lease?.release();
    this.lease = undefined;
    this.leaseKeys = new Set();
  }
}
