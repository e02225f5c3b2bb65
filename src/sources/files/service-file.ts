// A service definition file → ServiceInstances. The shape is Consul's service definition
// (`service: {...}` or `services: [...]`, JSON or YAML, several YAML documents allowed, keys in
// snake_case or CamelCase), for databases and daemons that are not containers. Every instance
// passes the same validation as one read from labels; a problem is one line naming the file,
// the line and the field. Nothing of a file is used unless all of it is valid.
import { isMap, isScalar, isSeq, LineCounter, parseAllDocuments, type Document, type Node, type Pair } from 'yaml';
import type { CheckDefinition, HealthStatus, ServiceInstance } from '../../model/service-instance.js';
import { printable, validateInstance } from '../../model/validate.js';

/** Files larger than this are refused whole (a service file is a few hundred bytes a service). */
export const MAX_FILE_BYTES = 1 << 20;
export const MAX_SERVICES_PER_FILE = 5_000;

export interface FileModelOptions {
  hostname: string;
  /** Address of a definition without one: --ip, else this host's address. */
  hostAddress: string;
}

export interface ParsedFile {
  instances: ServiceInstance[];
  /** Keys read but not used (Consul features harbormaster has no use for), each `line: key`. */
  ignored: string[];
}

/** The file could not be used; `message` is `<line>: <field>: <reason>` (the caller adds the file). */
export class FileError extends Error {}

const SERVICE_KEYS = new Set(['name', 'id', 'address', 'port', 'tags', 'meta', 'check', 'checks', 'protocol']);
/** Consul service-definition keys that mean nothing here: reported once, not refused. */
const KNOWN_IGNORED = new Set(['kind', 'enabletagoverride', 'weights', 'connect', 'proxy', 'taggedaddresses', 'token', 'namespace', 'partition', 'socketpath', 'locality']);
const CHECK_KEYS: Record<string, keyof RawCheck> = {
  http: 'http', tcp: 'tcp', grpc: 'grpc', grpcusetls: 'grpcUseTls', ttl: 'ttl', args: 'args', interval: 'interval', timeout: 'timeout',
  deregistercriticalserviceafter: 'deregisterAfter', method: 'method', tlsskipverify: 'tlsSkipVerify', status: 'status', name: 'name', notes: 'name', id: 'name', checkid: 'name',
};

interface RawCheck {
  http?: string;
  tcp?: string;
  grpc?: string;
  grpcUseTls?: boolean;
  ttl?: string;
  args?: string[];
  interval?: string;
  timeout?: string;
  deregisterAfter?: string;
  method?: string;
  tlsSkipVerify?: boolean;
  status?: string;
  name?: string;
}

/** `snake_case`, `CamelCase` and `kebab-case` keys alike: `DeregisterCriticalServiceAfter` = `deregister_critical_service_after`. */
const norm = (k: string) => k.toLowerCase().replace(/[_-]/g, '');

/** Deeper flow nesting than this is refused before parsing: a service is a few levels deep, and 1 MB of `[` would hold the event loop for a second. */
const MAX_NESTING = 64;

/** The bytes of a file as text: invalid UTF-8 is refused with its line instead of read as U+FFFD. */
export function decodeServiceFile(bytes: Buffer): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    const loose = bytes.toString('utf8');
    const at = loose.indexOf('\uFFFD');
    const line = at < 0 ? 1 : loose.slice(0, at).split('\n').length;
    throw new FileError(`${line}: not UTF-8 text`);
  }
}

/** The line where flow brackets (outside quotes and comments) nest deeper than MAX_NESTING, if they do. */
function tooDeep(text: string): number | undefined {
  let depth = 0;
  let line = 1;
  let quote = '';
  let comment = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\n') {
      line++;
      comment = false;
      continue;
    }
    if (comment) continue;
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = '';
      continue;
    }
    if (c === '"' || c === "'") quote = c;
    else if (c === '#' && (i === 0 || /\s/.test(text[i - 1]))) comment = true;
    else if (c === '[' || c === '{') {
      if (++depth > MAX_NESTING) return line;
    } else if ((c === ']' || c === '}') && depth > 0) depth--;
  }
  return undefined;
}

export function parseServiceFile(text: string, opts: FileModelOptions): ParsedFile {
  if (Buffer.byteLength(text) > MAX_FILE_BYTES) throw new FileError(`1: larger than ${MAX_FILE_BYTES} bytes`);
  const deep = tooDeep(text);
  if (deep !== undefined) throw new FileError(`${deep}: nested more than ${MAX_NESTING} levels deep`);
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: true });
  if (!Array.isArray(docs)) throw new FileError('1: not a YAML or JSON document');
  const lineOf = (n: Node | Pair | null | undefined) => {
    const range = (n as Node | undefined)?.range ?? ((n as Pair | undefined)?.key as Node | undefined)?.range;
    return range ? lines.linePos(range[0]).line : 1;
  };
  const out: ParsedFile = { instances: [], ignored: [] };
  const seen = new Map<string, number>();
  let defined = false;
  for (const doc of docs as Document.Parsed[]) {
    const err = doc.errors[0];
    if (err) throw new FileError(`${err.linePos?.[0]?.line ?? 1}: ${err.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')}`);
    const root = doc.contents;
    if (root === null || (isScalar(root) && root.value === null)) continue;
    defined = true;
    for (const svc of serviceNodes(root as Node, lineOf)) {
      if (out.instances.length >= MAX_SERVICES_PER_FILE) throw new FileError(`${lineOf(svc)}: more than ${MAX_SERVICES_PER_FILE} services in one file`);
      const inst = serviceInstance(svc, opts, lineOf, out.ignored);
      const first = seen.get(inst.id);
      if (first !== undefined) throw new FileError(`${lineOf(svc)}: id: "${printable(inst.id)}" is defined twice in this file (first at line ${first})`);
      seen.set(inst.id, lineOf(svc));
      out.instances.push(inst);
    }
  }
  // An empty (or comment-only) file is what a write looks like between truncating and writing:
  // never taken as "no services". Defining none is said explicitly, `services: []`.
  if (!defined) throw new FileError('1: no service definition (empty; write `services: []` to define none)');
  return out;
}

/** The service maps of a document: `service: {...}`, `services: [...]`, a list, or one bare service. */
function serviceNodes(root: Node, lineOf: (n: Node | Pair) => number): Node[] {
  if (isSeq(root)) return root.items as Node[];
  if (!isMap(root)) throw new FileError(`${lineOf(root)}: expected a service definition (a map with service: or services:)`);
  const keys = root.items.map((p) => (isScalar(p.key) ? norm(String(p.key.value)) : ''));
  if (keys.includes('service') || keys.includes('services')) {
    const nodes: Node[] = [];
    for (const p of root.items) {
      const k = isScalar(p.key) ? norm(String(p.key.value)) : '';
      const v = p.value as Node | null;
      if (k === 'service') nodes.push(v as Node);
      else if (k === 'services') {
        if (!isSeq(v)) throw new FileError(`${lineOf(p)}: services: expected a list`);
        nodes.push(...(v.items as Node[]));
      } else throw new FileError(`${lineOf(p)}: ${printable(String((p.key as { value?: unknown })?.value))}: unexpected beside service/services`);
    }
    return nodes;
  }
  return [root];
}

function serviceInstance(node: Node, opts: FileModelOptions, lineOf: (n: Node | Pair) => number, ignored: string[]): ServiceInstance {
  if (!isMap(node)) throw new FileError(`${lineOf(node)}: expected a service (a map with name and port)`);
  const at = lineOf(node);
  const fields = new Map<string, Pair>();
  for (const p of node.items) {
    if (!isScalar(p.key)) throw new FileError(`${lineOf(p)}: a key must be a plain word`);
    const k = norm(String(p.key.value));
    if (SERVICE_KEYS.has(k)) fields.set(k, p as Pair);
    else if (KNOWN_IGNORED.has(k)) ignored.push(`${lineOf(p)}: ${String(p.key.value)}`);
    else throw new FileError(`${lineOf(p)}: ${printable(String(p.key.value))}: not a field of a service definition (name, id, address, port, tags, meta, check, protocol)`);
  }
  const value = (k: string) => fields.get(k)?.value as Node | undefined;
  const fieldLine = (k: string) => (fields.get(k) ? lineOf(fields.get(k)!) : at);
  const str = (k: string, required: boolean): string | undefined => {
    const v = value(k);
    if (v === undefined || (isScalar(v) && v.value === null)) {
      if (required) throw new FileError(`${at}: ${k}: missing`);
      return undefined;
    }
    if (!isScalar(v) || (typeof v.value !== 'string' && typeof v.value !== 'number')) throw new FileError(`${fieldLine(k)}: ${k}: expected a string`);
    return String(v.value);
  };
  const name = str('name', true)!;
  const id = str('id', false) ?? name;
  const address = str('address', false) || opts.hostAddress;
  const portNode = value('port');
  if (portNode === undefined) throw new FileError(`${at}: port: missing`);
  const port = isScalar(portNode) ? Number(portNode.value) : NaN;
  if (!isScalar(portNode) || !Number.isInteger(port) || port < 1 || port > 65535 || (typeof portNode.value === 'string' && !/^\d+$/.test(portNode.value))) {
    throw new FileError(`${fieldLine('port')}: port: expected a number from 1 to 65535`);
  }
  const protocol = str('protocol', false) ?? 'tcp';
  if (protocol !== 'tcp' && protocol !== 'udp') throw new FileError(`${fieldLine('protocol')}: protocol: expected tcp or udp`);
  const tags = stringList(value('tags'), 'tags', fieldLine('tags'));
  if (protocol === 'udp' && !tags.includes('udp')) tags.push('udp');
  const meta = stringMap(value('meta'), 'meta', fieldLine('meta'));
  const checkNode = value('check') ?? firstOf(value('checks'), 'checks', fieldLine('checks'));
  const { check, status } = checkNode ? checkOf(checkNode, fieldLine(fields.has('check') ? 'check' : 'checks'), lineOf) : { check: undefined, status: 'passing' as HealthStatus };
  const inst: ServiceInstance = { id: `${opts.hostname}:file:${id}`, name, address, port, protocol, tags, meta, host: opts.hostname, status, ...(check ? { check } : {}) };
  const problem = validateInstance(inst);
  if (problem) {
    const field = problem.split(/[\s.[]/)[0];
    const line = field === 'meta' ? fieldLine('meta') : field === 'tags' ? fieldLine('tags') : field === 'check' ? fieldLine('check') : fields.has(field) ? fieldLine(field) : at;
    throw new FileError(`${line}: ${problem}`);
  }
  return inst;
}

function stringList(v: Node | undefined, field: string, line: number): string[] {
  if (v === undefined || (isScalar(v) && v.value === null)) return [];
  if (!isSeq(v)) throw new FileError(`${line}: ${field}: expected a list of strings`);
  return v.items.map((item, i) => {
    if (!isScalar(item) || (typeof item.value !== 'string' && typeof item.value !== 'number')) throw new FileError(`${line}: ${field}[${i}]: expected a string`);
    return String(item.value);
  });
}

function stringMap(v: Node | undefined, field: string, line: number): Record<string, string> {
  if (v === undefined || (isScalar(v) && v.value === null)) return {};
  if (!isMap(v)) throw new FileError(`${line}: ${field}: expected a map of strings`);
  const out: Record<string, string> = {};
  for (const p of v.items) {
    const k = isScalar(p.key) ? String(p.key.value) : undefined;
    const val = p.value as Node | null;
    if (k === undefined || !isScalar(val) || (typeof val.value !== 'string' && typeof val.value !== 'number' && typeof val.value !== 'boolean')) {
      throw new FileError(`${line}: ${field}.${printable(String(k))}: expected a string`);
    }
    // A plain object would take `__proto__` as its prototype and drop the entry without a word.
    if (k === '__proto__') throw new FileError(`${line}: ${field}.__proto__: not allowed as a key`);
    out[k] = String(val.value);
  }
  return out;
}

function firstOf(v: Node | undefined, field: string, line: number): Node | undefined {
  if (v === undefined) return undefined;
  if (!isSeq(v)) throw new FileError(`${line}: ${field}: expected a list`);
  if (v.items.length > 1) throw new FileError(`${line}: ${field}: one check per service (an instance has one health check here)`);
  return v.items[0] as Node | undefined;
}

function checkOf(node: Node, line: number, lineOf: (n: Node | Pair) => number): { check: CheckDefinition; status: HealthStatus } {
  if (!isMap(node)) throw new FileError(`${line}: check: expected a map (http, tcp, grpc, ttl or args, with interval, timeout…)`);
  const raw: RawCheck = {};
  for (const p of node.items) {
    const k = isScalar(p.key) ? CHECK_KEYS[norm(String(p.key.value))] : undefined;
    if (!k) throw new FileError(`${lineOf(p)}: check.${printable(String((p.key as { value?: unknown })?.value))}: not a check field`);
    const v = p.value as Node | null;
    if (k === 'args') {
      (raw as Record<string, unknown>).args = stringList(v ?? undefined, 'check.args', lineOf(p));
    } else if (k === 'grpcUseTls' || k === 'tlsSkipVerify') {
      if (!isScalar(v) || typeof v.value !== 'boolean') throw new FileError(`${lineOf(p)}: check.${String((p.key as { value: unknown }).value)}: expected true or false`);
      (raw as Record<string, unknown>)[k] = v.value;
    } else {
      if (!isScalar(v) || (typeof v.value !== 'string' && typeof v.value !== 'number')) throw new FileError(`${lineOf(p)}: check.${String((p.key as { value: unknown }).value)}: expected a string`);
      (raw as Record<string, unknown>)[k] = String(v.value);
    }
  }
  const kinds = (['http', 'tcp', 'grpc', 'ttl', 'args'] as const).filter((k) => raw[k] !== undefined);
  if (kinds.length !== 1) throw new FileError(`${line}: check: expected exactly one of http, tcp, grpc, ttl, args`);
  const status = (raw.status ?? 'passing') as HealthStatus;
  if (!['passing', 'warning', 'critical'].includes(status)) throw new FileError(`${line}: check.status: expected passing, warning or critical`);
  const common = { interval: raw.interval ?? (raw.ttl ? undefined : '10s'), timeout: raw.timeout, deregisterAfter: raw.deregisterAfter, initialStatus: raw.status ? status : undefined };
  let check: CheckDefinition;
  switch (kinds[0]) {
    case 'http':
      check = { kind: raw.http!.startsWith('https:') ? 'https' : 'http', target: raw.http!, ...common, method: raw.method, ...(raw.tlsSkipVerify ? { tlsSkipVerify: true } : {}) };
      break;
    case 'tcp':
      check = { kind: 'tcp', target: raw.tcp!, ...common };
      break;
    case 'grpc':
      check = { kind: 'grpc', target: raw.grpc!, ...common, grpcUseTls: raw.grpcUseTls ?? false, ...(raw.tlsSkipVerify ? { tlsSkipVerify: true } : {}) };
      break;
    case 'ttl':
      check = { kind: 'ttl', target: '', ttl: raw.ttl, ...common, interval: undefined };
      break;
    default:
      // The agent runs a script check as /bin/sh -c <target>: each argument is quoted for it.
      check = { kind: 'script', target: raw.args!.map(shellQuote).join(' '), ...common };
  }
  // Unset optional fields stay absent, as the label model writes them.
  for (const k of Object.keys(check) as (keyof CheckDefinition)[]) if (check[k] === undefined) delete check[k];
  return { check, status: raw.status ? status : 'passing' };
}

function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}
