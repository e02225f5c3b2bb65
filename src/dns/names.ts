// Consul's DNS names, read relative to the served domain:
//   [<tag>.]*<service>.service[.<dc>[.dc]].<domain>     instances, all tags required
//   _<service>._<tag|tcp|udp>.service[...].<domain>     RFC 2782 SRV form (_tcp: no filter)
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
  /** `ns.<domain>`: the name server the SOA and the apex NS record name. */
  | { kind: 'ns' }
  /** Inside the domain, but no such name. */
  | { kind: 'none' }
  /** Outside the domain: not ours to answer. */
  | { kind: 'outside' };

const TYPES = new Set(['service', 'node', 'addr']);

/**
 * Datacenter names that are also the type labels of Consul's name forms (ours, and Consul's
 * query, connect, ingress and virtual): with one of them as the datacenter a name would have two
 * readings that mean different things, so `--datacenter` refuses them.
 */
export const RESERVED_DATACENTERS: readonly string[] = ['service', 'node', 'addr', 'query', 'connect', 'ingress', 'virtual'];

/** The name of the server itself, relative to the domain: the SOA's mname and the apex NS target. */
export const NS_LABEL = 'ns';

/** `name` as the question carries it (any case, with or without the final dot). */
export function parseName(name: string, domain: string, datacenter: string): DnsName {
  const n = name.toLowerCase().replace(/\.$/, '');
  if (n === domain) return { kind: 'apex' };
  if (!n.endsWith(`.${domain}`)) return { kind: 'outside' };
  const labels = n.slice(0, -(domain.length + 1)).split('.');
  if (labels.some((l) => l.length === 0)) return { kind: 'none' };
  if (labels.length === 1 && labels[0] === NS_LABEL) return { kind: 'ns' };
  // The datacenter: `.<dc>.dc` (canonical form), a bare `.<dc>` after the type label, or none.
  // Every reading that applies is tried in that order and the first that names something wins:
  // with `--datacenter dc`, `web.service.dc.consul` is not the `.dc` form (its datacenter label
  // would be `service`) but the bare form.
  const last = labels[labels.length - 1];
  const readings: string[][] = [];
  if (labels.length >= 3 && last === 'dc' && labels[labels.length - 2] === datacenter) readings.push(labels.slice(0, -2));
  if (labels.length >= 2 && !TYPES.has(last) && TYPES.has(labels[labels.length - 2]) && last === datacenter) readings.push(labels.slice(0, -1));
  readings.push(labels);
  for (const r of readings) {
    const found = typed(r);
    if (found.kind !== 'none') return found;
  }
  return { kind: 'none' };
}

/** `[…].<type>` with the domain and datacenter taken off. */
function typed(input: string[]): DnsName {
  const labels = [...input];
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
    // As Consul: `_tcp` filters nothing. `_udp` is our extension: the instances whose protocol is
    // udp (a Docker port published as /udp) or that carry the tag `udp` (Consul reads it as that tag).
    if (second === 'tcp') return { kind: 'service', service, tags: [] };
    if (second === 'udp') return { kind: 'service', service, tags: [], protocol: 'udp' };
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
