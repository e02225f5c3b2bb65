// DNS messages on the wire. dns-packet encodes every record and question; it writes names in
// full, so this puts the records together with their owner names compressed (RFC 1035 §4.1.4):
// a hundred A records of one name take 16 bytes each instead of 14 + the name, which is what
// decides how many fit in a 512-byte UDP answer. Names inside RDATA stay as dns-packet wrote
// them (RFC 2782 forbids compressing an SRV target).
import dnsPacket, { type Answer, type Packet, type Question } from 'dns-packet';

const QR = 0x8000;
const POINTER_MAX = 0x3fff;

export function encodeMessage(p: Packet): Buffer {
  const parts: Buffer[] = [];
  let size = 12;
  /** Name suffix → where it was written, for pointers. */
  const written = new Map<string, number>();
  const header = Buffer.alloc(12);
  header.writeUInt16BE(p.id ?? 0, 0);
  header.writeUInt16BE(((p.flags ?? 0) & 0x7fff) | (p.type === 'response' ? QR : 0), 2);
  const sections = [p.questions ?? [], p.answers ?? [], p.authorities ?? [], p.additionals ?? []];
  sections.forEach((s, i) => header.writeUInt16BE(s.length, 4 + i * 2));
  parts.push(header);

  const add = (b: Buffer) => {
    parts.push(b);
    size += b.length;
  };
  const writeName = (name: string) => {
    const labels = name === '.' ? [] : name.replace(/^\.|\.$/g, '').split('.');
    for (let i = 0; i < labels.length; i++) {
      const suffix = labels.slice(i).join('.');
      const at = written.get(suffix);
      if (at !== undefined) {
        const ptr = Buffer.alloc(2);
        ptr.writeUInt16BE(0xc000 | at);
        add(ptr);
        return;
      }
      if (size <= POINTER_MAX) written.set(suffix, size);
      const label = Buffer.from(labels[i]);
      add(Buffer.concat([Buffer.from([label.length]), label]));
    }
    add(Buffer.from([0]));
  };

  for (const q of p.questions ?? []) {
    writeName(q.name);
    add(tailAfterName(dnsPacket.encode({ questions: [q as Question] }), q.name));
  }
  for (const list of sections.slice(1) as Answer[][]) {
    for (const rr of list) {
      writeName(rr.name);
      add(tailAfterName(dnsPacket.encode({ answers: [rr] }), rr.name));
    }
  }
  return Buffer.concat(parts, size);
}

/** What follows the owner name in a one-entry message dns-packet encoded (after its 12-byte header). */
function tailAfterName(msg: Buffer, name: string): Buffer {
  return msg.subarray(12 + encodedNameLength(name));
}

function encodedNameLength(name: string): number {
  const n = name.replace(/^\.|\.$/g, '');
  if (!n) return 1;
  return n.split('.').reduce((len, l) => len + 1 + Buffer.byteLength(l), 1);
}
