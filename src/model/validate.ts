// Validation of values that come from outside (labels, env, flags, registry responses).
// Each check returns an error text or undefined, so callers can name the source in one line.
import { checkRouteMeta } from '../catalog/route-meta.js';
import { isHostname, isIpAddress } from '../util/net.js';
import {
  type CheckDefinition,
  HEALTH_STATUSES,
  type HealthStatus,
  MAX_META_KEY_LENGTH,
  MAX_META_VALUE_LENGTH,
  MAX_USER_META_KEYS,
  OWN_META_KEYS,
  type ServiceInstance,
} from './service-instance.js';

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const GO_DURATION = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/;
const META_KEY = /^[a-z0-9_-]+$/;
/** RFC 9110 token: what an HTTP method may hold. */
const HTTP_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A gRPC service name as Consul's gRPC check takes it after the slash: dot-separated names. */
const GRPC_SERVICE = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
const CHECK_KINDS: ReadonlySet<string> = new Set(['http', 'https', 'tcp', 'script', 'ttl', 'grpc', 'cmd']);

export const MAX_VALUE_LENGTH = MAX_META_VALUE_LENGTH;
/** SERVICE_CHECK_SCRIPT and SERVICE_CHECK_CMD. */
export const MAX_COMMAND_LENGTH = 1024;
export const MAX_GRPC_SERVICE_LENGTH = 255;
const MAX_METHOD_LENGTH = 32;

export function checkText(value: string, max = MAX_VALUE_LENGTH): string | undefined {
  if (CONTROL.test(value)) return 'contains control characters';
  if (value.length > max) return `longer than ${max} characters`;
  return undefined;
}

export function checkDnsLabel(value: string): string | undefined {
  if (!DNS_LABEL.test(value)) return `"${printable(value)}" is not a DNS label (a-z, 0-9, '-', at most 63, no leading or trailing '-')`;
  return undefined;
}

export function checkDuration(value: string): string | undefined {
  if (!GO_DURATION.test(value)) return `"${printable(value)}" is not a duration like 10s, 1m30s or 500ms`;
  return undefined;
}

/** A meta key of a service's own (user) meta: Consul's rules, and `hm_` is harbormaster's. */
export function checkMetaKey(key: string): string | undefined {
  if (key.length > MAX_META_KEY_LENGTH) return `meta key "${printable(key)}" is longer than ${MAX_META_KEY_LENGTH} characters`;
  if (!META_KEY.test(key)) return `meta key "${printable(key)}" may only hold a-z, 0-9, '_' and '-'`;
  if (key.startsWith('consul')) return `meta key "${key}" may not start with "consul"`;
  if (key.startsWith('hm_')) return `meta key "${key}" is reserved: keys starting with "hm_" are harbormaster's own`;
  return undefined;
}

const TRUE_WORDS = new Set(['true', '1', 'yes', 'on']);
const FALSE_WORDS = new Set(['false', '0', 'no', 'off']);

/** true/false, 1/0, yes/no, on/off (any case); undefined for anything else. */
export function parseBoolean(value: string): boolean | undefined {
  const v = value.toLowerCase();
  if (TRUE_WORDS.has(v)) return true;
  if (FALSE_WORDS.has(v)) return false;
  return undefined;
}

export function checkBoolean(value: string): string | undefined {
  if (parseBoolean(value) === undefined) return `"${printable(value)}" is not a boolean (true/false, 1/0, yes/no, on/off)`;
  return undefined;
}

/** An HTTP method for a check: an HTTP token; callers upper-case it. */
export function checkHttpMethod(value: string): string | undefined {
  if (value.length > MAX_METHOD_LENGTH || !HTTP_TOKEN.test(value)) return `"${printable(value)}" is not an HTTP method (a token of at most ${MAX_METHOD_LENGTH} characters, e.g. GET, HEAD)`;
  return undefined;
}

/** The gRPC service a gRPC check asks about (the part after `host:port/`). */
export function checkGrpcService(value: string): string | undefined {
  if (value.length > MAX_GRPC_SERVICE_LENGTH || !GRPC_SERVICE.test(value)) {
    return `"${printable(value)}" is neither true/false nor a gRPC service name (A-Z a-z 0-9 _ -, dot-separated, at most ${MAX_GRPC_SERVICE_LENGTH} characters)`;
  }
  return undefined;
}

export function checkPort(value: string | number): string | undefined {
  const n = typeof value === 'number' ? value : /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 65535) return `"${printable(String(value))}" is not a port number (1-65535)`;
  return undefined;
}

/** Parse a Go-style duration into milliseconds; undefined if it is not one. */
export function durationMs(value: string): number | undefined {
  if (checkDuration(value)) return undefined;
  const units: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  for (const m of value.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) total += Number(m[1]) * units[m[2]];
  return total;
}

/** Shorten and escape a value so an error line stays one readable line. */
export function printable(value: string, max = 60): string {
  // JSON escapes C0 controls, '"' and '\\'; DEL, C1 controls and the line separators it leaves as they are.
  const escaped = JSON.stringify(value)
    .slice(1, -1)
    .replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return escaped.length > max ? `${escaped.slice(0, max)}…` : escaped;
}

function checkId(value: string): string | undefined {
  if (value === '') return 'is empty';
  return checkText(value, 255) ?? (value.includes('/') ? 'may not contain "/"' : value === '.' || value === '..' ? 'may not be "." or ".."' : value.startsWith('_') ? 'may not start with "_"' : undefined);
}

/** What the registry side requires of a check definition; an error naming the field, or undefined. */
export function validateCheck(c: CheckDefinition): string | undefined {
  if (!CHECK_KINDS.has(c.kind)) return `kind "${printable(String(c.kind))}" is not a check kind`;
  const target = checkText(c.target, MAX_COMMAND_LENGTH);
  if (target) return `target ${target}`;
  if (c.kind === 'ttl' ? !c.ttl : c.target === '') return c.kind === 'ttl' ? 'ttl is missing' : 'target is empty';
  for (const k of ['interval', 'timeout', 'ttl', 'deregisterAfter'] as const) {
    const v = c[k];
    if (v === undefined) continue;
    const err = checkDuration(v);
    if (err) return `${k} ${err}`;
  }
  if (c.initialStatus !== undefined && !HEALTH_STATUSES.includes(c.initialStatus as HealthStatus)) return `initialStatus "${printable(String(c.initialStatus))}" is not a status`;
  if (c.kind === 'cmd') {
    if (!c.containerId) return 'a cmd check needs containerId';
    const err = checkText(c.containerId, 255);
    if (err) return `containerId ${err}`;
  }
  if (c.method !== undefined) {
    const err = checkHttpMethod(c.method) ?? (c.method !== c.method.toUpperCase() ? `"${printable(c.method)}" is not upper-case` : undefined);
    if (err) return `method ${err}`;
  }
  return undefined;
}

/**
 * What the registries require of an instance (Consul's limits, the codec's read-side rules, the
 * routing meta): an error naming the field, or undefined.
 */
export function validateInstance(s: ServiceInstance): string | undefined {
  const name = checkDnsLabel(s.name);
  if (name) return `name ${name}`;
  const id = checkId(s.id);
  if (id) return `id ${id}`;
  if (s.address === '') return 'address is empty';
  if (!isIpAddress(s.address) && !isHostname(s.address)) return `address "${printable(s.address)}" is not an IP address or host name`;
  const port = checkPort(s.port);
  if (port) return `port ${port}`;
  if (s.protocol !== 'tcp' && s.protocol !== 'udp') return `protocol "${printable(String(s.protocol))}" is not tcp or udp`;
  for (const [i, t] of s.tags.entries()) {
    const err = checkText(t, 255);
    if (err) return `tags[${i}] ${err}`;
  }
  const keys = Object.keys(s.meta);
  if (keys.length > MAX_USER_META_KEYS) return `${keys.length} meta keys, at most ${MAX_USER_META_KEYS} (${MAX_USER_META_KEYS + OWN_META_KEYS.length} with ${OWN_META_KEYS.join(', ')})`;
  for (const k of keys) {
    const err = checkMetaKey(k) ?? checkText(s.meta[k], MAX_META_VALUE_LENGTH) ?? checkRouteMeta(k, s.meta[k]);
    if (err) return `meta.${printable(k)} ${err}`;
  }
  const host = checkText(s.host, 255);
  if (host) return `host ${host}`;
  if (!HEALTH_STATUSES.includes(s.status)) return `status "${printable(String(s.status))}" is not a status`;
  if (s.check) {
    const err = validateCheck(s.check);
    if (err) return `check ${err}`;
  }
  return undefined;
}
