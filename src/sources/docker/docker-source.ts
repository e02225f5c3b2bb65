// Watches the local Docker engine and keeps the desired set of every container current.
// It subscribes to events *before* listing containers, keeps a small state per container
// (stopping, failed), withdraws services on kill/stop before the process exits, and on any
// break of the event stream reconnects with backoff and resyncs everything.
import type Docker from 'dockerode';
import type { Logger } from '../../log/logger.js';
import type { ServiceInstance } from '../../model/service-instance.js';
import type { DesiredSink } from '../../registrar/registrar.js';
import { backoffMs, sleep } from '../../util/time.js';
import { type ContainerDetails, containerName } from './container.js';
import { containerServices, type ModelOptions } from './service-model.js';

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
}

interface ContainerState {
  /** Bumped by every event: an inspection started before a newer event is discarded. */
  epoch: number;
  name?: string;
  /** When a kill/stop was seen; services stay withdrawn until the container starts again. */
  stopping?: number;
  /** When it died with a non-zero exit code under --deregister on-success. */
  failed?: number;
  /** Last services computed while it ran (a dead container has no ports left to read). */
  last: ServiceInstance[];
  /** Last reported errors, so that each problem is logged once, not on every resync. */
  errors?: string;
  gateLogged?: boolean;
}

export interface DockerSourceStatus {
  connected: boolean;
  lastSync?: Date;
  lastError?: string;
}

/** Signals after which a process is expected to exit; others (HUP, USR1…) usually mean "reload". */
const TERMINATING: Record<string, string> = { '15': 'SIGTERM', '9': 'SIGKILL', '2': 'SIGINT', '3': 'SIGQUIT' };

/** Docker reports the signal as a number or a name, with or without SIG: a name, or undefined if not terminating. */
export function terminatingSignal(raw: string | undefined): string | undefined {
  const s = (raw ?? '').toUpperCase();
  if (TERMINATING[s]) return TERMINATING[s];
  const name = s.startsWith('SIG') ? s : `SIG${s}`;
  return Object.values(TERMINATING).includes(name) ? name : undefined;
}
/** A container that ignored its stop signal this long is taken as running again. */
const STOPPING_GRACE_MS = 60_000;

interface DockerEvent {
  Type?: string;
  Action?: string;
  status?: string;
  id?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
}

export class DockerSource {
  readonly status: DockerSourceStatus = { connected: false };
  private readonly states = new Map<string, ContainerState>();
  private readonly desired = new Map<string, ServiceInstance[]>();
  private readonly queues = new Map<string, Promise<void>>();
  private stream?: NodeJS.ReadableStream & { destroy?: () => void };
  private stopped = false;
  private resyncTimer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private wake?: () => void;

  constructor(private readonly opts: DockerSourceOptions) {}

  start(): void {
    this.running = this.connectLoop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.resyncTimer);
    this.stream?.destroy?.();
    this.wake?.();
    await this.running;
  }

  private async connectLoop(): Promise<void> {
    let attempt = 0;
    let everConnected = false;
    while (!this.stopped) {
      try {
        const stream = (await this.opts.docker.getEvents({ filters: { type: ['container'] } })) as NodeJS.ReadableStream & { destroy?: () => void };
        this.stream = stream;
        const ended = new Promise<string>((resolve) => {
          stream.on('end', () => resolve('event stream ended'));
          stream.on('close', () => resolve('event stream closed'));
          stream.on('error', (err: Error) => resolve(`event stream failed: ${err.message}`));
        });
        let buffer = '';
        stream.on('data', (chunk: Buffer) => {
          buffer += chunk.toString('utf8');
          let nl: number;
          while ((nl = buffer.indexOf('\n')) >= 0) {
            const line = buffer.slice(0, nl).trim();
            buffer = buffer.slice(nl + 1);
            if (line) this.onEventLine(line);
          }
        });
        await this.resync();
        if (everConnected || attempt > 0) this.opts.log.info({ event: 'docker-up', docker: this.opts.endpoint }, `docker ${this.opts.endpoint} reachable again; resynced`);
        everConnected = true;
        attempt = 0;
        this.status.connected = true;
        if (this.opts.resyncMs > 0 && !this.resyncTimer) {
          this.resyncTimer = setInterval(() => void this.resync().catch((err) => this.fail(err)), this.opts.resyncMs);
          this.resyncTimer.unref();
        }
        const why = await ended;
        if (this.stopped) break;
        this.status.connected = false;
        this.opts.log.warn({ event: 'docker-down', docker: this.opts.endpoint, reason: why }, `docker ${this.opts.endpoint}: ${why}; reconnecting`);
      } catch (err) {
        this.status.connected = false;
        this.stream?.destroy?.();
        if (this.stopped) break;
        const wait = backoffMs(attempt, 1000, 30_000);
        // The first failure in plain words; later ones at debug level so a long outage does not flood the log.
        if (attempt === 0) {
          this.opts.log.error(
            { event: 'docker-down', docker: this.opts.endpoint, err: errText(err) },
            `cannot reach Docker at ${this.opts.endpoint} (${errText(err)}); retrying with backoff, services stay as they are until it answers`,
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
      await sleep(backoffMs(0, 500, 500));
    }
  }

  private fail(err: unknown): void {
    this.status.lastError = errText(err);
    this.opts.log.error({ event: 'error', docker: this.opts.endpoint, err: errText(err) }, `docker resync failed: ${errText(err)}`);
  }

  private state(id: string): ContainerState {
    let st = this.states.get(id);
    if (!st) this.states.set(id, (st = { epoch: 0, last: [] }));
    return st;
  }

  private onEventLine(line: string): void {
    let ev: DockerEvent;
    try {
      ev = JSON.parse(line) as DockerEvent;
    } catch {
      this.opts.log.warn({ event: 'error', line: line.slice(0, 200) }, 'docker sent an event that is not JSON; ignored');
      return;
    }
    const id = ev.Actor?.ID ?? ev.id;
    const action = ev.Action ?? ev.status ?? '';
    if ((ev.Type && ev.Type !== 'container') || !id || !/^[0-9a-f]{12,64}$/.test(id)) return;
    const attrs = ev.Actor?.Attributes ?? {};
    const st = this.state(id);
    st.epoch++;
    if (attrs.name) st.name = attrs.name;
    const verb = action.split(':')[0];
    switch (verb) {
      case 'start':
      case 'unpause':
      case 'restart':
        st.stopping = undefined;
        st.failed = undefined;
        this.refresh(id);
        break;
      case 'health_status':
      case 'rename':
      case 'update':
        this.refresh(id);
        break;
      case 'kill': {
        const sig = terminatingSignal(attrs.signal);
        if (sig) this.withdraw(id, st, `kill ${sig}`);
        break;
      }
      case 'stop':
        this.withdraw(id, st, 'stop');
        break;
      case 'pause':
        this.withdraw(id, st, 'pause');
        break;
      case 'die': {
        const code = Number(attrs.exitCode ?? '0');
        if (this.opts.deregister === 'on-success' && code !== 0 && !st.stopping && st.last.length > 0) {
          st.failed = Date.now();
          this.put(id, st.last.map((s) => ({ ...s, status: 'critical' })));
          this.opts.log.warn({ event: 'died', container: st.name, exitCode: code }, `container ${st.name ?? id.slice(0, 12)} died with code ${code}; kept as critical (--deregister on-success)`);
        } else this.withdraw(id, st, `die ${code}`);
        break;
      }
      case 'destroy':
        this.put(id, [], `${st.name ?? id.slice(0, 12)}: destroy`);
        this.states.delete(id);
        break;
      default:
        break;
    }
  }

  private withdraw(id: string, st: ContainerState, why: string): void {
    if (why !== 'pause' && !why.startsWith('die')) st.stopping ??= Date.now();
    if ((this.desired.get(id)?.length ?? 0) > 0) {
      this.opts.log.debug({ container: st.name, reason: why }, `withdrawing services of ${st.name ?? id.slice(0, 12)} (${why})`);
    }
    this.put(id, [], `${st.name ?? id.slice(0, 12)}: ${why}`);
  }

  private put(id: string, instances: ServiceInstance[], reason?: string): void {
    if (instances.length === 0) this.desired.delete(id);
    else this.desired.set(id, instances);
    this.opts.sink.set(id, instances, reason);
  }

  /** Inspect one container and recompute its services, serialized per container. */
  private refresh(id: string): void {
    const epoch = this.state(id).epoch;
    const prev = this.queues.get(id) ?? Promise.resolve();
    const next = prev.then(async () => {
      const st = this.states.get(id);
      if (!st || st.epoch !== epoch) return; // a newer event owns this container now
      const details = await this.inspect(id);
      if (st.epoch !== epoch) return;
      this.put(id, details ? this.servicesOf(details, st) : []);
    });
    const tracked = next
      .catch((err) => this.fail(err))
      .finally(() => {
        if (this.queues.get(id) === tracked) this.queues.delete(id);
      });
    this.queues.set(id, tracked);
  }

  private async inspect(id: string): Promise<ContainerDetails | undefined> {
    try {
      return (await this.opts.docker.getContainer(id).inspect()) as unknown as ContainerDetails;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return undefined;
      throw err;
    }
  }

  private servicesOf(c: ContainerDetails, st: ContainerState): ServiceInstance[] {
    const name = containerName(c);
    st.name = name;
    // Started again since the stop or failure we saw (its start event may have been missed
    // while Docker was unreachable): that mark no longer applies.
    const startedAt = Date.parse(c.State?.StartedAt ?? '');
    if (st.stopping && startedAt > st.stopping) st.stopping = undefined;
    if (st.failed && startedAt > st.failed) st.failed = undefined;
    if (st.failed) return st.last.map((s) => ({ ...s, status: 'critical' as const }));
    const running = !!c.State?.Running && !c.State?.Paused && !c.State?.Restarting;
    if (!running || st.stopping) return [];
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

  /** List every running container and replace the whole desired set. */
  async resync(): Promise<void> {
    const before = new Map([...this.states].map(([id, st]) => [id, st.epoch]));
    const list = await this.opts.docker.listContainers({ all: false });
    const found = new Map<string, ServiceInstance[]>();
    let next = 0;
    const worker = async () => {
      while (next < list.length) {
        const id = list[next++].Id;
        const details = await this.inspect(id);
        const st = this.state(id);
        if (st.stopping && Date.now() - st.stopping > STOPPING_GRACE_MS && details?.State?.Running) st.stopping = undefined;
        if (details && (before.get(id) ?? 0) === st.epoch) found.set(id, this.servicesOf(details, st));
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, list.length) }, worker));
    const all = new Map<string, ServiceInstance[]>();
    for (const [id, st] of this.states) {
      if (found.has(id)) all.set(id, found.get(id)!);
      // Changed by an event while we listed, or kept as failed: the event's view wins.
      else if ((before.get(id) ?? 0) !== st.epoch || st.failed) all.set(id, this.desired.get(id) ?? []);
      else if (!list.some((c) => c.Id === id)) this.states.delete(id);
    }
    this.desired.clear();
    for (const [id, list2] of all) if (list2.length > 0) this.desired.set(id, list2);
    this.status.lastSync = new Date();
    this.opts.sink.replaceAll(all);
  }
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
