// Secrets never leave the process in text: every credential is registered here when it is read
// (Consul token, etcd password, status API token), and every seam that writes text out (log
// lines, /v1/health, /metrics, stderr, `services` output) passes through redact(). Value-based,
// not field-based, so a secret echoed inside a library's error message (a URL, a header, a gRPC
// detail) is caught as well.

const MASK = '[redacted]';
const secrets = new Set<string>();
let pattern: RegExp | undefined;

/** Remember a secret value, with the forms it takes when quoted in JSON or a URL. */
export function addSecret(value: string | undefined): void {
  if (!value) return;
  const forms = [value, JSON.stringify(value).slice(1, -1), encodeURIComponent(value), JSON.stringify(JSON.stringify(value).slice(1, -1)).slice(1, -1)];
  for (const f of forms) secrets.add(f);
  // Longest first, so that a secret containing another is masked whole.
  const sorted = [...secrets].sort((a, b) => b.length - a.length);
  pattern = new RegExp(sorted.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g');
}

/**
 * The credentials of the environment, registered before anything is logged: a line written
 * before a registry client reads its variable must not carry it either.
 */
export function addEnvSecrets(env: Record<string, string | undefined>): void {
  addSecret(env.CONSUL_HTTP_TOKEN);
  addSecret(env.ETCDCTL_PASSWORD);
  const user = env.ETCDCTL_USER;
  if (user?.includes(':')) addSecret(user.slice(user.indexOf(':') + 1));
  addSecret(env.HM_API_TOKEN);
}

/** The text with every known secret masked. */
export function redact(text: string): string {
  return pattern ? text.replace(pattern, MASK) : text;
}

/**
 * JSON text with the secrets masked inside its strings (keys and values) only: however short a
 * secret is ("3", a four-digit password), numbers, `true` and the punctuation stay as they are,
 * so a log line or an API body stays valid JSON. Text that is not JSON is masked as a whole;
 * several JSON lines (a log stream, `--json` output) are taken line by line.
 */
export function redactOutput(text: string): string {
  if (!pattern) return text;
  const whole = maskJson(text);
  if (whole !== undefined) return whole;
  return text
    .split('\n')
    .map((line) => maskJson(line) ?? redact(line))
    .join('\n');
}

/** The JSON text masked string by string, in its own layout (compact or indented by 2); undefined if not JSON. */
function maskJson(text: string): string | undefined {
  const body = text.trim();
  if (!body.startsWith('{') && !body.startsWith('[')) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return undefined;
  }
  const masked = JSON.stringify(maskValue(value), null, /\n {2}["\[{]/.test(body) ? 2 : undefined);
  // What surrounded the JSON (the line's newline) is kept.
  return text.slice(0, text.indexOf(body[0])) + masked + text.slice(text.lastIndexOf(body[body.length - 1]) + 1);
}

function maskValue(v: unknown): unknown {
  if (typeof v === 'string') return redact(v);
  if (Array.isArray(v)) return v.map(maskValue);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [redact(k), maskValue(x)]));
  return v;
}

/** Prometheus text: label values and comments masked, never a sample's value. */
export function redactMetrics(text: string): string {
  if (!pattern) return text;
  return text
    .split('\n')
    .map((line) => (line.startsWith('#') ? redact(line) : line.replace(/"(?:[^"\\]|\\.)*"/g, (q) => redact(q))))
    .join('\n');
}

/** userinfo in a URI (`scheme://user:password@host`) masked whatever it holds, up to its last '@' (a password may hold '/'). */
export function redactUri(uri: string): string {
  // Without a scheme (`root:pw@host:2379` given by mistake) everything before the '@' goes.
  return redact(uri.replace(/^((?:[a-z][a-z0-9+.-]*:\/\/)?).*@/is, `$1${MASK}@`));
}

/** For tests: forget every secret. */
export function clearSecrets(): void {
  secrets.clear();
  pattern = undefined;
}
