// Header handling at the proxy hop: hop-by-hop headers (RFC 9110 §7.6.1, plus those a
// Connection header names) stay on their own connection; X-Forwarded-* tell the instance who
// asked for what.
import type { IncomingHttpHeaders } from 'node:http';

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
  // Set below from what this proxy saw, never taken from the client.
  'x-forwarded-proto',
  'x-forwarded-host',
]);

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

/**
 * The headers to send upstream for a client request: end-to-end headers as received (Host
 * included, so that the instance sees the virtual host), then X-Forwarded-For (appended),
 * X-Forwarded-Proto and X-Forwarded-Host.
 */
export function upstreamRequestHeaders(headers: IncomingHttpHeaders, remoteAddress: string | undefined, upgrade = false): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const listed = connectionTokens(headers.connection);
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || listed?.has(name)) continue;
    const v = headers[name];
    if (v !== undefined) out[name] = v;
  }
  const client = clientAddress(remoteAddress);
  const prior = headers['x-forwarded-for'];
  out['x-forwarded-for'] = prior ? `${Array.isArray(prior) ? prior.join(', ') : prior}, ${client}` : client;
  out['x-forwarded-proto'] = 'http';
  if (headers.host !== undefined) out['x-forwarded-host'] = headers.host;
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
