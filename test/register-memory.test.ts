// The sidecar's memory at scale: `register --docker off --services-dir` with 2,500 services (one
// host's share of 5,000) on the real etcd. A burst of registrations grows V8's heap far past what
// the registrations keep; once the burst is over the registrator gives it back, so its resident
// memory stays under 150 MB (before the heap trim: ~160 MB, with ~30 MB of live heap).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Hm } from './support/harbormaster.js';
import { etcdRead, ETCD_ENDPOINT } from './support/registries.js';
import { uniq, waitFor } from './support/wait.js';

const N = 2_500;
const LIMIT = 150e6;
const dir = mkdtempSync(join(tmpdir(), 'hm-regmem-'));
let reg: Hm | undefined;
afterAll(async () => {
  await reg?.stop('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
});

const rss = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;

describe('registrator memory', () => {
  it(`stays under 150 MB resident with ${N.toLocaleString('en')} services once they are registered`, async () => {
    for (let f = 0; f < N / 100; f++) {
      const services = Array.from({ length: 100 }, (_, i) => ({ name: `mem-${Math.floor((f * 100 + i) / 10)}`, id: `m${f * 100 + i}`, address: '127.0.0.1', port: 20000 + f * 100 + i }));
      writeFileSync(join(dir, `f${f}.json`), JSON.stringify({ services }));
    }
    const host = uniq('regmem');
    const prefix = `/${uniq('regmem')}`;
    reg = new Hm(['register', '--docker', 'off', '--services-dir', dir, '--hostname', host, `etcd://${ETCD_ENDPOINT}${prefix}`]);
    const registered = () => reg!.logs.filter((l) => l.event === 'registered').length;
    await waitFor(`${N} registered`, () => registered() === N, 180_000, 200).catch((err: Error) => {
      throw new Error(`${err.message} (${registered()} so far)\n${reg!.dump().slice(-3000)}`);
    });
    expect(Object.keys(await etcdRead(prefix)).length).toBe(N);
    const atBurst = rss(reg.pid);
    // The heap is looked at every 10 s once the registrar is idle: measured after one look.
    await new Promise((r) => setTimeout(r, 12_000));
    let settled = atBurst;
    await waitFor('resident memory under 150 MB', () => (settled = rss(reg!.pid)) < LIMIT, 60_000, 500).catch(() => undefined);
    console.log(`PROBE registrator RSS with ${N} services: ${(atBurst / 1e6).toFixed(0)} MB right after registering, ${(settled / 1e6).toFixed(0)} MB once idle (limit 150 MB)`);
    expect(settled).toBeLessThan(LIMIT);
  }, 300_000);
});
