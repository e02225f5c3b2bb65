// The create request of a container's replacement, read off `docker inspect` of the old one.
// Inspect shows Config already merged with the image's defaults (Env, Labels, Cmd, ...), so a
// value equal to the old image's is left out: the new image's default then applies, and only
// what the user set is carried over. HostConfig is the user's own and is copied whole, minus what
// Docker fills in itself.
import type Docker from 'dockerode';

export interface CloneInput {
  /** The old container. */
  container: Docker.ContainerInspectInfo;
  /** The image the old container runs (by its .Image id); undefined if it was deleted. */
  oldImage?: Docker.ImageInspectInfo;
  /** The image of the replacement. */
  newImage: Docker.ImageInspectInfo;
  /** What to write into Config.Image (the tag or id the user gave, or the old Config.Image). */
  newImageRef: string;
  /** Name of the replacement. */
  name: string;
  /** Labels to add or override. */
  labels?: Record<string, string>;
  /** Label prefixes not to copy from the old container. */
  dropLabelPrefixes?: string[];
}

export interface ClonePlan {
  /** name, Config fields, HostConfig, and NetworkingConfig for the first network only (create takes one). */
  create: Docker.ContainerCreateOptions;
  /** Connected after create, before start. */
  extraNetworks: { name: string; endpoint: Docker.EndpointSettings }[];
  /** Published ports with a fixed host port, e.g. '127.0.0.1:8080->80/tcp'; 'host network' for
   *  network mode host. Old and new cannot hold them at once. */
  fixedHostPorts: string[];
  /** Static addresses from IPAMConfig, e.g. '172.20.0.5 on backend'. Same reason. */
  staticAddresses: string[];
  /** One line per thing not carried over as it was, and why. */
  notes: string[];
}

type Json = unknown;
type Health = Docker.HealthConfig & Record<string, Json>;

/** Config as inspect returns it: the typings lack a few fields the API has. */
type InspectConfig = Partial<Docker.ContainerInspectInfo['Config']> & {
  StopSignal?: string;
  StopTimeout?: number | null;
  MacAddress?: string;
  Shell?: string[] | null;
  NetworkDisabled?: boolean;
};
type ImageConfig = Partial<Docker.ImageInspectInfo['Config']> & { StopSignal?: string; Shell?: string[] | null };

/** HostConfig fields Docker fills in by itself (or the CLI does), or that inspect shows in another form. */
const NOT_COPIED = new Set(['ContainerIDFile', 'MaskedPaths', 'ReadonlyPaths', 'ConsoleSize', 'Links']);
/** Docker's PATH for images that set none. */
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const HEALTH_FIELDS = ['Test', 'Interval', 'Timeout', 'StartPeriod', 'StartInterval', 'Retries'] as const;

export function cloneSpec(input: CloneInput): ClonePlan {
  const c = input.container;
  checkShape(c);
  const notes: string[] = [];
  const hostConfig = copyHostConfig(c, notes);
  const mode = String(hostConfig.NetworkMode ?? 'default');
  const config = cloneConfig(input, mode, notes);
  const net = cloneNetworks(c, mode, input.name, notes);
  if (net.mode !== mode) hostConfig.NetworkMode = net.mode;
  noteAnonymousVolumes(c, notes);

  const create: Docker.ContainerCreateOptions = { name: input.name, ...config, HostConfig: hostConfig as Docker.HostConfig };
  if (net.first) create.NetworkingConfig = { EndpointsConfig: { [net.first.name]: net.first.endpoint } };
  return {
    create,
    extraNetworks: net.extra,
    fixedHostPorts: fixedHostPorts(c, mode),
    staticAddresses: net.staticAddresses,
    notes,
  };
}

/** A one-line reason not to replace this container by hand, or undefined. */
export function describeRefusal(container: Docker.ContainerInspectInfo): string | undefined {
  const labels = container.Config?.Labels ?? {};
  const swarmService = labels['com.docker.swarm.service.name'] ?? labels['com.docker.swarm.service.id'];
  if (swarmService !== undefined || labels['com.docker.swarm.task.id'] !== undefined || labels['com.docker.swarm.task'] !== undefined) {
    return `managed by Swarm${swarmService ? ` (service ${swarmService})` : ''}: Swarm replaces its own tasks, use docker service update`;
  }
  const pod = labels['io.kubernetes.pod.name'];
  if (pod !== undefined) return `managed by Kubernetes (pod ${pod}): the kubelet would fight the replacement`;
  if (labels['com.docker.compose.oneoff']?.toLowerCase() === 'true') return 'a one-off `compose run` container, not an instance of the service';
  if (container.State?.Dead) return 'dead (Docker failed to remove it): nothing to replace';
  if (container.State?.Status === 'removing') return 'being removed: nothing to replace';
  return undefined;
}

/** The replacement was not made: Docker answered the create (or a look before it) with an error. */
export class NotCreated extends Error {}

/** Creates (does not start) the replacement and connects its extra networks; returns its id. */
export async function createClone(docker: Docker, plan: ClonePlan): Promise<string> {
  const name = plan.create.name ?? '(unnamed)';
  // Docker accepts a connect to an unknown network while the container is not running and fails
  // only at start: look first, before anything is made.
  for (const n of plan.extraNetworks) {
    await docker.getNetwork(n.name).inspect().catch((err: unknown) => {
      const r = reason(err);
      throw new NotCreated(`creating container ${name}: ${r.includes(n.name) ? r : `network ${n.name}: ${r}`}`);
    });
  }
  let made: Docker.Container;
  try {
    // A copy: dockerode deletes keys from the options it is given.
    made = await docker.createContainer(structuredClone(plan.create));
  } catch (err) {
    // An error status is Docker's answer: nothing was made. A timeout or a cut connection may have made it.
    const answered = typeof (err as { statusCode?: unknown }).statusCode === 'number';
    throw new (answered ? NotCreated : Error)(`creating container ${name}: ${reason(err)}`);
  }
  for (const n of plan.extraNetworks) {
    try {
      await docker.getNetwork(n.name).connect({ Container: made.id, EndpointConfig: structuredClone(n.endpoint) });
    } catch (err) {
      // v: its anonymous volumes were made for it alone.
      const cleanup = await made.remove({ force: true, v: true }).then(
        () => '',
        (e: unknown) => `; removing the half-made container ${made.id.slice(0, 12)} failed too: ${reason(e)}`,
      );
      throw new Error(`creating container ${name}: connecting it to network ${n.name}: ${reason(err)}${cleanup}`);
    }
  }
  return made.id;
}

function reason(err: unknown): string {
  const e = err as { json?: { message?: unknown }; message?: unknown } | undefined;
  const text = typeof e?.json?.message === 'string' ? e.json.message : typeof e?.message === 'string' ? e.message : String(err);
  return text.replace(/\s+/g, ' ').trim();
}

function checkShape(c: Docker.ContainerInspectInfo): void {
  const what = `container ${typeof c?.Name === 'string' ? c.Name.replace(/^\//, '') : '(unnamed)'}`;
  if (typeof c?.Id !== 'string' || c.Id.length < 12) throw new Error(`${what}: inspect has no Id`);
  if (!isObject(c.Config)) throw new Error(`${what}: inspect has no Config`);
  if (!isObject(c.HostConfig)) throw new Error(`${what}: inspect has no HostConfig`);
  const env = c.Config.Env as unknown;
  if (env != null && (!Array.isArray(env) || env.some((e) => typeof e !== 'string'))) throw new Error(`${what}: Config.Env is not a list of strings`);
  const labels = c.Config.Labels as unknown;
  if (labels != null && (!isObject(labels) || Object.values(labels).some((v) => typeof v !== 'string'))) {
    throw new Error(`${what}: Config.Labels is not a map of strings`);
  }
}

// ---- Config -------------------------------------------------------------------------------

function cloneConfig(input: CloneInput, mode: string, notes: string[]): Partial<Docker.ContainerCreateOptions> {
  const cfg = input.container.Config as InspectConfig;
  const img = input.oldImage?.Config as ImageConfig | undefined;
  const known = img !== undefined;
  // Without the old image, nothing tells an image default from a user's setting: keep them all.
  const userSet = (v: Json, imageValue: Json) => !isEmpty(v) && (!known || !same(v, imageValue));
  const out: Partial<Docker.ContainerCreateOptions> & Record<string, Json> = { Image: input.newImageRef };
  if (!known) {
    notes.push(
      `the old image ${shortImage(input.container.Image)} is not available: its defaults cannot be told from settings, so Env, Labels, Cmd, Entrypoint, WorkingDir, User, Healthcheck, ExposedPorts and Volumes are kept as the old container had them`,
    );
  }

  const shared = mode.startsWith('container:');
  if (cfg.Hostname && cfg.Hostname !== input.container.Id.slice(0, 12) && !shared) out.Hostname = cfg.Hostname;
  if (cfg.Domainname) out.Domainname = cfg.Domainname;
  for (const k of ['User', 'WorkingDir', 'StopSignal'] as const) if (userSet(cfg[k], img?.[k])) out[k] = cfg[k];
  if (typeof cfg.StopTimeout === 'number') out.StopTimeout = cfg.StopTimeout;
  if (cfg.NetworkDisabled) out.NetworkDisabled = true;
  for (const k of ['AttachStdin', 'AttachStdout', 'AttachStderr', 'Tty', 'OpenStdin', 'StdinOnce'] as const) out[k] = cfg[k] === true;
  if (userSet(cfg.Shell, img?.Shell)) out.Shell = cfg.Shell!;

  // Docker only fills Cmd from the image when no Entrypoint was given: a user's Entrypoint keeps its Cmd.
  const ownEntrypoint = userSet(cfg.Entrypoint, img?.Entrypoint);
  if (ownEntrypoint) out.Entrypoint = cfg.Entrypoint;
  if (ownEntrypoint ? !isEmpty(cfg.Cmd) : userSet(cfg.Cmd, img?.Cmd)) out.Cmd = cfg.Cmd;

  const env = cloneEnv(cfg.Env ?? [], img, input.newImage.Config as ImageConfig | undefined, notes);
  if (env.length > 0) out.Env = env;
  out.Labels = cloneLabels(input, img);

  const exposed = shared ? [] : ownKeys(cfg.ExposedPorts, known ? img?.ExposedPorts : undefined);
  if (exposed.length > 0) out.ExposedPorts = Object.fromEntries(exposed.map((p) => [p, {}]));
  const volumes = ownKeys(cfg.Volumes, known ? img?.Volumes : undefined);
  if (volumes.length > 0) out.Volumes = Object.fromEntries(volumes.map((p) => [p, {}]));

  const health = cloneHealth(cfg.Healthcheck as Health | undefined, known ? (img?.Healthcheck as Health | undefined) : undefined);
  if (health) out.Healthcheck = health;

  if (cfg.MacAddress) notes.push(`MAC address ${cfg.MacAddress}: not carried over (two containers on one network cannot share it)`);
  return out;
}

function cloneEnv(env: string[], img: ImageConfig | undefined, newImg: ImageConfig | undefined, notes: string[]): string[] {
  if (img) {
    const inherited = new Set(img.Env ?? []);
    return env.filter((e) => !inherited.has(e));
  }
  // The image's PATH is nearly always inherited, and pinning it could hide the new image's tools.
  const newPath = (newImg?.Env ?? []).find((e) => e.startsWith('PATH='));
  return env.filter((e) => {
    if (!e.startsWith('PATH=')) return true;
    if (e === `PATH=${DEFAULT_PATH}` || e === newPath) return false;
    notes.push(`${e}: kept as the old container had it (it may have come from the old image, which is not available)`);
    return true;
  });
}

function cloneLabels(input: CloneInput, img: ImageConfig | undefined): Record<string, string> {
  const drop = input.dropLabelPrefixes ?? [];
  const fromImage = img?.Labels ?? {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(input.container.Config.Labels ?? {})) {
    if (fromImage[k] === v || drop.some((p) => k.startsWith(p))) continue;
    out[k] = v;
  }
  return { ...out, ...(input.labels ?? {}) };
}

/** Docker fills each empty healthcheck field from the image's, so only the differing fields are the user's. */
function cloneHealth(hc: Health | undefined, img: Health | undefined): Docker.HealthConfig | undefined {
  if (isEmpty(hc)) return undefined;
  const out: Record<string, Json> = {};
  for (const [k, v] of Object.entries(hc!)) {
    if (isEmpty(v) || v === 0) continue;
    if (img && (HEALTH_FIELDS as readonly string[]).includes(k) && same(v, img[k])) continue;
    out[k] = v;
  }
  return Object.keys(out).length > 0 ? (out as Docker.HealthConfig) : undefined;
}

function ownKeys(set: Record<string, Json> | null | undefined, fromImage: Record<string, Json> | null | undefined): string[] {
  return Object.keys(set ?? {}).filter((k) => !Object.hasOwn(fromImage ?? {}, k));
}

// ---- HostConfig ---------------------------------------------------------------------------

function copyHostConfig(c: Docker.ContainerInspectInfo, notes: string[]): Record<string, Json> {
  const out: Record<string, Json> = {};
  for (const [k, v] of Object.entries(c.HostConfig as Record<string, Json>)) if (!NOT_COPIED.has(k) && v !== null) out[k] = structuredClone(v);

  // Inspect shows links as '/target:/self/alias'; create takes 'target:alias'.
  const links: string[] = [];
  for (const l of (c.HostConfig.Links as string[] | null | undefined) ?? []) {
    const m = /^\/?([^:]+):\/?(?:[^/]+\/)*([^/]+)$/.exec(l);
    if (m) links.push(`${m[1]}:${m[2]}`);
    else notes.push(`link ${l}: not carried over (not in the form /target:/name/alias)`);
  }
  if (links.length > 0) out.Links = links;

  const mode = String(out.NetworkMode ?? 'default');
  if (mode.startsWith('container:')) {
    // Docker refuses published ports with a shared network namespace; they could only be image leftovers.
    delete out.PortBindings;
    delete out.PublishAllPorts;
  }
  for (const [field, what] of [['NetworkMode', 'network'], ['PidMode', 'PID'], ['IpcMode', 'IPC']] as const) {
    const v = out[field];
    if (typeof v === 'string' && v.startsWith('container:')) {
      notes.push(`${field} ${shortRef(v)}: kept, the replacement joins that container's ${what} namespace (if that container is replaced too, this one must follow it)`);
    }
  }
  return out;
}

function noteAnonymousVolumes(c: Docker.ContainerInspectInfo, notes: string[]): void {
  const named = new Set<string>();
  for (const b of c.HostConfig.Binds ?? []) {
    const src = b.split(':')[0];
    if (!src.startsWith('/')) named.add(src);
  }
  for (const m of (c.HostConfig.Mounts ?? []) as { Type?: string; Source?: string }[]) {
    if (m.Type === 'volume' && m.Source) named.add(m.Source);
  }
  for (const m of c.Mounts ?? []) {
    if (m.Type !== 'volume' || (m.Name && named.has(m.Name))) continue;
    notes.push(`anonymous volume at ${m.Destination}${m.Name ? ` (${m.Name.slice(0, 12)})` : ''}: the replacement gets a new one, the data is not shared`);
  }
}

function fixedHostPorts(c: Docker.ContainerInspectInfo, mode: string): string[] {
  if (mode === 'host') return ['host network'];
  if (mode.startsWith('container:')) return [];
  const out: string[] = [];
  const bindings = (c.HostConfig.PortBindings ?? {}) as Record<string, { HostIp?: string; HostPort?: string }[] | null>;
  for (const [port, list] of Object.entries(bindings)) {
    for (const b of list ?? []) {
      const hp = b.HostPort ?? '';
      // A range lets Docker pick another port in it; a single port, or a one-port range, does not.
      const range = /^(\d+)-(\d+)$/.exec(hp);
      if (hp === '' || hp === '0' || (range && range[1] !== range[2])) continue;
      const ip = b.HostIp || '0.0.0.0';
      out.push(`${ip.includes(':') ? `[${ip}]` : ip}:${range ? range[1] : hp}->${port}`);
    }
  }
  return out;
}

// ---- Networks -----------------------------------------------------------------------------

interface NetworkPart {
  mode: string;
  first?: { name: string; endpoint: Docker.EndpointSettings };
  extra: { name: string; endpoint: Docker.EndpointSettings }[];
  staticAddresses: string[];
}

type InspectEndpoint = Docker.EndpointSettings & { DNSNames?: string[] | null; GwPriority?: number };

function cloneNetworks(c: Docker.ContainerInspectInfo, mode: string, newName: string, notes: string[]): NetworkPart {
  const part: NetworkPart = { mode, extra: [], staticAddresses: [] };
  if (mode === 'host' || mode === 'none' || mode.startsWith('container:')) return part;
  const nets = Object.entries((c.NetworkSettings?.Networks ?? {}) as Record<string, InspectEndpoint | null>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const modeNet = mode === 'default' ? 'bridge' : mode;
  let i = nets.findIndex(([name, ep]) => name === modeNet || (!!ep?.NetworkID && ep.NetworkID.startsWith(modeNet)));
  if (i < 0) {
    if (nets.length === 0) {
      notes.push(`network mode ${mode}: the old container is on no network, so the replacement gets network mode none`);
      part.mode = 'none';
      return part;
    }
    notes.push(`network mode ${mode}: the old container is no longer on that network, so the replacement joins ${nets[0][0]} first instead`);
    part.mode = nets[0][0];
    i = 0;
  }
  const ordered = [nets[i], ...nets.filter((_, j) => j !== i)];
  const oldName = c.Name.replace(/^\//, '');
  for (const [k, [name, ep]] of ordered.entries()) {
    const endpoint = cloneEndpoint(ep ?? {}, c.Id.slice(0, 12), oldName, newName);
    for (const a of staticOf(ep)) part.staticAddresses.push(`${a} on ${name}`);
    if (k === 0) {
      if (Object.keys(endpoint).length > 0) part.first = { name, endpoint };
    } else {
      part.extra.push({ name, endpoint });
    }
  }
  return part;
}

function cloneEndpoint(ep: InspectEndpoint, shortId: string, oldName: string, newName: string): Docker.EndpointSettings {
  const out: Docker.EndpointSettings & Record<string, Json> = {};
  // Docker adds the short id itself; an alias that was the container's own name follows the name.
  const aliases = (ep.Aliases ?? []).filter((a) => a !== shortId).map((a) => (a === oldName ? newName : a));
  if (aliases.length > 0) out.Aliases = [...new Set(aliases)];
  const ipam = Object.fromEntries(Object.entries(ep.IPAMConfig ?? {}).filter(([, v]) => !isEmpty(v)));
  if (Object.keys(ipam).length > 0) out.IPAMConfig = ipam;
  if (!isEmpty(ep.Links)) out.Links = ep.Links;
  if (!isEmpty(ep.DriverOpts)) out.DriverOpts = ep.DriverOpts;
  if (typeof ep.GwPriority === 'number' && ep.GwPriority !== 0) out.GwPriority = ep.GwPriority;
  return out;
}

function staticOf(ep: InspectEndpoint | null): string[] {
  const ipam = (ep?.IPAMConfig ?? {}) as { IPv4Address?: string; IPv6Address?: string; LinkLocalIPs?: string[] };
  return [ipam.IPv4Address, ipam.IPv6Address, ...(ipam.LinkLocalIPs ?? [])].filter((a): a is string => !!a);
}

// ---- helpers ------------------------------------------------------------------------------

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isEmpty(v: unknown): boolean {
  if (v === undefined || v === null || v === '') return true;
  if (Array.isArray(v)) return v.length === 0;
  return isObject(v) && Object.keys(v).length === 0;
}

/** Equal as JSON, with null, '' and empty lists/maps all meaning "not set". */
function same(a: unknown, b: unknown): boolean {
  if (isEmpty(a) || isEmpty(b)) return isEmpty(a) && isEmpty(b);
  if (typeof a === 'string' && Array.isArray(b)) return same([a], b);
  if (Array.isArray(a) && typeof b === 'string') return same(a, [b]);
  return canonical(a) === canonical(b);
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (isObject(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  return JSON.stringify(v) ?? 'null';
}

function shortImage(id: string): string {
  return id.replace(/^sha256:/, '').slice(0, 12);
}

function shortRef(mode: string): string {
  const [kind, ref] = [mode.slice(0, mode.indexOf(':')), mode.slice(mode.indexOf(':') + 1)];
  return `${kind}:${/^[0-9a-f]{64}$/.test(ref) ? ref.slice(0, 12) : ref}`;
}
