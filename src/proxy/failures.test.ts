import net from 'node:net';
import { errors } from 'undici';
import { describe, expect, it } from 'vitest';
import { failureKind, isRefused } from './failures.js';

/** A real refusal: a port that was just free on loopback. */
async function refusal(): Promise<Error> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return new Promise((resolve) => net.connect(port, '127.0.0.1').on('error', resolve));
}

describe('connect failures that use up no retry', () => {
  it('a refused connection does; a connect timeout or an unreachable host, each of which makes the client wait, does not', async () => {
    const refused = await refusal();
    expect(failureKind(refused)).toBe('connect');
    expect(isRefused(refused)).toBe(true);
    const slow = [new errors.ConnectTimeoutError(), Object.assign(new Error('connect timed out after 5000 ms'), { code: 'HM_CONNECT_TIMEOUT' }), Object.assign(new Error('connect EHOSTUNREACH'), { code: 'EHOSTUNREACH' }), Object.assign(new Error('connect ETIMEDOUT'), { code: 'ETIMEDOUT' })];
    for (const err of slow) {
      expect(failureKind(err)).toBe('connect');
      expect(isRefused(err)).toBe(false);
    }
  });
});
