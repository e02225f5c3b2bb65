// The shipped templates on a real nginx and a real HAProxy, for what the routing agreement cannot
// send through Node's HTTP client: an empty Host and an HTTP/1.0 request without one (400, as
// the built-in proxy answers); HAProxy weights above its maximum of 256 (300 vs 1000 keeps its
// ratio instead of becoming 1:1); and haproxyFmt, which keeps a catalog value written into a
// log-format argument from expanding `%[env(...)]`.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CatalogWatch } from '../src/catalog/watch.js';
import { HEALTH_STATUSES, type ServiceInstance } from '../src/model/service-instance.js';
import { createBackend } from '../src/registry/index.js';
import { renderOnce } from '../src/render/index.js';
import { rawRequest, recordingBackend, type RecordingBackend } from './support/raw-http.js';
import { copyTemplates, get, Haproxy, Nginx, tempDir, templateEnv } from './support/render.js';
import { uniq, waitFor } from './support/wait.js';

const NGINX_PORT = 24520;
const HAPROXY_PORT = 24521;
const BACKEND_PORTS = [24530, 24531];
const SECRET = 'hm-secret-value-4711';

const dir = tempDir('hm-hw-');
const T = copyTemplates(dir);
// A custom line that writes a tag into a log-format argument, once with each helper.
writeFileSync(
  T.haproxy,
  readFileSync(T.haproxy, 'utf8').replace(
    '    acl hm_websocket',
    '{{#each services}}{{#each tags}}\n    http-request set-header X-Tag-Fmt {{haproxyFmt this}}\n    http-request set-header X-Tag-Quote {{haproxyQuote this}}\n{{/each}}{{/each}}\n    acl hm_websocket',
  ),
);
const tenv = templateEnv(dir, NGINX_PORT, HAPROXY_PORT);
const nginx = new Nginx(join(dir, 'nginx.conf'), tenv.HM_NGINX_PID);
const haproxy = new Haproxy(join(dir, 'haproxy.cfg'), dir);
const backends: RecordingBackend[] = [];
const log = pino({ level: 'silent' });

beforeAll(async () => {
  const uri = `memory://${uniq('hw')}`;
  const registry = createBackend(uri, { ttl: 0 });
  for (const [k, weight] of ['300', '1000'].entries()) {
    backends.push(await recordingBackend(`w${weight}`, BACKEND_PORTS[k]));
    const inst: ServiceInstance = { id: `hw:web-${weight}`, name: 'web', address: '127.0.0.1', port: BACKEND_PORTS[k], protocol: 'tcp', tags: ['%[env(HM_SECRET_DEMO)]'], meta: { weight }, host: 'hw', status: 'passing' };
    await registry.register(inst);
  }
  const watch = CatalogWatch.forUri(uri, { statuses: [...HEALTH_STATUSES], log });
  const off = watch.subscribe(() => undefined);
  try {
    await waitFor('the catalog', () => watch.catalog?.services[0]?.instances.length === 2, 5000, 10);
    const r = await renderOnce(
      {
        templates: [
          { source: T.nginx, destination: join(dir, 'nginx.conf'), check: 'nginx -t -q -c {{src}}', verify: { kind: 'plain' }, backup: false },
          { source: T.haproxy, destination: join(dir, 'haproxy.cfg'), check: 'haproxy -q -c -f {{src}}', verify: { kind: 'plain' }, backup: false },
        ],
        wait: { minMs: 0, maxMs: 0 },
        statuses: ['passing'],
        domain: 'localhost',
        timeoutMs: 10_000,
        once: true,
        dry: false,
      },
      watch,
      log,
      { env: { ...process.env, ...tenv } },
    );
    expect(r.ok).toBe(true);
  } finally {
    off();
    await watch.stop();
  }
  process.env.HM_SECRET_DEMO = SECRET; // in HAProxy's environment
  await nginx.start();
  await haproxy.start();
  delete process.env.HM_SECRET_DEMO;
  await waitFor('nginx and HAProxy answering', async () => (await get(NGINX_PORT, 'web.localhost').catch(() => undefined))?.status === 200 && (await get(HAPROXY_PORT, 'web.localhost').catch(() => undefined))?.status === 200, 10_000, 50);
}, 30_000);

afterAll(async () => {
  await nginx.stop();
  await haproxy.stop();
  await Promise.all(backends.map((b) => b.close()));
});

describe('the shipped templates on what Node clients cannot send', () => {
  it('an empty Host and an HTTP/1.0 request without Host are 400 on nginx and HAProxy, as on the built-in proxy', async () => {
    const cases: Array<[string, string]> = [
      ['empty Host', 'GET / HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n'],
      ['HTTP/1.0 without Host', 'GET / HTTP/1.0\r\n\r\n'],
      ['two Host headers', 'GET / HTTP/1.1\r\nHost: web.localhost\r\nHost: evil.test\r\nConnection: close\r\n\r\n'],
    ];
    const got: string[] = [];
    for (const [what, req] of cases) {
      const [ng, hp] = await Promise.all([rawRequest(NGINX_PORT, req), rawRequest(HAPROXY_PORT, req)]);
      got.push(`${what}: nginx ${ng.status}, HAProxy ${hp.status}`);
      expect([what, ng.status, hp.status]).toEqual([what, 400, 400]);
    }
    console.log(`PROBE host grammar, raw requests: ${got.join('; ')}`);
  });

  it('HAProxy keeps the ratio of weights above 256 (300 vs 1000)', async () => {
    const counts = new Map<string, number>();
    const N = 260;
    for (let i = 0; i < N; i++) {
      const r = await get(HAPROXY_PORT, 'web.localhost');
      const b = r.body.split(' ')[0];
      counts.set(b, (counts.get(b) ?? 0) + 1);
    }
    const low = counts.get('w300') ?? 0;
    const high = counts.get('w1000') ?? 0;
    const cfgLine = readFileSync(join(dir, 'haproxy.cfg'), 'utf8').split('\n').filter((l) => /server s\d .* weight/.test(l)).map((l) => l.trim().split(' ').slice(-2).join(' '));
    console.log(`PROBE HAProxy weights 300 vs 1000 (written as ${cfgLine.join(', ')}): ${N} requests → ${low} vs ${high} (ratio ${(low / high).toFixed(2)}, want 0.30)`);
    expect(low / high).toBeGreaterThan(0.2);
    expect(low / high).toBeLessThan(0.4);
  });

  it('haproxyFmt keeps %[env(...)] in a tag literal; haproxyQuote in a log-format argument would expand it', async () => {
    const before = backends.flatMap((b) => b.received).length;
    await get(HAPROXY_PORT, 'web.localhost');
    const seen = backends.flatMap((b) => b.received).slice(before)[0].headers;
    console.log(`PROBE tag "%[env(HM_SECRET_DEMO)]" in set-header: haproxyFmt sends ${JSON.stringify(seen['x-tag-fmt'])}, haproxyQuote sends ${JSON.stringify(seen['x-tag-quote'])}`);
    expect(seen['x-tag-fmt']).toBe('%[env(HM_SECRET_DEMO)]');
    expect(seen['x-tag-quote']).toBe(SECRET);
  });
});
