import { describe, expect, it } from 'vitest';
import { isUnknown } from './consul-backend.js';
import { ConsulHttpError } from './consul-http.js';

describe('isUnknown: what counts as "Consul does not hold it"', () => {
  it.each([
    ['404 of a recent agent', 'PUT /agent/check/pass/harbormaster-ttl%3Ax: 404 Unknown check ID "harbormaster-ttl:x"', 404],
    ['1.8 pass of an unknown check', 'PUT /agent/check/pass/harbormaster-ttl%3Ax: 500 CheckID "harbormaster-ttl:x" does not have associated TTL', 500],
    ['1.x deregister of an unknown service', 'PUT /agent/service/deregister/x: 500 Unknown service ID "x"', 500],
    ['1.8 with ACLs: pass of an unknown check', 'PUT /agent/check/pass/harbormaster-host%3Ah: 500 Unknown check "harbormaster-host:h"', 500],
    ['1.8 with ACLs: deregister of an unknown service', 'PUT /agent/service/deregister/x: 500 Unknown service {"x" {}}', 500],
  ])('%s', (_what, message, status) => {
    expect(isUnknown(new ConsulHttpError(message, status))).toBe(true);
  });

  it.each([
    ['a token that is gone', 'PUT /agent/service/deregister/x: 403 ACL not found', 403],
    ['a policy that is gone', 'PUT /agent/service/deregister/x: 403 Permission denied', 403],
    ['a rate limit', 'PUT /agent/check/pass/x: 429 rate limit exceeded', 429],
    ['another server error', 'PUT /agent/check/pass/x: 500 rpc error: No cluster leader', 500],
    ['an id that looks like the words', 'PUT /agent/service/deregister/not%20found: 500 No cluster leader', 500],
  ])('not %s', (_what, message, status) => {
    expect(isUnknown(new ConsulHttpError(message, status))).toBe(false);
  });

  it('not an error without an answer', () => {
    expect(isUnknown(new Error('PUT /agent/service/deregister/x: no answer (timed out)'))).toBe(false);
  });
});
