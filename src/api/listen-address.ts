// `host:port` flags (--listen, --api): validated into what net.Server.listen takes.
import { UsageError } from '../registry/types.js';
import { isHostname, isIpAddress } from '../util/net.js';

export interface ListenAddress {
  host: string;
  port: number;
}

/** Parse `host:port`, `[v6]:port` or `:port` (loopback); port 0 picks a free port. */
export function parseListenAddress(flag: string, raw: string): ListenAddress {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(raw);
  if (!m) throw new UsageError(`--${flag} ${raw}: expected host:port, e.g. 127.0.0.1:8080`);
  const host = m[1] ?? (m[2] || '127.0.0.1');
  const port = Number(m[3]);
  if (port > 65535) throw new UsageError(`--${flag} ${raw}: port ${port} is out of range`);
  if (m[1] !== undefined ? !isIpAddress(host) : !isIpAddress(host) && !isHostname(host)) {
    throw new UsageError(`--${flag} ${raw}: "${host}" is not an IP address or host name`);
  }
  return { host, port };
}

export function formatAddress(a: ListenAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
