// Long-running commands end the same way: on SIGTERM/SIGINT, log one line, run the command's
// own shutdown, and give up with exit 1 if it hangs past a deadline.
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
