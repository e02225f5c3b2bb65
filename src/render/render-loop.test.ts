// The loop on an in-process memory:// registry: first snapshot at once, later ones after the
// quiet time, template edits re-render, stop() ends everything.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CatalogWatch } from '../catalog/watch.js';
import { silentLogger } from '../log/logger.js';
import type { ServiceInstance } from '../model/service-instance.js';
import { createBackend } from '../registry/index.js';
import { UsageError } from '../registry/types.js';
import { RENDER_WATCH_STATUSES, renderOnce, startRender } from './render-loop.js';
import type { RenderConfig } from './types.js';

const dir = mkdtempSync(join(tmpdir(), 'hm-loop-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const inst = (name: string, port: number, status: ServiceInstance['status'] = 'passing'): ServiceInstance => ({
  id: `h:${name}:${port}`, name, address: '127.0.0.1', port, protocol: 'tcp', tags: [], meta: {}, host: 'h', status,
});

async function until(what: string, pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function config(name: string, over: Partial<RenderConfig> = {}): { cfg: RenderConfig; dest: string; tpl: string } {
  const tpl = join(dir, `${name}.hbs`);
  const dest = join(dir, `${name}.out`);
  writeFileSync(tpl, '{{#each services}}{{name}}={{#each instances}}{{port}} {{/each}}\n{{/each}}');
  return {
    tpl,
    dest,
    cfg: { templates: [{ source: tpl, destination: dest, verify: { kind: 'plain' }, backup: false }], wait: { minMs: 50, maxMs: 200 }, statuses: ['passing'], domain: 'localhost', timeoutMs: 5000, once: false, dry: false, ...over },
  };
}

describe('render loop', () => {
  it('renders the first snapshot at once, then every change; template edits re-render', async () => {
    const uri = 'memory://loop1';
    const b = createBackend(uri, { ttl: 0 });
    await b.register(inst('web', 1001));
    const { cfg, dest, tpl } = config('loop1');
    const watch = CatalogWatch.forUri(uri, { statuses: RENDER_WATCH_STATUSES, log: silentLogger() });
    const h = await startRender(cfg, watch, silentLogger());
    try {
      await until('first render', () => existsSync(dest));
      expect(readFileSync(dest, 'utf8')).toBe('web=1001 \n');
      await b.register(inst('web', 1002));
      await b.register(inst('api', 2001, 'critical')); // not routable: listed without instances
      await until('change rendered', () => readFileSync(dest, 'utf8') === 'api=\nweb=1001 1002 \n');
      writeFileSync(tpl, '{{#each services}}{{name}};{{/each}}\n');
      await until('template edit rendered', () => readFileSync(dest, 'utf8') === 'api;web;\n');
      await h.idle();
      expect(h.runs).toBeGreaterThanOrEqual(3);
      expect(h.last?.ok).toBe(true);
    } finally {
      await h.stop();
      await watch.stop();
    }
  });

  it('renderOnce renders the first complete catalog and reports the result', async () => {
    const uri = 'memory://loop2';
    await createBackend(uri, { ttl: 0 }).register(inst('db', 5432));
    const { cfg, dest } = config('loop2', { once: true });
    const watch = CatalogWatch.forUri(uri, { statuses: RENDER_WATCH_STATUSES, log: silentLogger() });
    const r = await renderOnce({ ...cfg, templates: cfg.templates.map((t) => ({ ...t, command: 'false' })) }, watch, silentLogger());
    await watch.stop();
    expect(r.ok).toBe(false); // the reload command failed
    expect(r.reloads).toEqual([{ command: 'false', ok: false, rolledBack: true }]);
    expect(existsSync(dest)).toBe(false); // rolled back to "no file"
  });

  it('a template that does not compile at start is a UsageError naming file:line', async () => {
    const { cfg, tpl } = config('loop3');
    writeFileSync(tpl, 'ok\n{{#if x}}\n');
    const watch = CatalogWatch.forUri('memory://loop3', { log: silentLogger() });
    await expect(startRender(cfg, watch, silentLogger())).rejects.toThrow(UsageError);
    await expect(startRender(cfg, watch, silentLogger())).rejects.toThrow(`${tpl}:3: parse error`); // an unclosed block is found at the end
    await watch.stop();
  });

  it('a failed check is tried again with backoff, without waiting for the next change', async () => {
    const uri = 'memory://loop4';
    await createBackend(uri, { ttl: 0 }).register(inst('web', 1001));
    const gate = join(dir, 'loop4.gate');
    const { cfg, dest } = config('loop4');
    cfg.templates[0].check = `test -f ${gate}`;
    const watch = CatalogWatch.forUri(uri, { statuses: RENDER_WATCH_STATUSES, log: silentLogger() });
    const h = await startRender(cfg, watch, silentLogger());
    try {
      await until('first failed run', () => h.runs >= 1);
      expect(h.last?.ok).toBe(false);
      expect(existsSync(dest)).toBe(false);
      const started = Date.now();
      writeFileSync(gate, '');
      await until('retried and written', () => existsSync(dest), 5000);
      const ms = Date.now() - started;
      console.log(`PROBE render retry after a failed check: written ${ms} ms after the cause went away, runs=${h.runs}`);
      expect(readFileSync(dest, 'utf8')).toBe('web=1001 \n');
    } finally {
      await h.stop();
      await watch.stop();
    }
  });
});
