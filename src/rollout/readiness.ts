// When a replacement counts as ready: Docker says it runs (and is healthy, if it has a
// HEALTHCHECK), the registry holds every instance the sidecar registers for it as passing, and
// with --via the proxy answers. When an old container counts as gone: none of its instances is left.
import type Docker from 'dockerode';
import { request } from 'undici';
import type { ModelOptions } from '../sources/docker/service-model.js';
import type { ServiceInstance } from '../model/service-instance.js';
import type { RegistryView } from './registry-view.js';
import { expectedInstances, nameOf } from './targets.js';

export class NotReady extends Error {}
export class Interrupted extends Error {
  constructor() {
    super('interrupted');
  }
}

const POLL_MS = 200;

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new Interrupted());
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new Interrupted());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export interface ReadyTimes {
  /** Start → Docker running and healthy. */
  dockerMs: number;
  /** Start → every instance passing in the registry. */
  registryMs: number;
  /** Start → ready (with --via: the proxy answered). */
  readyMs: number;
}

export interface ReadinessDeps {
  docker: Docker;
  view: RegistryView;
  model: ModelOptions;
  via?: { url: URL; host?: string };
}

function hasHealthcheck(c: Docker.ContainerInspectInfo): boolean {
  const test = c.Config.Healthcheck?.Test;
  return !!test && test.length > 0 && test[0] !== 'NONE';
}

/** Registry entries that are this instance: the same ID, or (when the sidecar runs under another --hostname) the same container and port. */
export function sameInstance(want: ServiceInstance, have: ServiceInstance): boolean {
  if (have.id === want.id) return true;
  const tail = (id: string) => id.slice(id.indexOf(':'));
  return have.name === want.name && want.id.startsWith(`${want.host}:`) && tail(have.id) === tail(want.id);
}

/** One line on why a container is not healthy: its last health check output, or how it exited. */
export async function whyNot(docker: Docker, c: Docker.ContainerInspectInfo): Promise<string> {
  const st = c.State;
  if (!st.Running && !st.Restarting) {
    let tail = '';
    try {
      const buf = (await docker.getContainer(c.Id).logs({ stdout: true, stderr: true, tail: 3 })) as unknown as Buffer;
      tail = demux(buf).trim().split('\n').pop() ?? '';
    } catch {
      // No logs (a removed container): the exit code says enough.
    }
    return `exited with code ${st.ExitCode}${st.Error ? ` (${st.Error})` : ''}${tail ? `; last output: ${tail.slice(0, 200)}` : ''}`;
  }
  const log = (st.Health as { Log?: { ExitCode: number; Output: string }[] } | undefined)?.Log;
  const last = log?.[log.length - 1];
  if (st.Health?.Status === 'unhealthy') return `unhealthy: ${last ? `health check exited ${last.ExitCode}: ${oneLine(last.Output) || '(no output)'}` : 'no check result'}`;
  if (st.Health?.Status === 'starting') return `still starting${last ? ` (last check exited ${last.ExitCode}: ${oneLine(last.Output) || 'no output'})` : ''}`;
  return 'running';
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim().slice(0, 200);
}

/** Docker's multiplexed log stream (8-byte frame headers) as text; plain text passes through. */
function demux(buf: Buffer): string {
  if (!Buffer.isBuffer(buf)) return String(buf);
  let out = '';
  let i = 0;
  while (i + 8 <= buf.length && (buf[i] === 1 || buf[i] === 2) && buf[i + 1] === 0) {
    const len = buf.readUInt32BE(i + 4);
    out += buf.subarray(i + 8, i + 8 + len).toString();
    i += 8 + len;
  }
  return i === 0 ? buf.toString() : out;
}

/** Docker's answer for a container, or NotReady when it no longer exists; other errors are thrown for the caller to retry. */
async function inspectOrGone(docker: Docker, id: string): Promise<Docker.ContainerInspectInfo> {
  try {
    return await docker.getContainer(id).inspect();
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) throw new NotReady(`${id.slice(0, 12)} no longer exists`);
    throw err;
  }
}

function message(err: unknown): string {
  return String((err as Error)?.message ?? err).split('\n')[0].slice(0, 200);
}

/**
 * Waits until `id` is ready, or throws NotReady with one line saying why (after `timeoutMs`, or at
 * once when it exits, turns unhealthy or is removed). A failed read of Docker or of the registry
 * (a registry restarting, a sidecar busy) is read again on the next poll, within the same timeout.
 */
export async function waitReady(deps: ReadinessDeps, id: string, timeoutMs: number, signal: AbortSignal): Promise<ReadyTimes> {
  const t0 = Date.now();
  const deadline = t0 + timeoutMs;
  let dockerMs: number | undefined;
  let registryMs: number | undefined;
  let viaOk = 0;
  let last = 'not checked yet';
  for (;;) {
    let c: Docker.ContainerInspectInfo | undefined;
    try {
      c = await inspectOrGone(deps.docker, id);
    } catch (err) {
      if (err instanceof NotReady) throw err;
      last = `${id.slice(0, 12)}: Docker did not answer: ${message(err)}`;
    }
    if (c) {
      const name = nameOf(c);
      if (!c.State.Running || c.State.Restarting) throw new NotReady(`${name} ${await whyNot(deps.docker, { ...c, State: { ...c.State, Running: false, Restarting: false } })}`);
      if (c.RestartCount > 0) throw new NotReady(`${name} restarted ${c.RestartCount} time(s) while starting: ${await whyNot(deps.docker, c)}`);
      const healthy = !hasHealthcheck(c) || c.State.Health?.Status === 'healthy';
      if (c.State.Health?.Status === 'unhealthy') throw new NotReady(`${name} ${await whyNot(deps.docker, c)}`);
      if (healthy) dockerMs ??= Date.now() - t0;
      else last = `${name} ${await whyNot(deps.docker, c)}`;
      if (dockerMs !== undefined && registryMs === undefined) {
        try {
          const missing = await missingInstances(deps, c);
          if (missing.length === 0) registryMs = Date.now() - t0;
          else last = `${name}: not passing in the registry yet: ${missing.join(', ')}`;
        } catch (err) {
          last = `${name}: the registry could not be read: ${message(err)}`;
        }
      }
      if (registryMs !== undefined) {
        if (!deps.via) return { dockerMs: dockerMs!, registryMs, readyMs: Date.now() - t0 };
        const answer = await viaAnswer(deps.via);
        viaOk = answer === undefined ? viaOk + 1 : 0;
        if (viaOk >= 3) return { dockerMs: dockerMs!, registryMs, readyMs: Date.now() - t0 };
        if (answer !== undefined) last = `${name}: ${deps.via.url.href} ${answer}`;
      }
    }
    if (Date.now() >= deadline) throw new NotReady(`${last} after ${Math.round(timeoutMs / 1000)} s`);
    await sleep(POLL_MS, signal);
  }
}

/** Whether `id` is ready now (running, healthy if it has a HEALTHCHECK, passing in the registry): undefined, or why not. */
export async function notReadyNow(deps: Pick<ReadinessDeps, 'docker' | 'view' | 'model'>, id: string): Promise<string | undefined> {
  try {
    const c = await inspectOrGone(deps.docker, id);
    if (!c.State.Running || c.State.Restarting) return `${nameOf(c)} is not running`;
    if (hasHealthcheck(c) && c.State.Health?.Status !== 'healthy') return `${nameOf(c)} ${await whyNot(deps.docker, c)}`;
    const missing = await missingInstances(deps, c);
    return missing.length === 0 ? undefined : `${nameOf(c)}: not passing in the registry: ${missing.join(', ')}`;
  } catch (err) {
    return message(err);
  }
}

/** The ids of the container's instances that the registry does not hold as passing. */
export async function missingInstances(deps: Pick<ReadinessDeps, 'view' | 'model'>, c: Docker.ContainerInspectInfo): Promise<string[]> {
  const want = expectedInstances(c, deps.model);
  if (want.length === 0) return [];
  const have = await deps.view.instances();
  return want.filter((w) => !have.some((h) => h.status === 'passing' && sameInstance(w, h) && h.port === w.port)).map((w) => w.id);
}

/** The ids of the container's instances still in the registry (any status). */
export async function remainingInstances(deps: Pick<ReadinessDeps, 'view' | 'model'>, c: Docker.ContainerInspectInfo): Promise<string[]> {
  const want = expectedInstances(c, deps.model);
  if (want.length === 0) return [];
  const have = await deps.view.instances();
  return want.filter((w) => have.some((h) => sameInstance(w, h))).map((w) => w.id);
}

/** undefined when the proxy answers below 500; otherwise what it did. */
async function viaAnswer(via: { url: URL; host?: string }): Promise<string | undefined> {
  try {
    const res = await request(via.url, { method: 'GET', headers: via.host ? { host: via.host } : {}, headersTimeout: 5_000, bodyTimeout: 5_000 });
    await res.body.dump();
    return res.statusCode < 500 ? undefined : `answered ${res.statusCode}`;
  } catch (err) {
    return `failed: ${(err as Error).message}`;
  }
}

/** Watches a ready container for `ms`: it must keep running, healthy and passing. A read that fails is not held against it. */
export async function monitor(deps: ReadinessDeps, id: string, ms: number, signal: AbortSignal): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    await sleep(Math.min(POLL_MS * 2, Math.max(0, end - Date.now())), signal);
    let c: Docker.ContainerInspectInfo;
    try {
      c = await inspectOrGone(deps.docker, id);
    } catch (err) {
      if (err instanceof NotReady) throw new NotReady(`${err.message} while being watched`);
      continue;
    }
    const name = nameOf(c);
    if (!c.State.Running || c.State.Restarting || c.RestartCount > 0) throw new NotReady(`${name} stopped while being watched: ${await whyNot(deps.docker, { ...c, State: { ...c.State, Running: false, Restarting: false } })}`);
    if (c.State.Health?.Status === 'unhealthy') throw new NotReady(`${name} turned ${await whyNot(deps.docker, c)} while being watched`);
    let missing: string[];
    try {
      missing = await missingInstances(deps, c);
    } catch {
      continue;
    }
    if (missing.length > 0) throw new NotReady(`${name} left the registry or stopped passing while being watched: ${missing.join(', ')}`);
  }
}
