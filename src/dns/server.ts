// The DNS listener: UDP and TCP on one address (node:dgram, node:net), packets decoded and
// encoded with dns-packet. Questions inside the domain are answered from the latest catalog
// snapshot; others are refused, or forwarded to --recursor. A packet that does not decode is
// counted and answered FORMERR when its header can be read, dropped otherwise: never a crash.
// Until the first complete snapshot there is nothing to answer from: questions inside the domain
// get SERVFAIL (not an authoritative NXDOMAIN that resolvers would cache), and health() says so.
import dgram from 'node:dgram';
import { isIP } from 'node:net';
import net from 'node:net';
import dnsPacket, { type Answer, type Packet } from 'dns-packet';
import type { Catalog } from '../catalog/catalog.js';
import type { ListenAddress } from '../api/listen-address.js';
import type { Logger } from '../log/logger.js';
import { Counter, Histogram } from 'prom-client';
import { registry } from '../metrics/metrics.js';
import { Forwarder, ForwardError } from './forward.js';
import { parseName } from './names.js';
import { body, encodeResponse, named, questionHasDottedLabel, questionTypeClass, type WireQuestion } from './wire.js';
import { RCODE, Zone, type Reply, type ZoneOptions } from './zone.js';

const FLAG_QR = 0x8000;
const FLAG_AA = 0x0400;
const FLAG_TC = 0x0200;
const FLAG_RD = 0x0100;
const FLAG_RA = 0x0080;
/** Plain DNS over UDP (RFC 1035); more only when the client's EDNS0 says it takes more. */
const UDP_DEFAULT = 512;
/** The largest UDP answer we send whatever the client offers (the usual EDNS0 buffer size). */
const UDP_MAX = 4096;
/** A TCP connection with no message under way is closed after this long. */
const TCP_IDLE_MS = 10_000;
/** From the first byte of a message over TCP to its last (miekg/dns's read timeout is 2 s too). */
const TCP_MESSAGE_DEADLINE_MS = 2_000;
/** At this many connections the oldest idle one (else the slowest sender) is closed for a new one. */
const TCP_MAX_CONNECTIONS = 512;
/** Connections from one source address; more are closed at once. */
const TCP_MAX_PER_SOURCE = 16;
/** Questions of one TCP connection waiting for their answer, and answer bytes not yet read. */
const TCP_MAX_PENDING = 64;
const TCP_MAX_BUFFERED = 256 * 1024;
const TCP_MAX_MESSAGE = 65_535;
const RECURSOR_TIMEOUT_MS = 2_000;
/** Distinct questions at the recursor at once; beyond it a client gets SERVFAIL at once. */
const RECURSOR_MAX_IN_FLIGHT = 256;
/** A question name we answer: printable ASCII, at most 253 characters, no empty label. */
const QUESTION_NAME = /^(?:\.|(?=[\x21-\x7e]{1,254}$)[^.]+(?:\.[^.]+)*\.?)$/;
/** Our EDNS0 record (RFC 6891): the UDP size we take, and BADVERS for a version we do not speak. */
const OPT_OK = named('.', body({ type: 'OPT', udpPayloadSize: UDP_MAX, extendedRcode: 0, ednsVersion: 0, flags: 0, options: [] } as never));
const OPT_BADVERS = named('.', body({ type: 'OPT', udpPayloadSize: UDP_MAX, extendedRcode: 1, ednsVersion: 0, flags: 0, options: [] } as never));
const RCODE_NAMES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

const dnsMetrics = {
  queries: new Counter({ name: 'harbormaster_dns_queries_total', help: 'DNS questions answered, by transport and response code', labelNames: ['transport', 'rcode'], registers: [registry] }),
  malformed: new Counter({ name: 'harbormaster_dns_malformed_total', help: 'DNS packets that did not decode (answered FORMERR when the header could be read, dropped otherwise)', labelNames: ['transport'], registers: [registry] }),
  truncated: new Counter({ name: 'harbormaster_dns_truncated_total', help: 'UDP answers cut to the client\'s size, with the TC bit set', registers: [registry] }),
  forwarded: new Counter({ name: 'harbormaster_dns_forwarded_total', help: 'Questions outside the domain forwarded to the recursor, by result (answered, failed, busy: too many in flight)', labelNames: ['result'], registers: [registry] }),
  tcpClosed: new Counter({ name: 'harbormaster_dns_tcp_closed_total', help: 'TCP connections closed by the server, by reason (idle, deadline: a message not complete within 2 s, per-source: too many from one address, evicted: the oldest idle one closed for a new one, full)', labelNames: ['reason'], registers: [registry] }),
  duration: new Histogram({ name: 'harbormaster_dns_answer_seconds', help: 'Time to answer a DNS question', buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.25, 1, 2.5], registers: [registry] }),
};

export interface DnsServerOptions extends ZoneOptions {
  /** Questions outside the domain go there (ip:port) instead of being refused. */
  recursor?: ListenAddress;
  log: Logger;
  /** TCP limits (the defaults above; smaller in tests). */
  tcp?: { maxConnections?: number; maxPerSource?: number; messageDeadlineMs?: number; idleMs?: number };
  /** Forwarding limits (the defaults above; smaller in tests). */
  forward?: { maxInFlight?: number; timeoutMs?: number };
}

type Transport = 'udp' | 'tcp';

/** A TCP client: what the limits look at. */
interface Conn {
  s: net.Socket;
  source: string;
  /** Last byte read or answer written. */
  lastActive: number;
  /** When the first byte of the message being read came; undefined between messages. */
  messageStart?: number;
  /** Questions read whose answer is not written yet. */
  pending: number;
  closed: boolean;
}

export class DnsServer {
  /** Undefined until the first snapshot. */
  private zone?: Zone;
  private catalog?: Catalog;
  private udp?: dgram.Socket;
  private tcp?: net.Server;
  private readonly conns = new Set<Conn>();
  private readonly perSource = new Map<string, number>();
  private readonly forwarder?: Forwarder;
  private snapshots = 0;
  /** The address ns.<domain> answers: the listen address when it is one IP (not 0.0.0.0 or ::). */
  private nsAddress?: string;

  constructor(private readonly opts: DnsServerOptions) {
    if (opts.recursor) {
      this.forwarder = new Forwarder({ recursor: opts.recursor, timeoutMs: opts.forward?.timeoutMs ?? RECURSOR_TIMEOUT_MS, maxInFlight: opts.forward?.maxInFlight ?? RECURSOR_MAX_IN_FLIGHT });
    }
  }

  /** A new snapshot: every later question is answered from it. */
  setCatalog(c: Catalog): void {
    this.catalog = c;
    this.zone = new Zone(c, { ...this.opts, nsAddress: this.nsAddress });
    this.snapshots++;
  }

  health(): { ok: boolean; snapshots: number; listening: boolean; lastError?: string; tcpConnections: number; forwarding?: { inFlight: number; sockets: number } } {
    const listening = !!this.udp && !!this.tcp;
    const lastError = !listening ? 'not listening' : this.snapshots === 0 ? 'no catalog snapshot yet: questions inside the domain get SERVFAIL' : undefined;
    return {
      ok: listening && this.snapshots > 0,
      snapshots: this.snapshots,
      listening,
      ...(lastError ? { lastError } : {}),
      tcpConnections: this.conns.size,
      ...(this.forwarder ? { forwarding: this.forwarder.stats() } : {}),
    };
  }

  /** Listen on UDP and TCP at the same address; with port 0 both get the port UDP was given. */
  async listen(addr: ListenAddress): Promise<ListenAddress> {
    // Port 0: UDP picks a free port, which TCP may find taken; another pick then, a few times.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.listenOnce(addr);
      } catch (err) {
        if (addr.port !== 0 || attempt >= 5 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
      }
    }
  }

  private async listenOnce(addr: ListenAddress): Promise<ListenAddress> {
    // A larger receive buffer rides out bursts (the kernel caps it at net.core.rmem_max).
    const udp = dgram.createSocket({ type: isIP(addr.host) === 6 ? 'udp6' : 'udp4', recvBufferSize: 4 << 20 });
    udp.on('message', (msg, rinfo) => {
      void this.handle(msg, 'udp').then((out) => {
        // An answer that took long (a forwarded question) may come after close().
        if (out && this.udp === udp) udp.send(out, rinfo.port, rinfo.address);
      });
    });
    udp.on('error', (err) => this.opts.log.warn({ event: 'dns-udp-error', err: err.message }, `DNS UDP socket: ${err.message}`));
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(addr.port, addr.host, () => {
        udp.off('error', reject);
        resolve();
      });
    });
    const port = udp.address().port;
    // No maxConnections: at the limit the oldest idle connection makes room (accept()).
    const tcp = net.createServer((s) => this.accept(s));
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, addr.host, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      udp.close();
      throw err;
    }
    this.udp = udp;
    this.tcp = tcp;
    this.nsAddress = isIP(addr.host) && !/^(?:0\.0\.0\.0|::|0:0:0:0:0:0:0:0)$/.test(addr.host) ? addr.host : undefined;
    if (this.catalog) this.zone = new Zone(this.catalog, { ...this.opts, nsAddress: this.nsAddress });
    return { host: addr.host, port };
  }

  async close(): Promise<void> {
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = undefined;
    this.tcp = undefined;
    for (const c of this.conns) this.drop(c);
    this.forwarder?.close();
    await Promise.all([
      udp && new Promise<void>((r) => udp.close(() => r())),
      tcp && new Promise<void>((r) => tcp.close(() => r())),
    ]);
  }

  /**
   * A new TCP client. At most TCP_MAX_PER_SOURCE per source address (more are closed at once); at
   * TCP_MAX_CONNECTIONS in all, the connection that has been idle longest makes room (else the one
   * whose message has been under way longest: the slowest sender), so that connections opened and
   * left open, or trickling a byte at a time, cannot keep new clients out.
   */
  private accept(s: net.Socket): void {
    const t = this.opts.tcp ?? {};
    const source = (s.remoteAddress ?? '').replace(/^::ffff:/, '');
    const fromSource = this.perSource.get(source) ?? 0;
    if (fromSource >= (t.maxPerSource ?? TCP_MAX_PER_SOURCE)) {
      dnsMetrics.tcpClosed.inc({ reason: 'per-source' });
      s.destroy();
      return;
    }
    if (this.conns.size >= (t.maxConnections ?? TCP_MAX_CONNECTIONS)) {
      const victim = this.evictable();
      if (!victim) {
        dnsMetrics.tcpClosed.inc({ reason: 'full' });
        s.destroy();
        return;
      }
      dnsMetrics.tcpClosed.inc({ reason: 'evicted' });
      this.drop(victim);
    }
    const c: Conn = { s, source, lastActive: Date.now(), pending: 0, closed: false };
    this.conns.add(c);
    this.perSource.set(source, fromSource + 1);
    this.serveTcp(c);
  }

  /** The idle connection that has waited longest, else the slowest message under way; never one with answers pending. */
  private evictable(): Conn | undefined {
    let idle: Conn | undefined;
    let slow: Conn | undefined;
    for (const c of this.conns) {
      if (c.pending > 0) continue;
      if (c.messageStart === undefined) {
        if (!idle || c.lastActive < idle.lastActive) idle = c;
      } else if (!slow || c.messageStart < slow.messageStart!) slow = c;
    }
    return idle ?? slow;
  }

  private drop(c: Conn): void {
    if (c.closed) return;
    c.closed = true;
    this.conns.delete(c);
    const n = (this.perSource.get(c.source) ?? 1) - 1;
    if (n > 0) this.perSource.set(c.source, n);
    else this.perSource.delete(c.source);
    c.s.destroy();
  }

  /** DNS over TCP: messages framed by a 2-byte length, several per connection, closed when idle. */
  private serveTcp(c: Conn): void {
    const s = c.s;
    const t = this.opts.tcp ?? {};
    const deadlineMs = t.messageDeadlineMs ?? TCP_MESSAGE_DEADLINE_MS;
    s.setTimeout(t.idleMs ?? TCP_IDLE_MS, () => {
      // Idle between messages (a message under way has its own deadline; answers pending are waited for).
      if (c.pending > 0 || c.messageStart !== undefined) return;
      dnsMetrics.tcpClosed.inc({ reason: 'idle' });
      this.drop(c);
    });
    s.on('error', () => this.drop(c));
    s.on('close', () => this.drop(c));
    let deadline: NodeJS.Timeout | undefined;
    const startMessage = () => {
      c.messageStart = Date.now();
      clearTimeout(deadline);
      deadline = setTimeout(() => {
        dnsMetrics.tcpClosed.inc({ reason: 'deadline' });
        this.drop(c);
      }, deadlineMs);
    };
    const endMessage = () => {
      c.messageStart = undefined;
      clearTimeout(deadline);
      deadline = undefined;
    };
    s.on('close', () => clearTimeout(deadline));
    let buf: Buffer = Buffer.alloc(0);
    let busy = Promise.resolve();
    // A client that sends faster than it reads is paused, so that its answers cannot pile up.
    const settle = () => {
      c.pending--;
      c.lastActive = Date.now();
      if (c.pending < TCP_MAX_PENDING && s.writableLength < TCP_MAX_BUFFERED && s.isPaused()) s.resume();
    };
    s.on('drain', () => c.pending < TCP_MAX_PENDING && s.resume());
    s.on('data', (chunk: Buffer) => {
      c.lastActive = Date.now();
      if (buf.length === 0) startMessage();
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      let took = false;
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        took = true;
        c.pending++;
        if (c.pending >= TCP_MAX_PENDING) s.pause();
        // Answers go back in the order the questions came.
        busy = busy
          .then(async () => {
            const out = await this.handle(msg, 'tcp');
            if (out && !s.destroyed) {
              const head = Buffer.alloc(2);
              head.writeUInt16BE(out.length);
              if (!s.write(Buffer.concat([head, out]))) s.pause();
            }
          })
          .catch(() => this.drop(c))
          .finally(settle);
      }
      if (buf.length === 0) endMessage();
      // The rest is the start of the next message: its own deadline from now.
      else if (took) startMessage();
    });
  }

  /** One message in, the encoded answer out (undefined: nothing to send back). */
  async handle(msg: Buffer, transport: Transport): Promise<Buffer | undefined> {
    const end = dnsMetrics.duration.startTimer();
    try {
      return await this.answer(msg, transport);
    } catch (err) {
      // An answer that would not encode (a record out of DNS limits): SERVFAIL, and the server goes on.
      this.opts.log.warn({ event: 'dns-answer-failed', err: (err as Error).message }, `DNS answer failed: ${(err as Error).message}`);
      return msg.length >= 12 ? this.encodeHeaderOnly(msg.readUInt16BE(0), msg.readUInt16BE(2), RCODE.SERVFAIL, transport) : undefined;
    } finally {
      end();
    }
  }

  private async answer(msg: Buffer, transport: Transport): Promise<Buffer | undefined> {
    let query: Packet;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      dnsMetrics.malformed.inc({ transport });
      // With a readable header, FORMERR tells the client at once; without one there is no one to tell.
      if (msg.length < 12 || msg.readUInt16BE(2) & FLAG_QR) return undefined;
      return this.encodeHeaderOnly(msg.readUInt16BE(0), msg.readUInt16BE(2), RCODE.FORMERR, transport);
    }
    if (query.type === 'response') {
      dnsMetrics.malformed.inc({ transport });
      return undefined;
    }
    const id = query.id ?? 0;
    const flags = query.flags ?? 0;
    const opts = (query.additionals ?? []).filter((a) => a.type === 'OPT') as (Answer & { udpPayloadSize?: number; ednsVersion?: number })[];
    const opt = opts[0];
    const q = query.questions?.[0];
    const typeClass = questionTypeClass(msg);
    // Only names of printable ASCII are echoed back: other bytes do not survive a decode and encode.
    // A label holding a '.' byte would be read as several labels: another name than the one asked.
    // More than one OPT record is FORMERR (RFC 6891 §6.1.1).
    if (!q || query.questions!.length !== 1 || !typeClass || !QUESTION_NAME.test(q.name) || questionHasDottedLabel(msg) || opts.length > 1) {
      dnsMetrics.malformed.inc({ transport });
      return this.encodeHeaderOnly(id, flags, RCODE.FORMERR, transport);
    }
    const question = { name: q.name, typeClass };
    const opcode = (flags >> 11) & 0xf;
    if (opcode !== 0) return this.encode(id, flags, question, RCODE.NOTIMP, transport, opt);
    if (opt && (opt.ednsVersion ?? 0) !== 0) return this.encode(id, flags, question, 0, transport, opt, undefined, true);
    if (q.class !== undefined && q.class !== 'IN' && q.class !== 'ANY') return this.encode(id, flags, question, RCODE.NOTIMP, transport, opt);
    // Zone transfers, over UDP and TCP alike, inside the domain or not: REFUSED, as BIND and
    // CoreDNS answer a transfer that is not allowed. We do implement the question (NOTIMP would say
    // otherwise) but there is no zone to transfer: the names are read from the catalog (any tag
    // combination is a name) and never listed. REFUSED makes dig and secondaries give up at once.
    if (q.type === 'AXFR' || q.type === 'IXFR') return this.encode(id, flags, question, RCODE.REFUSED, transport, opt);
    const inside = parseName(q.name, this.opts.domain, this.opts.datacenter).kind !== 'outside';
    if (!inside && this.forwarder) return this.forward(msg, id, flags, question, transport, opt);
    if (!inside) return this.encode(id, flags, question, RCODE.REFUSED, transport, opt);
    // No snapshot yet: nothing to answer from. SERVFAIL, which resolvers do not cache as they
    // cache an NXDOMAIN, and not authoritative.
    if (!this.zone) return this.encode(id, flags, question, RCODE.SERVFAIL, transport, opt);
    const r = this.zone.answer({ name: q.name, type: q.type as string });
    return this.encode(id, flags, question, r.rcode, transport, opt, r, false, r.rcode === RCODE.NOERROR || r.rcode === RCODE.NXDOMAIN);
  }

  /** `authoritative`: AA set, for answers from the zone only (not on REFUSED, SERVFAIL, NOTIMP or forwarded answers). */
  private encode(
    id: number,
    queryFlags: number,
    question: WireQuestion,
    rcode: number,
    transport: Transport,
    opt: { udpPayloadSize?: number } | undefined,
    r?: Pick<Reply, 'answers' | 'authorities' | 'additionals'>,
    badVersion = false,
    authoritative = false,
  ): Buffer {
    dnsMetrics.queries.inc({ transport, rcode: badVersion ? 'BADVERS' : (RCODE_NAMES[rcode] ?? String(rcode)) });
    const flags = (authoritative ? FLAG_AA : 0) | (queryFlags & (0x7800 | FLAG_RD)) | (this.opts.recursor ? FLAG_RA : 0) | rcode;
    const edns = opt ? [badVersion ? OPT_BADVERS : OPT_OK] : [];
    const answers = r?.answers ?? [];
    const authorities = r?.authorities ?? [];
    const out = encodeResponse(id, flags, question, [answers, authorities, [...(r?.additionals ?? []), ...edns]]);
    // Over TCP a message is at most 65,535 bytes (its length prefix): thousands of instances are cut too.
    const limit = transport === 'tcp' ? TCP_MAX_MESSAGE : opt ? Math.min(UDP_MAX, Math.max(UDP_DEFAULT, opt.udpPayloadSize ?? UDP_DEFAULT)) : UDP_DEFAULT;
    if (out.length <= limit) return out;
    // Cut to the limit: additional and authority records go first, then as many answers as fit
    // (found by halving, so that thousands of records cost a dozen encodings); TC set.
    dnsMetrics.truncated.inc();
    const cut = (n: number) => encodeResponse(id, flags | FLAG_TC, question, [answers.slice(0, n), [], edns]);
    let lo = 0;
    let hi = answers.length;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (cut(mid).length <= limit) lo = mid;
      else hi = mid - 1;
    }
    return cut(lo);
  }

  private encodeHeaderOnly(id: number, flags: number, rcode: number, transport: Transport): Buffer {
    dnsMetrics.queries.inc({ transport, rcode: RCODE_NAMES[rcode] });
    const out = Buffer.alloc(12);
    out.writeUInt16BE(id, 0);
    out.writeUInt16BE(FLAG_QR | (flags & (0x7800 | FLAG_RD)) | rcode, 2);
    return out;
  }

  /** A question outside the domain, passed to the recursor (see forward.ts), its answer passed back without AA. */
  private async forward(msg: Buffer, id: number, flags: number, question: WireQuestion, transport: Transport, opt: { udpPayloadSize?: number } | undefined): Promise<Buffer> {
    const r = this.opts.recursor!;
    const limit = transport === 'tcp' ? TCP_MAX_MESSAGE : opt ? Math.max(UDP_DEFAULT, opt.udpPayloadSize ?? UDP_DEFAULT) : UDP_DEFAULT;
    try {
      const out = await this.forwarder!.forward(msg, transport, limit);
      dnsMetrics.forwarded.inc({ result: 'answered' });
      dnsMetrics.queries.inc({ transport, rcode: RCODE_NAMES[out.readUInt16BE(2) & 0xf] ?? String(out.readUInt16BE(2) & 0xf) });
      return out;
    } catch (err) {
      const reason = err instanceof ForwardError ? err.reason : 'failed';
      dnsMetrics.forwarded.inc({ result: reason });
      this.opts.log.debug({ event: 'dns-forward-failed', reason, err: (err as Error).message }, `recursor ${r.host}:${r.port}: ${(err as Error).message}`);
      return this.encode(id, flags, question, RCODE.SERVFAIL, transport, opt);
    }
  }
}
