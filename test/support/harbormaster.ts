// Runs the built CLI as a real child process and collects its JSON log lines.
import { onTestFailed, onTestFinished } from 'vitest';
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { waitFor } from './wait.js';

export const BIN = fileURLToPath(new URL('../../bin/harbormaster.js', import.meta.url));

export interface LogLine {
  level: number;
  msg: string;
  event?: string;
  [k: string]: unknown;
}

export class Hm {
  readonly logs: LogLine[] = [];
  readonly stderr: string[] = [];
  /** stdout as written, unparsed. */
  readonly stdout: string[] = [];
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;

  constructor(args: string[], env: Record<string, string> = {}) {
    this.child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      this.stdout.push(d.toString());
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          this.logs.push(JSON.parse(line) as LogLine);
        } catch {
          this.logs.push({ level: 0, msg: line });
        }
      }
    });
    this.child.stderr!.on('data', (d: Buffer) => this.stderr.push(d.toString()));
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
  }

  get pid(): number {
    return this.child.pid!;
  }

  async waitForLog(what: string, pred: (l: LogLine) => boolean, timeoutMs = 20_000): Promise<LogLine> {
    return waitFor(`log line: ${what}`, () => this.logs.find(pred), timeoutMs);
  }

  registered(id: string): boolean {
    return this.logs.some((l) => l.event === 'registered' && l.id === id);
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.child.exitCode === null) this.child.kill(signal);
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    this.kill(signal);
    return this.exited;
  }

  dump(): string {
    return this.logs.map((l) => l.msg).join('\n') + this.stderr.join('');
  }
}

/** Run the CLI to completion (for one-shot commands). */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const live = new Set<Hm>();

/** Start harbormaster for one test: its log is printed if the test fails, and it is killed at the end. */
export function spawnHm(args: string[], env: Record<string, string> = {}): Hm {
  const hm = new Hm(args, env);
  live.add(hm);
  onTestFailed(() => {
    console.log(`--- harbormaster ${args.join(' ')}\n${hm.dump()}`);
  });
  onTestFinished(() => {
    hm.kill('SIGKILL');
    live.delete(hm);
  });
  return hm;
}
