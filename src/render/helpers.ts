// Handlebars for configuration files: an isolated instance (nothing global is touched), no HTML
// escaping (the output is not HTML), and helpers for selecting, ordering and quoting. The
// quoting helpers are the escaping policy: validated values (names, hosts, paths, addresses,
// ports) may be written as they are; anything else goes through nginxQuote / haproxyQuote.
import Handlebars from 'handlebars';
import { isIP } from 'node:net';
import { parseTrustedProxies } from '../proxy/trusted-proxies.js';
import { parseSize, SIZE_HINT } from '../util/size.js';

export type HandlebarsInstance = ReturnType<typeof Handlebars.create>;

/** A template problem with the line it was found on, when known. */
export class TemplateError extends Error {
  override name = 'TemplateError';
  constructor(
    message: string,
    readonly line?: number,
  ) {
    super(message);
  }
}

interface HelperOptions {
  name?: string;
  loc?: { start: { line: number; column: number } };
  fn?: (ctx: unknown) => string;
  inverse?: (ctx: unknown) => string;
  hash?: Record<string, unknown>;
}

// eslint-disable-next-line no-control-regex
const UNWRITABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const percent = (ch: string) =>
  [...Buffer.from(ch, 'utf8')].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('');

const str = (v: unknown): string => (v === undefined || v === null ? '' : typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v));

/**
 * One nginx token: a double-quoted string with `\` and `"` escaped. nginx has no escape for `$`
 * (it would start a variable) nor for control characters: those are percent-encoded.
 */
export function nginxQuote(value: unknown): string {
  const s = str(value).replace(UNWRITABLE, percent).replace(/\$/g, '%24');
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/**
 * A regular expression as one nginx token (`if ($x ~ <here>)`, `location ~ <here>`): double-quoted
 * so that `{`, `}`, `;` and spaces stay inside it; nginx's parser turns `\\` into `\` and `\"` into
 * `"`, so both are escaped; control characters become PCRE `\x{hh}` escapes. A regex is not a
 * complex value: `$` stays a regex anchor, nginx does not expand variables there.
 */
export function nginxRegex(value: unknown): string {
  const s = str(value).replace(/[\\"]/g, (c) => `\\${c}`);
  return `"${s.replace(UNWRITABLE, (c) => `\\x{${c.codePointAt(0)!.toString(16)}}`)}"`;
}

/**
 * One HAProxy word: single-quoted, where nothing is special (no escapes, no `${VAR}` expansion);
 * a single quote closes, is escaped outside, and reopens. Control characters are percent-encoded.
 */
export function haproxyQuote(value: unknown): string {
  const s = str(value).replace(UNWRITABLE, percent);
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * One HAProxy word for an argument HAProxy reads as a log-format string (set-header, add-header,
 * set-var-fmt, `return ... lf-string`, redirect location, log-format): as haproxyQuote, and every
 * `%` doubled, so that a value cannot start a `%[sample]` expression (`%[env(SECRET)]` would
 * read the proxy's environment). Everywhere else (ACL patterns, `string`) haproxyQuote: there
 * `%%` would stay two characters.
 */
export function haproxyFmt(value: unknown): string {
  const s = str(value).replace(/%/g, '%%').replace(UNWRITABLE, (c) => percent(c).replace(/%/g, '%%'));
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** 16-bit groups of an IPv6 address (`::` expanded, a trailing dotted quad as two groups). */
function ipv6Groups(addr: string): number[] {
  let a = addr;
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (quad) {
    const [b0, b1, b2, b3] = quad.slice(1).map(Number);
    a = `${a.slice(0, quad.index)}${((b0 << 8) | b1).toString(16)}:${((b2 << 8) | b3).toString(16)}`;
  }
  const [head, tail] = a.split('::');
  const part = (x: string | undefined) => (x ? x.split(':').map((g) => parseInt(g, 16)) : []);
  const h = part(head);
  const t = part(tail);
  return tail === undefined ? h : [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
}

/**
 * An `address/bits` entry as its network (`10.1.2.3/8` → `10.0.0.0/8`): nginx warns about
 * "meaningless low address bits" on every load otherwise. IPv6 is written uncompressed.
 */
export function networkOf(entry: string): string {
  const [addr, bitsText] = entry.split('/');
  const bits = Number(bitsText);
  const v4 = isIP(addr) === 4;
  const width = v4 ? 32 : 128;
  const groups = v4 ? addr.split('.').map(Number) : ipv6Groups(addr);
  const size = v4 ? 8 : 16;
  let value = groups.reduce((acc, g) => (acc << BigInt(size)) | BigInt(g), 0n);
  value &= ((1n << BigInt(width)) - 1n) ^ ((1n << BigInt(width - bits)) - 1n);
  const out: string[] = [];
  for (let i = width / size - 1; i >= 0; i--) out.push(Number((value >> BigInt(i * size)) & ((1n << BigInt(size)) - 1n)).toString(v4 ? 10 : 16));
  return `${out.join(v4 ? '.' : ':')}/${bits}`;
}

/**
 * The addresses/CIDRs of an environment variable (a comma list, as --trusted-proxies takes), as
 * networks; [] when it is unset or blank. A bad value fails the render naming the variable: it is
 * never written into a configuration unchecked.
 */
export function envCidrs(env: Readonly<Record<string, string | undefined>> | undefined, name: string): string[] {
  const raw = env?.[name];
  if (raw === undefined || raw.trim() === '') return [];
  try {
    return [...new Set(parseTrustedProxies(raw).map(networkOf))];
  } catch (err) {
    throw new Error(`${name}: ${(err as Error).message}`);
  }
}

/**
 * A size variable of the template's `env` (HM_MAX_BODY_SIZE=512m) as bytes, `def` when unset;
 * anything else than a size is an error naming the variable (nothing unchecked reaches a config).
 */
export function envSize(env: Readonly<Record<string, string | undefined>> | undefined, name: string, def: string): number {
  const raw = env?.[name];
  const n = parseSize(raw === undefined || raw.trim() === '' ? def : raw);
  if (n === undefined) throw new Error(`${name}=${JSON.stringify(raw ?? def).slice(0, 40)}: ${SIZE_HINT}`);
  return n;
}

/** `a.b.c` lookups on plain data; never reaches prototypes. */
export function lookupPath(item: unknown, path: string): unknown {
  let cur: unknown = item;
  for (const key of path.split('.')) {
    if (cur === null || typeof cur !== 'object' || !Object.prototype.hasOwnProperty.call(cur, key)) return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}

function compare(a: unknown, b: unknown): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (a === undefined || a === null) return b === undefined || b === null ? 0 : 1; // missing values last
  if (b === undefined || b === null) return -1;
  const x = str(a);
  const y = str(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

const list = (v: unknown): unknown[] => {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new Error(`expected a list, got ${typeof v}`);
  return v;
};

const truthy = (v: unknown) => (Array.isArray(v) ? v.length > 0 : !!v);

/** Helper functions by name; every one takes Handlebars' options object last. */
export const HELPERS: Record<string, (...args: unknown[]) => unknown> = {
  /** Items (services or instances) carrying a tag. */
  byTag: (items, tag) => list(items).filter((i) => (lookupPath(i, 'tags') as unknown[] | undefined)?.includes(tag)),
  /** `[{key, items}]` sorted by key, for the value at a path. */
  groupBy: (items, path) => {
    const groups = new Map<string, unknown[]>();
    for (const i of list(items)) {
      const key = str(lookupPath(i, str(path)));
      const g = groups.get(key);
      if (g) g.push(i);
      else groups.set(key, [i]);
    }
    return [...groups.keys()].sort(compare).map((key) => ({ key, items: groups.get(key)! }));
  },
  /** Items whose value at a path equals the value; with no value, items where it is set. */
  where: (...args) => {
    const [items, path, ...rest] = args.slice(0, -1);
    const p = str(path);
    if (rest.length === 0) return list(items).filter((i) => truthy(lookupPath(i, p)));
    return list(items).filter((i) => lookupPath(i, p) === rest[0] || str(lookupPath(i, p)) === str(rest[0]));
  },
  /** A sorted copy (numbers numerically, text by code point, missing values last); stable. */
  sortBy: (items, path) => [...list(items)].sort((a, b) => compare(lookupPath(a, str(path)), lookupPath(b, str(path)))),
  join: (...args) => {
    const [items, sep] = args.slice(0, -1);
    return list(items)
      .map(str)
      .join(args.length > 2 ? str(sep) : ',');
  },
  default: (value, fallback) => (value === undefined || value === null || value === '' ? fallback : value),
  json: (value) => JSON.stringify(value ?? null),
  nginxQuote: (value) => nginxQuote(value),
  nginxRegex: (value) => nginxRegex(value),
  haproxyQuote: (value) => haproxyQuote(value),
  haproxyFmt: (value) => haproxyFmt(value),
  /** `address:port`, with IPv6 addresses in brackets. */
  hostPort: (address, port) => (isIP(str(address)) === 6 ? `[${str(address)}]:${str(port)}` : `${str(address)}:${str(port)}`),
  eq: (a, b) => a === b,
  ne: (a, b) => a !== b,
  lt: (a, b) => compare(a, b) < 0,
  gt: (a, b) => compare(a, b) > 0,
  and: (...args) => args.slice(0, -1).every(truthy),
  or: (...args) => args.slice(0, -1).some(truthy),
  not: (a) => !truthy(a),
  /** A whole number within [lo, hi] (e.g. weights: nginx wants ≥ 1, HAProxy ≤ 256). */
  clamp: (v, lo, hi) => Math.min(Number(hi), Math.max(Number(lo), Math.trunc(Number(v)) || 0)),
  /** `{{#each (envCidrs "HM_TRUSTED_PROXIES")}}`: the variable of the template's `env`, validated. */
  envCidrs: (...args) => {
    const o = args[args.length - 1] as HelperOptions & { data?: { root?: { env?: Record<string, string | undefined> } } };
    const root = o.data?.root;
    try {
      return envCidrs(root && Object.prototype.hasOwnProperty.call(root, 'env') ? root.env : undefined, str(args[0]));
    } catch (err) {
      // The message names the variable: that is what the reader has to fix, not the helper.
      throw new TemplateError((err as Error).message, o.loc?.start.line);
    }
  },
  /** `{{envSize "HM_MAX_BODY_SIZE" "1g"}}`: bytes, validated (the variable of the template's `env`, or the default). */
  envSize: (...args) => {
    const o = args[args.length - 1] as HelperOptions & { data?: { root?: { env?: Record<string, string | undefined> } } };
    const root = o.data?.root;
    try {
      return envSize(root && Object.prototype.hasOwnProperty.call(root, 'env') ? root.env : undefined, str(args[0]), str(args[1]));
    } catch (err) {
      throw new TemplateError((err as Error).message, o.loc?.start.line);
    }
  },
  /** A list cut into lists of at most `size` items (HAProxy reads at most 64 words per line). */
  chunks: (items, size) => {
    const n = Math.max(1, Math.trunc(Number(size)) || 1);
    const all = list(items);
    const out: unknown[][] = [];
    for (let i = 0; i < all.length; i += n) out.push(all.slice(i, i + n));
    return out;
  },
  /** The whole numbers from `from` up to, not including, `to` (at most 1,000). */
  range: (from, to) => {
    const a = Math.trunc(Number(from)) || 0;
    const b = Math.min(a + 1000, Math.trunc(Number(to)) || 0);
    return Array.from({ length: Math.max(0, b - a) }, (_, i) => a + i);
  },
  len: (v) => (Array.isArray(v) ? v.length : typeof v === 'string' ? v.length : v && typeof v === 'object' ? Object.keys(v).length : 0),
};

/** A fresh Handlebars instance with the helpers; helper errors carry the template line. */
export function createHandlebars(): HandlebarsInstance {
  const hb = Handlebars.create();
  for (const [name, fn] of Object.entries(HELPERS)) {
    hb.registerHelper(name, function (this: unknown, ...args: unknown[]) {
      try {
        return fn.apply(this, args);
      } catch (err) {
        const o = args[args.length - 1] as HelperOptions;
        if (err instanceof TemplateError) throw err;
        throw new TemplateError(`${name}: ${(err as Error).message}`, o?.loc?.start.line);
      }
    });
  }
  hb.registerHelper('helperMissing', function (...args: unknown[]) {
    const o = args[args.length - 1] as HelperOptions;
    throw new TemplateError(`unknown helper "${o.name}"`, o.loc?.start.line);
  });
  return hb;
}
