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

/**
 * Claims about the client, the scheme, the prefix or the user that only a trusted proxy may pass
 * on. The built-in proxy and the HAProxy template drop every `X-Forwarded-*` besides these; nginx
 * can only name headers, so its template drops this list (the same for all three outputs here).
 */
export const CLAIM_HEADERS: readonly string[] = [
  'True-Client-IP',
  'X-Client-IP',
  'Client-IP',
  'X-Cluster-Client-IP',
  'Front-End-Https',
  'X-Url-Scheme',
  'X-Forwarded-Prefix',
  'X-Forwarded-Scheme',
  'X-Forwarded-Ssl',
  'X-Forwarded-Server',
  'X-Forwarded-Protocol',
  'X-Forwarded-Uri',
  'X-Forwarded-Path',
  'X-Forwarded-Url',
  'X-Forwarded-Method',
  'X-Forwarded-Client-Cert',
  'X-Forwarded-Tls-Client-Cert',
  'X-Forwarded-Tls-Client-Cert-Info',
  'X-Forwarded-User',
  'X-Forwarded-Email',
  'X-Forwarded-Preferred-Username',
  'X-Forwarded-Groups',
  'X-Forwarded-Access-Token',
];

const CLIENT_CLAIMS = new Set(CLAIM_HEADERS.map((h) => h.toLowerCase()));

/** Never passed on, whoever sent them: URL overrides (IIS, Symfony, Zend), and httpoxy's Proxy. */
const OVERRIDES = new Set(['x-original-url', 'x-rewrite-url', 'proxy']);

/** Dropped whatever the peer: `proxy`, `proxy-*`, the URL overrides. */
const alwaysDropped = (name: string): boolean => OVERRIDES.has(name) || name.startsWith('proxy-');

/** Dropped unless the peer is trusted. */
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

const validPort = (p: string): boolean => /^\d{1,5}$/.test(p) && Number(p) >= 1 && Number(p) <= 65535;

/**
 * An IPv6 address in its canonical text (`0:0::1` → `::1`), as nginx and HAProxy print one
 * (inet_ntop): an IPv4-mapped (`::ffff:a.b.c.d`) or IPv4-compatible (`::a.b.c.d`) address keeps
 * its IPv4 part dotted.
 */
function canonical6(a: string): string | undefined {
  let text: string;
  try {
    text = new URL(`http://[${a}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
  const m = /^::(ffff:)?([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(text);
  if (!m) return text;
  const hi = parseInt(m[2], 16);
  const lo = parseInt(m[3], 16);
  // `::1` and `::` stay as they are: their zero run is longer than six groups.
  if (!m[1] && hi === 0) return text;
  return `::${m[1] ?? ''}${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** Dotted decimal as nginx (ngx_inet_addr) and HAProxy read it: four parts of decimal digits, leading zeros allowed, each at most 255. */
function dotted4(a: string): string | undefined {
  const parts = a.split('.');
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^\d{1,12}$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out.join('.');
}

/**
 * One X-Forwarded-For entry as an address, as nginx's ngx_parse_addr_port reads it: an IPv4
 * address (leading zeros are decimal: `010.0.0.1` is 10.0.0.1) with an optional `:port`, an IPv6
 * address bare, or in brackets followed by `:port`; undefined for anything else.
 */
export function forwardedAddress(entry: string): string | undefined {
  if (entry.charCodeAt(0) === 91 /* [ */) {
    const end = entry.indexOf(']');
    const rest = end < 0 ? '' : entry.slice(end + 1);
    // nginx reads a bracketed address only with a port after it.
    if (end < 0 || rest.charCodeAt(0) !== 58 || !validPort(rest.slice(1))) return undefined;
    const a = entry.slice(1, end);
    return isIP(a) === 6 ? canonical6(a) : undefined;
  }
  if (isIP(entry) === 6) return canonical6(entry);
  const colon = entry.indexOf(':');
  const a = colon < 0 ? entry : validPort(entry.slice(colon + 1)) ? entry.slice(0, colon) : '';
  return dotted4(a);
}

/**
 * The client address behind a trusted peer, exactly as nginx's realip module with
 * `real_ip_header X-Forwarded-For` and `real_ip_recursive on` finds it (the shipped templates do
 * the same): starting from the peer, while the address found so far is a trusted proxy, take the
 * next X-Forwarded-For entry from the right (entries are separated by commas and blanks); stop at
 * an entry that is not an address (the last trusted one found stands). The leftmost entry when
 * every one is trusted.
 */
export function realClient(xff: string | string[] | undefined, peer: string, isTrusted: (a: string) => boolean): string {
  if (xff === undefined) return peer;
  const chain = joined(xff).split(/[ ,]+/);
  // The peer is trusted (the caller asks only then); entries are checked as they are found.
  let found = peer;
  let fromPeer = true;
  for (let i = chain.length - 1; i >= 0; i--) {
    if (chain[i] === '') continue;
    if (!fromPeer && !isTrusted(found)) return found;
    fromPeer = false;
    const addr = forwardedAddress(chain[i]);
    if (addr === undefined) return found;
    found = addr;
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
    // A name with `_` is dropped from everyone (nginx's underscores_in_headers off): CGI-style
    // frameworks read X_Forwarded_For or X_Original_URL as the header the proxy controls.
    if (name.includes('_')) continue;
    if (alwaysDropped(name)) continue;
    if (!fwd.trusted && claimed(name)) continue;
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
    // Never the peer's own X-Real-IP: the client found through X-Forwarded-For, as the templates
    // find it (nginx's realip, HAProxy's walk over req.hdr_ip).
    out['x-real-ip'] = realClient(prior, client, fwd.isTrusted ?? (() => false));
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
