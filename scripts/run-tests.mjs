#!/usr/bin/env node
// Runs the test suite in lanes (see vitest.config.ts): `local`, `docker-a` and `docker-b` at the
// same time, each file of a lane after the other, then `exclusive` alone, because its tests
// measure request rates. Each lane's output is printed whole when the lane ends, then a summary.
// With arguments (`npm test -- test/foo.test.ts -t name`), vitest runs just those, one file at a time.
import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const VITEST = join(import.meta.dirname, '..', 'node_modules', 'vitest', 'vitest.mjs');
const LOGS = join(process.env.HM_TEST_STATE ?? '/tmp/harbormaster-test', 'test-logs');
const CONCURRENT = ['local', 'docker-a', 'docker-b'];
const AFTER = ['exclusive'];

function vitest(args, stdio) {
  return spawn(process.execPath, [VITEST, 'run', ...args], { stdio, env: { ...process.env, FORCE_COLOR: '0', NO_COLOR: '1' } });
}

if (process.argv.length > 2) {
  const child = vitest(process.argv.slice(2), 'inherit');
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
} else {
  mkdirSync(LOGS, { recursive: true });
  const t0 = Date.now();
  const results = [];
  const lane = (name) =>
    new Promise((resolve) => {
      const started = Date.now();
      const file = join(LOGS, `${name}.log`);
      const out = createWriteStream(file);
      const child = vitest(['--project', name], ['ignore', 'pipe', 'pipe']);
      child.stdout.pipe(out, { end: false });
      child.stderr.pipe(out, { end: false });
      console.log(`lane ${name}: started (output in ${file})`);
      child.on('close', (code, signal) => {
        out.end(() => {
          const text = readFileSync(file, 'utf8');
          const seconds = Math.round((Date.now() - started) / 1000);
          console.log(`\n======== lane ${name}: exit ${code ?? signal} after ${seconds}s ========\n${text}\n======== end of lane ${name} ========\n`);
          // eslint-disable-next-line no-control-regex
          const failed = [...new Set(text.replace(/\x1b\[[0-9;]*m/g, '').split('\n').filter((l) => /^\s*(FAIL|×) /.test(l)).map((l) => l.trim()))];
          results.push({ name, code: code ?? 1, seconds, failed });
          resolve();
        });
      });
    });
  await Promise.all(CONCURRENT.map(lane));
  for (const name of AFTER) await lane(name);
  console.log(`test lanes, ${Math.round((Date.now() - t0) / 1000)}s in all:`);
  for (const r of results) {
    console.log(`  ${r.name.padEnd(10)} ${r.code === 0 ? 'passed' : `FAILED (exit ${r.code})`} in ${r.seconds}s`);
    for (const f of r.failed.slice(0, 30)) console.log(`      ${f}`);
  }
  process.exit(results.every((r) => r.code === 0) ? 0 : 1);
}
