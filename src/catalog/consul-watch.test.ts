import { describe, expect, it } from 'vitest';
import { nextIndex } from './consul-watch.js';

describe('nextIndex (Consul blocking-query index rules)', () => {
  it('follows an index that grows or stays', () => {
    expect(nextIndex(0, 42)).toBe(42);
    expect(nextIndex(42, 42)).toBe(42);
    expect(nextIndex(42, 57)).toBe(57);
  });

  it('resets to 0 (a full read) when the index goes backwards', () => {
    expect(nextIndex(57, 12)).toBe(0);
    expect(nextIndex(2, 1)).toBe(0);
  });

  it('takes an index below 1, or none, as 1 so the next query blocks', () => {
    expect(nextIndex(0, 0)).toBe(1);
    expect(nextIndex(57, 0)).toBe(1);
    expect(nextIndex(5, undefined)).toBe(1);
    expect(nextIndex(5, Number.NaN)).toBe(1);
  });
});
