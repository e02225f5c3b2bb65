// --docker / DOCKER_HOST → dockerode connection options.
import Docker from 'dockerode';
import { UsageError } from '../../registry/types.js';

export function dockerClient(endpoint: string): Docker {
  if (endpoint.startsWith('unix://')) {
    const socketPath = endpoint.slice('unix://'.length);
    if (!socketPath.startsWith('/')) throw new UsageError(`--docker ${endpoint}: unix socket path must be absolute`);
    return new Docker({ socketPath });
  }
  const m = /^(tcp|http|https):\/\/([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})\/?$/.exec(endpoint);
  if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) {
    throw new UsageError(`--docker ${endpoint}: expected unix:///path/to/docker.sock or tcp://host:port`);
  }
  return new Docker({ host: m[2].replace(/^\[|\]$/g, ''), port: Number(m[3]), protocol: m[1] === 'https' ? 'https' : 'http' });
}

export function defaultDockerEndpoint(env: Record<string, string | undefined> = process.env): string {
  return env.DOCKER_HOST || 'unix:///var/run/docker.sock';
}
