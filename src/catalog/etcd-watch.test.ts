import { describe, expect, it } from 'vitest';
import { prefixEnd } from './etcd-watch.js';

describe('prefixEnd', () => {
  it('is the prefix with its last byte incremented', () => {
    expect(prefixEnd(Buffer.from('/hm/')).toString()).toBe('/hm0');
  });

  it('drops trailing 0xff bytes, and is "\\0" (every key) when all are 0xff', () => {
    expect([...prefixEnd(Buffer.from([0x61, 0xff, 0xff]))]).toEqual([0x62]);
    expect([...prefixEnd(Buffer.from([0xff]))]).toEqual([0]);
  });
});
