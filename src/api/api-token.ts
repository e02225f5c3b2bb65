// Who may use a status API: with a bearer token, every request must carry it. The token comes
// from --api-token, --api-token-file, HM_API_TOKEN or HM_API_TOKEN_FILE (a file keeps it out of
// argv, which `ps` shows to every user of the host).
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { addSecret } from '../log/redact.js';
import { UsageError } from '../registry/types.js';
import { formatAddress, type ListenAddress } from './listen-address.js';

type Env = Record<string, string | undefined>;

export const API_TOKEN_OPTIONS = {
  'api-token': { type: 'string' },
  'api-token-file': { type: 'string' },
  'api-insecure': { type: 'boolean' },
} as const;

export const API_TOKEN_HELP = `  --api-token <token>        status API requests must carry "Authorization: Bearer <token>"
                             (also HM_API_TOKEN); /v1/health without it answers only {"ok":…}
  --api-token-file <file>    the same, read from a file (also HM_API_TOKEN_FILE): not shown by ps
  --api-insecure             allow a status API on a non-loopback address without a token`;

/** The status API's address and who may use it. */
export interface ApiAddress extends ListenAddress {
  /** Bearer token every request must carry; undefined = open (loopback, or --api-insecure). */
  token?: string;
}

interface TokenFlags {
  'api-token'?: string;
  'api-token-file'?: string;
  'api-insecure'?: boolean;
}

/** Visible ASCII, no spaces: what fits an Authorization header unchanged. */
const TOKEN = /^[\x21-\x7e]{1,4096}$/;

/** The token from the flags, then the environment; undefined when none is given. Never echoed in an error. */
export function apiToken(v: TokenFlags, env: Env = process.env): string | undefined {
  if (v['api-token'] !== undefined && v['api-token-file'] !== undefined) throw new UsageError('--api-token and --api-token-file: give one, not both');
  let token: string | undefined;
  let from: string;
  if (v['api-token'] !== undefined) [token, from] = [v['api-token'], '--api-token'];
  else if (v['api-token-file'] !== undefined) [token, from] = [readToken('--api-token-file', v['api-token-file']), '--api-token-file'];
  else if (env.HM_API_TOKEN) [token, from] = [env.HM_API_TOKEN, 'HM_API_TOKEN'];
  else if (env.HM_API_TOKEN_FILE) [token, from] = [readToken('HM_API_TOKEN_FILE', env.HM_API_TOKEN_FILE), 'HM_API_TOKEN_FILE'];
  else return undefined;
  addSecret(token);
  if (!TOKEN.test(token)) throw new UsageError(`${from}: the token must be 1 to 4096 visible ASCII characters, no spaces`);
  return token;
}

function readToken(from: string, file: string): string {
  try {
    // One trailing newline is how editors and `echo` write a file.
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    throw new UsageError(`${from} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/**
 * The API address with its token. A status API others can reach without a token would show the
 * catalog and, on a sidecar, let anyone withdraw containers: refused unless --api-insecure.
 */
export function apiAddress(addr: ListenAddress | undefined, v: TokenFlags, env: Env = process.env, flag = 'api'): ApiAddress | undefined {
  const token = apiToken(v, env);
  if (!addr) {
    if (v['api-token'] !== undefined || v['api-token-file'] !== undefined) throw new UsageError(`--api-token: only meaningful with a status API (--${flag} <host:port>)`);
    return undefined;
  }
  if (!token && !v['api-insecure'] && !isLoopbackHost(addr.host)) {
    throw new UsageError(`--${flag} ${formatAddress(addr)}: not a loopback address; give --api-token-file <file> (or HM_API_TOKEN), or --api-insecure to serve it to anyone who can reach it`);
  }
  return token ? { ...addr, token } : { ...addr };
}

export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || /^::ffff:127\./i.test(host);
}

/** Constant-time check of an Authorization header against the token (digests: equal length whatever is sent). */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer +(\S+) *$/i.exec(header ?? '');
  const digest = (s: string) => createHash('sha256').update(s).digest();
  const ok = timingSafeEqual(digest(m?.[1] ?? ''), digest(token));
  return !!m && ok;
}
