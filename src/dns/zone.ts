// Answers to DNS questions from one catalog snapshot. A new snapshot builds a new Zone (one pass
// over the catalog); a question is then answered from maps, without touching the registry. The
// records of an instance are encoded the first time they are asked for and kept with the zone.
import { isIP } from 'node:net';
import type { Catalog } from '../catalog/catalog.js';
import { instanceWeight } from '../catalog/routes.js';
import type { HealthStatus, ServiceInstance } from '../model/service-instance.js';
import { addrLabel, NS_LABEL, parseName } from './names.js';
import { body, named, type Body, type Rec } from './wire.js';

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

export interface ZoneOptions {
  /** Lowercase, without the final dot: `consul`. */
  domain: string;
  datacenter: string;
  /** TTL of every answer, and the negative TTL of the SOA. */
  ttl: number;
  /** Instance statuses that are answered (Consul answers passing and warning unless only_passing). */
  statuses: readonly HealthStatus[];
  /** The address `ns.<domain>` resolves to (the listen address when it is one IP); none: no address record. */
  nsAddress?: string;
}

/** A question as dns-packet decodes it: the type is a name (`A`, `SRV`, `ANY`…). */
export interface Question {
  name: string;
  type: string;
}

export interface Reply {
  rcode: number;
  answers: Rec[];
  authorities: Rec[];
  additionals: Rec[];
}

interface ServiceEntry {
  /** Instances that are answered: a status asked for and a weight above 0 (weight 0 is draining). */
  routable: Readonly<ServiceInstance>[];
}

/** An instance's records, encoded once. */
interface Prepared {
  srv: Body;
  /** The SRV target and its address record, for the additional section. */
  target?: Rec;
  /** Its meta as TXT strings; undefined without meta. */
  txt?: Body;
  txtKey: string;
}

export class Zone {
  private readonly services = new Map<string, ServiceEntry>();
  /** Registering host (lowercase) → the IP addresses its instances are reached at. */
  private readonly nodes = new Map<string, Set<string>>();
  private readonly prepared = new Map<Readonly<ServiceInstance>, Prepared>();
  private readonly addressBodies = new Map<string, Body>();
  private readonly soa: Rec;
  private readonly ns: Body;
  private readonly nsName: string;

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
    this.nsName = `${NS_LABEL}.${opts.domain}`;
    this.ns = body({ type: 'NS', ttl: opts.ttl, data: this.nsName });
    this.soa = named(
      opts.domain,
      body({
        type: 'SOA',
        ttl: opts.ttl,
        data: { mname: this.nsName, rname: `hostmaster.${opts.domain}`, serial: serial >>> 0, refresh: 3600, retry: 600, expire: 86400, minimum: opts.ttl },
      }),
    );
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
      case 'apex': {
        // SOA and NS: the server itself, ns.<domain>, its address in the additional section.
        const answers: Rec[] = [];
        if (q.type === 'SOA' || q.type === 'ANY') answers.push(named(q.name, this.soa));
        if (q.type === 'NS' || q.type === 'ANY') answers.push(named(q.name, this.ns));
        if (answers.length === 0) return this.negative(RCODE.NOERROR);
        const glue = q.type === 'NS' || q.type === 'ANY' ? this.nsAddresses() : [];
        return reply(RCODE.NOERROR, answers, glue);
      }
      case 'ns': {
        const ns = this.nsAddresses().filter((r) => q.type === 'ANY' || r.type === q.type);
        return ns.length > 0 ? reply(RCODE.NOERROR, ns.map((r) => named(q.name, r))) : this.negative(RCODE.NOERROR);
      }
      case 'addr':
        return this.addresses(q, [name.address]);
      case 'node': {
        const addrs = this.nodes.get(name.node);
        return addrs ? this.addresses(q, shuffle([...addrs])) : this.negative(RCODE.NXDOMAIN);
      }
      case 'service': {
        const entry = this.services.get(name.service);
        if (!entry) return this.negative(RCODE.NXDOMAIN);
        const matching =
          name.tags.length === 0 && name.protocol === undefined
            ? entry.routable
            : entry.routable.filter((i) => (name.protocol === undefined || i.protocol === name.protocol || hasTag(i, name.protocol)) && name.tags.every((t) => hasTag(i, t)));
        return this.instances(q, shuffle(matching));
      }
    }
  }

  private instances(q: Question, list: Readonly<ServiceInstance>[]): Reply {
    const answers: Rec[] = [];
    const additionals: Rec[] = [];
    switch (q.type) {
      case 'A':
      case 'AAAA':
      case 'ANY': {
        // A host name address is answered as Consul does: a CNAME to it (the client's resolver
        // follows it), beside the address records of the instances that have an IP.
        const r = this.addresses(q, list.map((i) => i.address));
        const cnames: Rec[] = [];
        const seen = new Set<string>();
        for (const i of list) {
          if (isIP(i.address)) continue;
          const host = i.address.toLowerCase().replace(/\.$/, '');
          if (seen.has(host)) continue;
          seen.add(host);
          cnames.push(named(q.name, body({ type: 'CNAME', ttl: this.opts.ttl, data: i.address })));
        }
        return cnames.length === 0 ? r : reply(RCODE.NOERROR, [...cnames, ...r.answers]);
      }
      case 'SRV': {
        const added = new Set<string>();
        for (const i of list) {
          const p = this.prepare(i);
          answers.push(named(q.name, p.srv));
          if (p.target && !added.has(p.target.name)) {
            added.add(p.target.name);
            additionals.push(p.target);
          }
        }
        break;
      }
      case 'TXT': {
        const seen = new Set<string>();
        for (const i of list) {
          const p = this.prepare(i);
          if (!p.txt || seen.has(p.txtKey)) continue;
          seen.add(p.txtKey);
          answers.push(named(q.name, p.txt));
        }
        break;
      }
      default:
        break;
    }
    return answers.length > 0 ? reply(RCODE.NOERROR, answers, additionals) : this.negative(RCODE.NOERROR);
  }

  /** `ns.<domain>`'s address record, when it has one. */
  private nsAddresses(): Rec[] {
    const a = this.opts.nsAddress;
    return a && isIP(a) ? [named(this.nsName, this.addressBody(a))] : [];
  }

  /** A / AAAA records of the IP addresses among `addresses` (host name addresses are left to the caller). */
  private addresses(q: Question, addresses: string[]): Reply {
    const answers: Rec[] = [];
    const seen = new Set<string>();
    for (const a of addresses) {
      const family = isIP(a);
      if (!family || seen.has(a)) continue;
      seen.add(a);
      if ((family === 4 && (q.type === 'A' || q.type === 'ANY')) || (family === 6 && (q.type === 'AAAA' || q.type === 'ANY'))) answers.push(named(q.name, this.addressBody(a)));
    }
    return answers.length > 0 ? reply(RCODE.NOERROR, answers) : this.negative(RCODE.NOERROR);
  }

  private addressBody(a: string): Body {
    let b = this.addressBodies.get(a);
    if (!b) this.addressBodies.set(a, (b = body(isIP(a) === 4 ? { type: 'A', ttl: this.opts.ttl, data: a } : { type: 'AAAA', ttl: this.opts.ttl, data: a })));
    return b;
  }

  private prepare(i: Readonly<ServiceInstance>): Prepared {
    let p = this.prepared.get(i);
    if (p) return p;
    const ttl = this.opts.ttl;
    const ip = isIP(i.address) !== 0;
    const label = addrLabel(i.address);
    const target = label ? `${label}.addr.${this.opts.datacenter}.${this.opts.domain}` : i.address;
    const strings = Object.entries(i.meta).flatMap(([k, v]) => txtStrings(`${k}=${v}`));
    p = {
      srv: body({ type: 'SRV', ttl, data: { priority: 1, weight: instanceWeight(i), port: i.port, target } }),
      target: ip ? named(target, this.addressBody(i.address)) : undefined,
      txt: strings.length > 0 ? body({ type: 'TXT', ttl, data: strings }) : undefined,
      txtKey: strings.map(String).join('\n'),
    };
    this.prepared.set(i, p);
    return p;
  }

  /** NXDOMAIN, or NOERROR without answers: the SOA goes in the authority section (negative caching, RFC 2308). */
  private negative(rcode: number): Reply {
    return reply(rcode, [], [], [this.soa]);
  }
}

function hasTag(i: Readonly<ServiceInstance>, tag: string): boolean {
  return i.tags.some((t) => t.toLowerCase() === tag);
}

function reply(rcode: number, answers: Rec[] = [], additionals: Rec[] = [], authorities: Rec[] = []): Reply {
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
