// Small timing helpers shared by the registrar, sources and backends.

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A call that was sent (the connection was made) but got no answer in time: the peer may be
 * slow rather than gone, and what was sent may still be applied.
 */
export class NoAnswerError extends Error {
  override name = 'NoAnswerError';
}

/** Reject with a NoAnswerError if `p` does not settle in `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new NoAnswerError(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Exponential backoff with jitter: base·2^attempt, capped, ±20 %. */
export function backoffMs(attempt: number, baseMs: number, maxMs: number): number {
  const raw = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.round(raw * (0.8 + Math.random() * 0.4));
}
