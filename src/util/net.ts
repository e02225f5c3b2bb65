// Host addressing: which address stands for "this host" when a port is bound to a wildcard.
import { isIP } from 'node:net';
import os from 'node:os';

/** Interfaces Docker creates for containers: never the host's own address. */
const CONTAINER_IFACES = /^(docker\d*|br-|veth|cni|flannel|cali|vxlan)/;

export function hostAddress(): string {
  for (const [name, addrs] of Object.entries(os.networkInterfaces())) {
    if (CONTAINER_IFACES.test(name)) continue;
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

export function isIpAddress(v: string): boolean {
  return isIP(v) !== 0;
}

const HOSTNAME = /^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62}))*$/;
export function isHostname(v: string): boolean {
  return v.length <= 253 && HOSTNAME.test(v);
}
