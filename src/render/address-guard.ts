// nginx and HAProxy resolve host names in `server` lines when they load a configuration, and a
// name that does not resolve (or an address they cannot parse, such as an IPv6 zone id) fails
// the whole check or reload. Before rendering, such instances are left out with one log line
// each, so one bad record cannot freeze the configuration of every other service. IPv6
// addresses are written in their canonical form: nginx refuses some valid spellings (`::`
// standing for a single zero group, as in `1:2:3:4:5:6:7::`). Only a definite "no such name"
// leaves an instance out: a timeout or a temporary failure is not evidence against a host.
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { Catalog } from '../catalog/catalog.js';
import type { Logger } from '../log/logger.js';
import type { ServiceInstance } from '../model/service-instance.js';

export type Resolver = (host: string) => Promise<unknown>;

/** A decision is refreshed after this long; until then it is used as it is. */
const CACHE_MS = 10_000;
const LOOKUP_TIMEOUT_MS = 3_000;
/** Lookups at a time: Node runs getaddrinfo on its 4 threadpool threads, shared with file I/O. */
const CONCURRENCY = 4;
/** Only these say the name does not exist; anything else (EAI_AGAIN, SERVFAIL, a timeout) says nothing about it. */
const DEFINITE = new Set(['ENOTFOUND', 'ENODATA']);

const defaultResolver: Resolver = (host) => dnsLookup(host, { all: true });

export class AddressGuard {
  /** Per name, the last definite answer (resolves, or does not exist). */
  private readonly decided = new Map<string, { problem?: string; at: number }>();
  private readonly inflight = new Map<string, Promise<void>>();
  private active = 0;
  private readonly queue: Array<() => void> = [];
  /** Instance/address pairs reported as left out: one line each while it lasts. */
  private reported = new Set<string>();
  /** Names whose lookup gave no answer, reported once until one comes. */
  private readonly unanswered = new Set<string>();

  constructor(
    private readonly log: Logger,
    private readonly resolve: Resolver = defaultResolver,
    private readonly timeoutMs = LOOKUP_TIMEOUT_MS,
  ) {}

  /** One lookup, queued behind CONCURRENCY others; its timer starts when it starts. */
  private refresh(name: string): Promise<void> {
    let p = this.inflight.get(name);
    if (p) return p;
    p = (async () => {
      if (this.active >= CONCURRENCY) await new Promise<void>((r) => this.queue.push(r));
      this.active++;
      let timer: NodeJS.Timeout | undefined;
      try {
        const outcome = await Promise.race([
          this.resolve(name).then(
            () => ({ ok: true as const }),
            (err: NodeJS.ErrnoException) => ({ ok: false as const, code: err.code ?? err.message }),
          ),
          new Promise<{ ok: false; code: string }>((r) => (timer = setTimeout(() => r({ ok: false, code: `no answer within ${this.timeoutMs} ms` }), this.timeoutMs))),
        ]);
        if (outcome.ok || DEFINITE.has(outcome.code)) {
          if (this.decided.size > 10_000) this.decided.clear();
          this.decided.set(name, { problem: outcome.ok ? undefined : `does not resolve (${outcome.code})`, at: Date.now() });
          this.unanswered.delete(name);
        } else if (!this.unanswered.has(name)) {
          this.unanswered.add(name);
          const last = this.decided.get(name);
          this.log.warn(
            { event: 'lookup-failed', address: name, err: outcome.code },
            `address "${name.slice(0, 60)}": lookup failed (${outcome.code}); ${last ? 'the last answer stands' : 'instances kept, the check decides'}`,
          );
        }
      } finally {
        clearTimeout(timer);
        this.active--;
        this.queue.shift()?.();
        this.inflight.delete(name);
      }
    })();
    this.inflight.set(name, p);
    return p;
  }

  /**
   * Why the proxies cannot load an instance's address, or undefined. Only a definite "no such
   * name" leaves an instance out: a slow or failing lookup keeps the last answer for that name
   * (a known name is refreshed in the background, so renders do not wait on DNS), and a name
   * never answered is kept, so the proxy's own check decides.
   */
  private async problems(addresses: readonly string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const waits: Array<Promise<void>> = [];
    for (const a of addresses) {
      const v = isIP(a);
      if (v === 6 && a.includes('%')) out.set(a, 'is an IPv6 address with a zone id (nginx and HAProxy cannot load it)');
      if (v !== 0) continue;
      const hit = this.decided.get(a);
      if (hit && Date.now() - hit.at < CACHE_MS) continue;
      const p = this.refresh(a);
      if (!hit) waits.push(p);
    }
    if (waits.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      // Bounded as one lookup: names still queued then are kept and decided on a later run.
      await Promise.race([Promise.all(waits), new Promise((r) => (timer = setTimeout(r, this.timeoutMs)))]).finally(() => clearTimeout(timer));
    }
    for (const a of addresses) {
      const p = this.decided.get(a)?.problem;
      if (p && isIP(a) === 0) out.set(a, p);
    }
    return out;
  }

  /** The catalog without instances whose address the proxies cannot load, IPv6 addresses canonical. */
  async apply(catalog: Catalog): Promise<Catalog> {
    const addresses = [...new Set(catalog.services.flatMap((s) => s.instances.map((i) => i.address)))];
    const problems = await this.problems(addresses);
    const canonical = new Map<string, string>();
    for (const a of addresses) {
      if (problems.has(a) || isIP(a) !== 6) continue;
      const c = canonicalIpv6(a);
      if (c !== a) canonical.set(a, c);
    }
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
