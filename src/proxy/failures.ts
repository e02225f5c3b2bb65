// Which upstream failures eject an instance and which requests may go to another one.

export type FailureKind = 'connect' | 'reset' | 'timeout' | 'other';

const CONNECT_CODES = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'HM_CONNECT_TIMEOUT']);
// A body cut short by the connection closing (the instance died mid-response) is a reset too.
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);
// An answer that arrived whole but malformed is 'other' (a 502, no retry, no ejection: a client
// must not be able to get instances ejected by asking for a broken answer): HM_INVALID_RESPONSE
// (a header Node will not send), a body longer or shorter than its Content-Length, a 101 to a
// plain request ("bad upgrade"), a parser error.
// HM_QUEUE_TIMEOUT: every connection to the instance stayed busy for the whole response timeout.
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'HM_RESPONSE_TIMEOUT', 'HM_QUEUE_TIMEOUT']);
/** Methods a retry cannot turn into a second, different effect (RFC 9110 §9.2.2). */
export const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

export function failureKind(err: unknown): FailureKind {
  const code = (err as { code?: string }).code ?? '';
  if (CONNECT_CODES.has(code)) return 'connect';
  if (code === 'UND_ERR_SOCKET' && (err as Error).message === 'bad upgrade') return 'other';
  if (RESET_CODES.has(code)) return 'reset';
  if (TIMEOUT_CODES.has(code)) return 'timeout';
  return 'other';
}

/** A connect failure never reached the instance; a reset may have, so only idempotent requests go again. */
export function safeToRetry(kind: FailureKind, method: string, bodyRead: boolean): boolean {
  if (bodyRead) return false;
  if (kind === 'connect') return true;
  return kind === 'reset' && IDEMPOTENT.has(method);
}
