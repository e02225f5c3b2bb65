// The suite runs in lanes (scripts/run-tests.mjs starts one vitest per lane, the lanes at the same
// time, then the exclusive lane alone). Files of one lane run one after another: they share fixed
// ports, private registries and, for the docker lanes, one Docker engine that some of them restart.
// Each docker lane has an engine of its own (scripts/test-env.sh starts both), so that one lane's
// registrators never see the other lane's containers.
import { defineConfig } from 'vitest/config';

const STATE = process.env.HM_TEST_STATE ?? '/tmp/harbormaster-test';
/** HM_TEST_DOCKER_HOST puts every docker lane on one engine (to work on a few files beside another run). */
const ENGINE_A = process.env.HM_TEST_DOCKER_HOST ?? 'unix:///var/run/docker.sock';
const ENGINE_B = process.env.HM_TEST_DOCKER_HOST ?? `unix://${STATE}/docker-b/docker.sock`;

/** Integration tests on engine "a" (the host's default engine; the cluster tests use it as host 1). */
const DOCKER_A = [
  'test/register-etcd.test.ts',
  'test/cli.test.ts',
  'test/faults-scale.test.ts',
  'test/faults-registry.test.ts',
  'test/register-consul.test.ts',
  'test/cluster.test.ts',
  'test/register-checks.test.ts',
  'test/run-registries.test.ts',
  'test/fault-support.test.ts',
  'test/render-proxies.test.ts',
  'test/docker-readonly.test.ts',
  'test/cluster-faults.test.ts',
];

/** Integration tests on engine "b" (its own socket, bridge and data). */
const DOCKER_B = [
  'test/withdraw.test.ts',
  'test/render-safety.test.ts',
  'test/resilience.test.ts',
  'test/faults-slow.test.ts',
  'test/faults-restart.test.ts',
  'test/faults-docker.test.ts',
  'test/rollout.test.ts',
  'test/rollout-clone.test.ts',
  'test/run-memory.test.ts',
];

/** Tests that measure request rates: alone on the machine, after the other lanes. */
const EXCLUSIVE = ['test/rollout-zero-loss.test.ts', 'test/load-gen.test.ts'];

const shared = {
  testTimeout: 120_000,
  hookTimeout: 120_000,
  fileParallelism: false,
};

export default defineConfig({
  test: {
    reporters: ['default'],
    projects: [
      {
        test: {
          ...shared,
          name: 'local',
          include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
          exclude: [...DOCKER_A, ...DOCKER_B, ...EXCLUSIVE, '**/node_modules/**'],
          // No Docker in this lane: a test that reaches for it fails at once instead of using another lane's engine.
          env: { DOCKER_HOST: `unix://${STATE}/no-docker-in-the-local-lane.sock` },
        },
      },
      { test: { ...shared, name: 'docker-a', include: DOCKER_A, env: { DOCKER_HOST: ENGINE_A } } },
      { test: { ...shared, name: 'docker-b', include: DOCKER_B, env: { DOCKER_HOST: ENGINE_B } } },
      { test: { ...shared, name: 'exclusive', include: EXCLUSIVE, env: { DOCKER_HOST: ENGINE_A } } },
    ],
  },
});
