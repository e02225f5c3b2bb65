// Container → ServiceInstance[] following registrator's documented rules, plus validation.
//
// Precedence of settings, highest first:
//   label SERVICE_<port>_<key>  >  label SERVICE_<key>  >  env SERVICE_<port>_<key>  >  env SERVICE_<key>
//   >  env VIRTUAL_HOST with VIRTUAL_PORT=<port>  >  env VIRTUAL_HOST (nginx-proxy's names, for http_host)
// A label always beats an env var; registrator instead let a port-specific env var beat a generic label.
//
// A bad value skips only what it concerns, reported as one line naming the container and the key:
// a free-form meta key (SERVICE_REGION…) is dropped by itself; a value that defines the service
// (name, id, tags, a check setting, routing meta) skips that service, i.e. that one port.
import {
  type CheckDefinition,
  type HealthStatus,
  HEALTH_STATUSES,
  isReservedId,
  MAX_META_KEYS,
  MAX_USER_META_KEYS,
  OWN_META_KEYS,
  type ServiceInstance,
} from '../../model/service-instance.js';
import {
  checkBoolean,
  checkDnsLabel,
  checkDuration,
  checkGrpcService,
  checkHttpMethod,
  checkMetaKey,
  checkPort,
  checkText,
  MAX_COMMAND_LENGTH,
  parseBoolean,
  printable,
} from '../../model/validate.js';
import { checkRouteMeta } from '../../catalog/route-meta.js';
import { isHostname, isIpAddress } from '../../util/net.js';
import { type ContainerDetails, containerName } from './container.js';

export interface ModelOptions {
  /** First part of every service ID. */
  hostname: string;
  /** --ip: address for published ports bound to a wildcard. */
  hostIp?: string;
  /** This host's own address, used when neither the binding nor --ip gives one. */
  hostAddress: string;
  internal: boolean;
  explicit: boolean;
  /** --tags, added to every service. */
  tags: string[];
}

export interface ModelResult {
  instances: ServiceInstance[];
  /**
   * One line each, naming the container and the setting:
   * `container <name>: <source>: <reason>; service on port <port>/<proto> skipped` or
   * `container <name>: <source>: <reason>; key ignored`.
   */
  errors: string[];
}

interface PortSpec {
  exposed: string; // "80"
  protocol: 'tcp' | 'udp';
  hostIp?: string;
  hostPort?: string;
}

/** One SERVICE_* setting (or nginx-proxy alias) of a container. */
interface Setting {
  /** Lowercase, without `SERVICE_` and without the port part. */
  key: string;
  /** The exposed port a port-specific setting applies to. */
  port?: string;
  value: string;
  /** For error lines: `label SERVICE_80_NAME`. */
  source: string;
  /** Precedence tier, see the head of this file. */
  rank: number;
  /** The variable or label name as written, and its index among the env entries (0 for labels). */
  name: string;
  index: number;
  /** Set when the port part of the key is not a number: the key is reported and ignored. */
  badPort?: string;
}

const RANK = { labelPort: 5, label: 4, envPort: 3, env: 2, aliasPort: 1, alias: 0 } as const;

const WILDCARD = new Set(['', '0.0.0.0', '::']);
const CHECK_KEYS = new Set([
  'check_http',
  'check_https',
  'check_http_method',
  'check_https_method',
  'check_tcp',
  'check_script',
  'check_cmd',
  'check_ttl',
  'check_grpc',
  'check_grpc_use_tls',
  'check_tls_skip_verify',
  'check_interval',
  'check_timeout',
  'check_initial_status',
  'check_deregister_after',
]);
const RESERVED = new Set(['name', 'tags', 'id', 'ignore']);
/** Meta that routes traffic (src/catalog/route-meta.ts): a bad value skips the service, not the key. */
const ROUTE_META_KEYS = new Set(['http_host', 'http_path', 'weight']);
const MAX_TAG = 255;
/** SERVICE_TAGS as a whole; every tag is limited to MAX_TAG. */
const MAX_TAGS_VALUE = 16_384;
const MAX_ID = 255;

/** Split a SERVICE_TAGS value at commas that are not escaped as `\,`. */
export function splitTags(value: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (ch === '\\' && value[i + 1] === ',') {
      cur += ',';
      i++;
    } else if (ch === ',') {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((t) => t.trim()).filter((t) => t.length > 0);
}

/** registrator's default name: the image's base name without tag or digest. */
export function defaultServiceName(image: string): string {
  const base = image.split('/').pop() ?? image;
  const bare = base.split('@')[0].split(':')[0];
  // Image names may hold '_' and '.', which are not DNS labels: fold them to '-'.
  return bare
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
}

function portsOf(c: ContainerDetails, internal: boolean): PortSpec[] {
  const specs = new Map<string, PortSpec>();
  const add = (key: string, binding?: { HostIp?: string; HostPort?: string } | null) => {
    const [exposed, proto = 'tcp'] = key.split('/');
    if (proto !== 'tcp' && proto !== 'udp') return; // sctp is not a service port here
    if (!/^\d{1,5}$/.test(exposed) || checkPort(exposed)) return; // not something Docker reports
    const hostPort = binding?.HostPort && !checkPort(binding.HostPort) ? String(Number(binding.HostPort)) : undefined;
    specs.set(`${Number(exposed)}/${proto}`, { exposed: String(Number(exposed)), protocol: proto, hostIp: binding?.HostIp ?? undefined, hostPort });
  };
  const hostNet = c.HostConfig?.NetworkMode === 'host';
  // Exposed ports first: with --net=host they are reachable on the host as they are.
  for (const key of Object.keys(c.Config.ExposedPorts ?? {})) add(key, hostNet ? { HostIp: '', HostPort: key.split('/')[0] } : undefined);
  for (const [key, bindings] of Object.entries(c.NetworkSettings?.Ports ?? {})) {
    add(key, Array.isArray(bindings) && bindings.length > 0 ? bindings[0] : undefined);
  }
  const all = [...specs.values()].sort((a, b) => Number(a.exposed) - Number(b.exposed) || a.protocol.localeCompare(b.protocol));
  return internal ? all : all.filter((p) => p.hostPort !== undefined);
}

function containerIp(c: ContainerDetails): string | undefined {
  if (c.NetworkSettings?.IPAddress) return c.NetworkSettings.IPAddress;
  // Docker lists networks by name; sorting keeps the choice independent of the object's order.
  const nets = Object.entries(c.NetworkSettings?.Networks ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [, net] of nets) if (net?.IPAddress) return net.IPAddress;
  return undefined;
}

/** Whether `a` wins over `b` for the same key: rank, then the upper-case spelling, then name and position. */
function beats(a: Setting, b: Setting): boolean {
  if (a.rank !== b.rank) return a.rank > b.rank;
  const ua = a.name === a.name.toUpperCase();
  const ub = b.name === b.name.toUpperCase();
  if (ua !== ub) return ua;
  if (a.name !== b.name) return a.name > b.name;
  return a.index > b.index; // duplicate env entries: the last one, as Docker merges them
}

/** `SERVICE_<rest>` → key, port; or the port part that is not a number. */
function parseKey(name: string): Pick<Setting, 'key' | 'port' | 'badPort'> {
  const key = name.slice('SERVICE_'.length).toLowerCase();
  const m = /^(\d[^_]*)_(.+)$/.exec(key);
  if (!m) return { key };
  if (!/^\d+$/.test(m[1])) return { key, badPort: m[1] };
  return { key: m[2], port: m[1] };
}

/** The container's SERVICE_* settings (labels and env) and nginx-proxy's VIRTUAL_HOST alias. */
function collectSettings(c: ContainerDetails): { settings: Setting[]; aliasErrors: string[] } {
  const settings: Setting[] = [];
  const aliasErrors: string[] = [];
  const env: Array<{ name: string; value: string; index: number }> = [];
  for (const [index, kv] of (Array.isArray(c.Config.Env) ? c.Config.Env : []).entries()) {
    if (typeof kv !== 'string') continue;
    const eq = kv.indexOf('=');
    if (eq <= 0) continue; // malformed entry without a name
    env.push({ name: kv.slice(0, eq), value: kv.slice(eq + 1), index });
  }
  for (const e of env) {
    if (!e.name.startsWith('SERVICE_')) continue;
    const k = parseKey(e.name);
    settings.push({ ...k, value: e.value, source: `env ${printable(e.name, 160)}`, rank: k.port === undefined ? RANK.env : RANK.envPort, name: e.name, index: e.index });
  }
  for (const [name, value] of Object.entries(c.Config.Labels ?? {})) {
    if (!name.startsWith('SERVICE_') || typeof value !== 'string') continue;
    const k = parseKey(name);
    settings.push({ ...k, value, source: `label ${printable(name, 160)}`, rank: k.port === undefined ? RANK.label : RANK.labelPort, name, index: 0 });
  }
  // nginx-proxy's VIRTUAL_HOST / VIRTUAL_PORT (env only), an alias of SERVICE_[<port>_]HTTP_HOST.
  const last = (n: string) => env.filter((e) => e.name === n).pop();
  const vhost = last('VIRTUAL_HOST');
  if (vhost && vhost.value) {
    const vport = last('VIRTUAL_PORT');
    const alias = { key: 'http_host', value: vhost.value, source: 'env VIRTUAL_HOST', name: 'VIRTUAL_HOST', index: vhost.index };
    if (!vport || vport.value === '') settings.push({ ...alias, rank: RANK.alias });
    else if (/^\d+$/.test(vport.value)) settings.push({ ...alias, port: vport.value, rank: RANK.aliasPort });
    else aliasErrors.push(`env VIRTUAL_PORT: "${printable(vport.value)}" is not a port number; VIRTUAL_HOST ignored`);
  }
  return { settings, aliasErrors };
}

const byKey = <T>([a]: [string, T], [b]: [string, T]) => (a < b ? -1 : a > b ? 1 : 0);

/** The settings that apply to one exposed port, the winner per key, in key order. */
function settingsFor(settings: Setting[], port: string): Map<string, Setting> {
  const out = new Map<string, Setting>();
  for (const s of settings) {
    if (s.badPort !== undefined || (s.port !== undefined && s.port !== port)) continue;
    const cur = out.get(s.key);
    if (!cur || beats(s, cur)) out.set(s.key, s);
  }
  return new Map([...out].sort(byKey));
}

/** Keys whose port part is not a number, the winner per key (so that a losing env var adds no line). */
function badPortKeys(settings: Setting[]): Setting[] {
  const out = new Map<string, Setting>();
  for (const s of settings) {
    if (s.badPort === undefined) continue;
    const cur = out.get(s.key);
    if (!cur || beats(s, cur)) out.set(s.key, s);
  }
  return [...out.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** Maximum length of a setting's value. */
function maxLength(key: string): number {
  if (key === 'check_script' || key === 'check_cmd') return MAX_COMMAND_LENGTH;
  if (key === 'tags') return MAX_TAGS_VALUE;
  return 512;
}

/** Keys that ask for a check, in registrator's order: the first one set decides the kind. */
const SELECTING_CHECK_KEYS: Array<[string, CheckDefinition['kind']]> = [
  ['check_http', 'http'], ['check_https', 'https'], ['check_cmd', 'cmd'], ['check_script', 'script'], ['check_ttl', 'ttl'], ['check_tcp', 'tcp'], ['check_grpc', 'grpc'],
];
const COMMON_CHECK_KEYS = ['check_initial_status', 'check_deregister_after'];
/** The settings each kind of check reads. */
const CHECK_USES: Record<CheckDefinition['kind'], string[]> = {
  http: [...COMMON_CHECK_KEYS, 'check_interval', 'check_timeout', 'check_http_method'],
  https: [...COMMON_CHECK_KEYS, 'check_interval', 'check_timeout', 'check_https_method', 'check_tls_skip_verify'],
  cmd: [...COMMON_CHECK_KEYS, 'check_interval'],
  script: [...COMMON_CHECK_KEYS, 'check_interval', 'check_timeout'],
  ttl: [...COMMON_CHECK_KEYS, 'check_ttl'],
  tcp: [...COMMON_CHECK_KEYS, 'check_interval', 'check_timeout'],
  grpc: [...COMMON_CHECK_KEYS, 'check_interval', 'check_timeout', 'check_grpc_use_tls', 'check_tls_skip_verify'],
};

function buildCheck(
  get: (k: string) => Setting | undefined,
  address: string,
  port: number,
  containerId: string,
  fail: (source: string, reason: string) => void,
  ignore: (source: string, reason: string) => void,
): CheckDefinition | undefined {
  // Bad values are sorted at the end: one the chosen check uses skips the service; one no check uses is ignored.
  const bad = new Map<string, { source: string; reason: string }>();
  const validated = <T>(k: string, check: (v: string) => string | undefined, value: (v: string) => T): T | undefined => {
    const s = get(k);
    if (!s) return undefined;
    const err = check(s.value);
    if (err) {
      bad.set(k, { source: s.source, reason: err });
      return undefined;
    }
    return value(s.value);
  };
  const duration = (k: string) => validated(k, checkDuration, (v) => v);
  const bool = (k: string) => validated(k, checkBoolean, (v) => parseBoolean(v)!);
  const method = (k: string) => validated(k, checkHttpMethod, (v) => v.toUpperCase());
  // Validate every check setting, even one no check uses: a typo should not pass silently.
  const interval = duration('check_interval');
  const timeout = duration('check_timeout');
  const ttl = duration('check_ttl');
  const dereg = duration('check_deregister_after');
  const initial = validated(
    'check_initial_status',
    (v) => (HEALTH_STATUSES.includes(v as HealthStatus) ? undefined : `"${printable(v)}" is not one of passing, warning, critical`),
    (v) => v as HealthStatus,
  );
  const httpMethod = method('check_http_method');
  const httpsMethod = method('check_https_method');
  const tcp = bool('check_tcp');
  const grpcUseTls = bool('check_grpc_use_tls');
  const skipVerify = bool('check_tls_skip_verify');
  // SERVICE_CHECK_GRPC: a boolean (the server's overall health), or the gRPC service to ask about.
  const grpc = validated(
    'check_grpc',
    (v) => (parseBoolean(v) !== undefined ? undefined : checkGrpcService(v)),
    (v): { service?: string } | false => {
      const b = parseBoolean(v);
      return b === undefined ? { service: v } : b ? {} : false;
    },
  );
  const path = (k: string) => validated(k, (v) => (/^\/[\x21-\x7e]*$/.test(v) ? undefined : `"${printable(v)}" is not a URL path starting with /`), (v) => v);
  const httpPath = path('check_http');
  const httpsPath = path('check_https');
  const cmd = get('check_cmd')?.value;
  const script = get('check_script')?.value;

  const hostPort = `${address.includes(':') ? `[${address}]` : address}:${port}`;
  let check: CheckDefinition | undefined;
  // registrator's order when several are set: http, https, cmd, script, ttl, tcp, grpc.
  if (get('check_http')) {
    if (httpPath !== undefined) check = { kind: 'http', target: `http://${hostPort}${httpPath}`, timeout, method: httpMethod };
  } else if (get('check_https')) {
    if (httpsPath !== undefined) check = { kind: 'https', target: `https://${hostPort}${httpsPath}`, timeout, method: httpsMethod, tlsSkipVerify: skipVerify || undefined };
  } else if (cmd !== undefined) {
    // Runs inside the container: Consul's Docker check (`docker exec <id> /bin/sh -c <cmd>`).
    if (!/^[0-9a-f]{12,64}$/i.test(containerId)) fail(get('check_cmd')!.source, `the container ID "${printable(containerId)}" is not one Docker gives`);
    check = { kind: 'cmd', target: cmd, containerId };
  } else if (script !== undefined) {
    const target = script.replaceAll('$SERVICE_IP', address).replaceAll('$SERVICE_PORT', String(port));
    if (target.length > MAX_COMMAND_LENGTH) fail(get('check_script')!.source, `longer than ${MAX_COMMAND_LENGTH} characters once $SERVICE_IP and $SERVICE_PORT are substituted`);
    check = { kind: 'script', target, timeout };
  } else if (get('check_ttl')) {
    if (ttl !== undefined) check = { kind: 'ttl', target: '', ttl };
  } else if (tcp) {
    check = { kind: 'tcp', target: hostPort, timeout };
  } else if (grpc) {
    const target = grpc.service === undefined ? hostPort : `${hostPort}/${grpc.service}`;
    check = { kind: 'grpc', target, timeout, grpcUseTls: !!grpcUseTls, tlsSkipVerify: (grpcUseTls && skipVerify) || undefined };
  }
  // What the first check key set asks for is what counts; every other bad check key is only reported.
  const asked = SELECTING_CHECK_KEYS.find(([k]) => get(k) !== undefined);
  const used = new Set<string>(asked ? [asked[0], ...CHECK_USES[asked[1]]] : []);
  for (const [k, b] of bad) (used.has(k) ? fail : ignore)(b.source, b.reason);
  if (!check) return undefined;
  if (check.kind !== 'ttl') check.interval = interval ?? '10s';
  if (initial) check.initialStatus = initial;
  if (dereg) check.deregisterAfter = dereg;
  // Drop undefined fields so fingerprints stay stable.
  for (const k of Object.keys(check) as Array<keyof CheckDefinition>) if (check[k] === undefined) delete check[k];
  return check;
}

export function containerServices(c: ContainerDetails, opts: ModelOptions): ModelResult {
  const name = containerName(c);
  const errors = new Set<string>();
  const instances: ServiceInstance[] = [];
  const { settings, aliasErrors } = collectSettings(c);
  const ports = portsOf(c, opts.internal);
  const isGroup = ports.length > 1;
  const hostNet = c.HostConfig?.NetworkMode === 'host';
  // Problems of keys that belong to no port: reported once, and only if some port is a service.
  const containerErrors = [
    ...badPortKeys(settings).map((s) => `${s.source}: "${printable(s.badPort!)}" is not a port number; key ignored`),
    ...aliasErrors,
  ];

  for (const p of ports) {
    const meta = settingsFor(settings, p.exposed);
    /** A set, non-empty setting: registrator's "" means unset. */
    const get = (k: string) => {
      const s = meta.get(k);
      return s && s.value !== '' ? s : undefined;
    };
    if (get('ignore')) continue;
    const nameSetting = get('name');
    if (!nameSetting && opts.explicit) continue;
    for (const e of containerErrors) errors.add(`container ${name}: ${e}`);

    const portErrors: string[] = [];
    const fail = (source: string, reason: string) => portErrors.push(`${source}: ${reason}`);
    const keyErrors: string[] = [];

    // Values of settings that define the service: control characters and length.
    for (const [key, s] of meta) {
      if (key === 'ignore' || !(RESERVED.has(key) || CHECK_KEYS.has(key) || ROUTE_META_KEYS.has(key))) continue;
      const err = checkText(s.value, maxLength(key));
      if (err) fail(s.source, err);
    }

    let serviceName: string;
    if (nameSetting) {
      serviceName = nameSetting.value.toLowerCase();
      if (!checkText(nameSetting.value)) {
        const err = checkDnsLabel(serviceName);
        if (err) fail(nameSetting.source, err);
      }
    } else {
      serviceName = defaultServiceName(c.Config.Image ?? '');
      if (!serviceName) fail('image', `cannot derive a service name from "${printable(String(c.Config.Image))}"; set SERVICE_NAME`);
    }
    if (isGroup && nameSetting?.port === undefined) serviceName = `${serviceName}-${p.exposed}`;
    if (serviceName.length > 63) fail(nameSetting?.source ?? 'image', `service name "${printable(serviceName, 80)}" is longer than 63 characters`);

    let address: string;
    let port: number;
    if (opts.internal) {
      address = hostNet ? opts.hostIp ?? opts.hostAddress : containerIp(c) ?? opts.hostIp ?? opts.hostAddress;
      port = Number(p.exposed);
    } else {
      address = p.hostIp && !WILDCARD.has(p.hostIp) ? p.hostIp : opts.hostIp ?? opts.hostAddress;
      port = Number(p.hostPort);
    }
    if (!address || (!isIpAddress(address) && !isHostname(address))) fail('address', `"${printable(String(address))}" is not an IP address or host name`);

    const idSetting = get('id');
    const udp = p.protocol === 'udp' ? ':udp' : '';
    // A generic SERVICE_ID on a container with several ports would give every port one ID (and
    // all but the first would be dropped): like the name, it gets the port, `<id>-<port>[:udp]`.
    const id = !idSetting
      ? `${opts.hostname}:${name}:${p.exposed}${udp}`
      : isGroup && idSetting.port === undefined
        ? `${idSetting.value}-${p.exposed}${udp}`
        : idSetting.value;
    // '.' and '..' would be path segments to Consul's and etcd v2's HTTP APIs, not names.
    const idErr =
      checkText(id, MAX_ID) ??
      (id.includes('/')
        ? 'may not contain "/"'
        : id === '.' || id === '..'
          ? 'may not be "." or ".."'
          : id.startsWith('_')
            ? 'may not start with "_" (etcd hides such keys)'
            : isReservedId(id)
              ? `"${printable(id)}" is reserved (harbormaster:<host> is a host's own heartbeat service)`
              : undefined);
    if (idErr) fail(idSetting?.source ?? `service id "${printable(id)}"`, idErr);

    const tagsSetting = get('tags');
    const tags = [...splitTags(tagsSetting?.value ?? ''), ...opts.tags];
    if (p.protocol === 'udp') tags.push('udp');
    // A SERVICE_TAGS value with control characters is reported above, once.
    for (const t of tagsSetting && checkText(tagsSetting.value, MAX_TAGS_VALUE) ? opts.tags : tags) {
      const err = checkText(t, MAX_TAG);
      if (err) fail(opts.tags.includes(t) ? '--tags' : tagsSetting!.source, `a tag ${err}`);
    }

    const userMeta: Array<[string, string]> = [];
    for (const [key, s] of meta) {
      if (RESERVED.has(key) || CHECK_KEYS.has(key)) continue;
      if (ROUTE_META_KEYS.has(key)) {
        if (s.value === '' || checkText(s.value)) continue; // "" is unset; bad text is reported above
        const err = checkRouteMeta(key, s.value);
        if (err) fail(s.source, err);
        else userMeta.push([key, s.value]);
        continue;
      }
      const err = checkMetaKey(key) ?? checkText(s.value);
      if (err) keyErrors.push(`${s.source}: ${err}; key ignored`);
      else userMeta.push([key, s.value]);
    }
    if (userMeta.length > MAX_USER_META_KEYS) {
      fail(
        'meta',
        `${userMeta.length} meta keys from SERVICE_<key> settings, at most ${MAX_USER_META_KEYS} (Consul allows ${MAX_META_KEYS} per service, ${OWN_META_KEYS.length} of them harbormaster's own: ${OWN_META_KEYS.join(', ')})`,
      );
    }

    const check = buildCheck(get, address, port, c.Id, fail, (source, reason) => keyErrors.push(`${source}: ${reason}; no check uses it, key ignored`));

    for (const e of keyErrors) errors.add(`container ${name}: ${e}`);
    if (portErrors.length > 0) {
      for (const e of portErrors) errors.add(`container ${name}: ${e}; service on port ${p.exposed}/${p.protocol} skipped`);
      continue;
    }
    const inst: ServiceInstance = {
      id,
      name: serviceName,
      address,
      port,
      protocol: p.protocol,
      tags: [...new Set(tags)],
      // fromEntries: a key such as "__proto__" stays an ordinary key.
      meta: Object.fromEntries(userMeta),
      host: opts.hostname,
      status: 'passing',
    };
    if (check) inst.check = check;
    instances.push(inst);
  }
  return { instances, errors: [...errors] };
}
