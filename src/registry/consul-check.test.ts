import { describe, it, expect } from 'vitest';
import type { CheckDefinition } from '../model/service-instance.js';
import { ttlCheckId } from './consul-backend.js';
import { consulCheck } from './consul-check.js';

describe('consulCheck', () => {
  it('http', () => {
    expect(consulCheck({ kind: 'http', target: 'http://10.0.0.1:8080/health', interval: '10s' })).toEqual({
      Name: 'http check',
      HTTP: 'http://10.0.0.1:8080/health',
      Interval: '10s',
    });
  });

  it('https with timeout', () => {
    expect(consulCheck({ kind: 'https', target: 'https://10.0.0.1:8443/', interval: '5s', timeout: '1s' })).toEqual({
      Name: 'https check',
      HTTP: 'https://10.0.0.1:8443/',
      Interval: '5s',
      Timeout: '1s',
    });
  });

  it('tcp', () => {
    expect(consulCheck({ kind: 'tcp', target: '10.0.0.1:5432', interval: '10s', timeout: '2s' })).toEqual({
      Name: 'tcp check',
      TCP: '10.0.0.1:5432',
      Interval: '10s',
      Timeout: '2s',
    });
  });

  it('grpc without and with TLS', () => {
    expect(consulCheck({ kind: 'grpc', target: '10.0.0.1:50051', interval: '10s', grpcUseTls: false })).toEqual({
      Name: 'grpc check',
      GRPC: '10.0.0.1:50051',
      Interval: '10s',
    });
    expect(consulCheck({ kind: 'grpc', target: '10.0.0.1:50051', interval: '10s', grpcUseTls: true })).toEqual({
      Name: 'grpc check',
      GRPC: '10.0.0.1:50051',
      GRPCUseTLS: true,
      Interval: '10s',
    });
  });

  it('script runs through /bin/sh -c', () => {
    expect(consulCheck({ kind: 'script', target: 'nc -z 10.0.0.1 80', interval: '30s' })).toEqual({
      Name: 'script check',
      Args: ['/bin/sh', '-c', 'nc -z 10.0.0.1 80'],
      Interval: '30s',
    });
  });

  it('grpc with a service name, TLS and TLSSkipVerify', () => {
    expect(consulCheck({ kind: 'grpc', target: '10.0.0.1:50051/my.Service', interval: '10s', grpcUseTls: false })).toEqual({
      Name: 'grpc check',
      GRPC: '10.0.0.1:50051/my.Service',
      Interval: '10s',
    });
    expect(consulCheck({ kind: 'grpc', target: '10.0.0.1:50051/my.Service', interval: '10s', grpcUseTls: true, tlsSkipVerify: true })).toEqual({
      Name: 'grpc check',
      GRPC: '10.0.0.1:50051/my.Service',
      GRPCUseTLS: true,
      TLSSkipVerify: true,
      Interval: '10s',
    });
    // Without TLS there is no certificate to skip.
    expect(consulCheck({ kind: 'grpc', target: 'h:1', grpcUseTls: false, tlsSkipVerify: true })).not.toHaveProperty('TLSSkipVerify');
  });

  it('http(s) with a method; https with TLSSkipVerify', () => {
    expect(consulCheck({ kind: 'http', target: 'http://10.0.0.1:80/', interval: '10s', method: 'HEAD' })).toEqual({
      Name: 'http check',
      HTTP: 'http://10.0.0.1:80/',
      Method: 'HEAD',
      Interval: '10s',
    });
    expect(consulCheck({ kind: 'https', target: 'https://10.0.0.1:443/', method: 'POST', tlsSkipVerify: true })).toEqual({
      Name: 'https check',
      HTTP: 'https://10.0.0.1:443/',
      Method: 'POST',
      TLSSkipVerify: true,
    });
  });

  it('cmd is a Docker check: the agent runs /bin/sh -c <cmd> in the container', () => {
    const id = '3f4e1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f';
    expect(consulCheck({ kind: 'cmd', target: 'test -f /www/index.html', containerId: id, interval: '10s' })).toEqual({
      Name: 'cmd check',
      DockerContainerID: id,
      Shell: '/bin/sh',
      Args: ['/bin/sh', '-c', 'test -f /www/index.html'],
      Interval: '10s',
    });
  });

  it('ttl', () => {
    expect(consulCheck({ kind: 'ttl', target: '', ttl: '30s' })).toEqual({ Name: 'ttl check', TTL: '30s' });
  });

  it('initial status and deregister-after apply to every kind', () => {
    const kinds: CheckDefinition['kind'][] = ['http', 'https', 'tcp', 'script', 'ttl', 'grpc', 'cmd'];
    for (const kind of kinds) {
      const body = consulCheck({ kind, target: 't', initialStatus: 'warning', deregisterAfter: '1m' });
      expect(body).toMatchObject({ Name: `${kind} check`, Status: 'warning', DeregisterCriticalServiceAfter: '1m' });
    }
  });

  it('leaves out fields that are not set', () => {
    const body = consulCheck({ kind: 'tcp', target: 'h:1' });
    expect(Object.keys(body).sort()).toEqual(['Name', 'TCP']);
  });
});

describe('ttlCheckId', () => {
  it('derives the heartbeat check id from the service id', () => {
    expect(ttlCheckId('docker-host-1:web1:80')).toBe('harbormaster-ttl:docker-host-1:web1:80');
  });

  it('is distinct per service', () => {
    expect(ttlCheckId('a')).not.toBe(ttlCheckId('b'));
  });
});
