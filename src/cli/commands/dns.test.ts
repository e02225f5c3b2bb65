import { networkInterfaces } from 'node:os';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../registry/types.js';
import { dnsSettings, isOwnAddress, parseDnsArgs } from './dns.js';

const refused = (f: () => unknown): string => {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('accepted');
};

describe('dns flags', () => {
  it('refuses a --recursor that is this server: the listen address, or any loopback / unspecified address on its port', () => {
    const msg = refused(() => parseDnsArgs(['memory://', '--listen', '127.0.0.1:38421', '--recursor', '127.0.0.1:38421']));
    expect(msg).toBe("--recursor 127.0.0.1:38421: that is this server's own --listen address; it would forward questions to itself");
    expect(msg).not.toContain('\n');
    for (const [listen, rec] of [
      ['127.0.0.1:8600', '127.0.0.2:8600'],
      ['0.0.0.0:8600', '127.0.0.1:8600'],
      ['127.0.0.1:8600', '0.0.0.0:8600'],
      ['[::1]:8600', '127.0.0.1:8600'],
      ['[::]:8600', '[::1]:8600'],
    ]) {
      refused(() => dnsSettings({ listen, recursor: rec }));
    }
    // Listening on all addresses: an address of this host on that port is this server too.
    const mine = Object.values(networkInterfaces()).flatMap((l) => l ?? []).find((i) => i.family === 'IPv4' && !i.internal);
    if (mine) expect(isOwnAddress({ host: mine.address, port: 8600 }, { host: '0.0.0.0', port: 8600 })).toBe(true);
    // Another port, or another address than a listen address that is not loopback.
    expect(dnsSettings({ listen: '127.0.0.1:8600', recursor: '127.0.0.1:53' }).recursor).toEqual({ host: '127.0.0.1', port: 53 });
    expect(dnsSettings({ listen: '127.0.0.1:8600', recursor: '10.0.0.2:8600' }).recursor).toEqual({ host: '10.0.0.2', port: 8600 });
    // run's flag names.
    expect(refused(() => dnsSettings({ listen: '127.0.0.1:8600', recursor: '127.0.0.1:8600' }, { listen: 'dns', domain: 'dns-domain' }))).toContain('own --dns address');
    console.log(`PROBE dns --recursor own address: ${msg}`);
  });

  it('refuses --datacenter values that are type labels of DNS names', () => {
    for (const dc of ['service', 'node', 'addr', 'query', 'connect', 'ingress', 'virtual', 'Service']) {
      expect(refused(() => dnsSettings({ datacenter: dc }))).toMatch(/would make names ambiguous/);
    }
    expect(dnsSettings({ datacenter: 'dc' }).datacenter).toBe('dc');
  });
});
