import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { REFUSED_DECODED_SOURCE, REFUSED_TARGET_SOURCE, refusedPath, routingPath } from './path-rule.js';

/** What the nginx template refuses: the target as received ($request_uri), then its path decoded once ($uri). */
const nginxRefuses = (target: string): boolean => new RegExp(REFUSED_TARGET_SOURCE).test(target) || new RegExp(REFUSED_DECODED_SOURCE).test(routingPath(target.split('?')[0]));

const refused = [
  '/admin/..#x', '/admin#x',
  '/x/../api/y', '/api//../admin', '/api/..%2fadmin', '/api/..;/admin', '/api/../admin', '/api/.', '/api/..', '/./api',
  '/api//x', '//api', '/api/%2e%2e/admin', '/api/%2E./admin', '/api%2Fadmin', '/api%5cadmin', '/api\\..\\admin', '/api/%00', '/api/%zz', '/api/%4',
  '/api/.;x/y',
  '/admin;x/users', '/api;v=1/x', '/admin%3bx/users', '/admin%3Bx', '/api/..%3b/admin', '/api/%c0%ae%c0%ae/admin', '/api/%C0%AF', '/api/%e0%80%ae',
  '/api/%f0%80%80%ae', '/api/..%20/admin', '/api/.%09', '/x;',
  '/api/..%0d/admin', '/api/.%0a/admin', '/api/%20../admin', '/api/%09%20./x', '/api/..%7f', '/api/%c2%a0../x', '/api/..%C2%85/x',
  '/api/%252e%252e/admin', '/api/%252F', '/api/%255c', '/api/%2500', '/api/%253b', '/api/%25c0%25ae', '/api/%2525252e',
  '/api/%25%32%65%25%32%65/admin', '/api/%252%65%252%65/admin', '/api/%2520../admin', '/api/%25%32%46', '/api/%25252e', '/api/..%2509/x', '/api/%25%35c',
];
const allowed = ['/', '/api', '/api/', '/api/x', '/api/.well-known', '/api/..x', '/api/x..', '/api/a.b/c', '/caf%C3%A9', '/%61pi/x', '/a/...', '/api/..%20x', '/caf%E0%A4%A4', '/%C3%A9t%C3%A9', '/api/%2541', '/api/%25', '/files/100%25', '/files/100%2525', '/files/100%25%20off', '/api/%252541', '/a%20b/c', '/api/%20x', '/api/x%0d', '/api/%c2%a0'];

describe('the path rule', () => {
  it.each(refused)('refuses %s', (p) => {
    expect(refusedPath(p)).toBeDefined();
    expect(nginxRefuses(`${p}?q=1`)).toBe(true);
  });
  it.each(allowed)('routes %s', (p) => {
    expect(refusedPath(p)).toBeUndefined();
    expect(nginxRefuses(`${p}?a=/../b//c%2f%252e`)).toBe(false);
  });

  it('names what it refuses', () => {
    expect(refusedPath('/admin;x/users')).toBe('has a ; (path parameters are not routed)');
    expect(refusedPath('/admin%3Bx/users')).toBe('has a ; (path parameters are not routed)');
    expect(refusedPath('/api/%c0%ae')).toBe('has an overlong UTF-8 encoding');
    expect(refusedPath('/api/%E0%80%AE')).toBe('has an overlong UTF-8 encoding');
    expect(refusedPath('/api/..%20/x')).toBe('has a dot segment');
    expect(refusedPath('/api/%20../x')).toBe('has a dot segment');
    expect(refusedPath('/api/%252e%252e/x')).toBe('has a double percent-encoding');
    expect(refusedPath('/api/%25%32%65%25%32%65/x')).toBe('has a double percent-encoding');
    expect(refusedPath('/api/%2520../x')).toBe('has a double percent-encoding');
  });

  it('decodes a path byte by byte for routing', () => {
    expect(routingPath('/%61pi/x')).toBe('/api/x');
    expect(routingPath('/caf%C3%A9')).toBe('/caf\u00c3\u00a9');
  });

  it('for any path it accepts, decoding keeps the segments and yields no dot segment', () => {
    const seg = fc.stringMatching(/^[a-zA-Z0-9._~%;:@\\-]{0,6}$/);
    let accepted = 0;
    fc.assert(
      fc.property(fc.array(fc.oneof(seg, fc.constantFrom('..', '.', '%2e', '%2F', '%5c', '', '%41', '..;x', '%3b', ';', '%c0%ae', '..%20', '%e0%80%af', '%E0%A0%80', '%20..', '..%0d', '.%0a', '%252e', '%2525', '%2541', '%c2%a0.', '%25%32%65', '%252%65', '%2520..', '%25%2e', '%25%25', '%2532e')), { maxLength: 6 }), (segs) => {
        const path = `/${segs.join('/')}`;
        const why = refusedPath(path);
        // The target pattern (nginx) and the path pattern (HAProxy, proxy) decide alike.
        expect(nginxRefuses(`${path}?x`)).toBe(why !== undefined && why !== 'does not start with /');
        if (why) return;
        accepted++;
        const decoded = routingPath(path).split('/');
        expect(decoded.length).toBe(path.split('/').length);
        for (const s of decoded.slice(1, -1)) expect(s === '' || s === '.' || s === '..').toBe(false);
        // Trimmed of blanks and control bytes (Java's trim, Python's strip), or decoded a second time, still no dot segment.
        for (const s of decoded) expect(s.includes(';') || /^[\x00-\x20\x7f\u0085\u00a0\u00c2]*\.\.?[\x00-\x20\x7f\u0085\u00a0\u00c2]*$/.test(s)).toBe(false);
        // Decoded twice or three times, then trimmed: still the same segments, none a dot segment.
        for (const twice of [routingPath(routingPath(path)), routingPath(routingPath(routingPath(path)))]) {
          expect(twice.split('/').length).toBe(path.split('/').length);
          for (const s of twice.split('/')) expect(/^[\x00-\x20\x7f\u0085\u00a0\u00c2]*\.\.?[\x00-\x20\x7f\u0085\u00a0\u00c2]*$/.test(s) || s.includes(';') || s.includes('\\')).toBe(false);
        }
      }),
      { numRuns: 2000 },
    );
    expect(accepted).toBeGreaterThan(100);
  });
});
