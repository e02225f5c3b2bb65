import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UsageError } from '../../registry/types.js';
import { parseRenderArgs } from './render.js';

const dir = mkdtempSync(join(tmpdir(), 'hm-render-args-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const tpl = join(dir, 't.hbs');
writeFileSync(tpl, '{{#each services}}{{name}}{{/each}}');

describe('parseRenderArgs', () => {
  it('has the documented defaults', () => {
    expect(parseRenderArgs(['consul://', '--template', `${tpl}:${dir}/out`])).toEqual({
      registry: 'consul://',
      templates: [{ source: tpl, destination: `${dir}/out`, command: undefined, verify: { kind: 'plain' }, perms: undefined, backup: false }],
      wait: { minMs: 500, maxMs: 3000 },
      timeoutMs: 30_000,
      statuses: ['passing'],
      domain: 'localhost',
      once: false,
      dry: false,
      logFormat: 'json',
      logLevel: 'info',
    });
    expect(parseRenderArgs(['--help'])).toBeUndefined();
  });

  it('takes --config first, then flags: their templates are added and their values win', () => {
    const file = join(dir, 'r.yaml');
    writeFileSync(file, `registry: etcd://127.0.0.1:2379/x\nwait: 1s:2s\nstatus: [passing, warning]\ndomain: example.org\ntemplates:\n  - source: ${tpl}\n    destination: ${dir}/a\n`);
    const cfg = parseRenderArgs(['--config', file, '--template', `${tpl}:${dir}/b:reload b`, '--wait', '100ms:1s', '--domain', 'example.com', '--once', '--dry'])!;
    expect(cfg.registry).toBe('etcd://127.0.0.1:2379/x');
    expect(cfg.templates.map((t) => [t.destination, t.command])).toEqual([[`${dir}/a`, undefined], [`${dir}/b`, 'reload b']]);
    expect(cfg.wait).toEqual({ minMs: 100, maxMs: 1000 });
    expect(cfg.statuses).toEqual(['passing', 'warning']);
    expect(cfg.domain).toBe('example.com');
    expect(cfg).toMatchObject({ once: true, dry: true });
    expect(parseRenderArgs(['memory://', '--config', file])!.registry).toBe('memory://');
  });

  it.each([
    [['memory://', 'consul://', '--template', `${tpl}:${dir}/o`], 'render takes one registry URI'],
    [['memory://', '--template', `${tpl}:${dir}/o`, '--domain', 'Example.COM'], '--domain Example.COM'],
    [['memory://', '--template', `${tpl}:${dir}/o`, '--template', `${tpl}:${dir}/o`], 'two templates write the same destination'],
    [['memory://', '--template', `${tpl}:${dir}/o`, '--log-level', 'loud'], '--log-level loud'],
  ])('refuses %j', (argv, msg) => {
    expect(() => parseRenderArgs(argv)).toThrow(UsageError);
    expect(() => parseRenderArgs(argv)).toThrow(msg);
  });
});
