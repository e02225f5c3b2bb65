import { describe, expect, it } from 'vitest';
import { causeOf, explainConsulFailure, explainConsulRefusal, explainEtcdFailure, oneLine } from './explain.js';

describe('registry failures in the words of the setting to fix', () => {
  it('Consul over https: an untrusted server certificate, a refused client certificate; plain http untouched', () => {
    expect(explainConsulFailure('unable to verify the first certificate (UNABLE_TO_VERIFY_LEAF_SIGNATURE)', true)).toMatch(/^TLS: the server's certificate is signed by an unknown authority \(not by the CA in CONSUL_CACERT\): unable/);
    expect(explainConsulFailure('other side closed (UND_ERR_SOCKET)', true)).toMatch(/^TLS: the agent closed the connection .*CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY/);
    expect(explainConsulFailure('other side closed (UND_ERR_SOCKET)', false)).toBe('other side closed (UND_ERR_SOCKET)');
    expect(explainConsulRefusal(403, 'ACL not found')).toContain('CONSUL_HTTP_TOKEN, is unknown to Consul');
    expect(explainConsulRefusal(403, 'Permission denied: Missing service:write on web')).toContain('lacks this permission');
    expect(explainConsulRefusal(500, 'boom')).toBe('boom');
  });

  it('etcd: authentication, permission and TLS, one line without timestamps', () => {
    const ctx = { user: 'harbormaster', prefix: '/hm', tls: true };
    expect(explainEtcdFailure('3 INVALID_ARGUMENT: etcdserver: authentication failed, invalid user ID or password', ctx)).toMatch(/^authentication failed for user harbormaster \(ETCDCTL_USER/);
    expect(explainEtcdFailure('7 PERMISSION_DENIED: etcdserver: permission denied', ctx)).toMatch(/^permission denied for user harbormaster: its role needs readwrite on the key prefix \/hm\/: /);
    const alert = '14 UNAVAILABLE: No connection established. Last error: 80:error:0A000412:SSL routines:ssl3_read_bytes:sslv3 alert bad certificate:rec_layer_s3.c:1601:SSL alert number 42\n (2026-12-08T00:33:45.102Z). Resolution note: ';
    const explained = explainEtcdFailure(alert, ctx);
    expect(explained).toMatch(/^TLS: the server refused the client certificate \(ETCDCTL_CERT, ETCDCTL_KEY/);
    expect(explained).not.toMatch(/\n|2026-12-08/);
    expect(explainEtcdFailure(alert, { ...ctx, tls: false })).toBe(oneLine(alert));
  });

  it('causeOf: the same failure of another request is the same cause', () => {
    expect(causeOf('GET /v1/catalog/nodes: connect ECONNREFUSED 127.0.0.1:1')).toBe(causeOf('GET /v1/health/state/any: connect ECONNREFUSED 127.0.0.1:1'));
    expect(causeOf('etcd range: authentication failed')).toBe(causeOf('etcd lease grant: authentication failed'));
    // one outage: refused, reset and timed out alternate as the connection is cut; one cause, one line
    const unreachable = ['GET /v1/health/state/any: connect ECONNREFUSED 127.0.0.1:1', 'GET /v1/catalog/nodes: read ECONNRESET', 'etcd range: 14 UNAVAILABLE: No connection established', 'etcd watch: 4 DEADLINE_EXCEEDED: Deadline exceeded', 'GET /v1/kv: no answer (timed out)'];
    expect(new Set(unreachable.map(causeOf)).size).toBe(1);
    expect(causeOf('etcd range: authentication failed')).not.toBe(causeOf(unreachable[0]));
    expect(causeOf('PUT /agent/service/register?x=1: 403 Permission denied: Missing service:write on web')).not.toBe(causeOf('PUT /a: 403 Permission denied: Missing service:write on api'));
  });
});
