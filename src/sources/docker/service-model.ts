// Container → ServiceInstance[] following registrator's documented rules, plus validation:
// a bad value skips the service it belongs to and is reported as one line naming the key.
import type { CheckDefinition, HealthStatus, ServiceInstance } from '../../model/service-instance.js';
import { HEALTH_STATUSES } from '../../model/service-instance.js';
import {
  checkDnsLabel,
  checkDuration,
  checkMetaKey,
  checkText,
  printable,
} from '../../model/validate.js';
import { checkRouteMeta } from '../../catalog/route-meta.js';
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
  /** One line each: `container <name>: <KEY>: <reason>`. */
  errors: string[];
}

interface PortSpec {
  exposed: string; // "80"
  protocol: 'tcp' | 'udp';
  hostIp?: string;
  hostPort?: string;
}

interface MetaValue {
  value: string;
  /** Where it came from, for error lines: `label SERVICE_80_NAME`. */
  source: string;
}

const WILDCARD = new Set(['', '0.0.0.0', '::']);
const CHECK_KEYS = new Set([
  'check_http',
  'check_https',
  'check_tcp',
  'check_script',
  'check_ttl',
  'check_grpc',
  'check_grpc_use_tls',
  'check_interval',
  'check_timeout',
  'check_initial_status',
  'check_deregister_after',
  'check_cmd',
]);
const RESERVED = new Set(['name', 'tags', 'id', 'ignore']);
const MAX_TAG = 255;
const MAX_META = 64;

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
  const add = (key: string, binding?: { HostIp?: string; HostPort?: string }) => {
    const [exposed, proto = 'tcp'] = key.split('/');
    if (proto !== 'tcp' && proto !== 'udp') return; // sctp is not a service port here
    specs.set(key, { exposed, protocol: proto, hostIp: binding?.HostIp, hostPort: binding?.HostPort || undefined });
  };
  const hostNet = c.HostConfig?.NetworkMode === 'host';
  // Exposed ports first: with --net=host they are reachable on the host as they are.
  for (const key of Object.keys(c.Config.ExposedPorts ?? {})) add(key, hostNet ? { HostIp: '', HostPort: key.split('/')[0] } : undefined);
  for (const [key, bindings] of Object.entries(c.NetworkSettings?.Ports ?? {})) {
    add(key, bindings && bindings.length > 0 ? bindings[0] : undefined);
  }
  const all = [...specs.values()].sort((a, b) => Number(a.exposed) - Number(b.exposed) || a.protocol.localeCompare(b.protocol));
  return internal ? all : all.filter((p) => p.hostPort !== undefined);
}

function containerIp(c: ContainerDetails): string | undefined {
  if (c.NetworkSettings?.IPAddress) return c.NetworkSettings.IPAddress;
  for (const net of Object.values(c.NetworkSettings?.Networks ?? {})) if (net?.IPAddress) return net.IPAddress;
  return undefined;
}

/** SERVICE_* settings of the container: env first, then labels, so labels win. */
function serviceSettings(c: ContainerDetails): Array<{ key: string; value: string; source: string }> {
  const out: Array<{ key: string; value: string; source: string }> = [];
  // nginx-proxy's VIRTUAL_HOST / VIRTUAL_PORT, honoured as a (lower-priority) http_host.
  const env = new Map((c.Config.Env ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const vhost = env.get('VIRTUAL_HOST');
  if (vhost) {
    const vport = env.get('VIRTUAL_PORT');
    if (vport === undefined) out.push({ key: 'http_host', value: vhost, source: 'env VIRTUAL_HOST' });
    else out.push({ key: `${vport}_http_host`, value: vhost, source: /^\d+$/.test(vport) ? 'env VIRTUAL_HOST' : 'env VIRTUAL_PORT' });
  }
  for (const kv of c.Config.Env ?? []) {
    const eq = kv.indexOf('=');
    if (eq < 0) continue;
    const name = kv.slice(0, eq);
    if (name.startsWith('SERVICE_')) out.push({ key: name.slice(8).toLowerCase(), value: kv.slice(eq + 1), source: `env ${name}` });
  }
  for (const [name, value] of Object.entries(c.Config.Labels ?? {})) {
    if (name.startsWith('SERVICE_')) out.push({ key: name.slice(8).toLowerCase(), value, source: `label ${name}` });
  }
  return out;
}

/** Metadata for one port: generic keys, overridden by `<port>_<key>`; records which came from the port. */
function metadataFor(
  settings: Array<{ key: string; value: string; source: string }>,
  port: string,
  errors: string[],
): { meta: Map<string, MetaValue>; fromPort: Set<string> } {
  const meta = new Map<string, MetaValue>();
  const fromPort = new Set<string>();
  for (const s of settings) {
    const m = /^(\d[^_]*)_(.+)$/.exec(s.key);
    if (m) {
      if (!/^\d+$/.test(m[1])) {
        errors.push(`${s.source}: "${printable(m[1])}" is not a port number`);
        continue;
      }
      if (m[1] !== port) continue;
      meta.set(m[2], { value: s.value, source: s.source });
      fromPort.add(m[2]);
    } else if (!fromPort.has(s.key)) {
      meta.set(s.key, { value: s.value, source: s.source });
    }
  }
  return { meta, fromPort };
}

function buildCheck(
  meta: Map<string, MetaValue>,
  address: string,
  port: number,
  fail: (source: string, reason: string) => void,
): CheckDefinition | undefined {
  const get = (k: string) => meta.get(k);
  const duration = (k: string): string | undefined => {
    const v = get(k);
    if (!v) return undefined;
    const err = checkDuration(v.value);
    if (err) fail(v.source, err);
    return v.value;
  };
  // Validate every check setting, even one no check uses: a typo should not pass silently.
  const interval = duration('check_interval');
  const timeout = duration('check_timeout');
  const ttl = duration('check_ttl');
  const dereg = duration('check_deregister_after');
  const initial = get('check_initial_status');
  if (initial && !HEALTH_STATUSES.includes(initial.value as HealthStatus)) {
    fail(initial.source, `"${printable(initial.value)}" is not one of passing, warning, critical`);
  }
  const hostPort = `${address.includes(':') ? `[${address}]` : address}:${port}`;
  let check: CheckDefinition | undefined;
  const http = get('check_http') ?? get('check_https');
  if (http) {
    const scheme = get('check_http') ? 'http' : 'https';
    if (!/^\/[\x21-\x7e]*$/.test(http.value)) fail(http.source, `"${printable(http.value)}" is not a URL path starting with /`);
    check = { kind: scheme, target: `${scheme}://${hostPort}${http.value}`, timeout };
  } else if (get('check_script')) {
    const v = get('check_script')!;
    const err = checkText(v.value, 1024);
    if (err) fail(v.source, err);
    const target = v.value.replaceAll('$SERVICE_IP', address).replaceAll('$SERVICE_PORT', String(port));
    check = { kind: 'script', target };
  } else if (get('check_ttl')) {
    check = { kind: 'ttl', target: '', ttl };
  } else if (get('check_tcp')) {
    check = { kind: 'tcp', target: hostPort, timeout };
  } else if (get('check_grpc')) {
    check = { kind: 'grpc', target: hostPort, timeout, grpcUseTls: !!get('check_grpc_use_tls')?.value };
  }
  if (!check) return undefined;
  if (check.kind !== 'ttl') check.interval = interval ?? '10s';
  if (initial) check.initialStatus = initial.value as HealthStatus;
  if (dereg) check.deregisterAfter = dereg;
  // Drop undefined fields so fingerprints stay stable.
  for (const k of Object.keys(check) as Array<keyof CheckDefinition>) if (check[k] === undefined) delete check[k];
  return check;
}

export function containerServices(c: ContainerDetails, opts: ModelOptions): ModelResult {
  const name = containerName(c);
  const errors = new Set<string>();
  const instances: ServiceInstance[] = [];
  const settings = serviceSettings(c);
  const ports = portsOf(c, opts.internal);
  const isGroup = ports.length > 1;
  const hostNet = c.HostConfig?.NetworkMode === 'host';

  for (const p of ports) {
    const portErrors: string[] = [];
    const { meta, fromPort } = metadataFor(settings, p.exposed, portErrors);
    const fail = (source: string, reason: string) => portErrors.push(`${source}: ${reason}`);
    for (const [key, v] of meta) {
      const err = checkText(v.value, key === 'check_script' ? 1024 : undefined);
      if (err) fail(v.source, err);
    }
    if (meta.get('ignore')?.value) continue;

    let serviceName = meta.get('name')?.value ?? '';
    if (serviceName) {
      const err = checkDnsLabel(serviceName.toLowerCase());
      if (err) fail(meta.get('name')!.source, err);
      serviceName = serviceName.toLowerCase();
    } else {
      if (opts.explicit) continue;
      serviceName = defaultServiceName(c.Config.Image);
      if (!serviceName) fail('image', `cannot derive a service name from "${printable(c.Config.Image)}"; set SERVICE_NAME`);
    }
    if (isGroup && !fromPort.has('name')) serviceName = `${serviceName}-${p.exposed}`;
    if (serviceName.length > 63) fail(meta.get('name')?.source ?? 'image', `service name "${serviceName}" is longer than 63 characters`);

    let address: string;
    let port: number;
    if (opts.internal) {
      address = hostNet ? opts.hostIp ?? opts.hostAddress : containerIp(c) ?? opts.hostIp ?? opts.hostAddress;
      port = Number(p.exposed);
    } else {
      address = p.hostIp && !WILDCARD.has(p.hostIp) ? p.hostIp : opts.hostIp ?? opts.hostAddress;
      port = Number(p.hostPort);
    }

    let id = `${opts.hostname}:${name}:${p.exposed}${p.protocol === 'udp' ? ':udp' : ''}`;
    const idSetting = meta.get('id');
    if (idSetting?.value) {
      const err = checkText(idSetting.value, 255) ?? (idSetting.value.includes('/') ? 'may not contain "/"' : undefined);
      if (err) fail(idSetting.source, err);
      id = idSetting.value;
    }

    const tags = [...splitTags(meta.get('tags')?.value ?? ''), ...opts.tags];
    if (p.protocol === 'udp') tags.push('udp');
    for (const t of tags) if (t.length > MAX_TAG) fail(meta.get('tags')?.source ?? '--tags', `tag longer than ${MAX_TAG} characters`);

    const instanceMeta: Record<string, string> = {};
    for (const [key, v] of [...meta].sort(([a], [b]) => a.localeCompare(b))) {
      if (RESERVED.has(key) || CHECK_KEYS.has(key)) continue;
      const err = checkMetaKey(key) ?? checkRouteMeta(key, v.value);
      if (err) fail(v.source, err);
      else instanceMeta[key] = v.value;
    }
    if (Object.keys(instanceMeta).length > MAX_META) fail('SERVICE_*', `more than ${MAX_META} meta keys`);

    const check = buildCheck(meta, address, port, fail);

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
      meta: instanceMeta,
      host: opts.hostname,
      status: 'passing',
    };
    if (check) inst.check = check;
    instances.push(inst);
  }
  return { instances, errors: [...errors] };
}
