// docker-compose.yml is part of what users run: it must stay valid.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const exec = promisify(execFile);

it('docker-compose.yml passes `docker-compose config` and wires harbormaster to the socket and Consul', async () => {
  const root = new URL('..', import.meta.url).pathname;
  const { stdout } = await exec('docker-compose', ['-f', 'docker-compose.yml', 'config'], { cwd: root });
  expect(stdout).toContain('/var/run/docker.sock:/var/run/docker.sock');
  expect(stdout).toMatch(/register .*consul:\/\/consul:8500/);
  expect(stdout).toContain('SERVICE_NAME: whoami');
});
