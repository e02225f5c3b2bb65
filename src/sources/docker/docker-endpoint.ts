// --docker / DOCKER_HOST → dockerode connection options.
import { createRequire } from 'node:module';
import type Docker from 'dockerode';
import { UsageError } from '../../registry/types.js';

/** dockerode, loaded on first use: a `register --docker off` never pays for it (~6 MB). */
function dockerode(): typeof Docker {
  return createRequire(import.meta.url)('dockerode') as typeof Docker;
}

/** Checks an endpoint without loading the client. */
export function checkDockerEndpoint(endpoint: string): void {
  connection(endpoint);
}

export function dockerClient(endpoint: string): Docker {
  return new (dockerode())(connection(endpoint));
}

function connection(endpoint: string): Docker.DockerOptions {
  if (endpoint.startsWith('unix://')) {
    const socketPath = endpoint.slice('unix://'.length);
    if (!socketPath.startsWith('/')) throw new UsageError(`--docker ${endpoint}: unix socket path must be absolute`);
    return { socketPath };
  }
  const m = /^(tcp|http|https):\/\/([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})\/?$/.exec(endpoint);
  if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) {
    throw new UsageError(`--docker ${endpoint}: expected unix:///path/to/docker.sock or tcp://host:port`);
  }
  return { host: m[2].replace(/^\[|\]$/g, ''), port: Number(m[3]), protocol: m[1] === 'https' ? 'https' : 'http' };
}

export function defaultDockerEndpoint(env: Record<string, string | undefined> = process.env): string {
  return env.DOCKER_HOST || 'unix:///var/run/docker.sock';
}
