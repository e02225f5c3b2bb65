import { describe, it, expect } from 'vitest';
import { UsageError } from '../registry/types.js';
import { choiceFlag, COMMON_OPTIONS, intFlag, parse } from './args.js';

describe('intFlag', () => {
  it('returns the default when the flag is absent', () => {
    expect(intFlag('ttl', undefined, 30, 0)).toBe(30);
  });

  it('parses whole numbers within bounds', () => {
    expect(intFlag('ttl', '0', 30, 0, 10)).toBe(0);
    expect(intFlag('ttl', '10', 30, 0, 10)).toBe(10);
    expect(intFlag('retry-attempts', '-1', 0, -1)).toBe(-1);
  });

  it.each([
    ['abc', 'not a whole number'],
    ['1.5', 'not a whole number'],
    ['', 'not a whole number'],
    ['11', 'must be between 0 and 10'],
    ['-1', 'must be between 0 and 10'],
  ])('refuses %j', (raw, reason) => {
    expect(() => intFlag('ttl', raw, 30, 0, 10)).toThrow(UsageError);
    expect(() => intFlag('ttl', raw, 30, 0, 10)).toThrow(`--ttl ${raw}: ${reason}`);
  });
});

describe('choiceFlag', () => {
  const modes = ['always', 'on-success'] as const;

  it('returns the default or the given choice', () => {
    expect(choiceFlag('deregister', undefined, modes, 'always')).toBe('always');
    expect(choiceFlag('deregister', 'on-success', modes, 'always')).toBe('on-success');
  });

  it('refuses other values, listing the choices', () => {
    expect(() => choiceFlag('deregister', 'never', modes, 'always')).toThrow(UsageError);
    expect(() => choiceFlag('deregister', 'never', modes, 'always')).toThrow('--deregister never: expected one of always, on-success');
  });
});

describe('parse', () => {
  it('returns values and positionals', () => {
    const { values, positionals } = parse(['--log-level', 'debug', 'a', '-h'], COMMON_OPTIONS);
    expect(values).toEqual({ 'log-level': 'debug', help: true });
    expect(positionals).toEqual(['a']);
  });

  it('turns parseArgs errors into a one-line UsageError', () => {
    let caught: unknown;
    try {
      parse(['--nope'], COMMON_OPTIONS);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(UsageError);
    expect((caught as Error).message).toContain('--nope');
    expect((caught as Error).message).not.toContain('\n');
    expect((caught as Error).message).not.toContain('To specify a positional');
  });
});
