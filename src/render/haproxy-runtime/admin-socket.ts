// A client for HAProxy's stats socket at admin level (the runtime API). One command per
// connection: HAProxy answers a non-interactive connection and closes it, so an answer is
// complete at end of stream and a stuck process cannot leave a half-read session behind.
import net from 'node:net';

export class AdminSocketError extends Error {}

/** Answers that mean the command was refused (HAProxy answers success with text too). */
const REFUSED = /^(No such|Require|Unknown command|Permission denied|Invalid|Can't|Cannot|Backend is using|Server is not|Unexpected|Missing|(?:Absolute|Relative) weight|'[^']*' (?:expects|requires))/im;

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
    return this.send(command);
  }

  /** One line (commands separated by `; `), its whole answer. */
  private send(command: string): Promise<string> {
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
    return this.runBatch([command]);
  }

  /**
   * Runs commands on one connection (`a; b; c`: one round trip), each checked like run(); HAProxy
   * runs all of them even when one is refused, which then rejects the whole batch.
   */
  async runBatch(commands: readonly string[]): Promise<string> {
    const bad = commands.find((c) => /[\n;]/.test(c));
    if (bad !== undefined) throw new AdminSocketError(`haproxy admin socket ${this.path}: command must be one line without ';'`);
    const line = commands.join('; ');
    const answer = await this.send(line);
    const refused = REFUSED.exec(answer);
    if (refused) {
      const why = answer.slice(refused.index).split('\n')[0].slice(0, 200);
      throw new AdminSocketError(`haproxy admin socket ${this.path}: ${line.length > 200 ? `${line.slice(0, 199)}…` : line}: ${why}`);
    }
    return answer;
  }

  /**
   * Runs each sequence's batches in order (one sequence per server; a batch only after the one
   * before took) and the sequences concurrently; the first refusal or socket failure rejects.
   */
  async runSequences(sequences: readonly (readonly (readonly string[])[])[]): Promise<void> {
    await Promise.all(
      sequences.map(async (seq) => {
        for (const batch of seq) await this.runBatch(batch);
      }),
    );
  }
}
