// DNS messages on the wire. dns-packet decodes every question and encodes every record; a record
// is encoded once into its `tail` (type, class, TTL and RDATA: everything after the owner name)
// and kept with the zone, so that answering is copying bytes. Owner names are compressed (RFC
// 1035 §4.1.4): a hundred A records of one name take 16 bytes each instead of 14 + the name,
// which decides how many fit in a 512-byte UDP answer. Names inside RDATA stay as dns-packet
// wrote them (RFC 2782 forbids compressing an SRV target).
import dnsPacket, { type Answer } from 'dns-packet';

const QR = 0x8000;
const POINTER_MAX = 0x3fff;

/** A record ready for the wire: what it says (for logs and tests) and its encoded tail. */
export interface Rec {
  name: string;
  type: string;
  ttl: number;
  data: unknown;
  tail: Buffer;
}

/** A record without its owner name, encoded once. */
export type Body = Omit<Rec, 'name'>;

/** A record as dns-packet takes it, without its owner name (distributed over the union of record types). */
export type Unnamed = Answer extends infer A ? (A extends Answer ? Omit<A, 'name'> : never) : never;

export function body(rr: Unnamed): Body {
  // The owner name "." takes one byte: what follows it in a one-record message is the tail.
  const msg = dnsPacket.encode({ answers: [{ ...rr, name: '.' } as Answer] });
  const a = rr as { type: string; ttl?: number; data?: unknown };
  return { type: a.type, ttl: a.ttl ?? 0, data: a.data, tail: Buffer.from(msg.subarray(13)) };
}

export const named = (name: string, b: Body): Rec => ({ name, type: b.type, ttl: b.ttl, data: b.data, tail: b.tail });

/** The first question of a query as it came: its name (already checked) and its type and class bytes. */
export interface WireQuestion {
  name: string;
  typeClass: Buffer;
}

/** The type and class bytes of a query's first question (undefined when the message ends first). */
export function questionTypeClass(msg: Buffer): Buffer | undefined {
  let off = 12;
  while (off < msg.length) {
    const len = msg[off];
    if (len === 0) {
      off += 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      off += 2;
      break;
    }
    off += 1 + len;
  }
  return off + 4 <= msg.length ? msg.subarray(off, off + 4) : undefined;
}

/**
 * Whether a label of the first question holds a '.' byte. dns-packet joins labels with dots
 * without escaping them, so `\x05a.b.c` + `web.service.consul` would read as the name of five
 * labels a.b.c.web.service.consul: another question than the one asked.
 */
export function questionHasDottedLabel(msg: Buffer): boolean {
  let off = 12;
  while (off < msg.length) {
    const len = msg[off];
    if (len === 0 || (len & 0xc0) !== 0) return false;
    if (msg.subarray(off + 1, Math.min(msg.length, off + 1 + len)).includes(0x2e)) return true;
    off += 1 + len;
  }
  return false;
}

export function encodeResponse(id: number, flags: number, question: WireQuestion | undefined, sections: [Rec[], Rec[], Rec[]]): Buffer {
  const parts: Buffer[] = [];
  let size = 12;
  /** Name → where it was written, for pointers; its suffixes are added as they are written. */
  const written = new Map<string, number>();
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE((flags & 0x7fff) | QR, 2);
  header.writeUInt16BE(question ? 1 : 0, 4);
  header.writeUInt16BE(sections[0].length, 6);
  header.writeUInt16BE(sections[1].length, 8);
  header.writeUInt16BE(sections[2].length, 10);
  parts.push(header);
  const add = (b: Buffer) => {
    parts.push(b);
    size += b.length;
  };
  const writeName = (name: string) => {
    const n = name.replace(/^\.|\.$/g, '');
    const whole = written.get(n);
    if (whole !== undefined) return add(pointer(whole));
    const labels = n ? n.split('.') : [];
    for (let i = 0; i < labels.length; i++) {
      const suffix = i === 0 ? n : labels.slice(i).join('.');
      const at = i === 0 ? undefined : written.get(suffix);
      if (at !== undefined) return add(pointer(at));
      if (size <= POINTER_MAX) written.set(suffix, size);
      const label = Buffer.from(labels[i]);
      add(Buffer.concat([Buffer.from([label.length]), label]));
    }
    add(ZERO);
  };
  if (question) {
    writeName(question.name);
    add(question.typeClass);
  }
  for (const list of sections) {
    for (const rr of list) {
      writeName(rr.name);
      add(rr.tail);
    }
  }
  return Buffer.concat(parts, size);
}

const ZERO = Buffer.from([0]);

function pointer(at: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(0xc000 | at);
  return b;
}
