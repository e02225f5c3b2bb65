// The DNS listener: UDP and TCP on one address (node:dgram, node:net), packets decoded and
// encoded with dns-packet. Questions inside the domain are answered from the latest catalog
// snapshot; others are refused, or forwarded to --recursor. A packet that does not decode is
// counted and answered FORMERR when its header can be read, dropped otherwise: never a crash.
import dgram from 'node:dgram';
import { isIP } from 'node:net';
import net from 'node:net';
import dnsPacket, { type Answer, type Packet } from 'dns-packet';
import { EMPTY_CATALOG, type Catalog } from '../catalog/catalog.js';
import type { ListenAddress } from '../api/listen-address.js';
import type { Logger } from '../log/logger.js';
import { Counter, Histogram } from 'prom-client';
import { registry } from '../metrics/metrics.js';
import { body, encodeResponse, named, questionTypeClass, type WireQuestion } from './wire.js';
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
const TCP_IDLE_MS = 10_000;
const TCP_MAX_CONNECTIONS = 512;
/** Questions of one TCP connection waiting for their answer, and answer bytes not yet read. */
const TCP_MAX_PENDING = 64;
const TCP_MAX_BUFFERED = 256 * 1024;
const TCP_MAX_MESSAGE = 65_535;
const RECURSOR_TIMEOUT_MS = 2_000;
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
  forwarded: new Counter({ name: 'harbormaster_dns_forwarded_total', help: 'Questions outside the domain forwarded to the recursor, by result', labelNames: ['result'], registers: [registry] }),
  duration: new Histogram({ name: 'harbormaster_dns_answer_seconds', help: 'Time to answer a DNS question', buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.25, 1, 2.5], registers: [registry] }),
};

export interface DnsServerOptions extends ZoneOptions {
  /** Questions outside the domain go there (ip:port) instead of being refused. */
  recursor?: ListenAddress;
  log: Logger;
}

type Transport = 'udp' | 'tcp';

export class DnsServer {
  private zone: Zone;
  private udp?: dgram.Socket;
  private tcp?: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private snapshots = 0;

  constructor(private readonly opts: DnsServerOptions) {
    this.zone = new Zone(EMPTY_CATALOG, opts);
  }

  /** A new snapshot: every later question is answered from it. */
  setCatalog(c: Catalog): void {
    this.zone = new Zone(c, this.opts);
    this.snapshots++;
  }

  health(): { ok: boolean; snapshots: number; listening: boolean } {
    return { ok: !!this.udp && !!this.tcp, snapshots: this.snapshots, listening: !!this.udp && !!this.tcp };
  }

  /** Listen on UDP and TCP at the same address; with port 0 both get the port UDP was given. */
  async listen(addr: ListenAddress): Promise<ListenAddress> {
    // A larger receive buffer rides out bursts (the kernel caps it at net.core.rmem_max).
    const udp = dgram.createSocket({ type: isIP(addr.host) === 6 ? 'udp6' : 'udp4', recvBufferSize: 4 << 20 });
    udp.on('message', (msg, rinfo) => {
      void this.handle(msg, 'udp').then((out) => {
        if (out) udp.send(out, rinfo.port, rinfo.address);
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
    const tcp = net.createServer((s) => this.serveTcp(s));
    tcp.maxConnections = TCP_MAX_CONNECTIONS;
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
    return { host: addr.host, port };
  }

  async close(): Promise<void> {
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = undefined;
    this.tcp = undefined;
    for (const s of this.sockets) s.destroy();
    await Promise.all([
      udp && new Promise<void>((r) => udp.close(() => r())),
      tcp && new Promise<void>((r) => tcp.close(() => r())),
    ]);
  }

  /** DNS over TCP: messages framed by a 2-byte length, several per connection, closed when idle. */
  private serveTcp(s: net.Socket): void {
    this.sockets.add(s);
    s.setTimeout(TCP_IDLE_MS, () => s.destroy());
    s.on('error', () => s.destroy());
    s.on('close', () => this.sockets.delete(s));
    let buf: Buffer = Buffer.alloc(0);
    let busy = Promise.resolve();
    // A client that sends faster than it reads is paused, so that its answers cannot pile up.
    let pending = 0;
    const settle = () => {
      pending--;
      if (pending < TCP_MAX_PENDING && s.writableLength < TCP_MAX_BUFFERED && s.isPaused()) s.resume();
    };
    s.on('drain', () => pending < TCP_MAX_PENDING && s.resume());
    s.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        pending++;
        if (pending >= TCP_MAX_PENDING) s.pause();
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
          .catch(() => void s.destroy())
          .finally(settle);
      }
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
    const opt = query.additionals?.find((a) => a.type === 'OPT') as (Answer & { udpPayloadSize?: number; ednsVersion?: number }) | undefined;
    const q = query.questions?.[0];
    const typeClass = questionTypeClass(msg);
    // Only names of printable ASCII are echoed back: other bytes do not survive a decode and encode.
    if (!q || query.questions!.length !== 1 || !typeClass || !QUESTION_NAME.test(q.name)) {
      dnsMetrics.malformed.inc({ transport });
      return this.encodeHeaderOnly(id, flags, RCODE.FORMERR, transport);
    }
    const question = { name: q.name, typeClass };
    const opcode = (flags >> 11) & 0xf;
    if (opcode !== 0) return this.encode(id, flags, question, RCODE.NOTIMP, transport, opt);
    if (opt && (opt.ednsVersion ?? 0) !== 0) return this.encode(id, flags, question, 0, transport, opt, undefined, true);
    if (q.class !== undefined && q.class !== 'IN' && q.class !== 'ANY') return this.encode(id, flags, question, RCODE.NOTIMP, transport, opt);
    if (this.opts.recursor && !this.zone.owns(q.name)) return this.forward(msg, id, flags, question, transport, opt);
    const r = this.zone.answer({ name: q.name, type: q.type as string });
    return this.encode(id, flags, question, r.rcode, transport, opt, r);
  }

  private encode(
    id: number,
    queryFlags: number,
    question: WireQuestion,
    rcode: number,
    transport: Transport,
    opt: { udpPayloadSize?: number } | undefined,
    r?: Pick<Reply, 'answers' | 'authorities' | 'additionals'>,
    badVersion = false,
  ): Buffer {
    dnsMetrics.queries.inc({ transport, rcode: badVersion ? 'BADVERS' : (RCODE_NAMES[rcode] ?? String(rcode)) });
    const flags = FLAG_AA | (queryFlags & (0x7800 | FLAG_RD)) | (this.opts.recursor ? FLAG_RA : 0) | rcode;
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

  /** A question outside the domain, passed to the recursor as it came, its answer passed back. */
  private async forward(msg: Buffer, id: number, flags: number, question: WireQuestion, transport: Transport, opt: { udpPayloadSize?: number } | undefined): Promise<Buffer> {
    const r = this.opts.recursor!;
    try {
      let out = await udpExchange(msg, r);
      // Too big for UDP upstream and the client came over TCP: ask again over TCP.
      if (transport === 'tcp' && out.readUInt16BE(2) & FLAG_TC) out = await tcpExchange(msg, r);
      dnsMetrics.forwarded.inc({ result: 'answered' });
      dnsMetrics.queries.inc({ transport, rcode: RCODE_NAMES[out.readUInt16BE(2) & 0xf] ?? String(out.readUInt16BE(2) & 0xf) });
      return out;
    } catch (err) {
      dnsMetrics.forwarded.inc({ result: 'failed' });
      this.opts.log.debug({ event: 'dns-forward-failed', err: (err as Error).message }, `recursor ${r.host}:${r.port}: ${(err as Error).message}`);
      return this.encode(id, flags, question, RCODE.SERVFAIL, transport, opt);
    }
  }
}

function udpExchange(msg: Buffer, to: ListenAddress): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket(isIP(to.host) === 6 ? 'udp6' : 'udp4');
    const id = msg.readUInt16BE(0);
    const timer = setTimeout(() => done(new Error(`no answer within ${RECURSOR_TIMEOUT_MS} ms`)), RECURSOR_TIMEOUT_MS);
    const done = (err?: Error, out?: Buffer) => {
      clearTimeout(timer);
      s.close();
      if (err) reject(err);
      else resolve(out!);
    };
    s.on('error', (err) => done(err));
    s.on('message', (out, rinfo) => {
      // Only the recursor's answer to this question.
      if (rinfo.port !== to.port || out.length < 12 || out.readUInt16BE(0) !== id) return;
      done(undefined, out);
    });
    s.send(msg, to.port, to.host, (err) => err && done(err));
  });
}

function tcpExchange(msg: Buffer, to: ListenAddress): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(to.port, to.host);
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => done(new Error(`no answer within ${RECURSOR_TIMEOUT_MS} ms`)), RECURSOR_TIMEOUT_MS);
    const done = (err?: Error, out?: Buffer) => {
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err);
      else resolve(out!);
    };
    s.on('error', (err) => done(err));
    s.on('connect', () => {
      const head = Buffer.alloc(2);
      head.writeUInt16BE(msg.length);
      s.write(Buffer.concat([head, msg]));
    });
    s.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) done(undefined, buf.subarray(2, 2 + buf.readUInt16BE(0)));
    });
    s.on('end', () => done(new Error('closed before the answer')));
  });
}
