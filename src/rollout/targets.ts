// Which containers a rollout replaces, and what their replacements run: the service's containers
// on this host (by registered service name, with the sidecar's own model, or by compose service),
// and the image, looked up again so that a moved tag is seen.
import type Docker from 'dockerode';
import { UsageError } from '../registry/types.js';
import type { ServiceInstance } from '../model/service-instance.js';
import { containerServices, type ModelOptions } from '../sources/docker/service-model.js';
import type { ContainerDetails } from '../sources/docker/container.js';
import type { PullPolicy } from './options.js';

/** Labels the rollout writes on a replacement (never copied from the container it replaces). */
export const LABEL_PREFIX = 'io.harbormaster.rollout.';
export const LABELS = {
  base: `${LABEL_PREFIX}base`,
  generation: `${LABEL_PREFIX}generation`,
  replaces: `${LABEL_PREFIX}replaces`,
} as const;

export const COMPOSE_SERVICE = 'com.docker.compose.service';
export const COMPOSE_PROJECT = 'com.docker.compose.project';

export function nameOf(c: { Name: string }): string {
  return c.Name.replace(/^\//, '');
}

/** The instances the sidecar registers for a container (empty for one it ignores). */
export function expectedInstances(c: Docker.ContainerInspectInfo, model: ModelOptions): ServiceInstance[] {
  return containerServices(c as unknown as ContainerDetails, model).instances;
}

/** Whether a container belongs to the service. */
export function belongs(c: Docker.ContainerInspectInfo, service: string, compose: boolean, model: ModelOptions): boolean {
  if (compose) return c.Config.Labels?.[COMPOSE_SERVICE] === service;
  return expectedInstances(c, model).some((i) => i.name === service);
}

/** Every container of the service, running or not, inspected. Containers that vanish meanwhile are skipped. */
export async function serviceContainers(docker: Docker, service: string, compose: boolean, model: ModelOptions): Promise<Docker.ContainerInspectInfo[]> {
  const list = await docker.listContainers(compose ? { all: true, filters: { label: [`${COMPOSE_SERVICE}=${service}`] } } : { all: true });
  const out: Docker.ContainerInspectInfo[] = [];
  for (const s of list) {
    let c: Docker.ContainerInspectInfo;
    try {
      c = await docker.getContainer(s.Id).inspect();
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) continue;
      throw err;
    }
    if (belongs(c, service, compose, model)) out.push(c);
  }
  if (compose) {
    const projects = new Set(out.map((c) => c.Config.Labels?.[COMPOSE_PROJECT] ?? ''));
    if (projects.size > 1) throw new UsageError(`compose service ${service} exists in several projects (${[...projects].sort().join(', ')}): run the rollout from one project's containers by their registered service name instead`);
  }
  return out;
}

/** Running (or restarting) containers sorted by name, so that a plan is the same every time. */
export function running(list: Docker.ContainerInspectInfo[]): Docker.ContainerInspectInfo[] {
  return list.filter((c) => c.State.Running || c.State.Restarting).sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
}

/**
 * The image a replacement runs: present locally (pulled if allowed), by id. Refusal is exit 2.
 * With `missing` (the default), a tag that came from a registry (the local image has a digest from
 * that repository) is pulled again, so that a tag moved on the registry is used; when that pull
 * fails the local image is used, with a note. A locally built or loaded image is never pulled.
 * `dryRun`: nothing is pulled; what would be is said, and a missing image is planned as such.
 */
export async function resolveImage(docker: Docker, ref: string, pull: PullPolicy, say: (m: string) => void, dryRun = false): Promise<Docker.ImageInspectInfo> {
  const local = await inspectImage(docker, ref);
  const repull = pull === 'always' || (pull === 'missing' && local !== undefined && isMovableTag(ref) && fromRegistry(local, ref));
  if (dryRun) {
    if (local && repull) say(`would pull ${ref} first (${pull === 'always' ? '--pull always' : 'a tag from a registry, which may have moved'}); planned with the local image`);
    if (local) return local;
    if (pull === 'never') throw new UsageError(`image ${ref} is not present on this host (and --pull never)`);
    say(`image ${ref} is not present on this host: the rollout would pull it`);
    return { Id: `${ref} (to be pulled)`, Config: {} } as unknown as Docker.ImageInspectInfo;
  }
  if (repull) {
    const err = await pullImage(docker, ref);
    if (err) say(`pull of ${ref} failed (${err}); using the local image${local ? ` ${local.Id.replace(/^sha256:/, '').slice(0, 12)}` : ' if there is one'}`);
    else {
      const now = await inspectImage(docker, ref);
      if (now && local && now.Id !== local.Id) say(`${ref} moved: ${local.Id.replace(/^sha256:/, '').slice(0, 12)} → ${now.Id.replace(/^sha256:/, '').slice(0, 12)}`);
      if (now) return now;
    }
  }
  if (local) return local;
  if (pull === 'never') throw new UsageError(`image ${ref} is not present on this host (and --pull never)`);
  const err = pull === 'missing' ? await pullImage(docker, ref) : 'not present after the pull';
  if (err) throw new UsageError(`image ${ref} is not present on this host and cannot be pulled: ${err}`);
  const pulled = await inspectImage(docker, ref);
  if (!pulled) throw new UsageError(`image ${ref} is not present on this host after pulling it`);
  return pulled;
}

async function inspectImage(docker: Docker, ref: string): Promise<Docker.ImageInspectInfo | undefined> {
  try {
    return await docker.getImage(ref).inspect();
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return undefined;
    throw err;
  }
}

/** A reference by tag (not by digest, not an image id): what it names may change. */
function isMovableTag(ref: string): boolean {
  return !ref.includes('@') && !/^(sha256:)?[0-9a-f]{12,64}$/.test(ref);
}

/** The repository of a reference: `host:5000/a/b:tag` → `host:5000/a/b`; Docker Hub names without their implicit prefix. */
export function repositoryOf(ref: string): string {
  const noDigest = ref.split('@')[0];
  const slash = noDigest.lastIndexOf('/');
  const colon = noDigest.lastIndexOf(':');
  const repo = colon > slash ? noDigest.slice(0, colon) : noDigest;
  return repo.replace(/^(docker\.io|index\.docker\.io|registry-1\.docker\.io)\//, '').replace(/^library\//, '');
}

/** The local image was pulled from the registry of `ref`'s repository (Docker keeps its digest there). */
function fromRegistry(image: Docker.ImageInspectInfo, ref: string): boolean {
  const repo = repositoryOf(ref);
  return (image.RepoDigests ?? []).some((d) => repositoryOf(d) === repo);
}

async function pullImage(docker: Docker, ref: string): Promise<string | undefined> {
  try {
    const stream = await docker.pull(ref);
    await new Promise<void>((resolve, reject) => docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve())));
    return undefined;
  } catch (err) {
    return String((err as Error).message ?? err)
      .split('\n')[0]
      .replace(/^\(HTTP code \d+\) [a-z ]+ - /, '')
      .slice(0, 200);
  }
}

/** The next free name of the form <base>-r<generation>. */
export async function replacementName(docker: Docker, old: Docker.ContainerInspectInfo, taken: Set<string>): Promise<{ base: string; generation: number; name: string }> {
  const labels = old.Config.Labels ?? {};
  const base = labels[LABELS.base] ?? nameOf(old);
  let generation = (Number(labels[LABELS.generation]) || 1) + 1;
  for (;;) {
    const name = `${base}-r${generation}`;
    if (!taken.has(name) && !(await exists(docker, name))) return { base, generation, name };
    generation++;
  }
}

async function exists(docker: Docker, name: string): Promise<boolean> {
  try {
    await docker.getContainer(name).inspect();
    return true;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return false;
    throw err;
  }
}
