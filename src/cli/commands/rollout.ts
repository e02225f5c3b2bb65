// `harbormaster rollout <service>`: replace a service's containers on this host without losing a request.
import { redact } from '../../log/redact.js';
import { UsageError } from '../../registry/types.js';
import { Rollout, RolloutFailed } from '../../rollout/engine.js';
import { parseRolloutArgs, recordedCommand, ROLLOUT_HELP } from '../../rollout/options.js';
import { registryView, Sidecar } from '../../rollout/registry-view.js';
import { createReporter } from '../../rollout/reporter.js';
import { DockerRefused, dockerClient } from '../../sources/docker/docker-endpoint.js';
import { hostAddress } from '../../util/net.js';

export { ROLLOUT_HELP };

export async function rolloutCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const cfg = parseRolloutArgs(argv);
  if (!cfg) {
    out(ROLLOUT_HELP);
    return 0;
  }
  // Recorded in the rollout's journal and lock files: an --api-token given on the command line is masked there.
  cfg.command = recordedCommand(argv);
  const docker = dockerClient(cfg.docker);
  try {
    await docker.ping();
  } catch (err) {
    if (err instanceof DockerRefused) return refused(cfg.service, err);
    throw new UsageError(`Docker at ${cfg.docker} does not answer: ${(err as Error).message}`);
  }
  const view = registryView(cfg.registry, cfg.api, cfg.apiToken);
  const reporter = createReporter({ json: cfg.json, tty: !cfg.json && !!process.stderr.isTTY && !!process.stdout.isTTY, write: out });
  const abort = new AbortController();
  // First SIGINT/SIGTERM: finish the step at hand and leave nothing half done; a second one exits at once.
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) process.exit(130);
    reporter.emit({ event: 'signal', message: `${sig}: stopping after the current step (again to quit at once; run again to resume)` });
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const model = { hostname: cfg.hostname, hostIp: cfg.ip, hostAddress: cfg.ip ?? hostAddress(), internal: cfg.internal, explicit: cfg.explicit, tags: [] };
  try {
    const r = await new Rollout(cfg, { docker, view, sidecar: new Sidecar(cfg.api, cfg.apiToken), model, reporter, signal: abort.signal }).run();
    if (cfg.json) reporter.emit({ event: 'result', message: r.status, ...r });
    if (r.status === 'interrupted') return 130;
    if (r.status === 'rolled-back' || r.status === 'paused') {
      process.stderr.write(`harbormaster: rollout of ${cfg.service} ${r.status === 'paused' ? 'paused' : 'rolled back'}: ${redact(r.failure ?? '')}\n`);
      if (r.notRestored?.length) process.stderr.write(`harbormaster: not put back (did not become ready again; their replacements kept serving): ${r.notRestored.join(', ')}\n`);
      return 1;
    }
    return 0;
  } catch (err) {
    if (err instanceof RolloutFailed) {
      process.stderr.write(`harbormaster: ${redact(err.message)}\n`);
      return 1;
    }
    if (err instanceof DockerRefused) return refused(cfg.service, err);
    throw err;
  } finally {
    reporter.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await view.close();
  }
}

/** A refused Docker call before anything changed: one line, and what rollout needs. */
function refused(service: string, err: DockerRefused): number {
  process.stderr.write(`harbormaster: rollout of ${service}: ${err.message} (rollout creates, starts, stops and removes containers: it needs write access to the Docker API, not a read-only socket proxy)\n`);
  return 1;
}
