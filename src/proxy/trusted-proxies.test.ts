import { describe, expect, it } from 'vitest';
import { parseTrustedProxies, TrustedProxies } from './trusted-proxies.js';

describe('parseTrustedProxies', () => {
  it('takes addresses and CIDRs of both families, normalized', () => {
    expect(parseTrustedProxies('10.0.0.0/8, 192.168.1.7,::1,FD00::/8')).toEqual(['10.0.0.0/8', '192.168.1.7/32', '::1/128', 'fd00::/8']);
  });

  it('names the entry that is not an address or CIDR', () => {
    expect(() => parseTrustedProxies('10.0.0.0/8,nope')).toThrow('"nope" is not an IPv4/IPv6 address or CIDR');
    expect(() => parseTrustedProxies('10.0.0.0/33')).toThrow('"10.0.0.0/33": the prefix length must be 0 to 32');
    expect(() => parseTrustedProxies('::/129')).toThrow('0 to 128');
    expect(() => parseTrustedProxies('10.0.0.0/')).toThrow('prefix length');
    expect(() => parseTrustedProxies('10.0.0.256')).toThrow('not an IPv4/IPv6');
    expect(() => parseTrustedProxies('fe80::1%eth0')).toThrow('not an IPv4/IPv6');
    expect(() => parseTrustedProxies(' , ')).toThrow('expected a comma list');
  });
});

describe('TrustedProxies', () => {
  it('matches peers by block, IPv4-mapped peers as IPv4', () => {
    const t = new TrustedProxies(parseTrustedProxies('10.0.0.0/8,::1,2001:db8::/32'));
    expect(t.has('10.200.0.1')).toBe(true);
    expect(t.has('::ffff:10.1.2.3')).toBe(true);
    expect(t.has('11.0.0.1')).toBe(false);
    expect(t.has('::1')).toBe(true);
    expect(t.has('2001:db8:1::5')).toBe(true);
    expect(t.has('2001:db9::5')).toBe(false);
    expect(t.has(undefined)).toBe(false);
  });

  it('keeps IPv6 blocks to IPv6 peers, takes ::ffff: blocks as IPv4, and warns about host bits', () => {
    const all6 = new TrustedProxies(parseTrustedProxies('::/0'));
    expect(all6.has('127.0.0.1')).toBe(false);
    expect(all6.has('::ffff:127.0.0.1')).toBe(false);
    expect(all6.has('2001:db8::1')).toBe(true);
    expect(all6.warnings).toEqual(['trusted proxies: ::/0 is an IPv6 block; IPv4 peers are not trusted by it (list IPv4 blocks such as 0.0.0.0/0 separately)']);
    const mapped = new TrustedProxies(parseTrustedProxies('::ffff:10.0.0.0/104'));
    expect([mapped.has('10.9.9.9'), mapped.has('::ffff:10.1.1.1'), mapped.has('11.0.0.1')]).toEqual([true, true, false]);
    const bits = new TrustedProxies(parseTrustedProxies('10.0.0.1/8,fd00::1/8,10.0.0.0/8'));
    expect(bits.warnings).toEqual(['trusted proxies: 10.0.0.1/8 has host bits set; the whole /8 block is trusted', 'trusted proxies: fd00::1/8 has host bits set; the whole /8 block is trusted']);
    expect(bits.has('10.200.0.1')).toBe(true);
    expect(new TrustedProxies(parseTrustedProxies('2001:db8::/32,127.0.0.1')).warnings).toEqual([]);
  });

  it('trusts nobody when empty', () => {
    expect(new TrustedProxies([]).has('127.0.0.1')).toBe(false);
  });
});
