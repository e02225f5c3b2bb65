// registrator's SERVICE_CHECK_* vocabulary mapped to the body of a Consul agent check.
import type { CheckDefinition } from '../model/service-instance.js';

export interface ConsulCheckBody {
  CheckID?: string;
  Name: string;
  HTTP?: string;
  TCP?: string;
  GRPC?: string;
  GRPCUseTLS?: boolean;
  Args?: string[];
  TTL?: string;
  Interval?: string;
  Timeout?: string;
  Status?: string;
  DeregisterCriticalServiceAfter?: string;
}

/** registrator's mapping of SERVICE_CHECK_* to a Consul check. */
export function consulCheck(c: CheckDefinition): ConsulCheckBody {
  const body: ConsulCheckBody = { Name: `${c.kind} check` };
  switch (c.kind) {
    case 'http':
    case 'https':
      body.HTTP = c.target;
      break;
    case 'tcp':
      body.TCP = c.target;
      break;
    case 'grpc':
      body.GRPC = c.target;
      if (c.grpcUseTls) body.GRPCUseTLS = true;
      break;
    case 'script':
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
