// Check and reload commands: `/bin/sh -c <command>` with a timeout that kills the whole process
// group, so that a hung `nginx -s reload` or a stuck script cannot stall the render loop.
import { spawn } from 'node:child_process';

export interface CommandResult {
  ok: boolean;
  /** Exit code, or null when killed. */
  code: number | null;
  timedOut: boolean;
  /** stdout and stderr together, the last 8 KiB. */
  output: string;
  ms: number;
}

const KEEP = 8192;

export function runCommand(command: string, timeoutMs: number, env: NodeJS.ProcessEnv = process.env): Promise<CommandResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    let output = '';
    let timedOut = false;
    const append = (d: Buffer) => {
      output += d.toString();
      if (output.length > 2 * KEEP) output = output.slice(-KEEP);
    };
    const child = spawn('/bin/sh', ['-c', command], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child.stdout.on('data', append);
    child.stderr.on('data', append);
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    let finished = false;
    const done = (code: number | null, extra = '') => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      // A daemon started by the command may hold the pipes open: let go of them.
      child.stdout.destroy();
      child.stderr.destroy();
      resolve({ ok: code === 0 && !timedOut, code, timedOut, output: (output + extra).slice(-KEEP), ms: performance.now() - started });
    };
    child.on('error', (err) => done(null, `\n${err.message}`));
    // 'close' waits for the pipes: a daemon the command started keeps them open, so stop at exit.
    child.on('exit', (code) => setImmediate(() => done(code)));
  });
}

/** Single-quote a value for /bin/sh. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** The last lines of a command's output, on one log-friendly string. */
export function trimOutput(output: string, max = 600): string {
  const t = output.trim().replace(/\s*\n\s*/g, ' | ');
  return t.length > max ? `…${t.slice(-max)}` : t;
}
