// The proxies in front of this one whose forwarding headers are believed (nginx's
// set_real_ip_from, Traefik's forwardedHeaders.trustedIPs): IPv4/IPv6 addresses and CIDR blocks.
import { BlockList, isIP } from 'node:net';
import { clientAddress } from './headers.js';

/** A comma list of addresses and CIDRs → normalized entries; throws naming the entry that is not one. */
export function parseTrustedProxies(raw: string): string[] {
  const out: string[] = [];
  for (const item of raw.split(',')) {
    const entry = item.trim();
    if (!entry) continue;
    const slash = entry.indexOf('/');
    const addr = slash < 0 ? entry : entry.slice(0, slash);
    const family = addr.includes('%') ? 0 : isIP(addr);
    if (family === 0) throw new Error(`"${entry}" is not an IPv4/IPv6 address or CIDR`);
    const max = family === 4 ? 32 : 128;
    if (slash >= 0) {
      const bits = entry.slice(slash + 1);
      if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) throw new Error(`"${entry}": the prefix length must be 0 to ${max}`);
      out.push(`${addr.toLowerCase()}/${Number(bits)}`);
    } else out.push(`${addr.toLowerCase()}/${max}`);
  }
  if (out.length === 0) throw new Error('expected a comma list of addresses or CIDRs');
  return out;
}

/** Membership test for peer addresses (IPv4-mapped IPv6 peers count as their IPv4 address). */
export class TrustedProxies {
  private readonly list = new BlockList();
  readonly size: number;

  constructor(entries: readonly string[]) {
    for (const e of entries) {
      const [addr, bits] = e.split('/');
      this.list.addSubnet(addr, Number(bits), isIP(addr) === 4 ? 'ipv4' : 'ipv6');
    }
    this.size = entries.length;
  }

  has(remoteAddress: string | undefined): boolean {
    if (this.size === 0 || !remoteAddress) return false;
    const addr = clientAddress(remoteAddress);
    const family = isIP(addr);
    return family !== 0 && this.list.check(addr, family === 4 ? 'ipv4' : 'ipv6');
  }
}
