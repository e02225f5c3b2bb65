// Write order of the v2 backend (no transactions): whatever write a crash cuts off, no data key
// is ever left that the host's index does not name.
import { describe, expect, it } from 'vitest';
import { Etcd2Backend } from './etcd2-backend.js';
import type { ServiceInstance } from '../model/service-instance.js';

const inst: ServiceInstance = {
  id: 'h:web:80', name: 'web', address: '127.0.0.1', port: 8080, protocol: 'tcp', tags: [], meta: {}, host: 'h', status: 'passing',
} as unknown as ServiceInstance;

function fakeClient(existing: Set<string>) {
  const writes: string[] = [];
  const set = (key: string, _v: string | null, opts: Record<string, unknown>, cb: (e: unknown, b: unknown) => void) => {
    if (opts.prevExist === false && existing.has(key)) setImmediate(() => cb(Object.assign(new Error('Key already exists'), { errorCode: 105 }), undefined));
    else {
      existing.add(key);
      writes.push(key);
      setImmediate(() => cb(null, {}));
    }
    return { abort() {} };
  };
  return { writes, client: { set, get: set, del: set } };
}

describe('Etcd2Backend.register', () => {
  it('writes a new id\'s index entry (unconfirmed) before its data key, and confirms it last', async () => {
    const b = new Etcd2Backend({ endpoints: ['http://127.0.0.1:1'], prefix: '/p' }, { ttl: 0, host: 'h' });
    const f = fakeClient(new Set());
    (b as unknown as { client: unknown }).client = f.client;
    await b.register(inst);
    const index = '/p/_hosts/h/h%3Aweb%3A80';
    expect(f.writes).toEqual(['/p/_hosts/h', index, '/p/web/h%3Aweb%3A80', index]);
  });

  it('on an update keeps the old digest in the index until the new data is written', async () => {
    const b = new Etcd2Backend({ endpoints: ['http://127.0.0.1:1'], prefix: '/p' }, { ttl: 0, host: 'h' });
    const f = fakeClient(new Set(['/p/_hosts/h', '/p/_hosts/h/h%3Aweb%3A80']));
    (b as unknown as { client: unknown }).client = f.client;
    await b.register(inst);
    expect(f.writes).toEqual(['/p/web/h%3Aweb%3A80', '/p/_hosts/h/h%3Aweb%3A80']);
  });
});
