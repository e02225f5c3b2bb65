// A client for HAProxy's stats socket at admin level (the runtime API). One command per
// connection: HAProxy answers a non-interactive connection and closes it, so an answer is
// complete at end of stream and a stuck process cannot leave a half-read session behind.
import net from 'node:net';

export class AdminSocketError extends Error {}

/** Answers that mean the command was refused (HAProxy answers success with text too). */
const REFUSED = /^(No such|Require|Unknown command|Permission denied|Invalid|Can't|Cannot|Backend is using|Server is not|Unexpected|Missing|'[^']*' (?:expects|requires))/im;

export interface AdminSocketOptions {
  /** Per command, from connect to the last byte. */
  timeoutMs?: number;
}

export class AdminSocket {
  private readonly timeoutMs: number;

  constructor(
    readonly path: string,
    opts: AdminSocketOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 2000;
  }

  /** The raw answer of one command; rejects with a one-line AdminSocketError on socket failure. */
  raw(command: string): Promise<string> {
    if (/[\n;]/.test(command)) return Promise.reject(new AdminSocketError(`haproxy admin socket ${this.path}: command must be one line without ';'`));
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      const sock = net.createConnection(this.path);
      let done = false;
      const fail = (why: string) => {
        if (done) return;
        done = true;
        sock.destroy();
        reject(new AdminSocketError(`haproxy admin socket ${this.path}: ${command.split(' ').slice(0, 3).join(' ')}: ${why}`));
      };
      sock.setTimeout(this.timeoutMs, () => fail(`no answer within ${this.timeoutMs} ms`));
      sock.on('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
      sock.on('data', (d: Buffer) => chunks.push(d));
      sock.on('end', () => {
        if (done) return;
        done = true;
        sock.destroy();
        resolve(Buffer.concat(chunks).toString('utf8'));
      });
      sock.on('connect', () => sock.write(`${command}\n`));
    });
  }

  /** Runs a command that changes state; an answer HAProxy uses for refusals becomes an error. */
  async run(command: string): Promise<string> {
    const answer = await this.raw(command);
    if (REFUSED.test(answer)) {
      throw new AdminSocketError(`haproxy admin socket ${this.path}: ${command}: ${answer.trim().split('\n')[0].slice(0, 200)}`);
    }
    return answer;
  }

  /**
   * Runs each sequence in order (one sequence per server, whose commands depend on each other)
   * and the sequences concurrently; the first refusal or socket failure rejects.
   */
  async runSequences(sequences: readonly (readonly string[])[]): Promise<void> {
    await Promise.all(
      sequences.map(async (seq) => {
        for (const c of seq) await this.run(c);
      }),
    );
  }
}
