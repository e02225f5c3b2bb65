// Prometheus metrics (prom-client), one registry per process. Every long-running command
// serves them on /metrics; modules import the metric they update.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'harbormaster_' });

const seconds = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export const metrics = {
  registrations: new Counter({ name: 'harbormaster_registrations_total', help: 'Successful registrations', registers: [registry] }),
  deregistrations: new Counter({ name: 'harbormaster_deregistrations_total', help: 'Successful withdrawals', registers: [registry] }),
  registryErrors: new Counter({ name: 'harbormaster_registry_errors_total', help: 'Failed registry operations', labelNames: ['op'], registers: [registry] }),
  registryLatency: new Histogram({ name: 'harbormaster_registry_op_seconds', help: 'Registry operation latency', labelNames: ['op'], buckets: seconds, registers: [registry] }),
  heartbeats: new Counter({ name: 'harbormaster_heartbeats_total', help: 'Heartbeat rounds sent', registers: [registry] }),
  registered: new Gauge({ name: 'harbormaster_registered_services', help: 'Services this host has registered', registers: [registry] }),
  pending: new Gauge({ name: 'harbormaster_registrar_pending', help: 'Registrations or withdrawals not yet confirmed by the registry', registers: [registry] }),
  retrying: new Gauge({ name: 'harbormaster_registrar_retrying', help: 'Registrations or withdrawals waiting to be retried after a failure', registers: [registry] }),
  rejected: new Gauge({ name: 'harbormaster_registrar_rejected', help: 'Registrations the registry refused for what they are (not retried until they change)', registers: [registry] }),
  slow: new Gauge({ name: 'harbormaster_registrar_slow', help: '1 while the registry answers, but later than the operation timeout', registers: [registry] }),
  inflightLimit: new Gauge({ name: 'harbormaster_registrar_inflight_limit', help: 'Registry writes allowed at once (lowered while the registry answers slowly)', registers: [registry] }),
  resyncs: new Counter({ name: 'harbormaster_registrar_resyncs_total', help: 'Full comparisons of this host\'s registrations with the registry', registers: [registry] }),
  heartbeatFailures: new Counter({ name: 'harbormaster_heartbeat_failures_total', help: 'Heartbeat rounds that failed in part or whole', registers: [registry] }),
  renders: new Counter({ name: 'harbormaster_renders_total', help: 'Template renders by result', labelNames: ['template', 'result'], registers: [registry] }),
  reloads: new Counter({ name: 'harbormaster_reloads_total', help: 'Proxy reloads by result', labelNames: ['command', 'result'], registers: [registry] }),
  reloadDuration: new Histogram({ name: 'harbormaster_reload_seconds', help: 'Reload command duration', buckets: seconds, registers: [registry] }),
  runtimeApplied: new Counter({ name: 'harbormaster_haproxy_runtime_applied_total', help: 'Changes applied through the HAProxy runtime API instead of a reload', labelNames: ['template'], registers: [registry] }),
  runtimeCommands: new Counter({ name: 'harbormaster_haproxy_runtime_commands_total', help: 'HAProxy runtime API commands of the changes applied', labelNames: ['template'], registers: [registry] }),
  runtimeFallbacks: new Counter({ name: 'harbormaster_haproxy_runtime_fallbacks_total', help: 'Changes the HAProxy runtime API failed to apply: rendered and reloaded instead', labelNames: ['template'], registers: [registry] }),
  proxyRequests: new Counter({ name: 'harbormaster_proxy_requests_total', help: 'Proxied requests by service and status', labelNames: ['service', 'status'], registers: [registry] }),
  upstreamErrors: new Counter({ name: 'harbormaster_proxy_upstream_errors_total', help: 'Upstream connection errors', labelNames: ['service'], registers: [registry] }),
  retries: new Counter({ name: 'harbormaster_proxy_retries_total', help: 'Requests retried on another instance', labelNames: ['service'], registers: [registry] }),
  activeConnections: new Gauge({ name: 'harbormaster_proxy_active_connections', help: 'Open client connections', registers: [registry] }),
};

/** Time an async operation into a histogram (and count its failure). */
export async function timed<T>(op: string, fn: () => Promise<T>): Promise<T> {
  const end = metrics.registryLatency.startTimer({ op });
  try {
    return await fn();
  } catch (err) {
    metrics.registryErrors.inc({ op });
    throw err;
  } finally {
    end();
  }
}
