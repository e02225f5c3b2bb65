// The real `dig` client (bind9-dnsutils) against a DNS server on loopback, its +yaml output read.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { parse } from 'yaml';

const exec = promisify(execFile);

export interface DigResult {
  status: string;
  flags: string[];
  /** Records as dig prints them: `name. ttl IN TYPE data`. */
  answer: string[];
  authority: string[];
  additional: string[];
  protocol: string;
  /** Bytes of the answer message. */
  size: number;
  /** The data column of each answer record (e.g. the addresses of A records). */
  data: string[];
}

interface DigMessage {
  type: string;
  message?: {
    socket_protocol?: string;
    message_size?: string;
    response_message_data?: {
      status: string;
      flags: string;
      ANSWER_SECTION?: string[];
      AUTHORITY_SECTION?: string[];
      ADDITIONAL_SECTION?: string[];
    };
  };
}

/** `dig @127.0.0.1 -p <port> <name> <type> [options]`, one try, 2 s at most. */
export async function dig(port: number, name: string, type = 'A', options: string[] = []): Promise<DigResult> {
  const { stdout } = await exec('dig', ['+yaml', '+tries=1', '+time=2', `@127.0.0.1`, '-p', String(port), name, type, ...options]);
  const docs = parse(stdout) as DigMessage[];
  const msg = docs.filter((d) => d.type === 'MESSAGE' && d.message?.response_message_data).pop();
  if (!msg) throw new Error(`dig ${name} ${type}: no answer\n${stdout}`);
  const r = msg.message!.response_message_data!;
  const answer = r.ANSWER_SECTION ?? [];
  return {
    status: r.status,
    flags: r.flags.split(/\s+/).filter(Boolean),
    answer,
    authority: r.AUTHORITY_SECTION ?? [],
    additional: r.ADDITIONAL_SECTION ?? [],
    protocol: msg.message!.socket_protocol ?? '',
    size: Number.parseInt(msg.message!.message_size ?? '0', 10),
    data: answer.map((l) => l.split(/\s+/).slice(4).join(' ')),
  };
}
