import { describe, expect, it } from 'vitest';
import { signalNumber, terminatingSignal } from './docker-source.js';

describe('signals as Docker writes them', () => {
  it.each([
    ['15', 15],
    ['SIGTERM', 15],
    ['term', 15],
    ['SIGWINCH', 28],
    ['28', 28],
    ['SIGRTMIN+3', 37],
    ['RTMIN+3', 37],
    ['SIGRTMIN', 34],
    ['SIGRTMAX-2', 62],
  ])('%s is %d', (raw, n) => {
    expect(signalNumber(raw)).toBe(n);
  });

  it.each(['', 'SIGNOPE', 'SIGRTMIN+40', '999x'])('%j is no signal', (raw) => {
    expect(signalNumber(raw)).toBeUndefined();
  });

  it('terminating signals by number or name; reload signals are not', () => {
    expect(terminatingSignal('15')).toBe('SIGTERM');
    expect(terminatingSignal('KILL')).toBe('SIGKILL');
    expect(terminatingSignal('1')).toBeUndefined();
    expect(terminatingSignal('SIGHUP')).toBeUndefined();
  });
});
