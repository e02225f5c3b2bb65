// Long-running commands end the same way: on SIGTERM/SIGINT, log one line, run the command's
// own shutdown, and give up with exit 1 if it hangs past a deadline. SIGHUP never ends a
// process (a hung-up terminal or a `kill -HUP` meant as "reload" must not skip the
// withdrawal): a command reloads what it can, or the signal is logged and ignored.
import type { Logger } from '../log/logger.js';

/** Resolves with the first SIGTERM or SIGINT. */
export function nextSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      process.off('SIGTERM', on);
      process.off('SIGINT', on);
      resolve(sig);
    };
    process.on('SIGTERM', on);
    process.on('SIGINT', on);
  });
}

/** SIGHUP runs `reload` (or only logs); returns a function that removes the handler. */
export function onHangup(log: Logger, what: string, reload?: () => void): () => void {
  const on = () => {
    log.info({ event: 'reload', signal: 'SIGHUP' }, `SIGHUP: ${what}`);
    try {
      reload?.();
    } catch (err) {
      log.error({ event: 'error', err: (err as Error).message }, `SIGHUP: ${(err as Error).message}`);
    }
  };
  process.on('SIGHUP', on);
  return () => process.off('SIGHUP', on);
}

/** Wait for a signal, then `stop`; resolves with the exit code (0, or 1 on failure or timeout). */
export async function stopOnSignal(log: Logger, what: string, stop: () => Promise<void>, deadlineMs: number): Promise<number> {
  const sig = await nextSignal();
  log.info({ event: 'stop', signal: sig }, `${sig}: ${what}`);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<number>((resolve) => {
    timer = setTimeout(() => {
      log.error({ event: 'error' }, `shutdown did not finish within ${deadlineMs} ms`);
      resolve(1);
    }, deadlineMs);
    timer.unref();
  });
  const done = stop().then(
    () => 0,
    (err: unknown) => {
      log.error({ event: 'error', err: (err as Error).message }, `shutdown: ${(err as Error).message}`);
      return 1;
    },
  );
  const code = await Promise.race([done, deadline]);
  clearTimeout(timer);
  return code;
}
