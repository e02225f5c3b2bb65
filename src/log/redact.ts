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

/** userinfo in a URI (`scheme://user:password@host`) masked whatever it holds. */
export function redactUri(uri: string): string {
  return redact(uri.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@]*@/i, `$1${MASK}@`));
}

/** For tests: forget every secret. */
export function clearSecrets(): void {
  secrets.clear();
  pattern = undefined;
}
