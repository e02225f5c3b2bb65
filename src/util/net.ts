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
/** A last label of digits or 0x-hex makes a name an IPv4 address to inet_aton and URL parsers. */
const NUMERIC_LABEL = /(?:^|\.)(?:[0-9]+|0x[0-9a-f]*)$/i;
/**
 * A DNS host name, not a number in disguise: `127.0.0.010`, `0127.0.0.1`, `0x7f.1` or
 * `2130706433` are addresses that nginx (decimal), HAProxy and Node (octal, hex) read
 * differently, so they are neither IP addresses (isIP refuses them) nor host names.
 */
export function isHostname(v: string): boolean {
  return v.length <= 253 && HOSTNAME.test(v) && !NUMERIC_LABEL.test(v);
}
