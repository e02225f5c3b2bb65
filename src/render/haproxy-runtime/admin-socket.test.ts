// The client against a local unix socket that answers as HAProxy does (the real HAProxy is in
// test/render-haproxy-runtime.test.ts): answers are read to the end, refusals and socket
// failures become one-line errors, a silent server times out.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminSocket, AdminSocketError } from './admin-socket.js';

const dir = mkdtempSync(join(tmpdir(), 'hm-admin-'));
const path = join(dir, 'admin.sock');
const seen: string[] = [];
let server: net.Server;

beforeAll(async () => {
  server = net.createServer((c) => {
    c.on('data', (d) => {
      // A line may hold several commands (`a; b`): one answer each, as HAProxy does.
      const answers = d
        .toString()
        .trim()
        .split(/;\s*/)
        .map((cmd) => {
          seen.push(cmd);
          if (cmd.startsWith('set server nope/')) return 'No such backend.\n\n';
          if (cmd.startsWith('set weight')) return Number(cmd.split(' ')[3]) > 256 ? 'Absolute weight can only be between 0 and 256 inclusive.\n\n' : '\n';
          if (cmd.startsWith('set server')) return 'IP changed from \'127.0.0.1\' to \'127.0.0.2\' by \'stats socket command\'\n\n';
          return '\n';
        });
      if (seen[seen.length - 1] === 'hang') return;
      c.end(answers.join(''));
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

describe('AdminSocket', () => {
  it('returns an answer HAProxy gives on success', async () => {
    expect(await new AdminSocket(path).run('set server web/s0 addr 127.0.0.2 port 80')).toMatch(/^IP changed/);
  });

  it('turns a refusal into a one-line error naming the command', async () => {
    await expect(new AdminSocket(path).run('set server nope/s0 state ready')).rejects.toThrow(`haproxy admin socket ${path}: set server nope/s0 state ready: No such backend.`);
  });

  it('fails on a missing socket and on a silent one, in one line', async () => {
    await expect(new AdminSocket(join(dir, 'missing.sock')).run('show info')).rejects.toThrow(/missing\.sock: show info: ENOENT$/);
    const err = await new AdminSocket(path, { timeoutMs: 100 }).run('hang').catch((e: Error) => e);
    expect(err).toBeInstanceOf(AdminSocketError);
    expect((err as Error).message).toMatch(/hang: no answer within 100 ms$/);
  });

  it('refuses a command that would smuggle a second one', async () => {
    await expect(new AdminSocket(path).run('set weight web/s0 1; shutdown sessions server web/s0')).rejects.toThrow(/one line without ';'/);
    expect(seen.some((c) => c.includes('shutdown'))).toBe(false);
  });

  it('runs the batches of one server in order, a batch only after the one before took', async () => {
    seen.length = 0;
    await new AdminSocket(path).runSequences([[['set server a/s0 state maint', 'set server a/s0 addr 127.0.0.1 port 1'], ['set server a/s0 state ready']]]);
    expect(seen).toEqual(['set server a/s0 state maint', 'set server a/s0 addr 127.0.0.1 port 1', 'set server a/s0 state ready']);
    seen.length = 0;
    const err = await new AdminSocket(path).runSequences([[['set server a/s0 state maint', 'set weight a/s0 300', 'set server a/s0 addr 127.0.0.1 port 2'], ['set server a/s0 state ready']]]).catch((e: Error) => e);
    expect((err as Error).message).toBe(
      `haproxy admin socket ${path}: set server a/s0 state maint; set weight a/s0 300; set server a/s0 addr 127.0.0.1 port 2: Absolute weight can only be between 0 and 256 inclusive.`,
    );
    expect(seen).not.toContain('set server a/s0 state ready');
    await expect(new AdminSocket(path).runBatch(['set weight a/s0 1', 'set weight a/s0 1; shutdown sessions server a/s0'])).rejects.toThrow(/one line without ';'/);
  });
});
