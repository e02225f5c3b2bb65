// Injection attempts through container labels: routing values (host, path, name, weight) that
// are not host names / URL paths / DNS labels / numbers are rejected by `register` with a line
// naming the container and key; free-form values (tags, other meta, IDs) are registered but the
// shipped templates never write them. The rendered configs pass nginx -t and haproxy -c and
// contain none of the injected text.
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeContainers, run } from './support/docker.js';
import { Hm, runCli } from './support/harbormaster.js';
import { ETCD_ENDPOINT } from './support/registries.js';
import { uniq } from './support/wait.js';
import { copyTemplates, haproxyCheck, nginxTest, tempDir, templateEnv } from './support/render.js';

const HOSTNAME = uniq('hmrs');
const P = `${HOSTNAME}-`;
const SVC = uniq('safe');
const URI = `etcd://${ETCD_ENDPOINT}/${uniq('hmrs')}`;
const DIR = tempDir('hm-rs-');
const T = copyTemplates(DIR);
const ENV = templateEnv(DIR, 19440, 19441);
const MARK = 'zqx'; // in every injected value

/** container suffix → [label key, injected value] */
const REJECTED: Record<string, [string, string]> = {
  h1: ['SERVICE_HTTP_HOST', `${MARK}.com; } server { listen 80; }`],
  h2: ['SERVICE_HTTP_HOST', `${MARK}.com"`],
  h3: ['SERVICE_HTTP_HOST', `${MARK}\${jndi:ldap://x}.com`],
  h4: ['SERVICE_HTTP_HOST', `${MARK}${'a'.repeat(300)}.com`],
  h5: ['SERVICE_HTTP_HOST', `${MARK}.com\n# comment`],
  h6: ['SERVICE_HTTP_HOST', `ok.com,${MARK}#.com`],
  p1: ['SERVICE_HTTP_PATH', `/${MARK}; return 200 pwned;`],
  p2: ['SERVICE_HTTP_PATH', `/${MARK}}`],
  p3: ['SERVICE_HTTP_PATH', `/${MARK}#frag`],
  p4: ['SERVICE_HTTP_PATH', `/${MARK}'"q`],
  p5: ['SERVICE_HTTP_PATH', `/${MARK}\${x}`],
  p6: ['SERVICE_HTTP_PATH', `/${MARK}${'a'.repeat(600)}`],
  p7: ['SERVICE_HTTP_PATH', `/${MARK}\nlocation`],
  n1: ['SERVICE_NAME', `${MARK};}`],
  w1: ['SERVICE_WEIGHT', `1; ${MARK}`],
  t2: ['SERVICE_TAGS', `${MARK}${'b'.repeat(300)}`],
};

/** Free-form values: accepted into the registry, never written by the shipped templates. */
const ACCEPTED = {
  SERVICE_NAME: `${SVC}-ok`,
  SERVICE_TAGS: `${MARK};},{${MARK}#,"${MARK}",\${${MARK}},'${MARK}'`,
  SERVICE_NOTE: `"; } # \${${MARK}} ' ${MARK}`,
  SERVICE_ID: `${MARK}; } # x`,
  SERVICE_HTTP_HOST: `${SVC}-ok.example.test`,
  SERVICE_HTTP_PATH: '/ok',
  SERVICE_WEIGHT: '900',
};

let register: Hm;

beforeAll(async () => {
  register = new Hm(['register', '--explicit', '--hostname', HOSTNAME, '--ttl', '0', '--resync', '5', URI]);
  await register.waitForLog('register startup', (l) => l.event === 'start');
  await Promise.all([
    run(`${P}ok`, { labels: ACCEPTED }),
    ...Object.entries(REJECTED).map(([suffix, [key, value]]) =>
      run(`${P}${suffix}`, { labels: { SERVICE_NAME: `${SVC}-${suffix}`, [key]: value } }),
    ),
  ]);
});

afterAll(async () => {
  await register?.stop();
  await removeContainers(P);
  rmSync(DIR, { recursive: true, force: true });
});

describe('injection through labels', () => {
  it('register rejects every routing value that is not valid, naming the container and the key', async () => {
    await register.waitForLog('the valid service', (l) => l.event === 'registered' && l.id === ACCEPTED.SERVICE_ID, 30_000);
    for (const [suffix, [key]] of Object.entries(REJECTED)) {
      const line = await register.waitForLog(`rejection of ${suffix}`, (l) => l.event === 'error' && String(l.msg).includes(`container ${P}${suffix}:`), 30_000);
      expect(line.msg).toContain(key);
      expect(line.msg).toContain('skipped');
    }
    // (other containers on this Docker host may register too: only ours count)
    const ours = register.logs.filter((l) => l.event === 'registered' && (l.id === ACCEPTED.SERVICE_ID || String(l.id).includes(`:${P}`)));
    expect(ours.map((l) => l.id)).toEqual([ACCEPTED.SERVICE_ID]);
  });

  it('rendered nginx and HAProxy configs pass nginx -t / haproxy -c and contain none of the injected text', async () => {
    const nginxConf = join(DIR, 'nginx.conf');
    const haproxyCfg = join(DIR, 'haproxy.cfg');
    const once = await runCli(
      ['render', URI, '--once',
        '--template', `${T.nginx}:${nginxConf}`, '--check', 'nginx -t -q -c {{src}}',
        '--template', `${T.haproxy}:${haproxyCfg}`, '--check', 'haproxy -q -c -f {{src}}'],
      ENV,
    );
    expect(once.code, once.stdout + once.stderr).toBe(0);
    const ngx = readFileSync(nginxConf, 'utf8');
    const hap = readFileSync(haproxyCfg, 'utf8');
    // the accepted service is there, with only its validated values
    expect(ngx).toContain(`server_name ${SVC}-ok.example.test;`);
    expect(ngx).toContain('location = /ok {');
    expect(ngx).toMatch(/server 127\.0\.0\.1:\d+ weight=900;/);
    expect(hap).toContain(`backend ${SVC}-ok\n`);
    expect(hap).toMatch(/server s0 127\.0\.0\.1:\d+ check weight 256/);
    for (const text of [ngx, hap]) {
      expect(text.toLowerCase()).not.toContain(MARK);
      expect(text).not.toContain('pwned');
      expect(text).not.toContain('jndi');
      for (const suffix of Object.keys(REJECTED)) expect(text).not.toContain(`${SVC}-${suffix}`);
    }
    expect(await nginxTest(nginxConf)).toMatchObject({ ok: true });
    expect(await haproxyCheck(haproxyCfg)).toMatchObject({ ok: true });
  });

  it('the registry holds the free-form values, so it was the templates that kept them out', async () => {
    const r = await runCli(['services', URI, '--json']);
    expect(r.code).toBe(0);
    const ok = (JSON.parse(r.stdout) as Array<{ id: string; tags: string[]; meta: Record<string, string> }>).find((s) => s.id === ACCEPTED.SERVICE_ID);
    expect(ok).toBeDefined();
    expect(ok!.tags).toContain(`"${MARK}"`);
    expect(ok!.meta.note).toBe(ACCEPTED.SERVICE_NOTE);
  });
});
