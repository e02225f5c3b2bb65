import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { Catalog } from '../../catalog/catalog.js';
import type { ServiceInstance } from '../../model/service-instance.js';
import { templateData } from '../template-data.js';
import { compileTemplate } from '../template-file.js';
import { assignSlots, keepUnchangedState, MIN_SLOTS, planSlots, type SlotTable, withSlots } from './slot-planner.js';

const inst = (name: string, port: number, over: Partial<ServiceInstance> = {}): ServiceInstance => ({
  id: `h:${name}:${port}`, name, address: '127.0.0.1', port, protocol: 'tcp', tags: [], meta: {}, host: 'h', status: 'passing', ...over,
});

const data = (...instances: ServiceInstance[]) => {
  const names = [...new Set(instances.map((i) => i.name))].sort();
  const catalog: Catalog = {
    services: names.map((name) => ({ name, tags: [], instances: instances.filter((i) => i.name === name) })),
    fingerprint: JSON.stringify(instances),
  };
  return templateData(catalog, { statuses: ['passing'], domain: 'localhost', env: {} });
};

const first = (...i: ServiceInstance[]): SlotTable => planSlots(undefined, data(...i)).table;

describe('assignSlots', () => {
  it('keeps instances in their slots and fills the lowest free one', () => {
    const a = { id: 'a', address: '127.0.0.1', port: 1, weight: 1 };
    const b = { id: 'b', address: '127.0.0.1', port: 2, weight: 1 };
    const c = { id: 'c', address: '127.0.0.1', port: 3, weight: 1 };
    expect(assignSlots([null, b, a], [a, c], 3)).toEqual([c, null, a]);
    expect(assignSlots([a, b], [a, b, c], 2)).toBeNull();
  });
});

describe('planSlots', () => {
  it('sizes a new backend max(8, 2 × instances) and loads it', () => {
    const p = planSlots(undefined, data(inst('web', 1001), inst('web', 1002)));
    expect(p.reload).toBe(true);
    expect(p.table.backends.get('web')).toHaveLength(MIN_SLOTS);
    const many = Array.from({ length: 5 }, (_, n) => inst('web', 2000 + n));
    expect(planSlots(undefined, data(...many)).table.backends.get('web')).toHaveLength(10);
  });

  it('adds an instance through the runtime API, in the lowest free slot', () => {
    const prev = first(inst('web', 1001));
    const p = planSlots(prev, data(inst('web', 1001), inst('web', 1002)));
    expect(p.reload).toBe(false);
    if (p.reload) return;
    expect(p.sequences).toEqual([
      [
        ['set server web/s1 addr 127.0.0.1 port 1002', 'set weight web/s1 1'],
        ['set server web/s1 health up', 'enable health web/s1', 'set server web/s1 state ready'],
      ],
    ]);
  });

  it('puts a removed instance in maintenance and moves a changed port', () => {
    const prev = first(inst('web', 1001), inst('web', 1002));
    const p = planSlots(prev, data(inst('web', 1002)));
    expect(p).toMatchObject({ reload: false, sequences: [[['set server web/s0 state maint']]] });
    const moved = planSlots(prev, data(inst('web', 1001), inst('web', 1002, { id: 'h:web:1001-b', port: 1003 })));
    expect(moved.reload).toBe(false);
    if (moved.reload) return;
    // Out of service before the new address is set; back in service only once it took.
    expect(moved.sequences[0][0]).toEqual(['set server web/s1 state maint', 'set server web/s1 addr 127.0.0.1 port 1003', 'set weight web/s1 1']);
    expect(moved.sequences[0][1]).toContain('set server web/s1 state ready');
  });

  it('drains with weight 0 and changes only the weight', () => {
    const prev = first(inst('web', 1001), inst('web', 1002));
    const p = planSlots(prev, data(inst('web', 1001, { meta: { weight: '0' } }), inst('web', 1002)));
    expect(p).toMatchObject({ reload: false, sequences: [[['set weight web/s0 0']]] });
  });

  it('changes nothing for an equal catalog', () => {
    const prev = first(inst('web', 1001));
    expect(planSlots(prev, data(inst('web', 1001)))).toMatchObject({ reload: false, sequences: [] });
  });

  it('reloads when a backend appears, and keeps the slots of the others', () => {
    const prev = first(inst('web', 1001));
    const p = planSlots(prev, data(inst('web', 1001), inst('api', 3001)));
    expect(p).toMatchObject({ reload: true, reason: 'backends or routes changed' });
    expect(p.table.backends.get('web')![0]).toMatchObject({ port: 1001 });
    expect(p.table.backends.get('api')).toHaveLength(MIN_SLOTS);
  });

  it('reloads with twice the slots when a backend runs out', () => {
    const four = Array.from({ length: 4 }, (_, n) => inst('web', 1000 + n));
    const five = Array.from({ length: 5 }, (_, n) => inst('web', 1100 + n));
    const prev = first(...four);
    const p = planSlots(prev, data(...four, ...five));
    expect(p).toMatchObject({ reload: true, reason: 'backend web has no free slot' });
    expect(p.table.backends.get('web')).toHaveLength(18);
    expect(p.table.backends.get('web')!.slice(0, 4)).toEqual(prev.backends.get('web')!.slice(0, 4));
  });

  it('reloads for an instance with a host name address (HAProxy 2.6 sets only IPs at runtime)', () => {
    const prev = first(inst('web', 1001));
    expect(planSlots(prev, data(inst('web', 1001), inst('web', 1002, { address: 'app.internal' })))).toMatchObject({ reload: true });
  });
});

describe('withSlots', () => {
  it('gives every upstream its slots, free ones as null', () => {
    const d = data(inst('web', 1001));
    const t = withSlots(d, planSlots(undefined, d).table, '/tmp/state');
    expect(t.upstreams[0].slots[0]).toMatchObject({ name: 's0', instance: { port: 1001 } });
    expect(t.upstreams[0].slots[7]).toEqual({ name: 's7', instance: null });
  });
});

describe('keepUnchangedState', () => {
  it('drops the state of servers whose instance changed', () => {
    const prev = first(inst('web', 1001), inst('web', 1002));
    const next = planSlots(prev, data(inst('web', 1001), inst('api', 3001))).table;
    const dump = ['1', '# be_id be_name srv_id srv_name srv_addr', '3 web 1 s0 127.0.0.1 2', '3 web 2 s1 127.0.0.1 2', '3 web 3 s2 127.0.0.1 0', ''].join('\n');
    expect(keepUnchangedState(dump, prev, next)).toBe(['1', '# be_id be_name srv_id srv_name srv_addr', '3 web 1 s0 127.0.0.1 2', '3 web 3 s2 127.0.0.1 0', ''].join('\n'));
  });
});

describe('the shipped HAProxy template', () => {
  const template = compileTemplate('haproxy.cfg.hbs', readFileSync(fileURLToPath(new URL('../../../templates/haproxy.cfg.hbs', import.meta.url)), 'utf8'));

  it('writes slots, free ones disabled, and the server-state file in runtime mode', () => {
    const d = data(inst('web', 1001), inst('web', 1002, { address: '::1', meta: { weight: '0' } }));
    const text = template.render(withSlots(d, planSlots(undefined, d).table, '/run/hm-state'));
    expect(text).toContain('    server-state-file /run/hm-state\n');
    expect(text).toContain('    load-server-state-from-file global\n');
    expect(text).toContain('    server s0 127.0.0.1:1001 check weight 1\n    server s1 [::1]:1002 check weight 0\n    server s2 127.0.0.1:1 check disabled\n');
    expect(text).toContain('    server s7 127.0.0.1:1 check disabled\n');
  });

  it('writes neither without runtime mode', () => {
    const text = template.render(data(inst('web', 1001)));
    expect(text).not.toMatch(/server-state|disabled/);
    expect(text).toContain('    server s0 127.0.0.1:1001 check\n');
  });
});
