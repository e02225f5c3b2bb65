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

/** An address as a number and its width in bits. */
function addressValue(addr: string): { value: bigint; width: number } {
  if (isIP(addr) === 4) return { value: addr.split('.').reduce((n, b) => (n << 8n) | BigInt(b), 0n), width: 32 };
  let a = addr;
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (quad) {
    const [b0, b1, b2, b3] = quad.slice(1).map(Number);
    a = `${a.slice(0, quad.index)}${((b0 << 8) | b1).toString(16)}:${((b2 << 8) | b3).toString(16)}`;
  }
  const [head, tail] = a.split('::');
  const part = (x: string | undefined) => (x ? x.split(':').map((g) => BigInt(parseInt(g, 16))) : []);
  const h = part(head);
  const t = part(tail);
  const groups = tail === undefined ? h : [...h, ...new Array<bigint>(8 - h.length - t.length).fill(0n), ...t];
  return { value: groups.reduce((n, g) => (n << 16n) | g, 0n), width: 128 };
}

const MAPPED_PREFIX = 0xffffn << 32n;

/**
 * Membership test for peer addresses. IPv4-mapped IPv6 peers count as their IPv4 address, and an
 * IPv6 block never trusts an IPv4 peer (Node's BlockList would let `::/0` match 127.0.0.1); a
 * block inside ::ffff:0:0/96 is taken as the IPv4 block it maps.
 */
export class TrustedProxies {
  private readonly v4 = new BlockList();
  private readonly v6 = new BlockList();
  readonly size: number;
  /** One line per entry that is not what it looks like (host bits set, IPv4 left out). */
  readonly warnings: string[] = [];

  constructor(entries: readonly string[]) {
    for (const e of entries) {
      const [addr, bitsText] = e.split('/');
      const bits = Number(bitsText);
      const { value, width } = addressValue(addr);
      if (value & ((1n << BigInt(width - bits)) - 1n)) this.warnings.push(`trusted proxies: ${e} has host bits set; the whole /${bits} block is trusted`);
      if (width === 32) {
        this.v4.addSubnet(addr, bits, 'ipv4');
      } else if (bits >= 96 && value >> 32n === 0xffffn) {
        const v = Number(value & 0xffffffffn);
        this.v4.addSubnet([v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.'), bits - 96, 'ipv4');
      } else {
        this.v6.addSubnet(addr, bits, 'ipv6');
        if (bits < 96 && (MAPPED_PREFIX >> BigInt(128 - bits)) === value >> BigInt(128 - bits)) this.warnings.push(`trusted proxies: ${e} is an IPv6 block; IPv4 peers are not trusted by it (list IPv4 blocks such as 0.0.0.0/0 separately)`);
      }
    }
    this.size = entries.length;
  }

  has(remoteAddress: string | undefined): boolean {
    if (this.size === 0 || !remoteAddress) return false;
    const addr = clientAddress(remoteAddress);
    const family = isIP(addr);
    if (family === 4) return this.v4.check(addr, 'ipv4');
    return family === 6 && this.v6.check(addr, 'ipv6');
  }
}
