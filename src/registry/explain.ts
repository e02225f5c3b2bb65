// What a refused or failed registry call means, in the words of the setting to fix: a library's
// error ("UND_ERR_SOCKET", "14 UNAVAILABLE … Last error: null", "ACL not found") says what broke,
// not which credential or certificate is wrong. One line, no timestamps (a line is logged once
// per distinct failure, so the text of one failure must not change from retry to retry).

/** Codes of a server certificate the client does not trust. */
const UNTRUSTED = /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_SIGNATURE_FAILURE|unable to verify the first certificate|self[- ]signed certificate|unable to get (local )?issuer certificate/i;
const EXPIRED = /CERT_HAS_EXPIRED|certificate has expired|CERT_NOT_YET_VALID/i;
const NAME = /ERR_TLS_CERT_ALTNAME_INVALID|Hostname\/IP does not match/i;
/** The server refused our certificate (TLS alert), or closed the connection after the handshake. */
const CLIENT_CERT_REFUSED = /alert (bad certificate|unknown ca|certificate required|certificate unknown|handshake failure)|alert number (40|42|46|48|116)/i;
const NOT_TLS = /wrong version number|ERR_SSL_WRONG_VERSION_NUMBER|packet length too long|http request/i;

/** One line: no line breaks, no timestamps. */
export function oneLine(text: string): string {
  return text
    .replace(/\s*\(\d{4}-\d\d-\d\dT[\d:.]+Z\)/g, '')
    .replace(/\s*\n\s*/g, ' ')
    .trim();
}

/** A TLS explanation for an error of a connection to `who` (its settings named in `env`), or undefined. */
export function tlsExplanation(text: string, env: { ca: string; cert: string; key: string }): string | undefined {
  if (UNTRUSTED.test(text)) return `TLS: the server's certificate is signed by an unknown authority (not by the CA in ${env.ca})`;
  if (EXPIRED.test(text)) return "TLS: the server's certificate has expired or is not valid yet";
  if (NAME.test(text)) return "TLS: the server's certificate does not name the address connected to";
  if (CLIENT_CERT_REFUSED.test(text)) return `TLS: the server refused the client certificate (${env.cert}, ${env.key}: missing, or not signed by a CA it trusts)`;
  if (NOT_TLS.test(text)) return 'TLS: the server does not speak TLS on this port';
  return undefined;
}

export const CONSUL_TLS_ENV = { ca: 'CONSUL_CACERT', cert: 'CONSUL_CLIENT_CERT', key: 'CONSUL_CLIENT_KEY' };
export const ETCD_TLS_ENV = { ca: 'ETCDCTL_CACERT', cert: 'ETCDCTL_CERT', key: 'ETCDCTL_KEY' };

/** A failed Consul HTTP call (no answer) over https: what the TLS failure means, before the library's words. */
export function explainConsulFailure(text: string, secure: boolean): string {
  if (!secure) return text;
  const tls = tlsExplanation(text, CONSUL_TLS_ENV);
  if (tls) return `${tls}: ${text}`;
  // With verify_incoming, a TLS 1.3 server checks the client certificate after the handshake and just closes.
  if (/UND_ERR_SOCKET|other side closed|ECONNRESET|socket hang up/.test(text)) {
    return `TLS: the agent closed the connection (with verify_incoming it wants a client certificate signed by its CA: ${CONSUL_TLS_ENV.cert}, ${CONSUL_TLS_ENV.key}): ${text}`;
  }
  return text;
}

/** A Consul answer refusing the call: what the ACL refusal means. */
export function explainConsulRefusal(status: number, body: string): string {
  if (status === 403 && /ACL not found/i.test(body)) return `${body} (the token, CONSUL_HTTP_TOKEN, is unknown to Consul: missing, mistyped or deleted)`;
  if (status === 403 && /Permission denied/i.test(body)) return `${body} (the token, CONSUL_HTTP_TOKEN, lacks this permission in its ACL policy)`;
  return body;
}

/** A failed etcd call: authentication, permission and TLS failures named by the setting to fix. */
export function explainEtcdFailure(text: string, ctx: { user?: string; prefix: string; tls: boolean }): string {
  const line = oneLine(text);
  if (/authentication failed|invalid user ID or password/i.test(line)) {
    return `authentication failed for user ${ctx.user ?? '(none)'} (ETCDCTL_USER / ETCDCTL_PASSWORD): ${line}`;
  }
  if (/user name not found|user name is empty/i.test(line)) return `etcd knows no user ${ctx.user ?? '(none)'} (ETCDCTL_USER): ${line}`;
  if (/permission denied|role is not granted/i.test(line)) {
    return `permission denied for user ${ctx.user ?? '(none)'}: its role needs readwrite on the key prefix ${ctx.prefix}/: ${line}`;
  }
  if (/user name is empty|authentication is required|invalid auth token/i.test(line) && !ctx.user) return `etcd requires authentication (ETCDCTL_USER): ${line}`;
  if (!ctx.tls) return line;
  const tls = tlsExplanation(line, ETCD_TLS_ENV);
  if (tls) return `${tls}: ${line}`;
  if (/No connection established/i.test(line)) return `no connection (a TLS handshake that failed? check ${ETCD_TLS_ENV.ca}, ${ETCD_TLS_ENV.cert}, ${ETCD_TLS_ENV.key}): ${line}`;
  return line;
}

/** The request a registry message names (`PUT /agent/…: `, `etcd txn: `): the same failure of another request is the same cause. */
const REQUEST = /(?:(?:GET|PUT|POST|DELETE) \S+|etcd [a-z ]+): /g;

/** Ways of not reaching a registry at all; during one outage they alternate (refused, reset, timed out) and are one cause. */
const UNREACHABLE = /ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|socket hang up|other side closed|timed out|deadline exceeded|UNAVAILABLE|No connection established|connection (?:reset|refused|closed)/i;

/** What failed, without which request met it: the key under which a failure is logged once. */
export function causeOf(text: string): string {
  const parts = text.split(REQUEST);
  const cause = parts[parts.length - 1];
  return UNREACHABLE.test(cause) ? 'unreachable' : cause;
}
