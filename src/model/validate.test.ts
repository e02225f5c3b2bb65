import { describe, it, expect } from 'vitest';
import { checkDnsLabel, checkDuration, checkMetaKey, checkPort, checkText, durationMs, printable } from './validate.js';

describe('durationMs', () => {
  it.each([
    ['10s', 10_000],
    ['500ms', 500],
    ['1m30s', 90_000],
    ['1h', 3_600_000],
    ['1.5s', 1_500],
    ['2h45m', 9_900_000],
    ['0s', 0],
    ['250us', 0.25],
    ['250µs', 0.25],
    ['1000000ns', 1],
  ])('%s = %d ms', (value, ms) => {
    expect(durationMs(value)).toBeCloseTo(ms, 9);
  });

  it.each(['', '10', '10 seconds', '-1s', '1d', 's', '1.s', ' 10s', '10s '])('%j is not a duration', (value) => {
    expect(durationMs(value)).toBeUndefined();
  });
});

describe('checkDuration', () => {
  it('accepts Go durations', () => {
    for (const v of ['10s', '1m30s', '500ms', '1h']) expect(checkDuration(v)).toBeUndefined();
  });

  it('names the bad value', () => {
    expect(checkDuration('10 seconds')).toContain('"10 seconds" is not a duration');
  });

  it('escapes control characters in the message', () => {
    expect(checkDuration('1\n')).toContain('"1\\n"');
  });
});

describe('checkDnsLabel', () => {
  it.each(['web', 'a', 'web-1', '1web', 'a'.repeat(63)])('%s is a DNS label', (v) => {
    expect(checkDnsLabel(v)).toBeUndefined();
  });

  it.each(['', 'Web', 'my_service', '-web', 'web-', 'a.b', 'a b', 'a'.repeat(64), 'wéb'])('%j is not a DNS label', (v) => {
    expect(checkDnsLabel(v)).toContain('is not a DNS label');
  });

  it('shortens a long value in the message', () => {
    expect(checkDnsLabel('x'.repeat(200))!.length).toBeLessThan(200);
  });
});

describe('checkText', () => {
  it('accepts plain text', () => {
    expect(checkText('hello, world')).toBeUndefined();
  });

  it.each(['a\nb', 'a\tb', '\u0000', '\u007f', '\u0085', '\u2028', '\u2029'])('refuses control character %j', (v) => {
    expect(checkText(v)).toBe('contains control characters');
  });

  it('refuses over-long text', () => {
    expect(checkText('x'.repeat(513))).toBe('longer than 512 characters');
    expect(checkText('x'.repeat(512))).toBeUndefined();
    expect(checkText('x'.repeat(11), 10)).toBe('longer than 10 characters');
  });
});

describe('checkMetaKey', () => {
  it('accepts lowercase keys with _ and -', () => {
    expect(checkMetaKey('proto_version-2')).toBeUndefined();
  });

  it.each(['foo.bar', 'Foo', '', 'a b', 'x'.repeat(129)])('refuses %j', (k) => {
    expect(checkMetaKey(k)).toContain('meta key');
  });

  it('refuses keys starting with consul', () => {
    expect(checkMetaKey('consul_token')).toContain('may not start with "consul"');
  });
});

describe('checkPort', () => {
  it.each([1, 80, 65535, '1', '8080'])('%j is a port', (v) => {
    expect(checkPort(v)).toBeUndefined();
  });

  it.each([0, 65536, 80.5, -1, NaN, '0', '', '80a', '123456', ' 80'])('%j is not a port', (v) => {
    expect(checkPort(v)).toContain('is not a port number');
  });
});

describe('printable', () => {
  it('escapes and shortens', () => {
    expect(printable('a\nb')).toBe('a\\nb');
    expect(printable('x'.repeat(100), 10)).toBe(`${'x'.repeat(10)}…`);
  });
});
