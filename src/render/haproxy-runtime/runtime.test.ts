// HaproxyRuntime against a local unix socket that accepts every command (the real HAProxy is in
// test/render-haproxy-runtime.test.ts): what decides between runtime commands and a reload, and
// when the renderer applies a change before writing its file and skips its check.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCatalog } from '../../catalog/catalog.js';
import { silentLogger } from '../../log/logger.js';
import { metrics } from '../../metrics/metrics.js';
import type { ServiceInstance } from '../../model/service-instance.js';
import { CatalogInput } from '../render-input.js';
import { Renderer, type TemplateJob } from '../renderer.js';
import { templateData } from '../template-data.js';
import { compileTemplate } from '../template-file.js';
import { HaproxyRuntime, slotLineShapes, withoutSlotLines } from './runtime.js';
import { planSlots } from './slot-planner.js';

const dir = mkdtempSync(join(tmpdir(), 'hm-rt-'));
const socket = join(dir, 'admin.sock');
const seen: string[] = [];
/** Called with every command as it arrives. */
let onCommand: (cmd: string) => void = () => undefined;
let server: net.Server;

beforeAll(async () => {
  server = net.createServer((c) =>
    c.on('data', (d) => {
      const cmds = d.toString().trim().split(/;\s*/);
      for (const cmd of cmds) {
        seen.push(cmd);
        onCommand(cmd);
      }
      c.end(cmds[0] === 'show servers state' ? '1\n# be_id be_name srv_id srv_name\n3 web 1 s0 127.0.0.1\n\n' : '\n'.repeat(cmds.length));
    }),
  );
  await new Promise<void>((r) => server.listen(socket, r));
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

const inst = (port: number, over: Partial<ServiceInstance> = {}): ServiceInstance => ({ id: `i${port}`, name: 'web', address: '127.0.0.1', port, protocol: 'tcp', tags: [], meta: {}, host: 'h', status: 'passing', ...over });
const data = (...ports: number[]) =>
  templateData({ services: [{ name: 'web', tags: [], instances: ports.map((p) => inst(p)) }], fingerprint: String(ports) }, { statuses: ['passing'], domain: 'localhost', env: {} });

describe('HaproxyRuntime', () => {
  it('applies instance changes through the socket, and reloads when the file changed elsewhere', async () => {
    const stateFile = join(dir, 'state');
    const rt = new HaproxyRuntime({ socket, stateFile });
    expect(await rt.commit(rt.prepare(data(1)), 'backend web\n    server s0 127.0.0.1:1 check\n')).toEqual({ reload: true, reason: 'first load' });
    seen.length = 0;
    expect(await rt.commit(rt.prepare(data(1, 2)), 'backend web\n    server s0 127.0.0.1:1 check\n    server s1 127.0.0.1:2 check\n')).toEqual({ reload: false, commands: 5 });
    expect(seen).toContain('set server web/s1 addr 127.0.0.1 port 2');
    // The same instances, but the template wrote something else from the catalog.
    const out = await rt.commit(rt.prepare(data(1, 2, 3)), '# 3 instances\nbackend web\n    server s0 127.0.0.1:1 check\n');
    expect(out).toEqual({ reload: true, reason: 'the file changed outside its server lines' });
    expect(existsSync(stateFile)).toBe(true);
  });

  it('starts over with a reload after a failed one', async () => {
    const rt = new HaproxyRuntime({ socket, stateFile: join(dir, 'state2') });
    await rt.commit(rt.prepare(data(1)));
    rt.reloadFailed();
    expect(await rt.commit(rt.prepare(data(1, 2)))).toEqual({ reload: true, reason: 'first load' });
  });

  it('strips only slot server lines', () => {
    expect(withoutSlotLines('backend a\n    server s0 1.2.3.4:80 check\n    server other 1.2.3.4:80\n    server s12 127.0.0.1:1 check disabled\n')).toBe('backend a\n    server other 1.2.3.4:80\n');
  });
});

describe('slotLineShapes', () => {
  it('replaces the address and weight of the slot instance, and nothing else', () => {
    const table = planSlots(undefined, templateData(buildCatalog([inst(1), inst(2, { address: '::1', meta: { weight: '3' } })], ['passing']), { statuses: ['passing'], domain: 'localhost', env: {} })).table;
    const text = [
      'frontend f',
      '    server s0 10.0.0.1:80',
      'backend web',
      '    server s0 127.0.0.1:1 check weight 1',
      '    server s1 [::1]:2 check weight 3 # i2',
      '    server s2 127.0.0.1:1 check disabled',
      '    server s3 127.0.0.1:1 check disabled',
    ].join('\n');
    expect(slotLineShapes(text, table)).toEqual([
      '    server s0 10.0.0.1:80',
      '    server s<n> <address> check weight <weight>',
      '    server s<n> <address> check weight <weight> # i2',
      '    server s<n> 127.0.0.1:1 check disabled',
    ]);
    // 127.0.0.1:1 is not 127.0.0.1:12: whole words only.
    expect(slotLineShapes('backend web\n    server s0 127.0.0.1:12 weight 10\n', table)).toEqual(['    server s<n> 127.0.0.1:12 weight 10']);
  });
});

describe('the renderer in runtime mode', () => {
  const SLOTS = `{{#each upstreams}}backend {{name}}
{{#each slots}}{{#with instance}}    server {{../name}} {{hostPort address port}} check weight {{weight}}{{#if ../../withIds}} # {{id}}{{/if}}
{{else}}    server {{name}} 127.0.0.1:1 check disabled
{{/with}}{{/each}}{{/each}}`;
  const withIds = (text: string) => text.replace('{{#if ../../withIds}}', '{{#if true}}');

  function setup(template: string, sock = socket) {
    const d = mkdtempSync(join(dir, 'job-'));
    const out = join(d, 'haproxy.cfg');
    const checks = join(d, 'checks');
    const rt = new HaproxyRuntime({ socket: sock, stateFile: join(d, 'state') });
    const job: TemplateJob = {
      spec: {
        source: 't.hbs', destination: out, verify: { kind: 'plain' }, backup: false,
        command: `echo r >> ${join(d, 'reloads')}`,
        // Counts its runs; refuses a file that names an instance `bad`.
        check: `echo c >> ${checks}; ! grep -q '# bad' {{src}}`,
        haproxyRuntime: { socket: sock, stateFile: join(d, 'state') },
      },
      template: compileTemplate('t.hbs', template),
      runtime: rt,
    };
    const count = (f: string) => (existsSync(join(d, f)) ? readFileSync(join(d, f), 'utf8').split('\n').filter(Boolean).length : 0);
    const input = (...list: ServiceInstance[]) => new CatalogInput(buildCatalog(list, ['passing']), { statuses: ['passing'], domain: 'localhost', env: {} });
    return { out, job, checks: () => count('checks'), reloads: () => count('reloads'), input, r: new Renderer({ timeoutMs: 5000, dry: false, out: () => undefined }, silentLogger()) };
  }

  it('sends the commands before the file is written, and checks only lines of a new shape', async () => {
    const t = setup(SLOTS);
    expect((await t.r.run([t.job], t.input(inst(1)))).reloads).toHaveLength(1);
    expect([t.checks(), t.reloads()]).toEqual([1, 1]);
    // What the file held when HAProxy got the change.
    const fileAt: string[] = [];
    onCommand = (cmd) => {
      if (cmd.includes('addr')) fileAt.push(readFileSync(t.out, 'utf8'));
    };
    try {
      const r = await t.r.run([t.job], t.input(inst(1), inst(2)));
      expect(r).toMatchObject({ ok: true, reloads: [], runtime: 5 });
      expect(fileAt).toHaveLength(1);
      expect(fileAt[0]).not.toContain('127.0.0.1:2 ');
      expect(readFileSync(t.out, 'utf8')).toContain('server s1 127.0.0.1:2 check weight 1');
      // Both line shapes (a free slot, an instance) passed the check with the first file.
      expect(t.checks()).toBe(1);
      // A weight and an IPv6 address are values of the same shape.
      expect((await t.r.run([t.job], t.input(inst(1, { meta: { weight: '2' } }), inst(2, { address: '::1' })))).reloads).toEqual([]);
      expect(readFileSync(t.out, 'utf8')).toContain('server s1 [::1]:2 check weight 1');
      expect([t.checks(), t.reloads()]).toEqual([1, 1]);
    } finally {
      onCommand = () => undefined;
    }
  });

  it('checks slot lines that carry other catalog data; a refused file after the commands makes the next run reload without the instance', async () => {
    const t = setup(withIds(SLOTS));
    await t.r.run([t.job], t.input(inst(1)));
    expect((await t.r.run([t.job], t.input(inst(1), inst(2)))).reloads).toEqual([]);
    expect([t.checks(), t.reloads()]).toEqual([2, 1]);
    // HAProxy takes the commands, then the check refuses the file: the live file is kept.
    const bad = inst(3, { id: 'bad' });
    const refused = await t.r.run([t.job], t.input(inst(1), inst(2), bad));
    expect(refused).toMatchObject({ ok: false, retry: true, runtime: 5, reloads: [] });
    expect(readFileSync(t.out, 'utf8')).not.toContain('# bad');
    // The retry reloads from a checked file, without the refused instance.
    const again = await t.r.run([t.job], t.input(inst(1), inst(2), bad));
    expect(again).toMatchObject({ ok: true, reloads: [{ ok: true }] });
    expect(again.dropped).toMatchObject([{ instance: 'bad' }]);
    expect(t.reloads()).toBe(2);
    expect(readFileSync(t.out, 'utf8')).not.toContain('# bad');
  });

  it('counts the changes applied at runtime, and the fallbacks to a reload', async () => {
    const value = async (m: { get(): Promise<{ values: { value: number; labels: Record<string, unknown> }[] }> }, dest: string) =>
      (await m.get()).values.find((v) => v.labels.template === dest)?.value ?? 0;
    const ok = setup(SLOTS);
    await ok.r.run([ok.job], ok.input(inst(1)));
    await ok.r.run([ok.job], ok.input(inst(1), inst(2)));
    await ok.r.run([ok.job], ok.input(inst(2)));
    expect(await value(metrics.runtimeApplied, ok.out)).toBe(2);
    expect(await value(metrics.runtimeCommands, ok.out)).toBe(6);
    expect(await value(metrics.runtimeFallbacks, ok.out)).toBe(0);
    const dead = setup(SLOTS, join(dir, 'missing.sock'));
    await dead.r.run([dead.job], dead.input(inst(1)));
    const r = await dead.r.run([dead.job], dead.input(inst(1), inst(2)));
    // Checked (a fallback never skips the check), written and reloaded.
    expect(r).toMatchObject({ ok: true, reloads: [{ ok: true }] });
    expect([dead.checks(), dead.reloads()]).toEqual([2, 2]);
    expect(readFileSync(dead.out, 'utf8')).toContain('server s1 127.0.0.1:2 check weight 1');
    expect(await value(metrics.runtimeApplied, dead.out)).toBe(0);
    expect(await value(metrics.runtimeFallbacks, dead.out)).toBe(1);
  });
});
