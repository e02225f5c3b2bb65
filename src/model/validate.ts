// Validation of values that come from outside (labels, env, flags, registry responses).
// Each check returns an error text or undefined, so callers can name the source in one line.

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const GO_DURATION = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/;
const META_KEY = /^[a-z0-9_-]{1,128}$/;

export const MAX_VALUE_LENGTH = 512;

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

export function checkMetaKey(key: string): string | undefined {
  if (!META_KEY.test(key)) return `meta key "${printable(key)}" may only hold a-z, 0-9, '_' and '-'`;
  if (key.startsWith('consul')) return `meta key "${key}" may not start with "consul"`;
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
  const escaped = JSON.stringify(value).slice(1, -1);
  return escaped.length > max ? `${escaped.slice(0, max)}…` : escaped;
}
