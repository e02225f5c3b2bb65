import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { alive, childrenOf, parseShowProc, verifierFor } from './reload-verifier.js';

const procScans = vi.hoisted(() => ({ n: 0, polls: 0 }));
vi.mock('node:fs/promises', async (orig) => {
  const fs = await orig<typeof import('node:fs/promises')>();
  return { ...fs, readdir: ((p: string, ...rest: unknown[]) => ((p === '/proc' && procScans.n++), (/^\/proc\/\d+\/task$/.test(p) && procScans.polls++), (fs.readdir as (...a: unknown[]) => unknown)(p, ...rest))) as typeof fs.readdir };
});

const SHOW_PROC = `#<PID>          <type>          <reloads>       <uptime>        <version>
23788           master          2 [failed: 1]   0d00h00m07s     2.6.12-1+deb12u4
# workers
24231           worker          1               0d00h00m06s     2.6.12-1+deb12u4
24300           worker          0               0d00h00m01s     2.6.12-1+deb12u4
# old workers
23789           worker          3               0d00h00m09s     2.6.12-1+deb12u4
# programs

`;

describe('reload verification', () => {
  it("parses HAProxy's show proc: master, failed reloads, current workers", () => {
    expect(parseShowProc(SHOW_PROC)).toEqual({ master: 23788, failed: 1, workers: [24231, 24300] });
    expect(parseShowProc('')).toBeUndefined();
  });

  it('finds the children of a process in /proc', async () => {
    const child = spawn('/bin/sh', ['-c', 'sleep 5 & sleep 5 & wait'], { stdio: 'ignore' });
    try {
      let kids: number[] = [];
      for (let i = 0; i < 50 && kids.length < 2; i++) {
        kids = await childrenOf(child.pid!);
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(kids).toHaveLength(2);
      expect(await childrenOf(process.pid)).toContain(child.pid);
    } finally {
      process.kill(child.pid!, 'SIGKILL');
    }
  });

  it('nginx: no master behind the pid file is a failure, after the timeout', async () => {
    const v = verifierFor({ kind: 'nginx', pidFile: '/nonexistent/nginx.pid' });
    const snap = await v.before();
    expect(await v.confirm(snap, 100)).toMatch(/no nginx master running/);
  });

  it('haproxy: a master CLI that does not answer is a failure, after the timeout', async () => {
    const v = verifierFor({ kind: 'haproxy', masterSocket: '/nonexistent/master.sock' });
    expect(await v.confirm(await v.before(), 100)).toMatch(/did not answer within 100 ms/);
  });

  it('plain always confirms', async () => {
    const v = verifierFor({ kind: 'plain' });
    expect(await v.confirm(await v.before(), 10)).toBeUndefined();
  });

  it('nginx: waiting for new workers polls with backoff, not every 40 ms', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hm-verify-'));
    // Titled as nginx titles its master.
    const master = spawn('/bin/bash', ['-c', 'exec -a "nginx: master process fake" /bin/sh -c "sleep 5 & wait"'], { stdio: 'ignore' });
    try {
      writeFileSync(join(dir, 'nginx.pid'), `${master.pid}\n`);
      for (let i = 0; i < 100 && (await childrenOf(master.pid!)).length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      const v = verifierFor({ kind: 'nginx', pidFile: join(dir, 'nginx.pid') });
      const snap = await v.before();
      const [scans, polls] = [procScans.n, procScans.polls];
      const t = Date.now();
      expect(await v.confirm(snap, 2000)).toMatch(/started no new workers/);
      const n = { scans: procScans.n - scans, polls: procScans.polls - polls };
      console.log(`PROBE nginx verifier waiting ${Date.now() - t} ms: ${n.polls} looks at the master's children, ${n.scans} full /proc scans (every 40 ms would be ${Math.round(2000 / 40)} scans)`);
      expect(n.polls).toBeLessThanOrEqual(10);
      expect(n.scans).toBeLessThanOrEqual(10);
      expect(await v.running()).toBe(true);
    } finally {
      master.kill('SIGKILL');
    }
  });

  it('nginx: a stale pid file naming a live process that is not an nginx master is no proxy; EPERM is a live process', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hm-verify-'));
    const other = spawn('/bin/sh', ['-c', 'sleep 5 & wait'], { stdio: 'ignore' });
    try {
      writeFileSync(join(dir, 'nginx.pid'), `${other.pid}\n`);
      const v = verifierFor({ kind: 'nginx', pidFile: join(dir, 'nginx.pid') });
      const running = await v.running();
      const eperm = alive(1, () => {
        throw Object.assign(new Error('operation not permitted'), { code: 'EPERM' });
      });
      const esrch = alive(1, () => {
        throw Object.assign(new Error('no such process'), { code: 'ESRCH' });
      });
      console.log(`PROBE nginx verifier: pid file naming a live /bin/sh → running ${running}; kill(pid, 0) EPERM → alive ${eperm}, ESRCH → alive ${esrch}`);
      expect(running).toBe(false);
      expect(eperm).toBe(true);
      expect(esrch).toBe(false);
    } finally {
      other.kill('SIGKILL');
    }
  });
});
