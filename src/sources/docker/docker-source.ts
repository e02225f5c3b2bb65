// Watches the local Docker engine and keeps the desired set of every container current.
// It subscribes to events *before* listing containers and keeps a small state per container.
// Every inspection of a container runs in that container's own queue and is thrown away if a
// newer lifecycle event arrived meanwhile, so a resync can never undo a `stop` it did not see.
// A failed inspection is retried; every Docker call has a timeout; a broken event stream or a
// failed listing reconnects with backoff and lists everything again. A container withdrawn on
// request (withdrawals.ts) serves nothing, whatever Docker says, until its withdrawal ends.
import { constants } from 'node:os';
import { StringDecoder } from 'node:string_decoder';
import type Docker from 'dockerode';
import type { Logger } from '../../log/logger.js';
import type { ServiceInstance } from '../../model/service-instance.js';
import type { DesiredSink } from '../../registrar/registrar.js';
import { backoffMs, sleep, withTimeout } from '../../util/time.js';
import { type ContainerDetails, containerName } from './container.js';
import { DockerRefused } from './docker-endpoint.js';
import { containerServices, type ModelOptions } from './service-model.js';
import { type ContainerRef, findContainer, type Withdrawal, WithdrawalError, Withdrawals } from './withdrawals.js';

export interface DockerSourceOptions {
  docker: Docker;
  /** For log lines. */
  endpoint: string;
  model: ModelOptions;
  /** Register containers with a HEALTHCHECK only once Docker reports them healthy. */
  healthGate: boolean;
  /** `on-success`: a container that dies with a non-zero code stays registered, as critical. */
  deregister: 'always' | 'on-success';
  /** Periodic full resync; 0 disables it. */
  resyncMs: number;
  log: Logger;
  sink: DesiredSink;
  /** Timeout of one Docker API call (list, inspect). */
  callTimeoutMs?: number;
}

interface ContainerState {
  /** Bumped by every lifecycle event: an inspection started before a newer event is discarded. */
  epoch: number;
  name?: string;
  /** When a terminating kill/stop was seen (Docker's clock): withdrawn until it starts again. */
  stopping?: number;
  /** When it died with a non-zero exit code under --deregister on-success. */
  failed?: number;
  /** Last services computed while it ran (a dead container has no ports left to read). */
  last: ServiceInstance[];
  /** What was last handed to the registrar. */
  desired: ServiceInstance[];
  /** Last reported errors, so that each problem is logged once, not on every resync. */
  errors?: string;
  gateLogged?: boolean;
  /** Failed inspections in a row, and the timer of the next attempt. */
  failures: number;
  retryTimer?: NodeJS.Timeout;
  /** The container's stop signal (STOPSIGNAL, `--stop-signal`; e.g. SIGWINCH for httpd): a kill with it is `docker stop`. */
  stopSignal?: number;
}

export interface DockerSourceStatus {
  connected: boolean;
  lastSync?: Date;
  lastError?: string;
}

const SIGKILL = 9;
/** Docker's stop signal when neither the image nor `--stop-signal` sets one. */
const DEFAULT_STOP_SIGNAL = 15;

/**
 * A `kill` event that means the container is going away: SIGKILL, or the container's own stop
 * signal (what `docker stop` sends first; SIGTERM unless STOPSIGNAL or `--stop-signal` says
 * otherwise). Its name, or undefined for any other signal (QUIT for a JVM's thread dump, INT,
 * HUP, USR1…): a process that survives it keeps serving, and one that does not exit is
 * withdrawn by its `die` event. Docker reports the signal as a number or a name, with or without SIG.
 */
export function stoppingSignal(raw: string | undefined, stopSignal = DEFAULT_STOP_SIGNAL): string | undefined {
  const n = signalNumber(raw);
  if (n === undefined || (n !== SIGKILL && n !== stopSignal)) return undefined;
  const name = Object.entries(constants.signals).find(([, v]) => v === n)?.[0];
  const what = name ?? (/^\d+$/.test((raw ?? '').trim()) ? `signal ${n}` : (raw ?? '').trim().toUpperCase());
  return n === SIGKILL || stopSignal === DEFAULT_STOP_SIGNAL ? what : `${what} (its stop signal)`;
}

/** A signal as Docker writes it ("15", "SIGTERM", "TERM") as its number; undefined if unknown. */
export function signalNumber(raw: string | undefined): number | undefined {
  const s = (raw ?? '').trim().toUpperCase();
  if (/^\d{1,2}$/.test(s)) return Number(s);
  // Real-time signals (systemd images stop with SIGRTMIN+3): Linux numbers them 34–64.
  const rt = /^(?:SIG)?RT(MIN|MAX)(?:([+-])(\d{1,2}))?$/.exec(s);
  if (rt) {
    const n = (rt[1] === 'MIN' ? 34 : 64) + (rt[2] === '-' ? -1 : 1) * Number(rt[3] ?? 0);
    return n >= 34 && n <= 64 ? n : undefined;
  }
  const name = (s.startsWith('SIG') ? s : `SIG${s}`) as keyof typeof constants.signals;
  return constants.signals[name];
}

/** The container events that change what a container serves; exec_*, attach, top… do not. */
export const LIFECYCLE_EVENTS = ['start', 'restart', 'unpause', 'health_status', 'rename', 'update', 'kill', 'stop', 'pause', 'die', 'destroy'] as const;
const LIFECYCLE = new Set<string>(LIFECYCLE_EVENTS);

const CALL_TIMEOUT_MS = 10_000;
const INSPECT_CONCURRENCY = 8;
/** An event line longer than this is not Docker's: the stream is garbled, start over. */
const MAX_LINE = 1 << 20;

interface DockerEvent {
  Type?: string;
  Action?: string;
  status?: string;
  id?: string;
  time?: number;
  timeNano?: number;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
}

/** A small counting semaphore: bounds the inspections a resync of hundreds of containers starts. */
class Limit {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly max: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    // A freed slot is handed straight to the next waiter, so nobody can slip in between.
    if (this.active >= this.max) await new Promise<void>((r) => this.waiting.push(r));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}

type RefreshOutcome = 'done' | 'failed' | 'superseded';

export class DockerSource {
  readonly status: DockerSourceStatus = { connected: false };
  private readonly states = new Map<string, ContainerState>();
  private readonly queues = new Map<string, Promise<unknown>>();
  private readonly limit = new Limit(INSPECT_CONCURRENCY);
  private readonly callTimeoutMs: number;
  /** Docker calls in flight, aborted on stop(). */
  private readonly inflight = new Set<AbortController>();
  private streamAbort?: AbortController;
  private stopped = false;
  private resyncTimer?: NodeJS.Timeout;
  private resyncRun?: Promise<void>;
  private resyncAgain = false;
  private running?: Promise<void>;
  private wake?: () => void;
  private readonly withdrawn = new Withdrawals((w) => this.withdrawalExpired(w));

  constructor(private readonly opts: DockerSourceOptions) {
    this.callTimeoutMs = opts.callTimeoutMs ?? CALL_TIMEOUT_MS;
  }

  start(): void {
    this.running = this.connectLoop();
  }

  /** Returns promptly: Docker calls in flight are aborted, not waited for. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.resyncTimer);
    this.withdrawn.clear();
    for (const st of this.states.values()) clearTimeout(st.retryTimer);
    for (const c of this.inflight) c.abort();
    this.streamAbort?.abort();
    this.wake?.();
    await Promise.race([this.running, sleep(2_000)]);
  }

  /** One Docker call, ended at its timeout or at stop() (a controller per call: nothing accumulates). */
  private async call<T>(what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const c = new AbortController();
    const timer = setTimeout(() => c.abort(new Error(`${what}: no answer within ${this.callTimeoutMs} ms`)), this.callTimeoutMs);
    this.inflight.add(c);
    try {
      return await fn(c.signal);
    } catch (err) {
      throw c.signal.aborted && c.signal.reason instanceof Error ? c.signal.reason : err;
    } finally {
      clearTimeout(timer);
      this.inflight.delete(c);
    }
  }

  private async connectLoop(): Promise<void> {
    let attempt = 0;
    let everConnected = false;
    while (!this.stopped) {
      const abort = new AbortController();
      this.streamAbort = abort;
      try {
        const { ended } = await this.subscribe(abort);
        await this.resync();
        if (everConnected || attempt > 0) this.opts.log.info({ event: 'docker-up', docker: this.opts.endpoint }, `docker ${this.opts.endpoint} reachable again; resynced`);
        everConnected = true;
        attempt = 0;
        this.status.connected = true;
        if (this.opts.resyncMs > 0 && !this.resyncTimer) {
          this.resyncTimer = setInterval(() => void this.periodicResync(), this.opts.resyncMs);
          this.resyncTimer.unref();
        }
        const why = await ended;
        abort.abort();
        if (this.stopped) break;
        this.status.connected = false;
        this.opts.log.warn({ event: 'docker-down', docker: this.opts.endpoint, reason: why }, `docker ${this.opts.endpoint}: ${why}; reconnecting`);
      } catch (err) {
        abort.abort();
        this.status.connected = false;
        if (this.stopped) break;
        const wait = backoffMs(attempt, 1000, 30_000);
        // The first failure in plain words; later ones at debug level so a long outage does not flood the log.
        if (attempt === 0) {
          this.opts.log.error(
            { event: 'docker-down', docker: this.opts.endpoint, err: errText(err) },
            `${err instanceof DockerRefused ? err.message : `cannot reach Docker at ${this.opts.endpoint} (${errText(err)})`}; retrying with backoff, services stay as they are until it answers`,
          );
        } else this.opts.log.debug({ docker: this.opts.endpoint, err: errText(err), retryMs: wait }, 'docker still unreachable');
        this.status.lastError = errText(err);
        attempt++;
        await new Promise<void>((resolve) => {
          this.wake = resolve;
          void sleep(wait).then(resolve);
        });
        continue;
      }
      await sleep(500);
    }
  }

  /** Open the event stream; `ended` tells why it ended (wrapped: an async function would adopt it). */
  private async subscribe(abort: AbortController): Promise<{ ended: Promise<string> }> {
    const opening = this.opts.docker.getEvents({ filters: { type: ['container'], event: [...LIFECYCLE_EVENTS] }, abortSignal: abort.signal });
    const stream = (await withTimeout(opening, this.callTimeoutMs, 'opening the event stream').catch((err: unknown) => {
      abort.abort();
      throw err;
    })) as NodeJS.ReadableStream & { destroy?: () => void };
    const ended = new Promise<string>((resolve) => {
      stream.on('end', () => resolve('event stream ended'));
      stream.on('close', () => resolve('event stream closed'));
      stream.on('error', (err: Error) => resolve(`event stream failed: ${err.message}`));
      abort.signal.addEventListener('abort', () => {
        stream.destroy?.();
        resolve('event stream closed');
      });
    });
    const decoder = new StringDecoder('utf8');
    let buffer = '';
    stream.on('data', (chunk: Buffer) => {
      buffer += decoder.write(chunk);
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (line) this.onEventLine(line);
      }
      if (buffer.length > MAX_LINE) {
        this.opts.log.warn({ event: 'error', docker: this.opts.endpoint }, 'docker event stream sent an over-long line; reconnecting');
        buffer = '';
        abort.abort();
      }
    });
    return { ended };
  }

  private state(id: string): ContainerState {
    let st = this.states.get(id);
    if (!st) this.states.set(id, (st = { epoch: 0, last: [], desired: [], failures: 0 }));
    return st;
  }

  /** One line of the event stream: whatever it holds, nothing here may throw. */
  private onEventLine(line: string): void {
    let ev: DockerEvent;
    try {
      ev = JSON.parse(line) as DockerEvent;
    } catch {
      this.opts.log.warn({ event: 'error', line: line.slice(0, 200) }, 'docker sent an event that is not JSON; ignored');
      return;
    }
    if (typeof ev !== 'object' || ev === null || Array.isArray(ev)) {
      this.opts.log.warn({ event: 'error', line: line.slice(0, 200) }, 'docker sent an event that is not an object; ignored');
      return;
    }
    try {
      this.onEvent(ev);
    } catch (err) {
      this.opts.log.error({ event: 'error', err: errText(err), line: line.slice(0, 200) }, `docker event not understood (${errText(err)}); ignored, the next resync catches up`);
    }
  }

  private onEvent(ev: DockerEvent): void {
    const actor = typeof ev.Actor === 'object' && ev.Actor !== null ? ev.Actor : {};
    const id = typeof actor.ID === 'string' ? actor.ID : ev.id;
    const action = typeof ev.Action === 'string' ? ev.Action : typeof ev.status === 'string' ? ev.status : '';
    if ((ev.Type && ev.Type !== 'container') || typeof id !== 'string' || !/^[0-9a-f]{12,64}$/.test(id)) return;
    const verb = action.split(':')[0];
    if (!LIFECYCLE.has(verb)) return;
    // Only string attributes are Docker's; anything else in a garbled line is ignored.
    const attrs: Record<string, string> = {};
    if (typeof actor.Attributes === 'object' && actor.Attributes !== null) {
      for (const [k, v] of Object.entries(actor.Attributes)) if (typeof v === 'string') attrs[k] = v;
    }
    // Docker's own clock, so that it compares with StartedAt.
    const at = typeof ev.timeNano === 'number' ? ev.timeNano / 1e6 : typeof ev.time === 'number' ? ev.time * 1000 : Date.now();
    const killedBy = verb === 'kill' ? stoppingSignal(attrs.signal, this.states.get(id)?.stopSignal) : undefined;
    if (verb === 'kill' && !killedBy) return; // QUIT, INT, HUP, USR1…: not `docker stop`; a `die` follows if it exits
    const st = this.state(id);
    st.epoch++;
    if (attrs.name) st.name = attrs.name;
    switch (verb) {
      case 'start':
      case 'restart':
        st.stopping = undefined;
        st.failed = undefined;
        void this.refresh(id);
        break;
      // An unpause can arrive after the kill of a paused container being stopped: it clears nothing.
      case 'unpause':
      case 'health_status':
      case 'rename':
      case 'update':
        void this.refresh(id);
        break;
      case 'kill':
        this.withdraw(id, st, `kill ${killedBy}`, at);
        break;
      case 'stop':
        this.withdraw(id, st, 'stop', at);
        break;
      case 'pause':
        this.withdraw(id, st, 'pause');
        break;
      case 'die': {
        const code = Number(attrs.exitCode ?? '0');
        if (this.opts.deregister === 'on-success' && code !== 0 && !st.stopping && st.last.length > 0) {
          st.failed = at;
          this.put(id, st, st.last.map((s) => ({ ...s, status: 'critical' })));
          this.opts.log.warn({ event: 'died', container: st.name, exitCode: code }, `container ${this.label(id, st)} died with code ${code}; kept as critical (--deregister on-success)`);
        } else this.withdraw(id, st, `die ${code}`);
        break;
      }
      case 'destroy':
        this.put(id, st, [], `${this.label(id, st)}: destroy`);
        this.forget(id, st);
        break;
    }
  }

  private label(id: string, st: ContainerState): string {
    return st.name ?? id.slice(0, 12);
  }

  /** Withdraw now; with `at`, the container is stopping and stays withdrawn until it starts again. */
  private withdraw(id: string, st: ContainerState, why: string, at?: number): void {
    if (at !== undefined) st.stopping ??= at;
    if (st.desired.length > 0) this.opts.log.debug({ container: st.name, reason: why }, `withdrawing services of ${this.label(id, st)} (${why})`);
    this.put(id, st, [], `${this.label(id, st)}: ${why}`);
  }

  private put(id: string, st: ContainerState, instances: ServiceInstance[], reason?: string): void {
    // The one gate every path goes through (refresh, resync, a crash kept as critical…).
    if (instances.length > 0 && this.withdrawn.has(id)) instances = [];
    if (instances.length === 0 && st.desired.length === 0) return;
    st.desired = instances;
    this.opts.sink.set(id, instances, reason, st.name);
  }

  /**
   * Inspect one container and recompute its services, serialized per container. Resolves when
   * done (or superseded); a failed inspection keeps what was there and is retried with backoff.
   * Only a resync's inspections queue for the shared limit: an event's never waits behind them.
   */
  private refresh(id: string, limited = false): Promise<RefreshOutcome> {
    const st = this.state(id);
    clearTimeout(st.retryTimer);
    st.retryTimer = undefined;
    const epoch = st.epoch;
    const prev = this.queues.get(id) ?? Promise.resolve();
    const next = prev.then(async (): Promise<RefreshOutcome> => {
      if (this.stopped || this.states.get(id) !== st || st.epoch !== epoch) return 'superseded'; // a newer event owns it now
      let details: ContainerDetails | undefined;
      try {
        details = limited ? await this.limit.run(() => this.inspect(id)) : await this.inspect(id);
      } catch (err) {
        if (this.stopped || this.states.get(id) !== st || st.epoch !== epoch) return 'superseded';
        this.retryLater(id, st, err);
        return 'failed';
      }
      if (st.failures > 0) this.opts.log.info({ container: st.name }, `inspecting ${this.label(id, st)} works again`);
      st.failures = 0;
      if (this.stopped || this.states.get(id) !== st || st.epoch !== epoch) return 'superseded';
      if (!details) {
        this.put(id, st, [], `${this.label(id, st)}: gone`);
        this.forget(id, st);
        return 'done';
      }
      try {
        st.stopSignal = signalNumber(details.Config?.StopSignal ?? undefined);
        this.put(id, st, this.servicesOf(details, st));
      } catch (err) {
        // Whatever Docker answered, one container never takes the process down; its services stay as they were.
        this.opts.log.error({ event: 'error', container: st.name ?? id.slice(0, 12), err: errText(err) }, `container ${this.label(id, st)}: ${errText(err)}; its services stay as they were`);
        return 'failed';
      }
      return 'done';
    });
    const queued: Promise<unknown> = next.then(() => undefined, () => undefined).finally(() => {
      if (this.queues.get(id) === queued) this.queues.delete(id);
    });
    this.queues.set(id, queued);
    return next.catch((err: unknown) => {
      this.opts.log.error({ event: 'error', container: st.name ?? id.slice(0, 12), err: errText(err) }, `container ${this.label(id, st)}: ${errText(err)}`);
      return 'failed' as const;
    });
  }

  private retryLater(id: string, st: ContainerState, err: unknown): void {
    st.failures++;
    const wait = backoffMs(st.failures - 1, 1000, 30_000);
    const log = st.failures === 1 ? this.opts.log.error.bind(this.opts.log) : this.opts.log.debug.bind(this.opts.log);
    log({ event: 'error', container: st.name ?? id.slice(0, 12), err: errText(err), retryMs: wait }, `inspecting container ${this.label(id, st)} failed (${errText(err)}); retrying in ${(wait / 1000).toFixed(1)}s, its services stay as they are`);
    this.status.lastError = errText(err);
    st.retryTimer = setTimeout(() => void this.refresh(id, true), wait);
    st.retryTimer.unref();
  }

  private async inspect(id: string): Promise<ContainerDetails | undefined> {
    try {
      return (await this.call(`inspecting ${id.slice(0, 12)}`, (abortSignal) => this.opts.docker.getContainer(id).inspect({ abortSignal }))) as unknown as ContainerDetails;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return undefined;
      throw err;
    }
  }

  private servicesOf(c: ContainerDetails, st: ContainerState): ServiceInstance[] {
    const name = containerName(c);
    st.name = name;
    const w = this.withdrawn.get(c.Id);
    if (w) w.name = name; // renamed while withdrawn
    // Started again since the stop or failure we saw (its start event may have been missed
    // while Docker was unreachable): that mark no longer applies. A container still draining
    // after a stop keeps its StartedAt, however long it drains.
    const startedAt = Date.parse(c.State?.StartedAt ?? '');
    if (st.stopping !== undefined && startedAt > st.stopping) st.stopping = undefined;
    if (st.failed !== undefined && startedAt > st.failed) st.failed = undefined;
    if (st.failed !== undefined) return st.last.map((s) => ({ ...s, status: 'critical' as const }));
    const running = !!c.State?.Running && !c.State?.Paused && !c.State?.Restarting;
    if (!running || st.stopping !== undefined) return [];
    const { instances, errors } = containerServices(c, this.opts.model);
    const errorText = errors.join('\n');
    if (errorText !== (st.errors ?? '')) for (const e of errors) this.opts.log.error({ event: 'error', container: name }, e);
    st.errors = errorText;
    const health = c.State?.Health?.Status;
    if (this.opts.healthGate && health && health !== 'healthy') {
      if (!st.gateLogged && instances.length > 0) {
        this.opts.log.info({ event: 'waiting', container: name, health }, `container ${name} has a HEALTHCHECK (${health}); registering once healthy`);
      }
      st.gateLogged = true;
      return [];
    }
    st.gateLogged = false;
    st.last = instances;
    return instances;
  }

  /** The container is gone: its state goes, and so does a withdrawal of it (a new container of that name is not withdrawn). */
  private forget(id: string, st: ContainerState): void {
    clearTimeout(st.retryTimer);
    this.states.delete(id);
    const w = this.withdrawn.remove(id);
    if (w) this.opts.log.info({ event: 'withdrawal-forgotten', container: w.name, id }, `withdrawal of ${w.name} forgotten: the container is gone`);
  }

  /** Every container Docker knows, by full id and name. */
  private async containerRefs(): Promise<ContainerRef[]> {
    const list = await this.call('listing containers', (abortSignal) => this.opts.docker.listContainers({ all: true, abortSignal }));
    return list.map((c) => ({ id: c.Id, name: (c.Names ?? []).map((n) => n.replace(/^\//, '')).find((n) => !n.includes('/')) ?? c.Id.slice(0, 12) }));
  }

  /**
   * Take a container out of rotation for `forMs`: its instances are withdrawn now and stay out
   * through refreshes, resyncs and registry outages until the withdrawal expires, is lifted, or
   * the container is gone. A repeated request moves the end. Throws WithdrawalError (400/404/503).
   */
  async withdrawContainer(ref: string, forMs: number): Promise<Withdrawal> {
    let refs: ContainerRef[];
    try {
      refs = await this.containerRefs();
    } catch (err) {
      throw new WithdrawalError(503, `cannot list Docker's containers: ${errText(err)}`);
    }
    if (this.stopped) throw new WithdrawalError(503, 'shutting down');
    const c = findContainer(ref, refs);
    const st = this.state(c.id);
    st.name = c.name;
    // An inspection already under way (an event's refresh, a resync) started before this: its answer is dropped.
    st.epoch++;
    const w = this.withdrawn.add(c.id, c.name, st.desired.map((s) => s.id), forMs);
    this.put(c.id, st, [], `${c.name}: withdrawn`);
    const until = new Date(w.until).toISOString();
    this.opts.log.info({ event: 'withdrawn', container: c.name, id: c.id, instances: w.instances, until }, `withdrew ${c.name} (${w.instances.length} instances) until ${until}`);
    return w;
  }

  /** Lift a withdrawal now; the container is inspected again and registered if it still serves. */
  async readmitContainer(ref: string): Promise<{ container: ContainerRef; readmitted: boolean }> {
    let c: ContainerRef;
    try {
      c = findContainer(ref, await this.containerRefs());
    } catch (err) {
      if (err instanceof WithdrawalError) throw err;
      // Docker unreachable: a withdrawal can still be lifted by what this process knows of it.
      try {
        c = findContainer(ref, this.withdrawn.list());
      } catch (e) {
        if (e instanceof WithdrawalError && e.status === 404) throw new WithdrawalError(503, `cannot list Docker's containers: ${errText(err)}; no withdrawal matches "${ref}"`);
        throw e;
      }
    }
    const w = this.withdrawn.remove(c.id);
    if (!w) return { container: c, readmitted: false };
    this.opts.log.info({ event: 'readmitted', container: w.name, id: c.id }, `re-admitted ${w.name}`);
    if (!this.stopped) void this.refresh(c.id);
    return { container: { id: c.id, name: w.name }, readmitted: true };
  }

  /** Current withdrawals, by name. */
  withdrawals(): Withdrawal[] {
    return this.withdrawn.list();
  }

  private withdrawalExpired(w: Withdrawal): void {
    this.opts.log.info({ event: 'withdrawal-expired', container: w.name, id: w.id }, `withdrawal of ${w.name} expired`);
    if (!this.stopped) void this.refresh(w.id);
  }

  /** The timer's resync: a failed listing means Docker is in trouble, so the stream starts over. */
  private async periodicResync(): Promise<void> {
    try {
      await this.resync();
    } catch (err) {
      this.status.lastError = errText(err);
      this.opts.log.error({ event: 'error', docker: this.opts.endpoint, err: errText(err) }, `docker resync failed: ${errText(err)}; reconnecting`);
      this.streamAbort?.abort();
    }
  }

  /** List every container and bring each one's desired set up to date; one at a time, never two at once. */
  resync(): Promise<void> {
    if (this.resyncRun) {
      this.resyncAgain = true;
      return this.resyncRun;
    }
    const run = (async () => {
      try {
        do {
          this.resyncAgain = false;
          await this.resyncOnce();
        } while (this.resyncAgain && !this.stopped);
      } finally {
        this.resyncRun = undefined;
      }
    })();
    this.resyncRun = run;
    return run;
  }

  private async resyncOnce(): Promise<void> {
    const before = new Map([...this.states].map(([id, st]) => [id, st.epoch]));
    const list = await this.call('listing containers', (abortSignal) => this.opts.docker.listContainers({ all: true, abortSignal }));
    const present = new Set<string>();
    const jobs: Promise<RefreshOutcome>[] = [];
    for (const c of list) {
      present.add(c.Id);
      const st = this.states.get(c.Id);
      if (c.State === 'running' || c.State === 'paused' || c.State === 'restarting') jobs.push(this.refresh(c.Id, true));
      // Not running: nothing to serve, unless kept as critical after a failure (until it starts again).
      else if (st && st.failed === undefined && before.get(c.Id) === st.epoch) this.put(c.Id, st, [], `${this.label(c.Id, st)}: not running`);
    }
    for (const [id, st] of this.states) {
      // Gone while we were not looking (its destroy event missed), and no event since the listing began.
      if (!present.has(id) && before.get(id) === st.epoch) {
        this.put(id, st, [], `${this.label(id, st)}: gone`);
        this.forget(id, st);
      }
    }
    const outcomes = await Promise.all(jobs);
    // A superseded inspection counts by how the newer one went.
    const unread = outcomes.filter((o) => o === 'failed').length + [...this.states.values()].filter((st) => st.failures > 0).length;
    this.status.lastSync = new Date();
    // A container that could not be read keeps its entries: nothing unknown may be cleaned up this time.
    this.opts.sink.complete({ partial: unread > 0 });
  }
}

function errText(err: unknown): string {
  const e = err as Error | undefined;
  if (e?.name === 'AbortError' || e?.name === 'TimeoutError') return 'no answer (timed out)';
  return e instanceof Error ? e.message : String(err);
}
