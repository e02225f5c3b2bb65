// Secured single-node registries for tests: TLS material made with openssl (a CA, a server
// certificate, client certificates, and a second CA nobody trusts), a Consul agent with ACLs
// (default deny) and HTTPS with verify_incoming, and an etcd 3.4 with client TLS,
// --client-cert-auth and a user whose role may only touch one key prefix.
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AclConsul, Daemon } from './registries.js';

const run = promisify(execFile);

export interface TlsFiles {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  /** CN=harbormaster, signed by the CA. */
  clientCert: string;
  clientKey: string;
  /** CN=root, signed by the CA: the tests' admin identity on etcd. */
  rootCert: string;
  rootKey: string;
  /** A CA nobody trusts, and a client certificate (CN=harbormaster) it signed. */
  otherCa: string;
  otherClientCert: string;
  otherClientKey: string;
  cleanup(): void;
}

/** Make the TLS material (EC P-256 keys: fast) in a temporary folder. */
export function makeTls(): TlsFiles {
  const dir = mkdtempSync(join(tmpdir(), 'hm-tls-'));
  const f = (n: string) => join(dir, n);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const key = (name: string) => ssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', f(name));
  const ca = (name: string, cn: string) => {
    key(`${name}-key.pem`);
    ssl('req', '-x509', '-new', '-key', f(`${name}-key.pem`), '-out', f(`${name}.pem`), '-days', '3', '-subj', `/CN=${cn}`);
  };
  const leaf = (name: string, cn: string, caName: string, ext: string) => {
    key(`${name}-key.pem`);
    ssl('req', '-new', '-key', f(`${name}-key.pem`), '-out', f(`${name}.csr`), '-subj', `/CN=${cn}`);
    writeFileSync(f(`${name}.ext`), ext);
    ssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f(`${caName}.pem`), '-CAkey', f(`${caName}-key.pem`), '-CAcreateserial', '-out', f(`${name}.pem`), '-days', '3', '-extfile', f(`${name}.ext`));
  };
  ca('ca', 'harbormaster test CA');
  ca('other-ca', 'an untrusted CA');
  leaf('server', 'server.dc1.consul', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:server.dc1.consul\nextendedKeyUsage=serverAuth,clientAuth\n');
  leaf('client', 'harbormaster', 'ca', 'extendedKeyUsage=clientAuth\n');
  leaf('root', 'root', 'ca', 'extendedKeyUsage=clientAuth\n');
  leaf('other-client', 'harbormaster', 'other-ca', 'extendedKeyUsage=clientAuth\n');
  return {
    dir,
    ca: f('ca.pem'),
    serverCert: f('server.pem'),
    serverKey: f('server-key.pem'),
    clientCert: f('client.pem'),
    clientKey: f('client-key.pem'),
    rootCert: f('root.pem'),
    rootKey: f('root-key.pem'),
    otherCa: f('other-ca.pem'),
    otherClientCert: f('other-client.pem'),
    otherClientKey: f('other-client-key.pem'),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * A Consul agent with ACLs (default deny) answering HTTPS on `base + 6` with verify_incoming
 * (a client certificate signed by the CA is required). Its plain HTTP port (`base`, loopback)
 * stays for the tests' own reads with the master token.
 */
export class TlsAclConsul extends AclConsul {
  readonly httpsPort: number;
  readonly tlsUri: string;

  constructor(base: number, tls: TlsFiles) {
    super(base, [
      '-hcl', `ports { https = ${base + 6} }`,
      '-hcl', `ca_file = "${tls.ca}"`, '-hcl', `cert_file = "${tls.serverCert}"`, '-hcl', `key_file = "${tls.serverKey}"`,
      '-hcl', 'verify_incoming = true',
    ]);
    this.httpsPort = base + 6;
    this.tlsUri = `consul-tls://127.0.0.1:${base + 6}`;
  }
}

/** The environment harbormaster reads Consul's TLS material and token from. */
export function consulTlsEnv(tls: TlsFiles, token: string, o: { ca?: string; cert?: string; key?: string } = {}): Record<string, string> {
  return { CONSUL_CACERT: o.ca ?? tls.ca, CONSUL_CLIENT_CERT: o.cert ?? tls.clientCert, CONSUL_CLIENT_KEY: o.key ?? tls.clientKey, CONSUL_HTTP_TOKEN: token };
}

/**
 * etcd 3.4 with TLS and --client-cert-auth on `https://127.0.0.1:<base>`, auth enabled: user
 * root (password `rootPassword`), user harbormaster (password `password`) with role
 * harbormaster, readwrite on the key prefix `prefix` only. A plain listener on `base + 2`
 * (loopback) serves the tests' reads as root.
 */
export class TlsEtcd extends Daemon {
  readonly endpoint: string;
  readonly plainEndpoint: string;
  readonly rootPassword = `root-${Math.random().toString(36).slice(2, 12)}`;
  private readonly dir: string;

  constructor(
    base: number,
    private readonly tls: TlsFiles,
    readonly prefix: string,
    readonly password: string,
  ) {
    const dir = mkdtempSync(join(tmpdir(), 'hm-etcd-tls-'));
    const client = `https://127.0.0.1:${base}`;
    const plain = `http://127.0.0.1:${base + 2}`;
    const peer = `http://127.0.0.1:${base + 1}`;
    super(
      'etcd',
      ['--name', 's', '--data-dir', dir, '--listen-client-urls', `${client},${plain}`, '--advertise-client-urls', client, '--listen-peer-urls', peer,
        '--initial-advertise-peer-urls', peer, '--initial-cluster', `s=${peer}`, '--cert-file', tls.serverCert, '--key-file', tls.serverKey,
        '--trusted-ca-file', tls.ca, '--client-cert-auth'],
      async () => (await fetch(`${plain}/health`)).ok,
    );
    this.dir = dir;
    this.endpoint = `127.0.0.1:${base}`;
    this.plainEndpoint = `127.0.0.1:${base + 2}`;
  }

  /** etcdctl as root over TLS (the root certificate; the password once auth is on). */
  async ctl(...args: string[]): Promise<string> {
    const { stdout } = await run('etcdctl', ['--endpoints', `https://${this.endpoint}`, '--cacert', this.tls.ca, '--cert', this.tls.rootCert, '--key', this.tls.rootKey,
      '--user', `root:${this.rootPassword}`, ...args], { env: { ...process.env, ETCDCTL_API: '3' } });
    return stdout;
  }

  /** Users, the prefix-limited role, auth on. */
  async secure(): Promise<void> {
    const plain = async (...args: string[]) => run('etcdctl', ['--endpoints', `https://${this.endpoint}`, '--cacert', this.tls.ca, '--cert', this.tls.rootCert, '--key', this.tls.rootKey, ...args]);
    await plain('user', 'add', 'root', '--new-user-password', this.rootPassword);
    await plain('role', 'add', 'harbormaster');
    await plain('role', 'grant-permission', 'harbormaster', '--prefix=true', 'readwrite', `${this.prefix}/`);
    await plain('user', 'add', 'harbormaster', '--new-user-password', this.password);
    await plain('user', 'grant-role', 'harbormaster', 'harbormaster');
    await plain('auth', 'enable');
  }

  /** etcdctl 3.4 reads a changed password from stdin only. */
  async setPassword(password: string): Promise<void> {
    const args = ['--endpoints', `https://${this.endpoint}`, '--cacert', this.tls.ca, '--cert', this.tls.rootCert, '--key', this.tls.rootKey,
      '--user', `root:${this.rootPassword}`, 'user', 'passwd', 'harbormaster', '--interactive=false'];
    await new Promise<void>((resolve, reject) => {
      const child = execFile('etcdctl', args, (err) => (err ? reject(err) : resolve()));
      child.stdin!.end(`${password}\n`);
    });
  }

  async revokeRole(): Promise<void> {
    await this.ctl('user', 'revoke-role', 'harbormaster', 'harbormaster');
  }

  async grantRole(): Promise<void> {
    await this.ctl('user', 'grant-role', 'harbormaster', 'harbormaster');
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The environment harbormaster reads etcd's TLS material and credentials from. */
export function etcdTlsEnv(tls: TlsFiles, password: string, o: { ca?: string; cert?: string; key?: string } = {}): Record<string, string> {
  return { ETCDCTL_CACERT: o.ca ?? tls.ca, ETCDCTL_CERT: o.cert ?? tls.clientCert, ETCDCTL_KEY: o.key ?? tls.clientKey, ETCDCTL_USER: `harbormaster:${password}` };
}
