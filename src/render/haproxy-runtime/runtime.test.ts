// HaproxyRuntime against a local unix socket that accepts every command (the real HAProxy is in
// test/render-haproxy-runtime.test.ts): what decides between runtime commands and a reload.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServiceInstance } from '../../model/service-instance.js';
import { templateData } from '../template-data.js';
import { HaproxyRuntime, withoutSlotLines } from './runtime.js';

const dir = mkdtempSync(join(tmpdir(), 'hm-rt-'));
const socket = join(dir, 'admin.sock');
const seen: string[] = [];
let server: net.Server;

beforeAll(async () => {
  server = net.createServer((c) =>
    c.on('data', (d) => {
      const cmd = d.toString().trim();
      seen.push(cmd);
      c.end(cmd === 'show servers state' ? '1\n# be_id be_name srv_id srv_name\n3 web 1 s0 127.0.0.1\n\n' : '\n');
    }),
  );
  await new Promise<void>((r) => server.listen(socket, r));
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

const inst = (port: number): ServiceInstance => ({ id: `i${port}`, name: 'web', address: '127.0.0.1', port, protocol: 'tcp', tags: [], meta: {}, host: 'h', status: 'passing' });
const data = (...ports: number[]) =>
  templateData({ services: [{ name: 'web', tags: [], instances: ports.map(inst) }], fingerprint: String(ports) }, { statuses: ['passing'], domain: 'localhost', env: {} });

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
