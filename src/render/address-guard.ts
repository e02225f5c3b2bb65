// nginx and HAProxy resolve host names in `server` lines when they load a configuration, and a
// name that does not resolve (or an address they cannot parse, such as an IPv6 zone id) fails
// the whole check or reload. Before rendering, such instances are left out with one log line
// each, so one bad record cannot freeze the configuration of every other service. IPv6
// addresses are written in their canonical form: nginx refuses some valid spellings (`::`
// standing for a single zero group, as in `1:2:3:4:5:6:7::`).
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { Catalog } from '../catalog/catalog.js';
import type { Logger } from '../log/logger.js';
import type { ServiceInstance } from '../model/service-instance.js';

export type Resolver = (host: string) => Promise<unknown>;

const CACHE_MS = 10_000;
const LOOKUP_TIMEOUT_MS = 3_000;

const defaultResolver: Resolver = (host) => dnsLookup(host, { all: true });

export class AddressGuard {
  private readonly cache = new Map<string, { problem?: string; at: number }>();
  /** Instance/address pairs reported as left out: one line each while it lasts. */
  private reported = new Set<string>();

  constructor(
    private readonly log: Logger,
    private readonly resolve: Resolver = defaultResolver,
    private readonly timeoutMs = LOOKUP_TIMEOUT_MS,
  ) {}

  /** Why the proxies cannot load an instance's address, or undefined. */
  private async problem(address: string): Promise<string | undefined> {
    const v = isIP(address);
    if (v === 6 && address.includes('%')) return 'is an IPv6 address with a zone id (nginx and HAProxy cannot load it)';
    if (v !== 0) return undefined;
    const hit = this.cache.get(address);
    if (hit && Date.now() - hit.at < CACHE_MS) return hit.problem;
    let timer: NodeJS.Timeout | undefined;
    const problem = await Promise.race([
      this.resolve(address).then(
        () => undefined,
        (err: NodeJS.ErrnoException) => `does not resolve (${err.code ?? err.message})`,
      ),
      new Promise<string>((r) => (timer = setTimeout(() => r(`did not resolve within ${this.timeoutMs} ms`), this.timeoutMs))),
    ]).finally(() => clearTimeout(timer));
    this.cache.set(address, { problem, at: Date.now() });
    if (this.cache.size > 10_000) this.cache.clear();
    return problem;
  }

  /** The catalog without instances whose address the proxies cannot load, IPv6 addresses canonical. */
  async apply(catalog: Catalog): Promise<Catalog> {
    const addresses = [...new Set(catalog.services.flatMap((s) => s.instances.map((i) => i.address)))];
    const problems = new Map<string, string>();
    const canonical = new Map<string, string>();
    await Promise.all(
      addresses.map(async (a) => {
        const p = await this.problem(a);
        if (p) problems.set(a, p);
        else if (isIP(a) === 6) {
          const c = canonicalIpv6(a);
          if (c !== a) canonical.set(a, c);
        }
      }),
    );
    if (problems.size === 0 && canonical.size === 0) {
      this.reported.clear();
      return catalog;
    }
    const now = new Set<string>();
    const services = catalog.services.map((s) => {
      if (!s.instances.some((i) => problems.has(i.address) || canonical.has(i.address))) return s;
      const kept: Readonly<ServiceInstance>[] = [];
      for (const i of s.instances) {
        const p = problems.get(i.address);
        if (!p) {
          const c = canonical.get(i.address);
          kept.push(c ? { ...i, address: c } : i);
          continue;
        }
        const key = `${i.name}\n${i.id}\n${i.address}`;
        now.add(key);
        if (!this.reported.has(key)) {
          this.log.error(
            { event: 'instance-skipped', service: i.name, instance: i.id, field: 'address', address: i.address },
            `service ${i.name} instance ${i.id.slice(0, 120)}: address "${i.address.slice(0, 60)}" ${p}; instance left out of the rendered configurations`,
          );
        }
      }
      return { ...s, instances: kept };
    });
    this.reported = now;
    return { services, fingerprint: JSON.stringify(services) };
  }
}

/** RFC 5952 form, as the WHATWG URL parser writes it: lower case, `::` only for two or more zero groups. */
export function canonicalIpv6(address: string): string {
  try {
    return new URL(`http://[${address}]/`).hostname.slice(1, -1);
  } catch {
    return address;
  }
}
