import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Journal } from './journal.js';
import { batchSize, parseRolloutArgs, recordedCommand } from './options.js';

const ENV = { HOME: '/home/x', DOCKER_HOST: undefined };

describe('rollout flags', () => {
  it('has the documented defaults', () => {
    const c = parseRolloutArgs(['web'], ENV)!;
    expect(c).toMatchObject({
      service: 'web',
      composeService: false,
      pull: 'missing',
      batch: { count: 1, percent: false },
      order: undefined,
      pauseMs: 0,
      healthTimeoutMs: 60_000,
      monitorMs: 5_000,
      drainMs: 10_000,
      stopTimeoutS: 10,
      keep: 0,
      rollback: false,
      failureAction: 'rollback',
      dryRun: false,
      json: false,
      registry: 'memory://',
      stateDir: '/home/x/.local/state/harbormaster',
    });
    expect(c.api.href).toBe('http://127.0.0.1:8081/');
  });

  it('takes every flag', () => {
    const c = parseRolloutArgs(
      ['web', '--image', 'app:2', '--batch', '50%', '--order', 'stop-first', '--pause', '2s', '--via', 'http://127.0.0.1:8080/health', '--via-host', 'web.localhost', '--health-timeout', '30s', '--monitor', '0', '--drain-timeout', '0', '--stop-timeout', '3', '--keep', '2', '--failure-action', 'pause', '--dry-run', '--json', '--registry', 'consul://127.0.0.1:8500', '--api', 'http://127.0.0.1:9000', '--compose-service', '--state-dir', '/tmp/s', '--pull', 'never'],
      ENV,
    )!;
    expect(c).toMatchObject({ image: 'app:2', batch: { count: 50, percent: true }, order: 'stop-first', pauseMs: 2000, healthTimeoutMs: 30_000, monitorMs: 0, drainMs: 0, stopTimeoutS: 3, keep: 2, failureAction: 'pause', dryRun: true, json: true, registry: 'consul://127.0.0.1:8500', composeService: true, stateDir: '/tmp/s', pull: 'never' });
    expect(c.via?.url.href).toBe('http://127.0.0.1:8080/health');
    expect(c.via?.host).toBe('web.localhost');
  });

  it.each([
    [[], /one service name, got none/],
    [['a', 'b'], /one service name, got a b/],
    [['we b'], /not a service name/],
    [['web', '--batch', '0'], /--batch 0: expected a count/],
    [['web', '--batch', '101%'], /--batch 101%/],
    [['web', '--batch', 'x'], /--batch x/],
    [['web', '--order', 'random'], /--order random: expected one of start-first, stop-first/],
    [['web', '--failure-action', 'ignore'], /--failure-action ignore/],
    [['web', '--drain-timeout', 'soon'], /--drain-timeout soon: "soon" is not a duration/],
    [['web', '--health-timeout', '10ms'], /--health-timeout 10ms: must be between/],
    [['web', '--stop-timeout', '-1'], /--stop-timeout -1: must be between 0 and 3600/],
    [['web', '--keep', '1000'], /--keep 1000/],
    [['web', '--via', 'ftp://x/'], /--via ftp:\/\/x\/: expected an http/],
    [['web', '--via', 'http://u:p@x/'], /credentials/],
    [['web', '--via-host', 'x'], /--via-host: needs --via/],
    [['web', '--registry', 'redis://x'], /unknown scheme/],
    [['web', '--image', 'a b'], /--image a b: not an image reference/],
    [['web', '--rollback', '--image', 'x:1'], /--rollback: .*--image does not apply/],
    [['web', '--pull', 'sometimes'], /--pull sometimes/],
    [['web', '--hostname', 'a_b!'], /--hostname/],
    [['web', '--nope'], /Unknown option '--nope'/],
  ])('refuses %j with one line', (argv, re) => {
    let msg = '';
    try {
      parseRolloutArgs(argv as string[], ENV);
    } catch (err) {
      msg = (err as Error).message;
    }
    expect(msg).toMatch(re);
    expect(msg).not.toContain('\n');
  });

  it('sizes batches from counts and percentages', () => {
    expect(batchSize({ count: 1, percent: false }, 3)).toBe(1);
    expect(batchSize({ count: 5, percent: false }, 3)).toBe(3);
    expect(batchSize({ count: 50, percent: true }, 3)).toBe(1);
    expect(batchSize({ count: 50, percent: true }, 20)).toBe(10);
    expect(batchSize({ count: 1, percent: true }, 3)).toBe(1);
    expect(batchSize({ count: 100, percent: true }, 7)).toBe(7);
  });
});

describe('rollout journal', () => {
  it('is written whole, found again by service, and gone once done', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'hm-journal-'));
    const j = Journal.create(dir, { service: 'web', composeService: false, image: 'app:2', imageId: 'sha256:1', order: 'start-first', pairs: [] });
    const p = j.add({ old: { id: 'a', name: 'web-1' }, phase: 'planned' });
    j.set(p, 'created');
    const again = Journal.load(dir, 'web', false)!;
    // A pair's order is read as the record's when it was not written with the pair.
    expect(again.data.pairs).toEqual([{ old: { id: 'a', name: 'web-1' }, phase: 'created', stopFirst: false }]);
    expect(again.unfinished()).toBe(true);
    expect(again.ownedByLiveProcess()).toBe(false); // this process
    expect(Journal.load(dir, 'web', true)).toBeUndefined();
    j.finish('interrupted');
    expect(Journal.load(dir, 'web', false)!.data.status).toBe('interrupted');
    j.finish('done');
    expect(Journal.load(dir, 'web', false)).toBeUndefined();
  });

  it('says which file is broken instead of ignoring it', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'hm-journal-'));
    const j = Journal.create(dir, { service: 'api', composeService: false, image: 'x', imageId: '', order: 'start-first', pairs: [] });
    writeFileSync(j.file, '{ half');
    expect(() => Journal.load(dir, 'api', false)).toThrow(/rollout record .*api\.json: not valid JSON/);
  });

  it('sees a record of a live process as taken, and of a dead one as free', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'hm-journal-'));
    const j = Journal.create(dir, { service: 'w', composeService: false, image: 'x', imageId: '', order: 'start-first', pairs: [] });
    j.data.pid = process.ppid; // alive, not us
    j.save();
    expect(Journal.load(dir, 'w', false)!.ownedByLiveProcess()).toBe(true);
    j.data.pid = 2 ** 22 + 12345; // beyond pid_max: no such process
    j.save();
    expect(Journal.load(dir, 'w', false)!.ownedByLiveProcess()).toBe(false);
  });
});

describe('the recorded command line', () => {
  it('masks an --api-token holding a quote, which quoting would otherwise split', async () => {
    const { addSecret, clearSecrets } = await import('../log/redact.js');
    const token = "ab'cd$ef";
    addSecret(token);
    try {
      const line = recordedCommand(['web', '--api-token', token, `--api-token=${token}`, 'it s']);
      expect(line).not.toContain('ab');
      expect(line).not.toContain('cd$ef');
      expect(line).toBe("harbormaster rollout web --api-token '[redacted]' '--api-token=[redacted]' 'it s'");
    } finally {
      clearSecrets();
    }
  });
});
