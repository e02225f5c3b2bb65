// Which upstream failures eject an instance and which requests may go to another one.

export type FailureKind = 'connect' | 'reset' | 'timeout' | 'other';

const CONNECT_CODES = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'HM_CONNECT_TIMEOUT']);
// A body cut short (the instance died mid-response) is a reset too.
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH']);
// HM_INVALID_RESPONSE (a header Node will not send) is 'other': a 502, no retry, no ejection.
// HM_QUEUE_TIMEOUT: every connection to the instance stayed busy for the whole response timeout.
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'HM_RESPONSE_TIMEOUT', 'HM_QUEUE_TIMEOUT']);
/** Methods a retry cannot turn into a second, different effect (RFC 9110 §9.2.2). */
export const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

export function failureKind(err: unknown): FailureKind {
  const code = (err as { code?: string }).code ?? '';
  if (CONNECT_CODES.has(code)) return 'connect';
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
