import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { ServiceInstance } from '../model/service-instance.js';
import type { RawWatch, RawWatchHandlers } from './types.js';
import { CatalogWatch } from './watch.js';
import { metrics } from '../metrics/metrics.js';

/** A raw watch driven by hand. */
class ManualWatch implements RawWatch {
  h?: RawWatchHandlers;
  start(h: RawWatchHandlers): void {
    this.h = h;
  }
  async stop(): Promise<void> {}
}

function capture() {
  const lines: Array<{ level: number; msg: string }> = [];
  const log = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _e, cb) => (lines.push(JSON.parse(chunk.toString()) as { level: number; msg: string }), cb()) }));
  return { log, lines };
}

const bad = (id: string): ServiceInstance => ({ id, name: 'Not A Label', address: '127.0.0.1', port: 80, protocol: 'tcp', tags: [], meta: {}, host: 'h', status: 'passing' });

describe('CatalogWatch', () => {
  it('first() fails, instead of waiting for ever, when the watch stops before any snapshot', async () => {
    const w = new CatalogWatch(new ManualWatch(), { log: capture().log });
    const first = w.first();
    await w.stop();
    await expect(first).rejects.toThrow('catalog watch stopped before the first snapshot');
    await expect(w.first()).rejects.toThrow('stopped');
  });

  it('logs each invalid record once, and a recurring one stays known past 10,000 others', () => {
    const raw = new ManualWatch();
    const { log, lines } = capture();
    const w = new CatalogWatch(raw, { log });
    w.start();
    raw.h!.update([bad('keep')]);
    for (let i = 0; i < 10_050; i += 50) {
      raw.h!.update([bad('keep'), ...Array.from({ length: 50 }, (_, j) => bad(`other-${i + j}`))]);
    }
    const keep = lines.filter((l) => l.msg.includes('instance keep:')).length;
    const others = lines.filter((l) => l.msg.includes('instance other-')).length;
    expect(keep).toBe(1);
    expect(others).toBe(10_050);
  });

  it('logs a routine note at debug, others at info', () => {
    const raw = new ManualWatch();
    const { log, lines } = capture();
    new CatalogWatch(raw, { log }).start();
    raw.h!.note('periodic', 'debug');
    raw.h!.note('compacted');
    expect(lines.map((l) => [l.level, l.msg])).toEqual([[20, 'periodic'], [30, 'compacted']]);
  });

  it('counts every failed read in harbormaster_registry_errors_total (op watch), also the ones logged at debug only', async () => {
    const raw = new ManualWatch();
    new CatalogWatch(raw, { log: capture().log }).start();
    const count = async () => (await metrics.registryErrors.get()).values.find((v) => v.labels.op === 'watch')?.value ?? 0;
    const before = await count();
    for (let i = 0; i < 3; i++) raw.h!.error(new Error('etcd watch on /x: TLS: the server refused the client certificate'));
    expect(await count()).toBe(before + 3);
  });
});
