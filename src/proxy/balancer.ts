// Choosing an instance for a request: round robin (smooth weighted, as nginx does) or least
// connections relative to weight, over the instances that are routable, not ejected after
// connection errors (passive health) and not failing an active check.

export type BalanceMode = 'round-robin' | 'least-conn';
export const BALANCE_MODES: readonly BalanceMode[] = ['round-robin', 'least-conn'];

/**
 * What the proxy knows about one instance across routing-table swaps: kept by key so that a new
 * table inherits in-flight counts and ejections, and in-flight requests update the same object.
 */
export class InstanceState {
  /** Requests (and upgraded connections) in flight. */
  active = 0;
  /** Consecutive connection failures; reset by any success. */
  failures = 0;
  /** Consecutive resets before an answer; the first may be a stale keep-alive connection. */
  resets = 0;
  /** Epoch ms until which the instance gets no new requests. */
  ejectedUntil = 0;
  /** Set by the active health checker. */
  checkFailed = false;
}

export interface Upstream {
  /** `<id> <address>:<port>`: an instance re-registered elsewhere is a new upstream. */
  readonly key: string;
  readonly id: string;
  readonly service: string;
  readonly address: string;
  readonly port: number;
  /** `http://address:port`, the connection-pool key. */
  readonly origin: string;
  readonly weight: number;
  /** Its registry status is one the proxy routes to. */
  readonly routable: boolean;
  readonly state: InstanceState;
}

export function available(u: Upstream, now: number): boolean {
  return u.routable && u.weight > 0 && !u.state.checkFailed && u.state.ejectedUntil <= now;
}

export interface EjectionPolicy {
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_EJECTION: EjectionPolicy = { baseMs: 1_000, maxMs: 30_000 };

/**
 * Record a connection failure: eject for base·2^(failures-1), capped. Returns the ejection in ms,
 * or 0 when it is already ejected (requests that were in flight when it failed do not escalate).
 */
export function recordFailure(state: InstanceState, now: number, policy: EjectionPolicy = DEFAULT_EJECTION): number {
  if (state.ejectedUntil > now) return 0;
  state.failures++;
  const ms = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(state.failures - 1, 20));
  state.ejectedUntil = now + ms;
  return ms;
}

/**
 * A connection reset before any answer: a keep-alive connection the instance had just closed
 * looks the same as a dying instance, so the first reset only counts; a second in a row ejects.
 */
export function recordReset(state: InstanceState, now: number, policy: EjectionPolicy = DEFAULT_EJECTION): number {
  if (state.ejectedUntil > now) return 0;
  if (++state.resets < 2) return 0;
  state.resets = 0;
  return recordFailure(state, now, policy);
}

export function recordSuccess(state: InstanceState): void {
  if (state.failures !== 0) state.failures = 0;
  if (state.resets !== 0) state.resets = 0;
}

export interface Balancer {
  readonly upstreams: readonly Upstream[];
  /** An available instance not in `exclude`, or undefined when there is none. */
  pick(now: number, exclude?: ReadonlySet<Upstream>): Upstream | undefined;
  /** Rotation position, carried into the next table so that swaps do not restart at the first instance. */
  readonly cursor: number;
}

export function createBalancer(mode: BalanceMode, upstreams: readonly Upstream[], cursor = 0): Balancer {
  if (mode === 'least-conn') return new LeastConnections(upstreams, cursor);
  const w = upstreams[0]?.weight;
  return upstreams.every((u) => u.weight === w) ? new RoundRobin(upstreams, cursor) : new SmoothWeightedRoundRobin(upstreams, cursor);
}

/** Equal weights: a plain rotating cursor. */
class RoundRobin implements Balancer {
  constructor(
    readonly upstreams: readonly Upstream[],
    public cursor: number,
  ) {}

  pick(now: number, exclude?: ReadonlySet<Upstream>): Upstream | undefined {
    const n = this.upstreams.length;
    for (let i = 0; i < n; i++) {
      const u = this.upstreams[(this.cursor + i) % n];
      if (available(u, now) && !exclude?.has(u)) {
        this.cursor = (this.cursor + i + 1) % n;
        return u;
      }
    }
    return undefined;
  }
}

/** nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, not a a a a a b c. */
class SmoothWeightedRoundRobin implements Balancer {
  private readonly current: number[];

  constructor(
    readonly upstreams: readonly Upstream[],
    public cursor: number,
  ) {
    this.current = upstreams.map(() => 0);
  }

  pick(now: number, exclude?: ReadonlySet<Upstream>): Upstream | undefined {
    let total = 0;
    let best = -1;
    for (let i = 0; i < this.upstreams.length; i++) {
      const u = this.upstreams[i];
      if (!available(u, now) || exclude?.has(u)) continue;
      this.current[i] += u.weight;
      total += u.weight;
      if (best < 0 || this.current[i] > this.current[best]) best = i;
    }
    if (best < 0) return undefined;
    this.current[best] -= total;
    this.cursor++;
    return this.upstreams[best];
  }
}

/** Fewest in-flight requests per unit of weight; ties rotate. */
class LeastConnections implements Balancer {
  constructor(
    readonly upstreams: readonly Upstream[],
    public cursor: number,
  ) {}

  pick(now: number, exclude?: ReadonlySet<Upstream>): Upstream | undefined {
    const n = this.upstreams.length;
    let best = -1;
    let bestLoad = Infinity;
    for (let i = 0; i < n; i++) {
      const idx = (this.cursor + i) % n;
      const u = this.upstreams[idx];
      if (!available(u, now) || exclude?.has(u)) continue;
      const load = u.state.active / u.weight;
      if (load < bestLoad) {
        best = idx;
        bestLoad = load;
      }
    }
    if (best < 0) return undefined;
    this.cursor = (best + 1) % n;
    return this.upstreams[best];
  }
}
