// Template jobs from flags (`--template src:dest[:reload-cmd]`, with `--check` / `--verify` /
// `--haproxy-runtime` attached to the --template before them) and from a JSON or YAML --config file. Everything is
// validated here; each problem is one line naming the flag or the file and field.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { checkHttpHost } from '../catalog/route-meta.js';
import { joinNegativeValues } from '../cli/args.js';
import { HEALTH_STATUSES, type HealthStatus } from '../model/service-instance.js';
import { durationMs, printable } from '../model/validate.js';
import { UsageError } from '../registry/types.js';
import type { TemplateSpec, VerifySpec, WaitSpec } from './types.js';

/** The template flags, shared by `render` and `run`. */
export const TEMPLATE_OPTIONS = {
  template: { type: 'string', multiple: true },
  check: { type: 'string', multiple: true },
  verify: { type: 'string', multiple: true },
  'haproxy-runtime': { type: 'string', multiple: true },
  wait: { type: 'string' },
  timeout: { type: 'string' },
  perms: { type: 'string' },
  backup: { type: 'boolean' },
} as const;

type ParseOptions = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

/** parseArgs with `tokens`, so that the order of --template / --check / --verify is known. */
export function parseWithTokens<T extends NonNullable<ParseOptions>>(argv: string[], options: T) {
  try {
    return parseArgs({ args: joinNegativeValues(argv, options), options, allowPositionals: true, strict: true, tokens: true });
  } catch (err) {
    throw new UsageError(String((err as Error).message).split('\n')[0].replace(/\. To specify a positional.*$/, ''));
  }
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

function checkPath(where: string, value: string): string {
  if (!value) throw new UsageError(`${where}: the path is empty`);
  if (CONTROL.test(value)) throw new UsageError(`${where}: "${printable(value)}" contains control characters`);
  return resolve(value);
}

function checkCommand(where: string, value: string): string {
  if (!value.trim()) throw new UsageError(`${where}: the command is empty`);
  if (/[\0\r\n]/.test(value)) throw new UsageError(`${where}: "${printable(value)}" must be one line`);
  return value;
}

/** `src:dest[:reload-cmd]`: split at the first two colons; the command may hold colons. */
export function parseTemplateValue(value: string, where = `--template ${printable(value, 120)}`): Pick<TemplateSpec, 'source' | 'destination' | 'command'> {
  const first = value.indexOf(':');
  if (first < 0) throw new UsageError(`${where}: expected <source>:<destination>[:<reload-command>]`);
  const second = value.indexOf(':', first + 1);
  const source = value.slice(0, first);
  const destination = second < 0 ? value.slice(first + 1) : value.slice(first + 1, second);
  const command = second < 0 ? undefined : value.slice(second + 1);
  return {
    source: checkPath(`${where}: source`, source),
    destination: checkPath(`${where}: destination`, destination),
    command: command === undefined || command.trim() === '' ? undefined : checkCommand(`${where}: reload command`, command),
  };
}

/** `nginx:<pid-file>`, `haproxy:<master-socket>` or `plain`. */
export function parseVerify(value: string, where = `--verify ${printable(value, 120)}`): VerifySpec {
  if (value === 'plain') return { kind: 'plain' };
  const m = /^(nginx|haproxy):(.+)$/.exec(value);
  if (!m) throw new UsageError(`${where}: expected nginx:<pid-file>, haproxy:<master-socket> or plain`);
  const path = checkPath(where, m[2]);
  return m[1] === 'nginx' ? { kind: 'nginx', pidFile: path } : { kind: 'haproxy', masterSocket: path };
}

export function parseDuration(where: string, value: string, min: number, max: number): number {
  const ms = value === '0' ? 0 : durationMs(value);
  if (ms === undefined) throw new UsageError(`${where}: "${printable(value)}" is not a duration like 500ms, 3s or 1m`);
  if (ms < min || ms > max) throw new UsageError(`${where}: must be between ${min} ms and ${max / 1000} s`);
  return Math.round(ms);
}

/** `<min>[:<max>]`; without max, max is 4 × min (as consul-template does). */
export function parseWait(value: string, where = `--wait ${printable(value)}`): WaitSpec {
  const [a, b, ...rest] = value.split(':');
  if (rest.length > 0 || a === '') throw new UsageError(`${where}: expected <min>[:<max>], e.g. 500ms:3s`);
  const minMs = parseDuration(where, a, 0, 3_600_000);
  const maxMs = b === undefined ? minMs * 4 : parseDuration(where, b, 0, 3_600_000);
  if (maxMs < minMs) throw new UsageError(`${where}: max must not be shorter than min`);
  return { minMs, maxMs };
}

export function parseTimeout(value: string, where = `--timeout ${printable(value)}`): number {
  return parseDuration(where, value, 100, 3_600_000);
}

export function parsePerms(value: string | number, where: string): number {
  const s = typeof value === 'number' ? value.toString(8) : value;
  if (!/^0?[0-7]{3}$/.test(s)) throw new UsageError(`${where}: "${printable(String(value))}" is not a file mode like 0644`);
  return parseInt(s, 8);
}

export function parseStatuses(value: string | readonly unknown[], where: string): HealthStatus[] {
  const list = typeof value === 'string' ? value.split(',').map((s) => s.trim()) : value;
  if (list.length === 0) throw new UsageError(`${where}: give at least one of ${HEALTH_STATUSES.join(', ')}`);
  for (const s of list) {
    if (!HEALTH_STATUSES.includes(s as HealthStatus)) throw new UsageError(`${where}: "${printable(String(s))}" is not one of ${HEALTH_STATUSES.join(', ')}`);
  }
  return [...new Set(list as HealthStatus[])];
}

export function parseDomain(value: string, where: string): string {
  const err = value.includes(',') || value.startsWith('*') ? 'is not a host name' : checkHttpHost(value);
  if (err || value !== value.toLowerCase()) throw new UsageError(`${where}: "${printable(value)}" is not a lower-case host name`);
  return value;
}

interface Token {
  kind: string;
  name?: string;
  value?: string;
}

export interface TemplateFlags {
  templates: TemplateSpec[];
  wait?: WaitSpec;
  timeoutMs?: number;
}

/**
 * The template flags from parseWithTokens' result. --check, --verify and --haproxy-runtime attach to the
 * --template before them; --perms and --backup apply to every template given by flags.
 */
export function templateFlags(tokens: readonly Token[], values: { wait?: string; timeout?: string; perms?: string; backup?: boolean }): TemplateFlags {
  const perms = values.perms === undefined ? undefined : parsePerms(values.perms, `--perms ${printable(values.perms)}`);
  const templates: TemplateSpec[] = [];
  const attached = new Set<string>();
  for (const t of tokens) {
    if (t.kind !== 'option' || t.value === undefined) continue;
    const last = templates[templates.length - 1];
    if (t.name === 'template') {
      templates.push({ ...parseTemplateValue(t.value), verify: { kind: 'plain' }, perms, backup: !!values.backup });
      attached.clear();
    } else if (t.name === 'check' || t.name === 'verify' || t.name === 'haproxy-runtime') {
      const where = `--${t.name} ${printable(t.value, 120)}`;
      if (!last) throw new UsageError(`${where}: must follow the --template it applies to`);
      if (attached.has(t.name)) throw new UsageError(`${where}: the --template before it already has a --${t.name}`);
      attached.add(t.name);
      if (t.name === 'check') last.check = checkCommand(where, t.value);
      else if (t.name === 'verify') last.verify = parseVerify(t.value);
      else last.haproxyRuntime = { socket: checkPath(where, t.value), stateFile: `${last.destination}.state` };
    }
  }
  return {
    templates,
    wait: values.wait === undefined ? undefined : parseWait(values.wait),
    timeoutMs: values.timeout === undefined ? undefined : parseTimeout(values.timeout),
  };
}

/** What a --config file holds. */
export interface RenderFile {
  registry?: string;
  templates: TemplateSpec[];
  wait?: WaitSpec;
  timeoutMs?: number;
  statuses?: HealthStatus[];
  domain?: string;
}

const FILE_KEYS = ['registry', 'templates', 'wait', 'timeout', 'status', 'domain'];
const TEMPLATE_KEYS = ['source', 'destination', 'command', 'check', 'verify', 'perms', 'backup', 'haproxyRuntime'];

/** Read and validate a JSON or YAML --config file; errors name the file and the field. */
export function loadRenderFile(file: string): RenderFile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`--config ${file}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text); // YAML 1.2 reads JSON as well
  } catch (err) {
    throw new UsageError(`${file}: ${String((err as Error).message).split('\n')[0]}`);
  }
  return renderFileFrom(file, doc);
}

export function renderFileFrom(file: string, doc: unknown): RenderFile {
  const fail = (field: string, msg: string): never => {
    throw new UsageError(`${file}: ${field}: ${msg}`);
  };
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(doc)) throw new UsageError(`${file}: expected a mapping with "templates"`);
  for (const k of Object.keys(doc)) if (!FILE_KEYS.includes(k)) fail(k, `unknown key (known: ${FILE_KEYS.join(', ')})`);
  const text = (field: string, v: unknown, optional = true): string | undefined => {
    if (v === undefined || v === null) return optional ? undefined : fail(field, 'is required');
    if (typeof v !== 'string' || v.trim() === '') return fail(field, 'expected a non-empty string');
    return v;
  };
  // Errors from the flag parsers name a flag; re-word them for the file.
  const field = <T>(name: string, fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      if (err instanceof UsageError) fail(name, err.message.replace(/^[^:]*: /, ''));
      throw err;
    }
  };

  const out: RenderFile = { templates: [] };
  out.registry = text('registry', doc.registry);
  if (!Array.isArray(doc.templates) || doc.templates.length === 0) fail('templates', 'expected a non-empty list');
  (doc.templates as unknown[]).forEach((t, i) => {
    const at = `templates[${i}]`;
    if (!isObject(t)) fail(at, 'expected a mapping with source and destination');
    const tt = t as Record<string, unknown>;
    for (const k of Object.keys(tt)) if (!TEMPLATE_KEYS.includes(k)) fail(`${at}.${k}`, `unknown key (known: ${TEMPLATE_KEYS.join(', ')})`);
    const source = text(`${at}.source`, tt.source, false)!;
    const destination = text(`${at}.destination`, tt.destination, false)!;
    const command = text(`${at}.command`, tt.command);
    const check = text(`${at}.check`, tt.check);
    const verify = text(`${at}.verify`, tt.verify);
    const runtime = text(`${at}.haproxyRuntime`, tt.haproxyRuntime);
    if (tt.backup !== undefined && typeof tt.backup !== 'boolean') fail(`${at}.backup`, 'expected true or false');
    if (tt.perms !== undefined && typeof tt.perms !== 'string' && typeof tt.perms !== 'number') fail(`${at}.perms`, 'expected a file mode like "0644"');
    out.templates.push({
      source: field(`${at}.source`, () => checkPath('source', source)),
      destination: field(`${at}.destination`, () => checkPath('destination', destination)),
      command: command === undefined ? undefined : field(`${at}.command`, () => checkCommand('command', command)),
      check: check === undefined ? undefined : field(`${at}.check`, () => checkCommand('check', check)),
      verify: verify === undefined ? { kind: 'plain' } : field(`${at}.verify`, () => parseVerify(verify, 'verify')),
      perms: tt.perms === undefined ? undefined : field(`${at}.perms`, () => parsePerms(tt.perms as string | number, 'perms')),
      backup: tt.backup === true,
      ...(runtime === undefined
        ? {}
        : { haproxyRuntime: { socket: field(`${at}.haproxyRuntime`, () => checkPath('haproxyRuntime', runtime)), stateFile: `${resolve(destination)}.state` } }),
    });
  });
  const wait = text('wait', doc.wait);
  if (wait !== undefined) out.wait = field('wait', () => parseWait(wait, 'wait'));
  const timeout = text('timeout', doc.timeout);
  if (timeout !== undefined) out.timeoutMs = field('timeout', () => parseTimeout(timeout, 'timeout'));
  if (doc.status !== undefined) {
    if (typeof doc.status !== 'string' && !Array.isArray(doc.status)) fail('status', 'expected a list like [passing, warning]');
    out.statuses = field('status', () => parseStatuses(doc.status as string | unknown[], 'status'));
  }
  const domain = text('domain', doc.domain);
  if (domain !== undefined) out.domain = field('domain', () => parseDomain(domain, 'domain'));
  return out;
}

/** Files that must exist before rendering starts: each template, and each destination's folder. */
export function checkTemplateFiles(templates: readonly TemplateSpec[], where = '--template'): void {
  const seen = new Set<string>();
  for (const t of templates) {
    if (!existsSync(t.source) || !statSync(t.source).isFile()) throw new UsageError(`${where} ${t.source}: template file does not exist`);
    const dir = dirname(t.destination);
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`${where} ${t.destination}: destination folder ${dir} does not exist`);
    if (existsSync(t.destination) && statSync(t.destination).isDirectory()) throw new UsageError(`${where} ${t.destination}: destination is a folder`);
    if (seen.has(t.destination)) throw new UsageError(`${where} ${t.destination}: two templates write the same destination`);
    seen.add(t.destination);
  }
}
