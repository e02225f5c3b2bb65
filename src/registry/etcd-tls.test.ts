import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { etcdAuthOptions, etcdTlsOptions } from './etcd-backend.js';
import { UsageError } from './types.js';
import { parseRegistryUri } from './uri.js';

const dir = mkdtempSync(join(tmpdir(), 'hm-etcd-tls-'));
const file = (name: string, text: string) => {
  writeFileSync(join(dir, name), text);
  return join(dir, name);
};
const ca = file('ca.pem', 'CA');
const cert = file('client.pem', 'CERT');
const key = file('client-key.pem', 'KEY');
const tls = parseRegistryUri('etcd-tls://e1:2379,e2:2379/harbormaster') as { endpoints: string[] };
const plain = parseRegistryUri('etcd://e1:2379/harbormaster') as { endpoints: string[] };

function refusal(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a refusal');
}

describe('etcdTlsOptions: ETCDCTL_CACERT / ETCDCTL_CERT / ETCDCTL_KEY, as etcdctl reads them', () => {
  it('reads all three files into the client credentials for https endpoints', () => {
    const { credentials } = etcdTlsOptions(tls, { ETCDCTL_CACERT: ca, ETCDCTL_CERT: cert, ETCDCTL_KEY: key });
    expect(credentials?.rootCertificate?.toString()).toBe('CA');
    expect(credentials?.certChain?.toString()).toBe('CERT');
    expect(credentials?.privateKey?.toString()).toBe('KEY');
  });

  it('a CA alone (server verified, no client certificate)', () => {
    const { credentials } = etcdTlsOptions(tls, { ETCDCTL_CACERT: ca });
    expect(credentials?.rootCertificate?.toString()).toBe('CA');
    expect(credentials?.certChain).toBeUndefined();
    expect(credentials?.privateKey).toBeUndefined();
  });

  it('plain etcd:// takes no TLS, whatever the environment says', () => {
    expect(etcdTlsOptions(plain, { ETCDCTL_CACERT: ca, ETCDCTL_CERT: cert, ETCDCTL_KEY: key })).toEqual({});
  });

  it('an unreadable file is one usage error naming the variable and the file', () => {
    const err = refusal(() => etcdTlsOptions(tls, { ETCDCTL_CACERT: ca, ETCDCTL_CERT: join(dir, 'missing.pem'), ETCDCTL_KEY: key }));
    expect(err).toBeInstanceOf(UsageError);
    expect(err.message).toBe(`ETCDCTL_CERT=${join(dir, 'missing.pem')}: cannot read it (ENOENT)`);
    expect(err.message).not.toContain('\n');
  });

  it('a certificate without its key (or the reverse) is refused', () => {
    expect(refusal(() => etcdTlsOptions(tls, { ETCDCTL_CERT: cert })).message).toContain('ETCDCTL_CERT and ETCDCTL_KEY go together (only ETCDCTL_CERT is set)');
    expect(refusal(() => etcdTlsOptions(tls, { ETCDCTL_KEY: key })).message).toContain('only ETCDCTL_KEY is set');
  });

  it("drops only Node's warning about an IP as TLS server name (grpc-js sets it for IP endpoints)", async () => {
    etcdTlsOptions(parseRegistryUri('etcd-tls://127.0.0.1:2379/x') as { endpoints: string[] }, { ETCDCTL_CACERT: ca });
    const seen: string[] = [];
    const listener = (w: Error & { code?: string }) => seen.push(w.code ?? '');
    process.on('warning', listener);
    try {
      process.emitWarning('Setting the TLS ServerName to an IP address is not permitted by RFC 6066.', 'DeprecationWarning', 'DEP0123');
      process.emitWarning('something else', { type: 'DeprecationWarning', code: 'DEP9999' });
      await new Promise((r) => setTimeout(r, 20));
    } finally {
      process.off('warning', listener);
    }
    expect(seen).toEqual(['DEP9999']);
  });

  it('user and password come from ETCDCTL_USER alongside', () => {
    expect(etcdAuthOptions({ ETCDCTL_USER: 'harbormaster:s3:cret' })).toEqual({ auth: { username: 'harbormaster', password: 's3:cret' } });
  });
});
