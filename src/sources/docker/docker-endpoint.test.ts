import { describe, expect, it } from 'vitest';
import { UsageError } from '../../registry/types.js';
import { dockerClient } from './docker-endpoint.js';

describe('dockerClient: the endpoint', () => {
  it('a tcp:// endpoint with user:password@ is refused without echoing them', () => {
    let err: unknown;
    try {
      dockerClient('tcp://admin:hunter2/x@127.0.0.1:2375');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toBe('--docker tcp://[redacted]@127.0.0.1:2375: expected unix:///path/to/docker.sock or tcp://host:port (credentials in it are not read)');
  });

  it('takes unix:// and tcp:// endpoints', () => {
    expect(dockerClient('unix:///var/run/docker.sock').modem).toBeDefined();
    expect(dockerClient('tcp://127.0.0.1:2375').modem).toBeDefined();
  });
});
