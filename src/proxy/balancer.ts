// Choosing an instance for a request: round robin (smooth weighted, as nginx does) or least
// connections relative to weight, over the instances that are routable, not ejected after
// connection errors (passive health) and not failing an active check. When every routable
// instance is ejected or failing its check, the ejected ones are tried anyway (Envoy's panic
// mode): an instance that is back answers at once instead of after its ejection runs out.

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
  /** Epoch ms until which the instance gets no new requests (unless every instance is out). */
  ejectedUntil = 0;
  /** Epoch ms of the last connection failure or counted reset. */
  lastFailure = 0;
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
  state.lastFailure = now;
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
  state.lastFailure = now;
  if (state.ejectedUntil > now) return 0;
  if (++state.resets < 2) return 0;
  state.resets = 0;
  return recordFailure(state, now, policy);
}

/**
 * An answer from the instance. `sentAt`: when the answered request was sent; an answer to a
 * request sent after the last failure ends an ejection (the instance is back). Returns whether
 * the instance was still ejected when that request went to it (a panic pick that worked).
 */
export function recordSuccess(state: InstanceState, sentAt?: number): boolean {
  if (state.failures !== 0) state.failures = 0;
  if (state.resets !== 0) state.resets = 0;
  if (state.ejectedUntil === 0 || sentAt === undefined || sentAt <= state.lastFailure) return false;
  const was = state.ejectedUntil > sentAt;
  state.ejectedUntil = 0;
  return was;
}

/** A passing active check: the instance is back, whatever its ejection said. Returns whether it was ejected. */
export function endEjection(state: InstanceState, now: number): boolean {
  const was = state.ejectedUntil > now;
  state.ejectedUntil = 0;
  state.failures = 0;
  state.resets = 0;
  return was;
}

export interface Balancer {
  readonly upstreams: readonly Upstream[];
  /**
   * An available instance not in `exclude`; when none is, one that is only ejected or failing its
   * check (panic); undefined when there is neither. With `hasRoom`, instances it approves come
   * first at each step (one whose connections are all busy only when every candidate's are).
   */
  pick(now: number, exclude?: ReadonlySet<Upstream>, hasRoom?: Filter): Upstream | undefined;
  /** What a balancer over the same route in the next table continues from. */
  carried(): CarriedState;
}

/** Balancer state handed from one routing table to the next, by instance key. */
export interface CarriedState {
  /** The instance picked last: the rotation goes on after it. */
  last?: string;
  /** Smooth weighted round robin's current weights. */
  current?: ReadonlyMap<string, number>;
}

/**
 * A balancer for `upstreams`; `previous` (the same route's balancer in the table before) hands its
 * rotation position and current weights on, so that frequent swaps keep the exact ratio.
 */
export function createBalancer(mode: BalanceMode, upstreams: readonly Upstream[], previous?: Balancer): Balancer {
  const carried = previous?.carried() ?? {};
  if (mode === 'least-conn') return new LeastConnections(upstreams, carried);
  const w = upstreams[0]?.weight;
  return upstreams.every((u) => u.weight === w) ? new RoundRobin(upstreams, carried) : new SmoothWeightedRoundRobin(upstreams, carried);
}

type Filter = (u: Upstream) => boolean;

/** Normal picks take available instances; panic picks any routable one with a weight. */
function eligible(u: Upstream, now: number, exclude: ReadonlySet<Upstream> | undefined, panic: boolean, room: Filter | undefined): boolean {
  if (exclude?.has(u)) return false;
  if (room && !room(u)) return false;
  return panic ? u.routable && u.weight > 0 : available(u, now);
}



/** Where a rotation resumes: after the instance picked last, or where it would sort if it left. */
function resumeIndex(upstreams: readonly Upstream[], last: string | undefined): number {
  if (last === undefined || upstreams.length === 0) return 0;
  const at = upstreams.findIndex((u) => u.key === last);
  if (at >= 0) return (at + 1) % upstreams.length;
  const after = upstreams.findIndex((u) => u.key > last);
  return after < 0 ? 0 : after;
}

/** Equal weights: a plain rotating cursor. */
class RoundRobin implements Balancer {
  private cursor: number;

  constructor(
    readonly upstreams: readonly Upstream[],
    carried: CarriedState,
  ) {
    this.cursor = resumeIndex(upstreams, carried.last);
  }

  pick(now: number, exclude?: ReadonlySet<Upstream>, hasRoom?: Filter): Upstream | undefined {
    // Available with room, available, panic with room, panic.
    if (hasRoom) return this.rotate(now, exclude, false, hasRoom) ?? this.rotate(now, exclude, false, undefined) ?? this.rotate(now, exclude, true, hasRoom) ?? this.rotate(now, exclude, true, undefined);
    return this.rotate(now, exclude, false, undefined) ?? this.rotate(now, exclude, true, undefined);
  }

  private rotate(now: number, exclude: ReadonlySet<Upstream> | undefined, panic: boolean, room: Filter | undefined): Upstream | undefined {
    const n = this.upstreams.length;
    for (let i = 0; i < n; i++) {
      const idx = (this.cursor + i) % n;
      const u = this.upstreams[idx];
      if (eligible(u, now, exclude, panic, room)) {
        this.cursor = (idx + 1) % n;
        return u;
      }
    }
    return undefined;
  }

  carried(): CarriedState {
    const n = this.upstreams.length;
    return n === 0 ? {} : { last: this.upstreams[(this.cursor + n - 1) % n].key };
  }
}

/** nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, not a a a a a b c. */
class SmoothWeightedRoundRobin implements Balancer {
  private readonly current: number[];
  private last?: string;

  constructor(
    readonly upstreams: readonly Upstream[],
    carried: CarriedState,
  ) {
    this.current = upstreams.map((u) => carried.current?.get(u.key) ?? 0);
    this.last = carried.last;
  }

  pick(now: number, exclude?: ReadonlySet<Upstream>, hasRoom?: Filter): Upstream | undefined {
    // Available with room, available, panic with room, panic.
    if (hasRoom) return this.smooth(now, exclude, false, hasRoom) ?? this.smooth(now, exclude, false, undefined) ?? this.smooth(now, exclude, true, hasRoom) ?? this.smooth(now, exclude, true, undefined);
    return this.smooth(now, exclude, false, undefined) ?? this.smooth(now, exclude, true, undefined);
  }

  private smooth(now: number, exclude: ReadonlySet<Upstream> | undefined, panic: boolean, room: Filter | undefined): Upstream | undefined {
    let total = 0;
    let best = -1;
    for (let i = 0; i < this.upstreams.length; i++) {
      const u = this.upstreams[i];
      if (!eligible(u, now, exclude, panic, room)) continue;
      this.current[i] += u.weight;
      total += u.weight;
      if (best < 0 || this.current[i] > this.current[best]) best = i;
    }
    if (best < 0) return undefined;
    this.current[best] -= total;
    const u = this.upstreams[best];
    this.last = u.key;
    return u;
  }

  carried(): CarriedState {
    return { last: this.last, current: new Map(this.upstreams.map((u, i) => [u.key, this.current[i]])) };
  }
}

/** Fewest in-flight requests per unit of weight; ties rotate. */
class LeastConnections implements Balancer {
  private cursor: number;

  constructor(
    readonly upstreams: readonly Upstream[],
    carried: CarriedState,
  ) {
    this.cursor = resumeIndex(upstreams, carried.last);
  }

  pick(now: number, exclude?: ReadonlySet<Upstream>, hasRoom?: Filter): Upstream | undefined {
    // Available with room, available, panic with room, panic.
    if (hasRoom) return this.least(now, exclude, false, hasRoom) ?? this.least(now, exclude, false, undefined) ?? this.least(now, exclude, true, hasRoom) ?? this.least(now, exclude, true, undefined);
    return this.least(now, exclude, false, undefined) ?? this.least(now, exclude, true, undefined);
  }

  private least(now: number, exclude: ReadonlySet<Upstream> | undefined, panic: boolean, room: Filter | undefined): Upstream | undefined {
    const n = this.upstreams.length;
    let best = -1;
    let bestLoad = Infinity;
    for (let i = 0; i < n; i++) {
      const idx = (this.cursor + i) % n;
      const u = this.upstreams[idx];
      if (!eligible(u, now, exclude, panic, room)) continue;
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

  carried(): CarriedState {
    const n = this.upstreams.length;
    return n === 0 ? {} : { last: this.upstreams[(this.cursor + n - 1) % n].key };
  }
}

