import { EtcdLeaseInvalidError, EtcdPermissionDeniedError, GRPCInvalidArgumentError, GRPCResourceExhastedError, GRPCUnavailableError } from 'etcd3';
import { describe, expect, it } from 'vitest';
import { classifyEtcdError, keepaliveTryMs } from './etcd-backend.js';
import { failureKind } from './types.js';

const kind = (err: unknown) => failureKind(classifyEtcdError('etcd txn', err));

describe('classifyEtcdError', () => {
  it('a request too large is rejected for what it is', () => {
    expect(kind(new GRPCInvalidArgumentError('etcdserver: request is too large'))).toBe('rejected');
    expect(kind(Object.assign(new Error('3 INVALID_ARGUMENT: etcdserver: request is too large'), { code: 3 }))).toBe('rejected');
  });

  it('permission and auth errors are refusals (etcd3 casts them to plain Error subclasses)', () => {
    expect(kind(new EtcdPermissionDeniedError('etcdserver: permission denied'))).toBe('refusing');
    expect(kind(Object.assign(new Error('7 PERMISSION_DENIED'), { code: 7 }))).toBe('refusing');
    expect(kind(Object.assign(new Error('8 RESOURCE_EXHAUSTED: quota'), { code: 8 }))).toBe('refusing');
    // What the client really throws for NOSPACE: its own class, without the code, counted as recoverable by the client.
    expect(kind(new GRPCResourceExhastedError('etcdserver: mvcc: database space exceeded'))).toBe('refusing');
  });

  it('no answer is unreachable', () => {
    expect(kind(new GRPCUnavailableError('14 UNAVAILABLE: No connection established'))).toBe('unreachable');
    expect(kind(new Error('etcd txn timed out after 5500 ms'))).toBe('unreachable');
    expect(kind(Object.assign(new Error('4 DEADLINE_EXCEEDED'), { code: 4 }))).toBe('unreachable');
  });

  it('an expired lease passes through for the backend to handle', () => {
    const err = new EtcdLeaseInvalidError('123');
    expect(classifyEtcdError('etcd txn', err)).toBe(err);
  });
});

describe('keepaliveTryMs', () => {
  it('a third of the TTL while another member is left, the whole call timeout for the last try and for a single endpoint', () => {
    // One endpoint (the common case): nowhere else to go, so a slow keepalive is waited for.
    expect(keepaliveTryMs(3, 1, 1)).toBe(5_000);
    expect(keepaliveTryMs(30, 1, 1)).toBe(5_000);
    // Three members: the first two tries are cut short so that a dead member costs little.
    expect(keepaliveTryMs(3, 3, 1)).toBe(1_000);
    expect(keepaliveTryMs(3, 3, 2)).toBe(1_000);
    expect(keepaliveTryMs(1, 3, 1)).toBe(500);
    expect(keepaliveTryMs(3, 3, 3)).toBe(5_000);
  });
});
