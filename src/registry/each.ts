// Many small registry calls (heartbeat refreshes, withdrawals), a few at a time, that stop
// taking new work once told to: an aborted round or an unreachable registry must not go on
// sending thousands of requests that will all time out.

export async function eachLimited<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>, stop: () => boolean = () => false): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length && !stop()) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}
