// Balancer state across routing-table swaps, through compileTable: the exact weighted ratio and
// the rotation survive frequent swaps; a weight written "00" drains like "0".
import { describe, expect, it } from 'vitest';
import { buildCatalog } from '../catalog/catalog.js';
import type { ServiceInstance } from '../model/service-instance.js';
import type { InstanceState } from './balancer.js';
import { compileTable, RoutingTable, type TableOptions } from './route-table.js';

function inst(name: string, port: number, meta: Record<string, string> = {}): ServiceInstance {
  return { id: `h:${name}-${port}:80`, name, address: '127.0.0.1', port, protocol: 'tcp', tags: [], meta, host: 'h', status: 'passing' };
}

const OPTS: TableOptions = { domain: 'localhost', balance: 'round-robin', statuses: ['passing'] };

describe('balancer state across table swaps', () => {
  it('keeps a 3:1 ratio exact with a swap every 3 requests, other services changing meanwhile', () => {
    const states = new Map<string, InstanceState>();
    let t: RoutingTable = RoutingTable.EMPTY;
    const counts: Record<number, number> = {};
    for (let i = 0; i < 400; i++) {
      if (i % 3 === 0) {
        const others = i % 2 ? [inst('other', 9)] : [];
        t = compileTable(buildCatalog([inst('web', 1, { weight: '3' }), inst('web', 2, { weight: '1' }), ...others]), OPTS, states, t);
      }
      const p = t.match('web.localhost', '/')!.balancer.pick(0)!.port;
      counts[p] = (counts[p] ?? 0) + 1;
    }
    expect(counts).toEqual({ 1: 300, 2: 100 });
  });

  it('keeps the least-conn tie rotation going', () => {
    const states = new Map<string, InstanceState>();
    let t: RoutingTable = RoutingTable.EMPTY;
    const seq: number[] = [];
    for (let i = 0; i < 6; i++) {
      t = compileTable(buildCatalog([inst('web', 1), inst('web', 2), inst('web', 3)]), { ...OPTS, balance: 'least-conn' }, states, t);
      seq.push(t.match('web.localhost', '/')!.balancer.pick(0)!.port);
    }
    expect(seq).toEqual([1, 2, 3, 1, 2, 3]);
  });

  it('drains an instance whose weight is "00" or "0", panic included', () => {
    for (const w of ['00', '0', '0000']) {
      const t = compileTable(buildCatalog([inst('web', 1, { weight: w }), inst('web', 2)]), OPTS, new Map());
      const b = t.match('web.localhost', '/')!.balancer;
      expect(b.upstreams.map((u) => u.weight)).toEqual([0, 1]);
      expect(Array.from({ length: 4 }, () => b.pick(0)!.port)).toEqual([2, 2, 2, 2]);
      b.upstreams[1].state.ejectedUntil = 10;
      expect(b.pick(0)!.port).toBe(2);
    }
  });
});
