import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { consulConnection } from './consul-http.js';
import { etcdAuthOptions, etcdTlsOptions } from './etcd-backend.js';
import { UsageError } from './types.js';
import { parseRegistryUri } from './uri.js';

const dir = mkdtempSync(join(tmpdir(), 'hm-etcd-tls-'));
const file = (name: string, text: string) => {
  writeFileSync(join(dir, name), text);
  return join(dir, name);
};
// Real PEM: the files are checked when read. One self-signed certificate serves as CA and client.
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=harbormaster', '-keyout', join(dir, 'client-key.pem'), '-out', join(dir, 'client.pem')], { stdio: 'ignore' });
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=other', '-keyout', join(dir, 'other-key.pem'), '-out', join(dir, 'other.pem')], { stdio: 'ignore' });
const ca = file('ca.pem', readFileSync(join(dir, 'client.pem'), 'utf8'));
const cert = join(dir, 'client.pem');
const key = join(dir, 'client-key.pem');
const PEM = (f: string) => readFileSync(f, 'utf8');
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
    expect(credentials?.rootCertificate?.toString()).toBe(PEM(ca));
    expect(credentials?.certChain?.toString()).toBe(PEM(cert));
    expect(credentials?.privateKey?.toString()).toBe(PEM(key));
  });

  it('a CA alone (server verified, no client certificate)', () => {
    const { credentials } = etcdTlsOptions(tls, { ETCDCTL_CACERT: ca });
    expect(credentials?.rootCertificate?.toString()).toBe(PEM(ca));
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

  it('a file that is not PEM, or a key of another certificate, is one usage error naming the variables, not a crash', () => {
    const junk = file('junk.pem', 'not a certificate\n');
    const bad = refusal(() => etcdTlsOptions(tls, { ETCDCTL_CACERT: junk }));
    expect(bad).toBeInstanceOf(UsageError);
    expect(bad.message).toContain(`ETCDCTL_CACERT=${junk}: not a PEM certificate`);
    const pair = refusal(() => etcdTlsOptions(tls, { ETCDCTL_CACERT: ca, ETCDCTL_CERT: junk, ETCDCTL_KEY: key }));
    expect(pair).toBeInstanceOf(UsageError);
    expect(pair.message).toContain(`ETCDCTL_CERT=${junk}, ETCDCTL_KEY=${key}: not a PEM certificate and its key`);
    const mismatch = refusal(() => etcdTlsOptions(tls, { ETCDCTL_CERT: cert, ETCDCTL_KEY: join(dir, 'other-key.pem') }));
    expect(mismatch).toBeInstanceOf(UsageError);
    expect(mismatch.message).toContain('key values mismatch');
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

describe('consulConnection: CONSUL_CACERT / CONSUL_CLIENT_CERT / CONSUL_CLIENT_KEY are checked as etcd\'s are', () => {
  const target = { host: '127.0.0.1', port: 8501, secure: true };
  it('reads real PEM; refuses a file that is not PEM, or a key of another certificate, in one usage line naming the variables', () => {
    expect(consulConnection(target, { CONSUL_CACERT: ca, CONSUL_CLIENT_CERT: cert, CONSUL_CLIENT_KEY: key }).tls?.cert?.toString()).toBe(PEM(cert));
    const junk = file('consul-junk.pem', 'not a certificate\n');
    const bad = refusal(() => consulConnection(target, { CONSUL_CACERT: junk }));
    expect(bad).toBeInstanceOf(UsageError);
    expect(bad.message).toContain(`CONSUL_CACERT=${junk}: not a PEM certificate`);
    const pair = refusal(() => consulConnection(target, { CONSUL_CLIENT_CERT: cert, CONSUL_CLIENT_KEY: join(dir, 'other-key.pem') }));
    expect(pair).toBeInstanceOf(UsageError);
    expect(pair.message).toContain(`CONSUL_CLIENT_CERT=${cert}, CONSUL_CLIENT_KEY=${join(dir, 'other-key.pem')}: not a PEM certificate and its key`);
    expect(refusal(() => consulConnection(target, { CONSUL_CLIENT_CERT: cert })).message).toContain('only CONSUL_CLIENT_CERT is set');
    // Plain consul:// reads none of it.
    expect(consulConnection({ ...target, secure: false }, { CONSUL_CACERT: junk }).tls).toBeUndefined();
  });
});
