// Answers to DNS questions from one catalog snapshot. A new snapshot builds a new Zone (one pass
// over the catalog); a question is then answered from maps, without touching the registry.
import { isIP } from 'node:net';
import type { Answer } from 'dns-packet';
import type { Catalog } from '../catalog/catalog.js';
import { instanceWeight } from '../catalog/routes.js';
import type { HealthStatus, ServiceInstance } from '../model/service-instance.js';
import { addrLabel, parseName } from './names.js';

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

export interface ZoneOptions {
  /** Lowercase, without the final dot: `consul`. */
  domain: string;
  datacenter: string;
  /** TTL of every answer, and the negative TTL of the SOA. */
  ttl: number;
  /** Instance statuses that are answered (Consul answers passing and warning unless only_passing). */
  statuses: readonly HealthStatus[];
}

/** A question as dns-packet decodes it: the type is a name (`A`, `SRV`, `ANY`…). */
export interface Question {
  name: string;
  type: string;
}

export interface Reply {
  rcode: number;
  answers: Answer[];
  authorities: Answer[];
  additionals: Answer[];
}

interface ServiceEntry {
  /** Instances that are answered: a status asked for and a weight above 0 (weight 0 is draining). */
  routable: Readonly<ServiceInstance>[];
}

export class Zone {
  private readonly services = new Map<string, ServiceEntry>();
  /** Registering host (lowercase) → the IP addresses its instances are reached at. */
  private readonly nodes = new Map<string, Set<string>>();
  private readonly soa: Answer;

  constructor(
    catalog: Catalog,
    private readonly opts: ZoneOptions,
    serial = Math.floor(Date.now() / 1000),
  ) {
    for (const svc of catalog.services) {
      const routable = svc.instances.filter((i) => opts.statuses.includes(i.status) && instanceWeight(i) > 0);
      this.services.set(svc.name.toLowerCase(), { routable });
      for (const i of svc.instances) {
        const host = i.host.toLowerCase();
        let addrs = this.nodes.get(host);
        if (!addrs) this.nodes.set(host, (addrs = new Set()));
        if (isIP(i.address)) addrs.add(i.address);
      }
    }
    this.soa = {
      type: 'SOA',
      name: opts.domain,
      ttl: opts.ttl,
      data: { mname: `ns.${opts.domain}`, rname: `hostmaster.${opts.domain}`, serial: serial >>> 0, refresh: 3600, retry: 600, expire: 86400, minimum: opts.ttl },
    };
  }

  /** Whether a name is ours to answer (inside the domain). */
  owns(name: string): boolean {
    return parseName(name, this.opts.domain, this.opts.datacenter).kind !== 'outside';
  }

  answer(q: Question): Reply {
    const name = parseName(q.name, this.opts.domain, this.opts.datacenter);
    switch (name.kind) {
      case 'outside':
        return reply(RCODE.REFUSED);
      case 'none':
        return this.negative(RCODE.NXDOMAIN);
      case 'apex':
        return q.type === 'SOA' || q.type === 'ANY' ? reply(RCODE.NOERROR, [{ ...this.soa, name: q.name }]) : this.negative(RCODE.NOERROR);
      case 'addr':
        return this.addresses(q, [name.address]);
      case 'node': {
        const addrs = this.nodes.get(name.node);
        return addrs ? this.addresses(q, shuffle([...addrs])) : this.negative(RCODE.NXDOMAIN);
      }
      case 'service': {
        const entry = this.services.get(name.service);
        if (!entry) return this.negative(RCODE.NXDOMAIN);
        const matching = entry.routable.filter(
          (i) => (name.protocol === undefined || i.protocol === name.protocol) && name.tags.every((t) => i.tags.some((it) => it.toLowerCase() === t)),
        );
        return this.instances(q, shuffle(matching));
      }
    }
  }

  private instances(q: Question, list: Readonly<ServiceInstance>[]): Reply {
    const ttl = this.opts.ttl;
    const answers: Answer[] = [];
    const additionals: Answer[] = [];
    switch (q.type) {
      case 'A':
      case 'AAAA':
      case 'ANY':
        return this.addresses(q, list.map((i) => i.address));
      case 'SRV': {
        const added = new Set<string>();
        for (const i of list) {
          const target = this.targetOf(i.address);
          answers.push({ type: 'SRV', name: q.name, ttl, data: { priority: 1, weight: instanceWeight(i), port: i.port, target } });
          const family = isIP(i.address);
          if (family && !added.has(target)) {
            added.add(target);
            additionals.push(family === 4 ? { type: 'A', name: target, ttl, data: i.address } : { type: 'AAAA', name: target, ttl, data: i.address });
          }
        }
        break;
      }
      case 'TXT': {
        const seen = new Set<string>();
        for (const i of list) {
          const strings = Object.entries(i.meta).flatMap(([k, v]) => txtStrings(`${k}=${v}`));
          const key = JSON.stringify(strings);
          if (strings.length === 0 || seen.has(key)) continue;
          seen.add(key);
          answers.push({ type: 'TXT', name: q.name, ttl, data: strings });
        }
        break;
      }
      default:
        break;
    }
    return answers.length > 0 ? reply(RCODE.NOERROR, answers, additionals) : this.negative(RCODE.NOERROR);
  }

  /** A / AAAA records of the IP addresses among `addresses` (a host name address is answered in SRV only). */
  private addresses(q: Question, addresses: string[]): Reply {
    const ttl = this.opts.ttl;
    const answers: Answer[] = [];
    const seen = new Set<string>();
    for (const a of addresses) {
      const family = isIP(a);
      if (!family || seen.has(a)) continue;
      seen.add(a);
      if (family === 4 && (q.type === 'A' || q.type === 'ANY')) answers.push({ type: 'A', name: q.name, ttl, data: a });
      if (family === 6 && (q.type === 'AAAA' || q.type === 'ANY')) answers.push({ type: 'AAAA', name: q.name, ttl, data: a });
    }
    return answers.length > 0 ? reply(RCODE.NOERROR, answers) : this.negative(RCODE.NOERROR);
  }

  private targetOf(address: string): string {
    const label = addrLabel(address);
    return label ? `${label}.addr.${this.opts.datacenter}.${this.opts.domain}` : address;
  }

  /** NXDOMAIN, or NOERROR without answers: the SOA goes in the authority section (negative caching, RFC 2308). */
  private negative(rcode: number): Reply {
    return reply(rcode, [], [], [this.soa]);
  }
}

function reply(rcode: number, answers: Answer[] = [], additionals: Answer[] = [], authorities: Answer[] = []): Reply {
  return { rcode, answers, authorities, additionals };
}

/** A new order per answer, so that clients taking the first record spread over the instances. */
function shuffle<T>(list: T[]): T[] {
  const a = [...list];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** A TXT character-string holds 255 bytes: a longer `key=value` goes on in the next string. */
function txtStrings(text: string): Buffer[] {
  const bytes = Buffer.from(text);
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 255) out.push(bytes.subarray(i, i + 255));
  return out;
}
