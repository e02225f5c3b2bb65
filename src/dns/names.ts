// Consul's DNS names, read relative to the served domain:
//   [<tag>.]*<service>.service[.<dc>[.dc]].<domain>     instances, all tags required
//   _<service>._<tag|tcp|udp>.service[...].<domain>     RFC 2782 SRV form
//   <host>.node[...].<domain>                           a registering host
//   <hex address>.addr[...].<domain>                    the targets of SRV answers
// so that clients written for Consul's DNS work unchanged on every backend.
import type { Protocol } from '../model/service-instance.js';

export type DnsName =
  | { kind: 'service'; service: string; tags: string[]; protocol?: Protocol }
  | { kind: 'node'; node: string }
  | { kind: 'addr'; address: string }
  /** The domain itself (SOA, NS). */
  | { kind: 'apex' }
  /** Inside the domain, but no such name. */
  | { kind: 'none' }
  /** Outside the domain: not ours to answer. */
  | { kind: 'outside' };

const TYPES = new Set(['service', 'node', 'addr']);

/** `name` as the question carries it (any case, with or without the final dot). */
export function parseName(name: string, domain: string, datacenter: string): DnsName {
  const n = name.toLowerCase().replace(/\.$/, '');
  if (n === domain) return { kind: 'apex' };
  if (!n.endsWith(`.${domain}`)) return { kind: 'outside' };
  const labels = n.slice(0, -(domain.length + 1)).split('.');
  if (labels.some((l) => l.length === 0)) return { kind: 'none' };
  // The datacenter: `.<dc>.dc` (canonical form) or a bare `.<dc>` after the type label.
  if (labels.length >= 3 && labels[labels.length - 1] === 'dc') {
    if (labels[labels.length - 2] !== datacenter) return { kind: 'none' };
    labels.length -= 2;
  } else if (labels.length >= 2 && !TYPES.has(labels[labels.length - 1]) && TYPES.has(labels[labels.length - 2])) {
    if (labels[labels.length - 1] !== datacenter) return { kind: 'none' };
    labels.length -= 1;
  }
  const type = labels.pop();
  if (labels.length === 0) return { kind: 'none' };
  switch (type) {
    case 'service':
      return serviceName(labels);
    case 'node':
      return { kind: 'node', node: labels.join('.') };
    case 'addr': {
      const address = labels.length === 1 ? hexAddress(labels[0]) : undefined;
      return address ? { kind: 'addr', address } : { kind: 'none' };
    }
    default:
      return { kind: 'none' };
  }
}

function serviceName(labels: string[]): DnsName {
  // RFC 2782: _service._proto (or Consul's _service._tag).
  if (labels.length === 2 && labels[0].startsWith('_') && labels[1].startsWith('_')) {
    const service = labels[0].slice(1);
    const second = labels[1].slice(1);
    if (!service || !second) return { kind: 'none' };
    if (second === 'tcp' || second === 'udp') return { kind: 'service', service, tags: [], protocol: second };
    return { kind: 'service', service, tags: [second] };
  }
  const service = labels[labels.length - 1];
  return { kind: 'service', service, tags: labels.slice(0, -1) };
}

/** The `<hex>.addr` label of an address: 8 hex digits for IPv4, 32 for IPv6 (Consul's form). */
export function addrLabel(address: string): string | undefined {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(address);
  if (v4) return v4.slice(1).map((o) => Number(o).toString(16).padStart(2, '0')).join('');
  const groups = expandIpv6(address);
  return groups?.map((g) => g.toString(16).padStart(4, '0')).join('');
}

function hexAddress(label: string): string | undefined {
  if (/^[0-9a-f]{8}$/.test(label)) return [0, 2, 4, 6].map((i) => parseInt(label.slice(i, i + 2), 16)).join('.');
  if (/^[0-9a-f]{32}$/.test(label)) {
    const groups = Array.from({ length: 8 }, (_, i) => label.slice(i * 4, i * 4 + 4));
    // The URL parser writes an IPv6 address in its canonical, compressed form.
    return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
  }
  return undefined;
}

function expandIpv6(address: string): number[] | undefined {
  if (!address.includes(':') || address.includes('%')) return undefined;
  let head = address;
  let tail4: number[] = [];
  const dotted = /^(.*:)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/.exec(address);
  if (dotted) {
    const o = dotted[2].split('.').map(Number);
    tail4 = [(o[0] << 8) | o[1], (o[2] << 8) | o[3]];
    head = dotted[1].endsWith('::') ? dotted[1] : dotted[1].slice(0, -1);
  }
  const halves = head.split('::');
  if (halves.length > 2) return undefined;
  const parse = (s: string) => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const left = parse(halves[0]);
  const right = halves.length === 2 ? parse(halves[1]) : [];
  const fill = 8 - tail4.length - left.length - right.length;
  if (halves.length === 1 && fill !== 0) return undefined;
  if (fill < 0 || [...left, ...right].some((g) => Number.isNaN(g) || g > 0xffff)) return undefined;
  return [...left, ...Array<number>(halves.length === 2 ? fill : 0).fill(0), ...right, ...tail4];
}
