import { describe, it, expect } from 'vitest';
import { UsageError } from '../registry/types.js';
import { choiceFlag, COMMON_OPTIONS, intFlag, joinNegativeValues, parse, type Options } from './args.js';

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

describe('negative numbers as option values', () => {
  const options = {
    ...COMMON_OPTIONS,
    'retry-attempts': { type: 'string' },
    offset: { type: 'string', short: 'o' },
    verbose: { type: 'boolean' },
  } as const satisfies Options;

  it('parseArgs alone refuses `--opt -1` as ambiguous: the reason for joinNegativeValues', async () => {
    const { parseArgs } = await import('node:util');
    expect(() => parseArgs({ args: ['--retry-attempts', '-1'], options, strict: true })).toThrow(/ambiguous/);
  });

  it.each([
    [['--retry-attempts', '-1'], '-1'],
    [['--retry-attempts=-1'], '-1'],
    [['--retry-attempts', '-0.5'], '-0.5'],
    [['--retry-attempts', '3'], '3'],
  ])('%j parses', (argv, value) => {
    expect(parse(argv, options).values['retry-attempts']).toBe(value);
  });

  it('joins a negative number to a string option, long or short', () => {
    expect(joinNegativeValues(['--retry-attempts', '-1', 'x'], options)).toEqual(['--retry-attempts=-1', 'x']);
    expect(joinNegativeValues(['-o', '-12'], options)).toEqual(['--offset=-12']);
    expect(parse(['-o', '-12'], options).values.offset).toBe('-12');
  });

  it('leaves boolean options, non-numbers and everything after -- alone', () => {
    expect(joinNegativeValues(['--verbose', '-1'], options)).toEqual(['--verbose', '-1']);
    expect(joinNegativeValues(['--retry-attempts', '-x'], options)).toEqual(['--retry-attempts', '-x']);
    expect(joinNegativeValues(['--', '--retry-attempts', '-1'], options)).toEqual(['--', '--retry-attempts', '-1']);
    expect(joinNegativeValues(['--log-level', '-1e3'], options)).toEqual(['--log-level', '-1e3']);
  });

  it('a string option followed by another option is still an error', () => {
    expect(() => parse(['--retry-attempts', '--verbose'], options)).toThrow(UsageError);
    expect(() => parse(['--retry-attempts', '-h'], options)).toThrow(/ambiguous/);
  });
});
