// Header handling at the proxy hop: hop-by-hop headers (RFC 9110 §7.6.1, plus those a
// Connection header names, except the few a client must not be able to remove) stay on their
// own connection; X-Forwarded-* and X-Real-IP tell the instance who asked for what, and are
// believed from the client only when it is a trusted proxy (as nginx's realip and Traefik's
// forwardedHeaders.trustedIPs do). Headers some frameworks take as the URL, the scheme or the
// client address (X-Original-URL, X-Forwarded-Prefix, True-Client-IP, ...) get the same treatment,
// and `Proxy` (httpoxy: CGI turns it into HTTP_PROXY) never passes.
import type { IncomingHttpHeaders } from 'node:http';
import { isIP } from 'node:net';

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  // The proxy answers 100-continue itself; the upstream client does not speak it.
  'expect',
]);

/** What the proxy says about the client: set here, taken from the client only when it is a trusted proxy. */
const MANAGED = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'x-real-ip', 'forwarded']);

/** Claims about the client, the scheme or the prefix that only a trusted proxy may pass on (with every other x-forwarded-*). */
const CLIENT_CLAIMS = new Set(['true-client-ip', 'x-client-ip', 'client-ip', 'x-cluster-client-ip', 'front-end-https', 'x-url-scheme']);

/** Never passed on, whoever sent them: URL overrides (IIS, Symfony, Zend), and httpoxy's Proxy. */
const OVERRIDES = new Set(['x-original-url', 'x-rewrite-url', 'proxy']);

/** Dropped whatever the peer: `proxy`, `proxy-*`, the URL overrides. */
const alwaysDropped = (name: string): boolean => OVERRIDES.has(name) || name.startsWith('proxy-');

/** Dropped unless the peer is trusted (`name` with `_` already read as `-`). */
const claimed = (name: string): boolean => MANAGED.has(name) || CLIENT_CLAIMS.has(name) || name.startsWith('x-forwarded-');

/** Headers a Connection header cannot remove: the virtual host, the body's length, and what the proxy sets. */
const PROTECTED = new Set(['host', 'content-length', ...MANAGED]);

const RESPONSE_HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** Header names listed in a Connection header (lowercase), or undefined when there are none beyond keep-alive/close. */
function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  const raw = Array.isArray(value) ? value.join(',') : value;
  let out: Set<string> | undefined;
  for (const t of raw.split(',')) {
    const token = t.trim().toLowerCase();
    if (token && token !== 'close' && token !== 'keep-alive') (out ??= new Set()).add(token);
  }
  return out;
}

export function clientAddress(remote: string | undefined): string {
  if (!remote) return 'unknown';
  return remote.startsWith('::ffff:') ? remote.slice(7) : remote;
}

export interface Forwarding {
  /** The direct peer is a trusted proxy: its X-Forwarded-*, X-Real-IP and Forwarded are kept (X-Forwarded-For and Forwarded appended to). */
  trusted: boolean;
  /** Whether an address in X-Forwarded-For is a trusted proxy too (default: none is). */
  isTrusted?: (address: string) => boolean;
  /** X-Forwarded-Port: the port this proxy listens on. */
  port: number;
  /** The Host to send instead of the received one: the authority of an absolute-form target. */
  host?: string;
}

const joined = (v: string | string[]): string => (Array.isArray(v) ? v.join(', ') : v);

/** A trusted peer's header when it holds one value; a repeated or listed one is not believed. */
const single = (v: string | string[] | undefined): string | undefined => (v === undefined || Array.isArray(v) || v.includes(',') || v.trim() === '' ? undefined : v.trim());

/**
 * The client address behind trusted proxies (nginx's real_ip_recursive): the rightmost
 * X-Forwarded-For entry that is not itself a trusted proxy; the leftmost when all are; the peer
 * when the list holds something that is not an address.
 */
function realClient(xff: string | string[] | undefined, peer: string, isTrusted: (a: string) => boolean): string {
  if (xff === undefined) return peer;
  const chain = joined(xff)
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean);
  let found = peer;
  for (let i = chain.length - 1; i >= 0; i--) {
    const addr = clientAddress(chain[i]);
    if (isIP(addr) === 0) return peer;
    found = addr;
    if (!isTrusted(addr)) break;
  }
  return found;
}

/** An RFC 7239 node or host value: a token when it is one, a quoted string otherwise. */
const forwardedValue = (v: string): string => (/^[A-Za-z0-9.!#$%&'*+^_`|~-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`);

/**
 * The headers to send upstream for a client request: end-to-end headers as received (Host
 * included, so that the instance sees the virtual host), then what the proxy knows about the
 * client: X-Forwarded-For, -Proto, -Host, -Port and X-Real-IP. From an untrusted peer the
 * client's own versions (and Forwarded, and underscore spellings such as X_Forwarded_For that
 * CGI-style frameworks read as the same name) are dropped; a trusted peer's are kept, its
 * X-Forwarded-For and Forwarded with this hop appended.
 */
export function upstreamRequestHeaders(headers: IncomingHttpHeaders, remoteAddress: string | undefined, fwd: Forwarding, upgrade = false): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const host = fwd.host ?? headers.host;
  if (host !== undefined) out.host = host;
  const listed = connectionTokens(headers.connection);
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || MANAGED.has(name) || name === 'host') continue;
    if (listed?.has(name) && !PROTECTED.has(name)) continue;
    const dashed = name.includes('_') ? name.replaceAll('_', '-') : name;
    if (alwaysDropped(dashed)) continue;
    if (dashed !== name && MANAGED.has(dashed)) continue;
    if (!fwd.trusted && claimed(dashed)) continue;
    const v = headers[name];
    if (v !== undefined) out[name] = v;
  }
  const client = clientAddress(remoteAddress);
  const port = String(fwd.port);
  if (fwd.trusted) {
    const prior = headers['x-forwarded-for'];
    out['x-forwarded-for'] = prior ? `${joined(prior)}, ${client}` : client;
    out['x-forwarded-proto'] = single(headers['x-forwarded-proto']) ?? 'http';
    const xfHost = single(headers['x-forwarded-host']) ?? host;
    if (xfHost !== undefined) out['x-forwarded-host'] = xfHost;
    out['x-forwarded-port'] = single(headers['x-forwarded-port']) ?? port;
    // The peer's own X-Real-IP when it sent one value (what nginx and HAProxy keep), else the
    // client found through X-Forwarded-For.
    out['x-real-ip'] = single(headers['x-real-ip']) ?? realClient(prior, client, fwd.isTrusted ?? (() => false));
    const forwarded = headers.forwarded;
    if (forwarded) out.forwarded = `${joined(forwarded)}, for=${forwardedValue(client.includes(':') ? `[${client}]` : client)}${host === undefined ? '' : `;host=${forwardedValue(host)}`};proto=http`;
  } else {
    out['x-forwarded-for'] = client;
    out['x-forwarded-proto'] = 'http';
    if (host !== undefined) out['x-forwarded-host'] = host;
    out['x-forwarded-port'] = port;
    out['x-real-ip'] = client;
  }
  // Trailers are passed back to the client, so a client that accepts them says so to the instance
  // too (servers that send trailers only when asked, as gRPC-style ones do).
  const te = headers.te;
  if (te !== undefined && /(?:^|,)\s*trailers\s*(?:;|,|$)/i.test(joined(te))) out.te = 'trailers';
  if (upgrade) {
    // The one hop-by-hop pair that must travel: it asks the instance to switch protocols.
    out.connection = 'upgrade';
    out.upgrade = String(headers.upgrade);
  }
  return out;
}

/** Remove hop-by-hop headers from an upstream response's header object, in place. */
export function stripResponseHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string | string[] | undefined> {
  // Usually none is present: look at the few keys there are instead of deleting every name.
  let listed: Set<string> | undefined;
  for (const name in headers) {
    if (!RESPONSE_HOP_BY_HOP.has(name)) continue;
    if (name === 'connection') listed = connectionTokens(headers.connection);
    delete headers[name];
  }
  if (listed) for (const name of listed) delete headers[name];
  return headers;
}
