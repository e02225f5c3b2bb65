import { describe, expect, it } from 'vitest';
import { isHostname } from './net.js';

describe('isHostname', () => {
  it('refuses numbers in disguise that nginx, HAProxy and Node read as different addresses', () => {
    const numeric = ['127.0.0.010', '0127.0.0.1', '0x7f.1', '0X7F.0.0.1', '2130706433', '10.1', 'a.0x', 'host.123'];
    const names = ['localhost', 'web-1.internal', 'a1.b2', '0x7f.example', '127.0.0.1x', 'node_1.svc'];
    console.log(`PROBE isHostname: refused ${numeric.filter((n) => !isHostname(n)).join(' ')}; accepted ${names.filter(isHostname).join(' ')}`);
    for (const n of numeric) expect(isHostname(n), n).toBe(false);
    for (const n of names) expect(isHostname(n), n).toBe(true);
  });
});
