import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { REFUSED_TARGET_SOURCE, refusedPath, routingPath } from './path-rule.js';

const refused = [
  '/admin/..#x', '/admin#x',
  '/x/../api/y', '/api//../admin', '/api/..%2fadmin', '/api/..;/admin', '/api/../admin', '/api/.', '/api/..', '/./api',
  '/api//x', '//api', '/api/%2e%2e/admin', '/api/%2E./admin', '/api%2Fadmin', '/api%5cadmin', '/api\\..\\admin', '/api/%00', '/api/%zz', '/api/%4',
  '/api/.;x/y',
  '/admin;x/users', '/api;v=1/x', '/admin%3bx/users', '/admin%3Bx', '/api/..%3b/admin', '/api/%c0%ae%c0%ae/admin', '/api/%C0%AF', '/api/%e0%80%ae',
  '/api/%f0%80%80%ae', '/api/..%20/admin', '/api/.%09', '/x;',
];
const allowed = ['/', '/api', '/api/', '/api/x', '/api/.well-known', '/api/..x', '/api/x..', '/api/a.b/c', '/caf%C3%A9', '/%61pi/x', '/a/...', '/api/..%20x', '/caf%E0%A4%A4', '/%C3%A9t%C3%A9'];

describe('the path rule', () => {
  it.each(refused)('refuses %s', (p) => {
    expect(refusedPath(p)).toBeDefined();
    expect(new RegExp(REFUSED_TARGET_SOURCE).test(`${p}?q=1`)).toBe(true);
  });
  it.each(allowed)('routes %s', (p) => {
    expect(refusedPath(p)).toBeUndefined();
    expect(new RegExp(REFUSED_TARGET_SOURCE).test(`${p}?a=/../b//c%2f`)).toBe(false);
  });

  it('names what it refuses', () => {
    expect(refusedPath('/admin;x/users')).toBe('has a ; (path parameters are not routed)');
    expect(refusedPath('/admin%3Bx/users')).toBe('has a ; (path parameters are not routed)');
    expect(refusedPath('/api/%c0%ae')).toBe('has an overlong UTF-8 encoding');
    expect(refusedPath('/api/%E0%80%AE')).toBe('has an overlong UTF-8 encoding');
    expect(refusedPath('/api/..%20/x')).toBe('has a dot segment');
  });

  it('decodes a path byte by byte for routing', () => {
    expect(routingPath('/%61pi/x')).toBe('/api/x');
    expect(routingPath('/caf%C3%A9')).toBe('/caf\u00c3\u00a9');
  });

  it('for any path it accepts, decoding keeps the segments and yields no dot segment', () => {
    const seg = fc.stringMatching(/^[a-zA-Z0-9._~%;:@\\-]{0,6}$/);
    let accepted = 0;
    fc.assert(
      fc.property(fc.array(fc.oneof(seg, fc.constantFrom('..', '.', '%2e', '%2F', '%5c', '', '%41', '..;x', '%3b', ';', '%c0%ae', '..%20', '%e0%80%af', '%E0%A0%80')), { maxLength: 6 }), (segs) => {
        const path = `/${segs.join('/')}`;
        const why = refusedPath(path);
        // The target pattern (nginx) and the path pattern (HAProxy, proxy) decide alike.
        expect(new RegExp(REFUSED_TARGET_SOURCE).test(`${path}?x`)).toBe(why !== undefined && why !== 'does not start with /');
        if (why) return;
        accepted++;
        const decoded = routingPath(path).split('/');
        expect(decoded.length).toBe(path.split('/').length);
        for (const s of decoded.slice(1, -1)) expect(s === '' || s === '.' || s === '..').toBe(false);
        for (const s of decoded) expect(s.includes(';') || s.trimEnd() === '.' || s.trimEnd() === '..').toBe(false);
      }),
      { numRuns: 2000 },
    );
    expect(accepted).toBeGreaterThan(100);
  });
});
