// --docker / DOCKER_HOST → dockerode connection options, and refused calls named in one line.
import { createRequire } from 'node:module';
import type Docker from 'dockerode';
import { redactUri } from '../../log/redact.js';
import { UsageError } from '../../registry/types.js';

/**
 * Docker (or a socket proxy / authorization plugin in front of it) answered 401/403: the message
 * names the call, so that an operator sees which endpoint a read-only proxy has to allow, or that
 * a command needing write access was pointed at a read-only endpoint. Keeps dockerode's fields.
 */
export class DockerRefused extends Error {
  constructor(
    readonly endpoint: string,
    readonly call: string,
    readonly statusCode: number,
    readonly detail: string,
  ) {
    super(`Docker at ${endpoint} refused ${call} (HTTP ${statusCode}${detail ? `: ${detail}` : ''})`);
    this.name = 'DockerRefused';
  }
}

interface DialOptions {
  method?: string;
  path?: string;
}
type Dial = (options: DialOptions, callback: (err: unknown, data: unknown) => void) => void;

/** dockerode, loaded on first use: a `register --docker off` never pays for it (~6 MB). */
function dockerode(): typeof Docker {
  return createRequire(import.meta.url)('dockerode') as typeof Docker;
}

/** Checks an endpoint without loading the client. */
export function checkDockerEndpoint(endpoint: string): void {
  connection(endpoint);
}

export function dockerClient(endpoint: string): Docker {
  const docker = new (dockerode())(connection(endpoint));
  nameRefusedCalls(docker, endpoint);
  return docker;
}

function connection(endpoint: string): Docker.DockerOptions {
  if (endpoint.startsWith('unix://')) {
    const socketPath = endpoint.slice('unix://'.length);
    if (!socketPath.startsWith('/')) throw new UsageError(`--docker ${endpoint}: unix socket path must be absolute`);
    return { socketPath };
  }
  const m = /^(tcp|http|https):\/\/([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})\/?$/.exec(endpoint);
  if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) {
    // redactUri: a user:password@ given by mistake is not echoed.
    throw new UsageError(`--docker ${redactUri(endpoint)}: expected unix:///path/to/docker.sock or tcp://host:port (credentials in it are not read)`);
  }
  return { host: m[2].replace(/^\[|\]$/g, ''), port: Number(m[3]), protocol: m[1] === 'https' ? 'https' : 'http' };
}

/** Every dockerode call goes through modem.dial, the one place that still knows the method and path. */
function nameRefusedCalls(docker: Docker, endpoint: string): void {
  const modem = docker.modem as unknown as { dial: Dial };
  const dial = modem.dial.bind(modem);
  modem.dial = (options, callback) => {
    // Read before dial: it prefixes the API version and appends the query to the path.
    const call = `${options.method ?? 'GET'} ${(options.path ?? '').split('?')[0]}`;
    dial(options, (err, data) => callback(refusal(endpoint, call, err) ?? err, data));
  };
}

function refusal(endpoint: string, call: string, err: unknown): DockerRefused | undefined {
  const e = err as { statusCode?: unknown; json?: unknown; message?: unknown } | null;
  if (!e || (e.statusCode !== 401 && e.statusCode !== 403)) return undefined;
  // Docker answers {"message": …}; a proxy's deny page is HTML or text: its words, on one line.
  const json = e.json as { message?: unknown } | string | null | undefined;
  const raw = typeof json === 'object' && json !== null && typeof json.message === 'string' ? json.message : typeof json === 'string' ? json : String(e.message ?? '').replace(/^\(HTTP code \d+\) [a-z ]+ - /, '');
  const detail = raw
    .replace(/<[^>]*>/g, ' ')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 200);
  return new DockerRefused(endpoint, call, e.statusCode, detail);
}

export function defaultDockerEndpoint(env: Record<string, string | undefined> = process.env): string {
  return env.DOCKER_HOST || 'unix:///var/run/docker.sock';
}
