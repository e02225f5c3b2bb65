// The subset of `docker inspect` that the service model reads. Kept small so that unit tests
// can use recorded fixtures and so that a change in Docker's answer shows up in one place.

export interface PortBinding {
  HostIp?: string;
  HostPort?: string;
}

export interface ContainerDetails {
  Id: string;
  Name: string;
  Config: {
    Image: string;
    Env?: string[] | null;
    Labels?: Record<string, string> | null;
    ExposedPorts?: Record<string, unknown> | null;
    /** The image's STOPSIGNAL, e.g. "SIGWINCH"; absent for the default (SIGTERM). */
    StopSignal?: string | null;
  };
  HostConfig?: { NetworkMode?: string } | null;
  NetworkSettings?: {
    IPAddress?: string;
    Ports?: Record<string, PortBinding[] | null> | null;
    Networks?: Record<string, { IPAddress?: string } | null> | null;
  } | null;
  State?: {
    Running?: boolean;
    Paused?: boolean;
    Restarting?: boolean;
    ExitCode?: number;
    StartedAt?: string;
    Health?: { Status?: string } | null;
  } | null;
}

/** Container name without Docker's leading slash. */
export function containerName(c: ContainerDetails): string {
  return c.Name.replace(/^\//, '');
}
