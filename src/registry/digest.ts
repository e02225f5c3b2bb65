// A short digest of everything a registration holds, written beside it, so that a resync can
// tell "already there, unchanged" from "must be written" without reading other hosts' entries
// or comparing field by field.
import { createHash } from 'node:crypto';
import { instanceFingerprint, type ServiceInstance } from '../model/service-instance.js';

/** `extra` folds in backend settings that shape the record (e.g. Consul's TTL check). */
export function instanceDigest(instance: ServiceInstance, extra = ''): string {
  return createHash('sha1').update(instanceFingerprint(instance)).update('\0').update(extra).digest('base64url').slice(0, 16);
}
