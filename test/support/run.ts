// Containers and checks shared by the `harbormaster run` tests (embedded registry, Consul, etcd).
// Every container serves its own name, so an answer tells which one the proxy chose.
import net from 'node:net';
import { expect } from 'vitest';
import { docker, run } from './docker.js';
import type { Hm } from './harbormaster.js';
import { afterRequests, type Answer, get, Load } from './proxy.js';
import { waitFor } from './wait.js';

/** busybox httpd that also serves /staticx, /static/ and a CGI /cgi-bin/slow answering after `seconds`. */
export function httpdScript(name: string, seconds = 3): string {
  return [
    'mkdir -p /www/static /www/cgi-bin',
    `echo ${name} > /www/index.html`,
    `echo ${name} > /www/staticx`,
    `echo static-${name} > /www/static/index.html`,
    `printf '#!/bin/sh\\nsleep ${seconds}\\nprintf "Content-Type: text/plain\\\\r\\\\n\\\\r\\\\nslow-done\\\\n"\\n' > /www/cgi-bin/slow`,
    'chmod +x /www/cgi-bin/slow',
    'exec httpd -f -p 80 -h /www',
  ].join(' && ');
}

/** A server that can be SIGKILLed while its container (and so its registration) stays up. */
export function killableScript(name: string): string {
  return `echo ${name} > /www/index.html; httpd -f -p 80 -h /www & while :; do sleep 1; done`;
}

/** Serves until /tmp/crash appears, then exits 3: under --deregister on-success it stays registered, critical. */
export function crashScript(name: string): string {
  return `echo ${name} > /www/index.html; httpd -p 80 -h /www; while [ ! -f /tmp/crash ]; do sleep 0.2; done; exit 3`;
}

/**
 * A WebSocket endpoint in busybox: reads the upgrade request, answers 101 with the RFC 6455
 * Sec-WebSocket-Accept, then echoes every byte back (frames included, as they came).
 */
export const WS_ECHO_SCRIPT = `cat > /ws.sh <<'X'
#!/bin/sh
key=""
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\\r')
  [ -z "$line" ] && break
  case "$line" in [Ss]ec-[Ww]eb[Ss]ocket-[Kk]ey:*) key=$(printf '%s' "\${line#*:}" | tr -d ' ');; esac
done
accept=$(printf '%s' "\${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11" | sha1sum | cut -d' ' -f1 | xxd -r -p | base64)
printf 'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: %s\\r\\n\\r\\n' "$accept"
exec cat
X
chmod +x /ws.sh
exec nc -ll -p 80 -e /ws.sh`;

export function startContainer(name: string, env: Record<string, string>, script?: string, publish?: string[]): Promise<string> {
  return run(name, { env, cmd: script ? ['sh', '-c', script] : undefined, publish });
}

/** GET until every expected body has been seen (bounded); returns the bodies seen. */
export async function reachesAll(port: number, host: string, expected: string[], path = '/', timeoutMs = 30_000): Promise<Set<string>> {
  const seen = new Set<string>();
  await waitFor(
    `${host}${path} to answer from ${expected.join(', ')}`,
    async () => {
      const a = await get(port, host, path, { timeoutMs: 5_000 });
      if (a.status === 200) seen.add(a.body.trim());
      return expected.every((e) => seen.has(e));
    },
    timeoutMs,
    50,
  );
  return seen;
}

/** GET until the answer matches (bounded). */
export async function answerFor(port: number, host: string, path: string, pred: (a: Answer) => boolean, timeoutMs = 30_000): Promise<Answer> {
  let last: Answer | undefined;
  return waitFor(
    `${host}${path}: expected answer (last: ${last?.status} ${last?.body.trim()})`,
    async () => {
      last = await get(port, host, path, { timeoutMs: 5_000 });
      return pred(last) ? last : undefined;
    },
    timeoutMs,
    100,
  );
}

export function connectRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

/** A masked WebSocket text frame, as a client sends it. */
export function clientFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]);
}

/**
 * Upgrade through the proxy on a raw socket: checks the 101 and its Sec-WebSocket-Accept, then
 * sends a frame and resolves with what came back after the 101 head.
 */
export function websocketEcho(port: number, host: string, frame: Buffer): Promise<{ head: string; echoed: Buffer }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let head: string | undefined;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`websocket echo timed out; got ${JSON.stringify(buf.toString())}`));
    }, 10_000);
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (head === undefined) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        head = buf.subarray(0, end).toString();
        buf = buf.subarray(end + 4);
        if (!head.startsWith('HTTP/1.1 101')) {
          clearTimeout(timer);
          s.destroy();
          return reject(new Error(`no upgrade: ${head}`));
        }
        s.write(frame);
      }
      if (buf.length >= frame.length) {
        clearTimeout(timer);
        s.destroy();
        resolve({ head, echoed: buf.subarray(0, frame.length) });
      }
    });
    s.write(`GET /chat HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
  });
}

/** The RFC 6455 example key's accept value. */
export const EXAMPLE_ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=';

/** A counter's value from Prometheus text (sum over matching label sets). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/**
 * The routing checks every registry must pass: two instances of one service both reached,
 * declared host + longest path prefix, the VIRTUAL_HOST / VIRTUAL_PORT aliases, 404 and 503.
 */
export async function routingChecks(port: number, prefix: string, tag: string): Promise<void> {
  const svc = `web-${tag}`;
  const app = `app-${tag}`;
  await Promise.all([
    startContainer(`${prefix}web-1`, { SERVICE_NAME: svc }, httpdScript('web-1')),
    startContainer(`${prefix}web-2`, { SERVICE_NAME: svc }, httpdScript('web-2')),
    startContainer(`${prefix}site`, { SERVICE_NAME: `site-${tag}`, SERVICE_HTTP_HOST: `${app}.example.test` }, httpdScript('site')),
    startContainer(`${prefix}api`, { SERVICE_NAME: `api-${tag}`, SERVICE_HTTP_HOST: `${app}.example.test,www.${app}.example.test`, SERVICE_HTTP_PATH: '/static' }, httpdScript('api')),
    startContainer(`${prefix}legacy`, { SERVICE_NAME: `legacy-${tag}`, VIRTUAL_HOST: `legacy-${tag}.test` }, httpdScript('legacy')),
    startContainer(`${prefix}crash`, { SERVICE_NAME: `crash-${tag}` }, crashScript('crash')),
    startContainer(
      `${prefix}vport`,
      { SERVICE_NAME: `vport-${tag}`, VIRTUAL_HOST: `vport-${tag}.test`, VIRTUAL_PORT: '8080' },
      'mkdir -p /www2 && echo port-8080 > /www2/index.html && echo port-80 > /www/index.html && httpd -p 80 -h /www && exec httpd -f -p 8080 -h /www2',
      ['80', '8080'],
    ),
  ]);
  expect([...(await reachesAll(port, `${svc}.localhost`, ['web-1', 'web-2']))].sort()).toEqual(['web-1', 'web-2']);
  await reachesAll(port, `${app}.example.test`, ['site']);
  // /static is the api container's prefix: its own /static/index.html answers there.
  expect((await answerFor(port, `${app}.example.test`, '/static/', (a) => a.status === 200)).body.trim()).toBe('static-api');
  expect((await get(port, `www.${app}.example.test`, '/static/')).body.trim()).toBe('static-api');
  // Prefixes end on a segment boundary: /staticx is the site's.
  expect((await get(port, `${app}.example.test`, '/staticx')).body.trim()).toBe('site');
  expect((await get(port, `${app}.example.test`, '/')).body.trim()).toBe('site');
  // Only /static is routed on www.
  expect((await get(port, `www.${app}.example.test`, '/')).body).toBe(`no route for www.${app}.example.test/\n`);
  await reachesAll(port, `legacy-${tag}.test`, ['legacy']);
  // VIRTUAL_PORT picks which port VIRTUAL_HOST routes to; the other port keeps its default host.
  await reachesAll(port, `vport-${tag}.test`, ['port-8080']);
  expect((await answerFor(port, `vport-${tag}-80.localhost`, '/', (a) => a.status === 200)).body.trim()).toBe('port-80');
  expect((await get(port, `vport-${tag}-8080.localhost`, '/')).status).toBe(404);
  const unknown = await get(port, `nobody-${tag}.localhost`, '/');
  expect(unknown).toMatchObject({ status: 404, body: `no route for nobody-${tag}.localhost/\n` });
  // Crashed with exit 3 under --deregister on-success: still registered, critical → 503.
  await reachesAll(port, `crash-${tag}.localhost`, ['crash']);
  await docker('exec', `${prefix}crash`, 'touch', '/tmp/crash');
  const down = await answerFor(port, `crash-${tag}.localhost`, '/', (a) => a.status === 503);
  expect(down.body).toBe(`no healthy instance of crash-${tag}\n`);
  expect((await docker('inspect', '-f', '{{.State.ExitCode}}', `${prefix}crash`)).trim()).toBe('3');
}

/** A WebSocket echo container reached through the proxy: the 101 with the right accept, then bytes both ways. */
export async function websocketCheck(port: number, prefix: string, tag: string): Promise<void> {
  await startContainer(`${prefix}ws`, { SERVICE_NAME: `ws-${tag}` }, WS_ECHO_SCRIPT);
  const frame = clientFrame('hello through the proxy');
  // Until the container is registered and routed, the upgrade gets a 404: try again.
  const { head, echoed } = await waitFor('websocket echo', () => websocketEcho(port, `ws-${tag}.localhost`, frame), 30_000, 200);
  expect(head).toContain(`Sec-WebSocket-Accept: ${EXAMPLE_ACCEPT}`);
  expect(head.toLowerCase()).toContain('upgrade: websocket');
  expect(echoed.equals(frame)).toBe(true);
}

/**
 * `docker kill -s KILL` on one of two containers while 4 keep-alive clients send GETs: not one
 * may fail (requests caught on the dying instance are retried), and the killed one gets no more.
 */
export async function sigkillUnderLoad(port: number, prefix: string, tag: string, hm: Hm): Promise<Load> {
  const svc = `kill-${tag}`;
  await Promise.all([startContainer(`${prefix}ka`, { SERVICE_NAME: svc, NAME: 'kill-a' }), startContainer(`${prefix}kb`, { SERVICE_NAME: svc, NAME: 'kill-b' })]);
  await reachesAll(port, `${svc}.localhost`, ['kill-a', 'kill-b']);
  const load = new Load(port, `${svc}.localhost`, '/', 4, 45_000).start();
  try {
    await afterRequests(load, 100);
    await docker('kill', '-s', 'KILL', `${prefix}ka`);
    await waitFor('ka withdrawn', () => hm.logs.some((l) => l.event === 'deregistered' && String(l.id).includes(`${prefix}ka`)), 20_000);
    // Give the registry's change feed time to reach the proxy before counting.
    await afterRequests(load, 100);
    const fromA = load.bodies.get('kill-a\n') ?? 0;
    await afterRequests(load, 200);
    await load.stop();
    expect(load.failures).toEqual([]);
    expect(load.bodies.get('kill-a\n') ?? 0).toBe(fromA);
    expect(load.bodies.get('kill-b\n')).toBeGreaterThan(200);
    return load;
  } finally {
    await load.stop();
  }
}
