// registrator's SERVICE_CHECK_* vocabulary mapped to the body of a Consul agent check.
import type { CheckDefinition } from '../model/service-instance.js';

export interface ConsulCheckBody {
  CheckID?: string;
  Name: string;
  /** An alias check: healthy while this service (on the same agent) is. */
  AliasService?: string;
  HTTP?: string;
  Method?: string;
  TCP?: string;
  GRPC?: string;
  GRPCUseTLS?: boolean;
  TLSSkipVerify?: boolean;
  DockerContainerID?: string;
  Shell?: string;
  Args?: string[];
  TTL?: string;
  Interval?: string;
  Timeout?: string;
  Status?: string;
  DeregisterCriticalServiceAfter?: string;
}

/**
 * registrator's mapping of SERVICE_CHECK_* to a Consul check. `cmd` (SERVICE_CHECK_CMD) becomes a
 * Docker check: the agent runs `/bin/sh -c <cmd>` inside the container through the Docker API;
 * Consul accepts it only with enable_script_checks (enable_local_script_checks is not enough for
 * checks registered over the HTTP API).
 */
export function consulCheck(c: CheckDefinition): ConsulCheckBody {
  const body: ConsulCheckBody = { Name: `${c.kind} check` };
  switch (c.kind) {
    case 'http':
    case 'https':
      body.HTTP = c.target;
      if (c.method) body.Method = c.method;
      if (c.kind === 'https' && c.tlsSkipVerify) body.TLSSkipVerify = true;
      break;
    case 'tcp':
      body.TCP = c.target;
      break;
    case 'grpc':
      body.GRPC = c.target;
      if (c.grpcUseTls) body.GRPCUseTLS = true;
      if (c.grpcUseTls && c.tlsSkipVerify) body.TLSSkipVerify = true;
      break;
    case 'script':
      body.Args = ['/bin/sh', '-c', c.target];
      break;
    case 'cmd':
      if (c.containerId) body.DockerContainerID = c.containerId;
      body.Shell = '/bin/sh';
      body.Args = ['/bin/sh', '-c', c.target];
      break;
    case 'ttl':
      body.TTL = c.ttl;
      break;
  }
  if (c.interval) body.Interval = c.interval;
  if (c.timeout) body.Timeout = c.timeout;
  if (c.initialStatus) body.Status = c.initialStatus;
  if (c.deregisterAfter) body.DeregisterCriticalServiceAfter = c.deregisterAfter;
  return body;
}
