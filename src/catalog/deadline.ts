// A per-request abort signal: aborted by the watch's own signal or after `ms`.
// Not AbortSignal.any([parent, AbortSignal.timeout(ms)]): on Node 20 the timeout signal can be
// garbage-collected inside any() and then never fires (nodejs/node#57736), and every any() on a
// long-lived parent leaves an entry on it for as long as the parent lives.

export interface Deadline {
  readonly signal: AbortSignal;
  /** Whether the time ran out (as opposed to the parent aborting). */
  readonly timedOut: boolean;
  /** Abort it now (not a timeout). */
  abort(): void;
  /** Stop the timer and detach from the parent; call once the request is over. */
  clear(): void;
}

export function deadline(parent: AbortSignal, ms: number): Deadline {
  const c = new AbortController();
  let timedOut = false;
  const onAbort = () => c.abort(parent.reason);
  if (parent.aborted) c.abort(parent.reason);
  else parent.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(() => {
    timedOut = true;
    c.abort(new DOMException('no answer in time', 'TimeoutError'));
  }, ms);
  return {
    signal: c.signal,
    get timedOut() {
      return timedOut;
    },
    abort() {
      c.abort(new DOMException('ended', 'AbortError'));
    },
    clear() {
      clearTimeout(timer);
      parent.removeEventListener('abort', onAbort);
    },
  };
}
