import { describe, expect, it } from 'vitest';
import { runCommand, shellQuote, trimOutput } from './command-runner.js';

describe('commands', () => {
  it('runs through /bin/sh -c and collects stdout and stderr', async () => {
    const r = await runCommand('echo out; echo err >&2; exit 3', 5000);
    expect(r).toMatchObject({ ok: false, code: 3, timedOut: false });
    expect(r.output).toContain('out');
    expect(r.output).toContain('err');
    expect((await runCommand('true', 5000)).ok).toBe(true);
  });

  it('kills the whole process group at the timeout', async () => {
    const started = Date.now();
    const r = await runCommand('sleep 30 & sleep 30; wait', 200);
    expect(r).toMatchObject({ ok: false, timedOut: true });
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('does not wait for a daemon the command leaves behind', async () => {
    const started = Date.now();
    const r = await runCommand('sleep 3 & echo started', 5000);
    expect(r.ok).toBe(true);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('quotes for the shell, trims output to one line', async () => {
    const path = "/tmp/it's a $file";
    expect((await runCommand(`printf %s ${shellQuote(path)}`, 5000)).output).toBe(path);
    expect(trimOutput('  a\n  b \n')).toBe('a | b');
    expect(trimOutput('x'.repeat(1000), 10)).toBe(`…${'x'.repeat(10)}`);
  });
});
