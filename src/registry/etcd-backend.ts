// etcd v3 through `etcd3`. Each instance is the key <prefix>/<name>/<id> holding its JSON, plus
// an index key <prefix>/_hosts/<host>/<id> (its name and digest) written in the same
// transaction, so that a host reads back only its own entries, paged, however many other hosts
// share the prefix. Both hang on one lease per process that the heartbeat keeps alive: if this
// process or host dies, the lease expires and every key it held vanishes at once.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { ConsecutiveBreaker, circuitBreaker, handleWhen, noop, retry } from 'cockatiel';
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdError,
  EtcdInvalidAuthTokenError,
  EtcdPermissionDeniedError,
  EtcdRoleNotGrantedError,
  EtcdUserNotFoundError,
  EtcdLeaseInvalidError,
  GRPCDeadlineExceededError,
  GRPCGenericError,
  GRPCInvalidArgumentError,
  GRPCResourceExhastedError,
  GRPCFailedPreconditionError,
  GRPCUnauthenticatedError,
  isRecoverableError,
  type IOptions,
  type IRequestOp,
  type Lease,
} from 'etcd3';
import { addSecret } from '../log/redact.js';
import { explainEtcdFailure } from './explain.js';
import { decodeInstance, encodeInstance } from '../model/codec.js';
import { compareInstances, type ServiceInstance } from '../model/service-instance.js';
import { checkText } from '../model/validate.js';
import { withTimeout } from '../util/time.js';
import { instanceDigest } from './digest.js';
import { type BackendOptions, failureKind, type HeartbeatResult, type InstanceRef, type OwnRecord, RefusedError, type RegistryBackend, RejectedError, UsageError } from './types.js';

const CALL_TIMEOUT_MS = 5_000;
/** Keys per page when reading this host's index. */
const PAGE = 1000;
/** etcd's default --max-txn-ops is 128. */
const TXN_OPS = 128;
/** Every this many heartbeat rounds the keys on the lease are read back (one request), so a key deleted by someone else is written again. */
const VERIFY_EVERY = 6;

/**
 * The client's own fault handling, tuned for a registrator that retries by itself: the default
 * circuit breaker stays open 5 s after a restart of etcd, longer than a short TTL, so a
 * registration could lapse after etcd was back. Retrying another host is kept for clusters.
 */
export function etcdFaultHandling(endpoints: number): IOptions['faultHandling'] {
  return {
    // With other members to go to, one failure is enough to look elsewhere for a moment.
    host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 300, breaker: new ConsecutiveBreaker(endpoints > 1 ? 1 : 3) }),
    global: endpoints > 1 ? retry(handleWhen(isRecoverableError), { maxAttempts: endpoints - 1 }) : noop,
  };
}

/** Keepalives find a dead or partitioned peer (silent TCP) in seconds; a host's own listing is paged, but a catalog may be large. */
export const ETCD_GRPC_OPTIONS = {
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.max_receive_message_length': 256 * 1024 * 1024,
};

/** Credentials from ETCDCTL_USER (user:password, or user with ETCDCTL_PASSWORD), as etcdctl reads them. */
export function etcdAuthOptions(env: Record<string, string | undefined> = process.env): Pick<IOptions, 'auth'> {
  const user = env.ETCDCTL_USER;
  const [username, password] = user?.includes(':') ? [user.slice(0, user.indexOf(':')), user.slice(user.indexOf(':') + 1)] : [user, env.ETCDCTL_PASSWORD];
  addSecret(password);
  return username && password ? { auth: { username, password } } : {};
}

/**
 * Client TLS for https endpoints (etcd-tls://), from ETCDCTL_CACERT, ETCDCTL_CERT and ETCDCTL_KEY
 * as etcdctl reads them; without ETCDCTL_CACERT the system's roots verify the server. Plain
 * http endpoints take none of it.
 */
export function etcdTlsOptions(target: Pick<EtcdTarget, 'endpoints'>, env: Record<string, string | undefined> = process.env): Pick<IOptions, 'credentials'> {
  if (!target.endpoints.some((e) => e.startsWith('https://'))) return {};
  const read = (name: string): Buffer | undefined => {
    const file = env[name];
    if (!file) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new UsageError(`${name}=${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  };
  if (target.endpoints.some((e) => /^https:\/\/(\d{1,3}(\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\])(:|$)/.test(e))) dropIpServernameWarning();
  const rootCertificate = read('ETCDCTL_CACERT');
  const certChain = read('ETCDCTL_CERT');
  const privateKey = read('ETCDCTL_KEY');
  if (!certChain !== !privateKey) throw new UsageError(`etcd TLS: ETCDCTL_CERT and ETCDCTL_KEY go together (only ${certChain ? 'ETCDCTL_CERT' : 'ETCDCTL_KEY'} is set)`);
  // Checked here, not when gRPC first builds its TLS context: a file that is not PEM (or a key of
  // another certificate) would otherwise end the process with OpenSSL's words and no file named.
  if (rootCertificate) {
    try {
      new X509Certificate(rootCertificate);
    } catch (err) {
      throw new UsageError(`ETCDCTL_CACERT=${env.ETCDCTL_CACERT}: not a PEM certificate (${(err as Error).message})`);
    }
  }
  if (certChain && privateKey) {
    try {
      createSecureContext({ cert: certChain, key: privateKey });
    } catch (err) {
      throw new UsageError(`ETCDCTL_CERT=${env.ETCDCTL_CERT}, ETCDCTL_KEY=${env.ETCDCTL_KEY}: not a PEM certificate and its key (${(err as Error).message})`);
    }
  }
  // gRPC takes a null root certificate for "the system's roots"; the typings want a Buffer.
  return { credentials: { rootCertificate: rootCertificate as Buffer, certChain, privateKey } };
}

let ipServernameQuiet = false;

/**
 * grpc-js gives an IP endpoint to TLS as the server name (SNI), which Node answers with a
 * deprecation warning (DEP0123) on stderr, once per process, about a setting harbormaster cannot
 * change; the certificate is still checked against the IP. That one warning is dropped.
 */
function dropIpServernameWarning(): void {
  if (ipServernameQuiet) return;
  ipServernameQuiet = true;
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const code = typeof rest[0] === 'object' && rest[0] !== null ? (rest[0] as { code?: string }).code : rest[1];
    if (code === 'DEP0123') return;
    emit(warning, ...rest);
  }) as typeof process.emitWarning;
}

/**
 * The deadline of a keepalive try: a third of the TTL while another member is left to try, so
 * that a dead member costs little; the last try (the only one with a single endpoint) has the
 * whole call timeout, as a keepalive had before tries moved between members: a slow etcd whose
 * keepalives take longer than a third of the TTL still answers one in time, where cutting them
 * short would fail every round (and reset the connection each time) with nowhere else to go.
 */
export function keepaliveTryMs(ttlS: number, endpoints: number, attempt: number): number {
  if (attempt >= endpoints) return CALL_TIMEOUT_MS;
  return Math.min(CALL_TIMEOUT_MS, Math.max(500, (ttlS * 1000) / 3));
}

export interface EtcdTarget {
  endpoints: string[];
  prefix: string;
}

/** Keys under <prefix>/_… are harbormaster's bookkeeping, never services (names are DNS labels). */
export function isBookkeepingKey(prefix: string, key: string): boolean {
  return key.startsWith(`${prefix}/_`);
}

interface IndexValue {
  name: string;
  digest: string;
}

type Op = IRequestOp;

export class EtcdBackend implements RegistryBackend {
  readonly description: string;
  private readonly client: Etcd3;
  private lease?: Lease;
  private leaseId?: string;
  /** IDs written under the current lease; a new lease means they must be written again. */
  private leaseIds = new Set<string>();
  private granting?: Promise<{ lease: Lease; id: string }>;
  private readonly host: string;
  private readonly errorContext: { user?: string; prefix: string; tls: boolean };
  /** Sealed (shutting down): no write and no new lease. */
  private closed = false;
  private rounds = 0;
  private lossListener?: () => void;

  constructor(
    private readonly target: EtcdTarget,
    private readonly opts: BackendOptions,
    env: Record<string, string | undefined> = process.env,
  ) {
    this.description = `${target.endpoints.some((e) => e.startsWith('https://')) ? 'etcd-tls' : 'etcd'}://${target.endpoints.map((e) => e.replace(/^https?:\/\//, '')).join(',')}${target.prefix}`;
    this.host = opts.host ?? '';
    this.client = new Etcd3({
      hosts: target.endpoints,
      dialTimeout: CALL_TIMEOUT_MS,
      faultHandling: etcdFaultHandling(target.endpoints.length),
      ...etcdAuthOptions(env),
      ...etcdTlsOptions(target, env),
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
      grpcOptions: ETCD_GRPC_OPTIONS,
    });
    this.errorContext = { user: etcdAuthOptions(env).auth?.username, prefix: target.prefix, tls: target.endpoints.some((e) => e.startsWith('https:')) };
  }

  key(s: InstanceRef): string {
    return `${this.target.prefix}/${s.name}/${s.id}`;
  }

  private indexPrefix(host: string): string {
    return `${this.target.prefix}/_hosts/${encodeURIComponent(host)}/`;
  }

  private indexKey(host: string, id: string): string {
    return `${this.indexPrefix(host)}${encodeURIComponent(id)}`;
  }

  async ping(): Promise<void> {
    await this.call('etcd status', () => this.client.maintenance.status());
  }

  digest(s: ServiceInstance): string {
    return instanceDigest(s);
  }

  async register(s: ServiceInstance): Promise<void> {
    if (this.closed) throw new RefusedError(`not registering ${s.id}: shutting down`);
    const write = async () => {
      const held = this.opts.ttl > 0 ? await this.currentLease() : undefined;
      const lease = held?.lease;
      const leaseId = held?.id;
      const index: IndexValue = { name: s.name, digest: this.digest(s) };
      try {
        await this.txn([put(this.key(s), encodeInstance(s), leaseId), put(this.indexKey(s.host || this.host, s.id), JSON.stringify(index), leaseId)]);
      } catch (err) {
        // Only the lease this write used is dropped: another writer may have granted a new one meanwhile.
        if (err instanceof EtcdLeaseInvalidError && lease && this.lease === lease) {
          this.dropLease();
          // Everything else on it is gone too: the next heartbeat round (now) reports it lost.
          this.lossListener?.();
        }
        throw err;
      }
      if (lease && this.lease === lease) this.leaseIds.add(s.id);
    };
    try {
      await write();
    } catch (err) {
      // The lease expired (an idle host, an outage longer than the TTL): take a fresh one, once.
      if (!(err instanceof EtcdLeaseInvalidError)) throw err;
      await write();
    }
  }

  async deregister(ref: InstanceRef): Promise<void> {
    await this.txn([del(this.key(ref)), del(this.indexKey(this.host, ref.id))]);
    this.leaseIds.delete(ref.id);
  }

  /**
   * One keepalive for the whole host, also while it has nothing registered, so the lease never
   * lapses. Every few rounds the keys on the lease are read back (one more request): an entry
   * deleted by someone else is reported lost, also when resyncs are off.
   */
  async heartbeat(refs: InstanceRef[], _signal?: AbortSignal): Promise<HeartbeatResult> {
    if (this.opts.ttl <= 0 || this.closed) return { lost: [] };
    const lease = this.lease;
    if (!lease) return { lost: refs.map((r) => r.id) };
    try {
      await this.keepalive(lease);
    } catch (err) {
      if (err instanceof EtcdLeaseInvalidError) {
        if (this.lease === lease) this.dropLease();
        return { lost: refs.map((r) => r.id) };
      }
      throw err;
    }
    // Entries written under an older lease (or found from a previous run) are written again.
    const lost = new Set(refs.filter((r) => !this.leaseIds.has(r.id)).map((r) => r.id));
    if (++this.rounds % VERIFY_EVERY === 0 && refs.length > lost.size) {
      const ids = this.leaseIds;
      const onLease = await this.keysOnLease();
      if (!onLease) return { lost: refs.map((r) => r.id) };
      for (const r of refs) {
        // Only what is still on the lease it was written under: a write racing this read is not lost.
        if (this.leaseIds !== ids || !ids.has(r.id)) continue;
        if (!onLease.has(this.key(r)) || !onLease.has(this.indexKey(this.host, r.id))) lost.add(r.id);
      }
    }
    return { lost: [...lost] };
  }

  /**
   * One keepalive, tried on another member when the one it went to does not answer: unlike
   * unary calls, the client's streams are not retried on another host, and a stream to a member
   * that just died waits for its connection instead of failing. Each try has a deadline of a
   * third of the TTL, so that all of them together fit in it; the member that failed is left
   * out of the next pick for a moment (its circuit breaker opens).
   */
  private async keepalive(lease: Lease): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const tryMs = keepaliveTryMs(this.opts.ttl, this.target.endpoints.length, attempt);
      try {
        await this.call('etcd lease keepalive', () => lease.keepaliveOnce({ deadline: Date.now() + tryMs }));
        return;
      } catch (err) {
        if (attempt >= this.target.endpoints.length || failureKind(err) !== 'unreachable' || err instanceof EtcdLeaseInvalidError) throw err;
      }
    }
  }

  async list(): Promise<ServiceInstance[]> {
    const res = await this.call('etcd range', () => this.client.getAll().prefix(`${this.target.prefix}/`).exec());
    const out: ServiceInstance[] = [];
    for (const kv of res.kvs) {
      const key = kv.key.toString();
      if (isBookkeepingKey(this.target.prefix, key)) continue;
      try {
        out.push(decodeInstance(JSON.parse(kv.value.toString())));
      } catch (err) {
        this.opts.warn?.(`etcd key ${key}: ${(err as Error).message}; skipped`);
      }
    }
    return out.sort(compareInstances);
  }

  /**
   * This host's index, a page at a time: cost grows with this host's entries, not the prefix's.
   * An entry whose instance key is not on this process's lease (an old lease, or deleted by hand
   * while its index key survived) is reported for writing again.
   */
  async listOwn(host: string): Promise<OwnRecord[]> {
    const prefix = this.indexPrefix(host);
    const end = Buffer.from(prefix);
    end[end.length - 1]++;
    const onLease = await this.keysOnLease();
    const out: OwnRecord[] = [];
    let from = Buffer.from(prefix);
    for (;;) {
      const res = await this.call('etcd range', () => this.client.kv.range({ key: from, range_end: end, limit: PAGE }));
      for (const kv of res.kvs) {
        const key = kv.key.toString();
        let id: string;
        let value: IndexValue;
        try {
          id = decodeURIComponent(key.slice(prefix.length));
          value = JSON.parse(kv.value.toString()) as IndexValue;
          if (typeof value?.name !== 'string' || typeof value.digest !== 'string' || checkText(value.name, 255) || checkText(id, 255)) {
            throw new Error('not a harbormaster index record');
          }
        } catch (err) {
          this.opts.warn?.(`etcd key ${key}: ${(err as Error).message}; skipped`);
          continue;
        }
        const renew = this.opts.ttl > 0 && (String(kv.lease) !== this.leaseId || !onLease?.has(this.key({ id, name: value.name })));
        out.push({ id, name: value.name, digest: value.digest, renew });
      }
      if (!res.more || res.kvs.length === 0) break;
      from = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])]);
    }
    if (onLease) await this.dropStrays(onLease, host, out);
    return out;
  }

  /**
   * Keys on this process's lease that no index record accounts for (a write that landed after
   * its answer was given up on, under a name since changed) would live as long as the process:
   * they go now.
   */
  private async dropStrays(onLease: Set<string>, host: string, records: OwnRecord[]): Promise<void> {
    const known = new Set<string>();
    for (const r of records) {
      known.add(this.key(r));
      known.add(this.indexKey(host, r.id));
    }
    const strays = [...onLease].filter((k) => !known.has(k) && k.startsWith(`${this.target.prefix}/`));
    for (let i = 0; i < strays.length; i += TXN_OPS) {
      await this.txn(strays.slice(i, i + TXN_OPS).map(del));
      this.opts.warn?.(`etcd: removed ${Math.min(TXN_OPS, strays.length - i)} keys of this process that no index entry accounts for`);
    }
  }

  /** Every key attached to this process's lease (one request), or undefined without a lease. */
  private async keysOnLease(): Promise<Set<string> | undefined> {
    const lease = this.lease;
    const id = this.leaseId;
    if (!lease || !id) return undefined;
    try {
      const res = await this.call('etcd lease ttl', () => this.client.leaseClient.leaseTimeToLive({ ID: id, keys: true }));
      if (res.TTL === '-1' || res.TTL === '0') throw new EtcdLeaseInvalidError(id);
      return new Set(res.keys.map((k) => k.toString()));
    } catch (err) {
      if (!(err instanceof EtcdLeaseInvalidError)) throw err;
      if (this.lease === lease) this.dropLease();
      return undefined;
    }
  }

  seal(): void {
    this.closed = true;
  }

  onLoss(fn: () => void): void {
    this.lossListener = fn;
  }

  /** Revoking the lease removes every key of this process in one request; the rest go in transactions. */
  async deregisterAll(refs: InstanceRef[], done?: (ref: InstanceRef) => void): Promise<void> {
    this.closed = true;
    const lease = this.lease;
    const onLease = new Set(lease ? this.leaseIds : []);
    if (lease) {
      this.lease = undefined;
      this.leaseId = undefined;
      this.leaseIds = new Set();
      await this.call('etcd lease revoke', () => lease.revoke());
      for (const r of refs) if (onLease.has(r.id)) done?.(r);
    }
    const rest = refs.filter((r) => !onLease.has(r.id));
    for (let i = 0; i < rest.length; i += TXN_OPS / 2) {
      const batch = rest.slice(i, i + TXN_OPS / 2);
      await this.txn(batch.flatMap((r) => [del(this.key(r)), del(this.indexKey(this.host, r.id))]));
      for (const r of batch) done?.(r);
    }
  }

  async close(): Promise<void> {
    this.lease?.release();
    this.client.close();
  }

  private async txn(ops: Op[]): Promise<void> {
    await this.call('etcd txn', () => this.client.kv.txn({ compare: [], success: ops, failure: [] }));
  }

  /** A timeout on every call, and etcd's answers sorted from no answer at all. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await withTimeout(fn(), CALL_TIMEOUT_MS + 500, what);
    } catch (err) {
      throw classifyEtcdError(what, err, this.errorContext);
    }
  }

  /** The live lease, granting one when there is none; concurrent callers share one grant. */
  private async currentLease(): Promise<{ lease: Lease; id: string }> {
    if (this.lease && this.leaseId) return { lease: this.lease, id: this.leaseId };
    this.granting ??= this.grant().finally(() => (this.granting = undefined));
    return this.granting;
  }

  private async grant(): Promise<{ lease: Lease; id: string }> {
    if (this.closed) throw new RefusedError('not taking a new lease: shutting down');
    const lease = this.client.lease(this.opts.ttl, { autoKeepAlive: false });
    lease.on('lost', () => {
      if (this.lease !== lease) return;
      this.dropLease();
      this.lossListener?.();
    });
    let id: string;
    try {
      id = await this.call('etcd lease grant', () => lease.grant());
    } catch (err) {
      lease.release();
      throw err;
    }
    this.lease = lease;
    this.leaseId = String(id);
    this.leaseIds = new Set();
    return { lease, id: this.leaseId };
  }

  private dropLease(): void {
    this.lease?.release();
    this.lease = undefined;
    this.leaseId = undefined;
    this.leaseIds = new Set();
  }
}

/** gRPC status codes: an answer refusing this request for what it is, or refusing the caller. */
const GRPC_INVALID_ARGUMENT = 3;
const GRPC_REFUSING = new Set([5, 6, 7, 8, 9, 10, 11, 12, 16]);

/**
 * A refused request (too large: rejected for what it is; permission, auth, quota: refused) is an
 * answer; unavailable, deadline, cancelled, an open circuit breaker are no answer. The client
 * does not always cast gRPC errors to its own classes, so the status code decides first.
 */
export function classifyEtcdError(what: string, err: unknown, ctx: { user?: string; prefix: string; tls: boolean } = { prefix: '', tls: false }): unknown {
  if (err instanceof EtcdLeaseInvalidError) return err;
  const text = `${what}: ${explainEtcdFailure((err as Error)?.message ?? String(err), ctx)}`;
  const code = (err as { code?: unknown })?.code;
  // etcd's own auth errors are plain Error subclasses, cast from the message; a failed
  // authentication comes with INVALID_ARGUMENT but refuses the caller, not this request.
  // Quota (NOSPACE) is cast to a class the client counts as recoverable: it is an answer all the same.
  const auth = [
    EtcdPermissionDeniedError, EtcdAuthenticationFailedError, EtcdInvalidAuthTokenError, EtcdUserNotFoundError, EtcdRoleNotGrantedError,
    GRPCResourceExhastedError, GRPCFailedPreconditionError, GRPCUnauthenticatedError,
  ];
  if (auth.some((c) => err instanceof c) || /authentication failed|invalid user ID or password|user name not found/i.test(text)) return new RefusedError(text);
  if (err instanceof GRPCInvalidArgumentError || code === GRPC_INVALID_ARGUMENT) return new RejectedError(text);
  if (typeof code === 'number' && GRPC_REFUSING.has(code)) return new RefusedError(text);
  if ((err instanceof GRPCGenericError || err instanceof EtcdError) && !isRecoverableError(err) && !(err instanceof GRPCDeadlineExceededError)) {
    return new RefusedError(text);
  }
  // No answer: the same error, its message in words that name what to fix.
  if (err instanceof Error && ctx.tls) {
    const explained = new Error(text);
    explained.name = err.name;
    return explained;
  }
  return err;
}

function put(key: string, value: string, lease?: string): Op {
  return { request_put: { key: Buffer.from(key), value: Buffer.from(value), ...(lease ? { lease } : {}) } };
}

function del(key: string): Op {
  return { request_delete_range: { key: Buffer.from(key) } };
}
