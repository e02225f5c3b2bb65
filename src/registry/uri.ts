// Registry URIs as registrator takes them: consul://host:8500, etcd://host:2379/prefix, …
// plus the TLS forms consul-tls:// and etcd-tls://.
import { UsageError } from './types.js';

export type RegistryTarget =
  | { kind: 'consul'; host: string; port: number; secure: boolean }
  | { kind: 'etcd'; endpoints: string[]; prefix: string }
  | { kind: 'etcd2'; endpoints: string[]; prefix: string }
  | { kind: 'memory'; name: string };

const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\])$/;
const PREFIX = /^(\/[A-Za-z0-9._-]+)*$/;

function hostPort(uri: string, part: string, defaultPort: number): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d{1,5}))?$/.exec(part);
  if (!m || !HOST.test(m[1])) throw new UsageError(`registry URI ${uri}: "${part}" is not host[:port]`);
  const port = m[2] === undefined ? defaultPort : Number(m[2]);
  if (port < 1 || port > 65535) throw new UsageError(`registry URI ${uri}: port ${m[2]} is out of range`);
  return { host: m[1], port };
}

export function parseRegistryUri(uri: string): RegistryTarget {
  const m = /^([a-z][a-z0-9+-]*):\/\/([^/]*)(\/.*)?$/.exec(uri);
  if (!m) throw new UsageError(`registry URI "${uri}" is not of the form scheme://host:port[/prefix]`);
  const [, scheme, authority, rawPath = ''] = m;
  const path = rawPath.replace(/\/+$/, '');
  switch (scheme) {
    case 'consul':
    case 'consul-tls': {
      if (path) throw new UsageError(`registry URI ${uri}: consul takes no path`);
      const { host, port } = hostPort(uri, authority || '127.0.0.1', scheme === 'consul-tls' ? 8501 : 8500);
      return { kind: 'consul', host, port, secure: scheme === 'consul-tls' };
    }
    case 'etcd':
    case 'etcd-tls':
    case 'etcd2': {
      // etcd-tls: https endpoints; the client's certificates come from ETCDCTL_CACERT/CERT/KEY.
      const protocol = scheme === 'etcd-tls' ? 'https' : 'http';
      const parts = (authority || '127.0.0.1').split(',');
      const endpoints = parts.map((p) => {
        const { host, port } = hostPort(uri, p, 2379);
        return `${protocol}://${host}:${port}`;
      });
      const prefix = path || '/harbormaster';
      if (!PREFIX.test(prefix)) throw new UsageError(`registry URI ${uri}: prefix "${prefix}" may only hold /-separated A-Z a-z 0-9 . _ -`);
      return { kind: scheme === 'etcd2' ? 'etcd2' : 'etcd', endpoints, prefix };
    }
    case 'etcd2-tls':
      throw new UsageError(`registry URI ${uri}: etcd2 over TLS is not supported (use etcd-tls://, the v3 API)`);
    case 'memory': {
      if (path) throw new UsageError(`registry URI ${uri}: memory takes no path`);
      if (authority && !/^[A-Za-z0-9_-]+$/.test(authority)) throw new UsageError(`registry URI ${uri}: memory name may only hold A-Z a-z 0-9 _ -`);
      return { kind: 'memory', name: authority || 'default' };
    }
    default:
      throw new UsageError(`registry URI ${uri}: unknown scheme "${scheme}" (consul, consul-tls, etcd, etcd-tls, etcd2, memory)`);
  }
}
