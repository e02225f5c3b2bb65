// Questions outside the domain, passed to --recursor. Bounded whatever the clients send:
// - a few UDP sockets opened once and shared (not one per question), each question sent with a
//   random ID and its answer matched by ID, source and question (as a stub resolver does);
// - identical questions in flight (same name in any case, type, class, CD and DO bits) are asked
//   once and the one answer goes to every client waiting for it. This also stops a loop through
//   another resolver that forwards back here: the question that comes back joins the one in
//   flight instead of being sent again;
// - at most `maxInFlight` questions upstream at once; beyond that a client gets SERVFAIL at once.
import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import type { ListenAddress } from '../api/listen-address.js';

const FLAG_AA = 0x0400;
const FLAG_TC = 0x0200;
const FLAG_CD = 0x0010;

export interface ForwarderOptions {
  recursor: ListenAddress;
  /** An upstream question not answered within this is failed (default 2 s). */
  timeoutMs?: number;
  /** Distinct questions upstream at once, TCP retries included (default 256). */
  maxInFlight?: number;
  /** Clients waiting for one question (default 1024). */
  maxWaiters?: number;
  /** UDP sockets the questions are spread over (default 4). */
  sockets?: number;
}

/** A question could not be forwarded: `busy` when the cap was reached, `failed` otherwise. */
export class ForwardError extends Error {
  constructor(
    readonly reason: 'busy' | 'failed',
    message: string,
  ) {
    super(message);
  }
}

/** The parts of a query the forwarder needs; undefined when it has no single readable question. */
interface Query {
  id: number;
  /** The question section as it came (name and type/class bytes). */
  question: Buffer;
  /** The name lowercased, the type and class, CD and DO: what makes two questions the same. */
  key: string;
}

interface Waiter {
  query: Query;
  /** Largest answer this client takes (UDP: 512 or its EDNS0 size; TCP: 65,535). */
  limit: number;
  resolve: (answer: Buffer) => void;
  reject: (err: Error) => void;
}

interface Exchange {
  key: string;
  id: number;
  upstream: Upstream;
  /** The question section lowercased, to match the answer against. */
  question: Buffer;
  waiters: Waiter[];
  timer: NodeJS.Timeout;
}

interface Upstream {
  socket: dgram.Socket;
  byId: Map<number, Exchange>;
}

export class Forwarder {
  private readonly timeoutMs: number;
  private readonly maxInFlight: number;
  private readonly maxWaiters: number;
  private readonly socketCount: number;
  private upstreams: Upstream[] = [];
  private next = 0;
  private readonly byKey = new Map<string, Exchange>();
  private tcpInFlight = 0;
  private closed = false;

  constructor(private readonly opts: ForwarderOptions) {
    this.timeoutMs = opts.timeoutMs ?? 2_000;
    this.maxInFlight = opts.maxInFlight ?? 256;
    this.maxWaiters = opts.maxWaiters ?? 1024;
    this.socketCount = opts.sockets ?? 4;
  }

  /** Questions upstream now, and the UDP sockets open for them. */
  stats(): { inFlight: number; sockets: number } {
    return { inFlight: this.byKey.size + this.tcpInFlight, sockets: this.upstreams.length };
  }

  /**
   * The recursor's answer to `msg`, made this client's: its ID and question bytes (the case it
   * asked in), AA cleared (we are not the authority for it), cut with TC when larger than `limit`.
   * Over TCP a truncated UDP answer is asked again over TCP. Rejects with a ForwardError.
   */
  async forward(msg: Buffer, transport: 'udp' | 'tcp', limit: number): Promise<Buffer> {
    const query = readQuery(msg);
    if (!query) throw new ForwardError('failed', 'no single question to forward');
    const answer = await this.udp(msg, query, limit);
    if (transport === 'tcp' && answer.readUInt16BE(2) & FLAG_TC) {
      if (this.byKey.size + this.tcpInFlight >= this.maxInFlight) throw new ForwardError('busy', `${this.maxInFlight} questions in flight`);
      this.tcpInFlight++;
      try {
        return forClient(await this.tcp(msg, query), query, limit);
      } finally {
        this.tcpInFlight--;
      }
    }
    return answer;
  }

  close(): void {
    this.closed = true;
    for (const ex of [...this.byKey.values()]) this.finish(ex, new ForwardError('failed', 'server closing'));
    for (const u of this.upstreams) u.socket.close();
    this.upstreams = [];
  }

  private udp(msg: Buffer, query: Query, limit: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new ForwardError('failed', 'server closing'));
      const waiter: Waiter = { query, limit, resolve, reject };
      const same = this.byKey.get(query.key);
      if (same) {
        if (same.waiters.length >= this.maxWaiters) return reject(new ForwardError('busy', `${this.maxWaiters} clients waiting for one question`));
        same.waiters.push(waiter);
        return;
      }
      if (this.byKey.size + this.tcpInFlight >= this.maxInFlight) return reject(new ForwardError('busy', `${this.maxInFlight} questions in flight`));
      const upstream = this.upstream();
      let id = randomInt(0, 0x10000);
      for (let tries = 0; upstream.byId.has(id) && tries < 64; tries++) id = randomInt(0, 0x10000);
      if (upstream.byId.has(id)) return reject(new ForwardError('busy', 'no free query ID'));
      const ex: Exchange = {
        key: query.key,
        id,
        upstream,
        question: lowerName(query.question),
        waiters: [waiter],
        timer: setTimeout(() => this.finish(ex, new ForwardError('failed', `no answer within ${this.timeoutMs} ms`)), this.timeoutMs),
      };
      this.byKey.set(ex.key, ex);
      upstream.byId.set(id, ex);
      const out = Buffer.from(msg);
      out.writeUInt16BE(id, 0);
      const r = this.opts.recursor;
      upstream.socket.send(out, r.port, r.host, (err) => err && this.finish(ex, new ForwardError('failed', err.message)));
    });
  }

  private upstream(): Upstream {
    if (this.upstreams.length < this.socketCount) {
      const socket = dgram.createSocket(net.isIP(this.opts.recursor.host) === 6 ? 'udp6' : 'udp4');
      const u: Upstream = { socket, byId: new Map() };
      socket.on('message', (out, rinfo) => this.received(u, out, rinfo));
      // An unconnected UDP socket has no error a later send cannot have too: each send reports its own.
      socket.on('error', () => undefined);
      this.upstreams.push(u);
      return u;
    }
    return this.upstreams[this.next++ % this.upstreams.length];
  }

  private received(u: Upstream, out: Buffer, rinfo: dgram.RemoteInfo): void {
    const r = this.opts.recursor;
    if (out.length < 12 || rinfo.port !== r.port || !sameHost(rinfo.address, r.host)) return;
    const ex = u.byId.get(out.readUInt16BE(0));
    if (!ex || !(out.readUInt16BE(2) & 0x8000) || out.readUInt16BE(4) !== 1) return;
    const q = out.subarray(12, 12 + ex.question.length);
    if (q.length !== ex.question.length || !lowerName(q).equals(ex.question)) return;
    this.finish(ex, undefined, out);
  }

  private finish(ex: Exchange, err?: Error, out?: Buffer): void {
    if (this.byKey.get(ex.key) !== ex) return;
    clearTimeout(ex.timer);
    this.byKey.delete(ex.key);
    ex.upstream.byId.delete(ex.id);
    for (const w of ex.waiters) {
      if (err || !out) w.reject(err ?? new ForwardError('failed', 'no answer'));
      else w.resolve(forClient(out, w.query, w.limit));
    }
  }

  private tcp(msg: Buffer, query: Query): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const r = this.opts.recursor;
      const s = net.connect(r.port, r.host);
      const id = randomInt(0, 0x10000);
      const question = lowerName(query.question);
      let buf = Buffer.alloc(0);
      const timer = setTimeout(() => done(new ForwardError('failed', `no answer over TCP within ${this.timeoutMs} ms`)), this.timeoutMs);
      const done = (err?: Error, out?: Buffer) => {
        clearTimeout(timer);
        s.destroy();
        if (err || !out) reject(err ?? new ForwardError('failed', 'no answer'));
        else resolve(out);
      };
      s.on('error', (err) => done(new ForwardError('failed', err.message)));
      s.on('connect', () => {
        const out = Buffer.alloc(2 + msg.length);
        out.writeUInt16BE(msg.length, 0);
        msg.copy(out, 2);
        out.writeUInt16BE(id, 2);
        s.write(out);
      });
      s.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
        const out = buf.subarray(2, 2 + buf.readUInt16BE(0));
        const q = out.subarray(12, 12 + question.length);
        if (out.length < 12 || out.readUInt16BE(0) !== id || q.length !== question.length || !lowerName(q).equals(question)) return done(new ForwardError('failed', 'an answer to another question over TCP'));
        done(undefined, out);
      });
      s.on('end', () => done(new ForwardError('failed', 'closed before the answer')));
    });
  }
}

/** The recursor's answer with the client's ID and question bytes, AA cleared, cut to `limit`. */
function forClient(out: Buffer, query: Query, limit: number): Buffer {
  if (out.length > limit) {
    // Too large for this client (it asked with a smaller UDP size than the question that went
    // upstream): the header and question with TC, so that it asks again over TCP.
    const cut = Buffer.alloc(12 + query.question.length);
    out.copy(cut, 0, 0, 4);
    cut.writeUInt16BE(1, 4);
    query.question.copy(cut, 12);
    cut.writeUInt16BE(query.id, 0);
    cut.writeUInt16BE((cut.readUInt16BE(2) & ~FLAG_AA) | FLAG_TC, 2);
    return cut;
  }
  const a = Buffer.from(out);
  a.writeUInt16BE(query.id, 0);
  a.writeUInt16BE(a.readUInt16BE(2) & ~FLAG_AA, 2);
  query.question.copy(a, 12);
  return a;
}

/** ID, question section and coalescing key of a query with one question (no compression in it). */
export function readQuery(msg: Buffer): Query | undefined {
  if (msg.length < 12 || msg.readUInt16BE(4) !== 1) return undefined;
  let off = 12;
  for (;;) {
    if (off >= msg.length) return undefined;
    const len = msg[off];
    if (len === 0) break;
    if (len & 0xc0) return undefined;
    off += 1 + len;
  }
  const end = off + 1 + 4;
  if (end > msg.length) return undefined;
  const question = msg.subarray(12, end);
  const flags = msg.readUInt16BE(2);
  return { id: msg.readUInt16BE(0), question, key: `${lowerName(question).toString('hex')}/${flags & FLAG_CD ? 'cd' : ''}/${ednsKey(msg, end)}` };
}

/** Whether the query has an OPT record and its DO bit: an answer with DNSSEC records is not one without. */
function ednsKey(msg: Buffer, from: number): string {
  // Only the additional section can hold OPT; queries carry no answer or authority records in practice.
  if (msg.readUInt16BE(6) !== 0 || msg.readUInt16BE(8) !== 0 || msg.readUInt16BE(10) === 0) return msg.readUInt16BE(10) === 0 ? 'plain' : 'other';
  // The usual OPT: root name (0), type 41, class (UDP size), TTL (extended rcode, version, DO + flags).
  if (msg.length >= from + 11 && msg[from] === 0 && msg.readUInt16BE(from + 1) === 41) return msg[from + 7] & 0x80 ? 'edns-do' : 'edns';
  return 'other';
}

/** The question section with the ASCII letters of its name lowercased (type and class bytes kept). */
function lowerName(question: Buffer): Buffer {
  const out = Buffer.from(question);
  for (let i = 0; i < out.length - 4; i++) if (out[i] >= 0x41 && out[i] <= 0x5a) out[i] += 0x20;
  return out;
}

function sameHost(a: string, b: string): boolean {
  return a === b || a.replace(/^::ffff:/, '') === b.replace(/^::ffff:/, '');
}
