// A bounded HTTP/1.1 load generator for loopback targets. It speaks HTTP over raw sockets so
// that every request is accounted for exactly: no pool, no hidden retry, and it knows whether a
// failed request went out on a fresh connection or on one that had already answered (a reused
// keep-alive connection — the race a rolling replacement must not lose). Two client kinds run
// together: `keepalive` (long-lived connections, requests back to back) and `fresh` (a new
// connection per request, `Connection: close`). Both are rate-capped by default so the
// generator stays cheap on CPU next to the proxy under test, and it always stops by itself.
import net from 'node:net';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';

export type Kind = 'keepalive' | 'fresh';

export interface LoadOptions {
  /** http://127.0.0.1:PORT/path — loopback only. */
  url: string;
  /** Host header; the URL's host when not given. */
  host?: string;
  method?: 'GET' | 'POST';
  /** POST body (default a small form body); sent with Content-Length. */
  body?: string;
  headers?: Record<string, string>;
  /** Hard cap on the run (default 30 s). */
  durationMs?: number;
  /** Hard cap on requests over both kinds (default 1,000,000). */
  maxRequests?: number;
  /** Default 16 connections, at most 3,000 requests/s in all; `false` turns the kind off. */
  keepalive?: { connections?: number; rate?: number } | false;
  /** Default 8 at a time, at most 450 requests/s; `false` turns the kind off. */
  fresh?: { concurrency?: number; rate?: number } | false;
  /** A request not answered by then fails as `timeout` (default 10 s). */
  requestTimeoutMs?: number;
  /** stop() waits this long for requests in flight, then counts them as unfinished (default 5 s). */
  stopWaitMs?: number;
}

export interface FailureSample {
  /** Since the start of the load. */
  atMs: number;
  /** `<status> <first body line>` or an error: ECONNREFUSED, ECONNRESET, closed before response, timeout... */
  what: string;
  /** Sent on a keep-alive connection that had answered before. */
  reused: boolean;
}

export interface KindResult {
  /** Requests finished: ok + failures. */
  requests: number;
  /** Answered 2xx. */
  ok: number;
  failures: number;
  /** Failures of requests sent on a connection that had already answered. */
  failuresOnReused: number;
  /** In flight when the run ended (neither ok nor failed). */
  unfinished: number;
  connections: number;
  /** Finished requests per second. */
  rate: number;
  okRate: number;
  /**
   * The fewest requests finished in any whole second of the run (seconds counted from its
   * start; the last, partial one left out): the rate held throughout, not on average.
   */
  minWindowRate: number;
  /** Start of that second, since the start of the load. */
  minWindowAtMs: number;
  /** Latency of the ok requests (about 2% precision), from the send or the connect for a new connection. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The longest time without an ok response of this kind, including from the start and up to the end. */
  longestGapMs: number;
  longestGapAtMs: number;
  /** Ok responses per body (trimmed; at most 64 different bodies, then `(other)`). */
  bodies: Record<string, number>;
  failureKinds: Record<string, number>;
  /** The first 20 failures. */
  failureSamples: FailureSample[];
}

export interface LoadResult {
  elapsedMs: number;
  stoppedBy: 'stop' | 'duration' | 'requests';
  keepalive: KindResult;
  fresh: KindResult;
  /** CPU time of this whole process during the run, and as a share of one core. */
  cpuMs: number;
  cpuPercent: number;
  /** The longest the event loop was blocked: a gap no longer than this may be the generator's own. */
  loopDelayMaxMs: number;
}

export interface LoadGen {
  /** Stops sending, waits for requests in flight (up to stopWaitMs) and returns the result. */
  stop(): Promise<LoadResult>;
  /** Settles when the run ends, by stop() or by a cap. */
  readonly done: Promise<LoadResult>;
  /** The figures so far, without stopping. */
  snapshot(): LoadResult;
}

const LOG_BASE = Math.log(1.02);
const BUCKETS = 1200; // 1.02^1200 µs is far beyond any timeout
const MAX_BODIES = 64;
const MAX_FAILURE_KINDS = 32;
const MAX_SAMPLES = 20;
const FAILURE_BACKOFF_MS = 5;

class Stats {
  requests = 0;
  ok = 0;
  failures = 0;
  failuresOnReused = 0;
  unfinished = 0;
  connections = 0;
  private readonly hist = new Uint32Array(BUCKETS);
  private maxMs = 0;
  private lastOk: number;
  private longestGap = 0;
  private longestGapAt = 0;
  private readonly bodies = new Map<string, number>();
  private readonly failureKinds = new Map<string, number>();
  private readonly samples: FailureSample[] = [];
  /** Requests finished in each second of the run. */
  private readonly windows: number[] = [];

  constructor(private readonly t0: number) {
    this.lastOk = t0;
  }

  private count(now: number): void {
    const w = Math.floor((now - this.t0) / 1000);
    while (this.windows.length <= w) this.windows.push(0);
    this.windows[w]++;
  }

  okay(now: number, latencyMs: number, body: string): void {
    this.requests++;
    this.count(now);
    this.ok++;
    const us = latencyMs * 1000;
    this.hist[us <= 1 ? 0 : Math.min(BUCKETS - 1, Math.ceil(Math.log(us) / LOG_BASE))]++;
    if (latencyMs > this.maxMs) this.maxMs = latencyMs;
    this.gapUntil(now);
    this.lastOk = now;
    bump(this.bodies, body, MAX_BODIES);
  }

  failed(now: number, what: string, reused: boolean): void {
    this.requests++;
    this.count(now);
    this.failures++;
    if (reused) this.failuresOnReused++;
    bump(this.failureKinds, what, MAX_FAILURE_KINDS);
    if (this.samples.length < MAX_SAMPLES) this.samples.push({ atMs: Math.round(now - this.t0), what, reused });
  }

  private gapUntil(now: number): void {
    if (now - this.lastOk > this.longestGap) {
      this.longestGap = now - this.lastOk;
      this.longestGapAt = this.lastOk - this.t0;
    }
  }

  private percentile(p: number): number {
    if (this.ok === 0) return 0;
    const want = Math.ceil(this.ok * p);
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.hist[i];
      if (seen >= want) return Math.min(this.maxMs, 1.02 ** i / 1000);
    }
    return this.maxMs;
  }

  result(now: number, unfinished: number): KindResult {
    const secs = Math.max(now - this.t0, 1) / 1000;
    const trailing = Math.max(0, now - this.lastOk);
    const gapAtEnd = trailing > this.longestGap;
    const whole = Math.floor((now - this.t0) / 1000);
    let minWindow = whole > 0 ? Infinity : this.requests;
    let minWindowAt = 0;
    for (let w = 0; w < whole; w++) {
      const n = this.windows[w] ?? 0;
      if (n < minWindow) {
        minWindow = n;
        minWindowAt = w * 1000;
      }
    }
    return {
      requests: this.requests,
      ok: this.ok,
      failures: this.failures,
      failuresOnReused: this.failuresOnReused,
      unfinished,
      connections: this.connections,
      rate: Math.round(this.requests / secs),
      okRate: Math.round(this.ok / secs),
      minWindowRate: minWindow,
      minWindowAtMs: minWindowAt,
      p50Ms: round(this.percentile(0.5)),
      p99Ms: round(this.percentile(0.99)),
      maxMs: round(this.maxMs),
      longestGapMs: round(gapAtEnd ? trailing : this.longestGap),
      longestGapAtMs: Math.round(gapAtEnd ? this.lastOk - this.t0 : this.longestGapAt),
      bodies: Object.fromEntries(this.bodies),
      failureKinds: Object.fromEntries(this.failureKinds),
      failureSamples: [...this.samples],
    };
  }
}

function bump(m: Map<string, number>, key: string, max: number): void {
  const k = m.has(key) || m.size < max ? key : '(other)';
  m.set(k, (m.get(k) ?? 0) + 1);
}

const round = (ms: number) => Math.round(ms * 100) / 100;

const TICK_MS = 4;

/**
 * A token bucket per kind. It holds up to 1 s of tokens so that a stall (a busy machine, a
 * garbage collection, a container starting beside it) is caught up afterwards instead of lowering
 * the rate, as an open-loop generator does (the requests a stall delays are sent late, not
 * dropped); the connections in use bound the burst. Waiting slots are released together on a coarse tick: one wake-up sends a
 * batch, far cheaper than a timer per request.
 */
class Pacer {
  private tokens = 0;
  private last = performance.now();
  private readonly queue: (() => void)[] = [];
  private ticker?: NodeJS.Timeout;
  private readonly burst: number;

  constructor(private readonly rate: number) {
    this.burst = Math.max(1, rate);
  }

  /** Runs `go` now when a token is there (or there is no cap), else on a later tick. */
  take(go: () => void): void {
    if (!(this.rate > 0 && Number.isFinite(this.rate))) return go();
    this.refill();
    if (this.queue.length === 0 && this.tokens >= 1) {
      this.tokens--;
      return go();
    }
    this.queue.push(go);
    this.ticker ??= setInterval(() => this.tick(), TICK_MS);
  }

  close(): void {
    clearInterval(this.ticker);
    this.ticker = undefined;
    this.queue.length = 0;
  }

  private refill(): void {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
  }

  private tick(): void {
    this.refill();
    while (this.queue.length > 0 && this.tokens >= 1) {
      this.tokens--;
      this.queue.shift()!();
    }
    if (this.queue.length === 0) {
      clearInterval(this.ticker);
      this.ticker = undefined;
    }
  }
}

type Parsed = { status: number; body: Buffer; close: boolean } | 'incomplete' | 'bad';

/** Parses one response from `buf` (several for 1xx); `ended` when the server has closed. */
function parseResponse(buf: Buffer, ended: boolean): Parsed {
  let start = 0;
  for (;;) {
    const headEnd = buf.indexOf('\r\n\r\n', start);
    if (headEnd < 0) return buf.length - start > 65536 ? 'bad' : 'incomplete';
    const head = buf.toString('latin1', start, headEnd);
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
    if (!m) return 'bad';
    const status = Number(m[1]);
    const bodyStart = headEnd + 4;
    if (status >= 100 && status < 200) {
      start = bodyStart;
      continue;
    }
    const close = /\r\nconnection:[^\r]*\bclose\b/i.test(head);
    if (status === 204 || status === 304) return { status, body: Buffer.alloc(0), close };
    const cl = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
    if (cl) {
      const n = Number(cl[1]);
      return buf.length - bodyStart >= n ? { status, body: buf.subarray(bodyStart, bodyStart + n), close } : 'incomplete';
    }
    if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(head)) {
      const parts: Buffer[] = [];
      let pos = bodyStart;
      for (;;) {
        const nl = buf.indexOf('\r\n', pos);
        if (nl < 0) return 'incomplete';
        const size = parseInt(buf.toString('latin1', pos, nl), 16);
        if (Number.isNaN(size)) return 'bad';
        // The last chunk's line ends at nl; the trailers (usually none) end at the next empty line.
        if (size === 0) return buf.indexOf('\r\n\r\n', nl) < 0 ? 'incomplete' : { status, body: Buffer.concat(parts), close };
        if (buf.length < nl + 2 + size + 2) return 'incomplete';
        parts.push(buf.subarray(nl + 2, nl + 2 + size));
        pos = nl + 2 + size + 2;
      }
    }
    // Delimited by the end of the connection.
    return ended ? { status, body: buf.subarray(bodyStart), close: true } : 'incomplete';
  }
}

function describeStatus(status: number, body: Buffer): string {
  const line = body.toString('latin1', 0, Math.min(body.length, 200)).split('\n', 1)[0].trim().slice(0, 80);
  return line ? `${status} ${line}` : `${status}`;
}

function bodyKey(body: Buffer): string {
  return body.toString('latin1', 0, Math.min(body.length, 64)).trim();
}

interface Conn {
  socket: net.Socket;
  chunks: Buffer[];
  answered: number;
  /** The server has closed its side: not to be used for another request. */
  ended: boolean;
  error?: string;
}

interface Slot {
  kind: Kind;
  conn?: Conn;
  /** Start of the request in flight, or undefined. */
  t0?: number;
  reused: boolean;
  timer?: NodeJS.Timeout;
}

function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

export function startLoad(o: LoadOptions): LoadGen {
  const url = new URL(o.url);
  if (url.protocol !== 'http:') throw new Error(`load-gen: url ${o.url}: only http: is supported`);
  if (!isLoopback(url.hostname)) throw new Error(`load-gen: url ${o.url}: the target must be a loopback address`);
  const address = url.hostname.replace(/^\[|\]$/g, '');
  const port = Number(url.port || 80);
  const method = o.method ?? 'GET';
  const body = method === 'POST' ? Buffer.from(o.body ?? 'probe=1&kind=load') : Buffer.alloc(0);
  const extra = Object.entries(o.headers ?? {})
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  const request = (close: boolean) =>
    Buffer.concat([
      Buffer.from(
        `${method} ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${o.host ?? url.host}\r\n${extra}` +
          (method === 'POST' ? `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n` : '') +
          (close ? 'Connection: close\r\n' : '') +
          '\r\n',
        'latin1',
      ),
      body,
    ]);
  const requests: Record<Kind, Buffer> = { keepalive: request(false), fresh: request(true) };
  const ka = o.keepalive === false ? { connections: 0, rate: 0 } : { connections: o.keepalive?.connections ?? 16, rate: o.keepalive?.rate ?? 3000 };
  const fr = o.fresh === false ? { concurrency: 0, rate: 0 } : { concurrency: o.fresh?.concurrency ?? 8, rate: o.fresh?.rate ?? 450 };
  const maxRequests = o.maxRequests ?? 1_000_000;
  const requestTimeoutMs = o.requestTimeoutMs ?? 10_000;
  const stopWaitMs = o.stopWaitMs ?? 5_000;

  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const stats: Record<Kind, Stats> = { keepalive: new Stats(t0), fresh: new Stats(t0) };
  const pacers: Record<Kind, Pacer> = {
    keepalive: new Pacer(ka.rate),
    fresh: new Pacer(fr.rate),
  };
  const slots: Slot[] = [];
  for (let i = 0; i < ka.connections; i++) slots.push({ kind: 'keepalive', reused: false });
  for (let i = 0; i < fr.concurrency; i++) slots.push({ kind: 'fresh', reused: false });
  let issued = 0;
  let stopping = false;
  let stoppedBy: LoadResult['stoppedBy'] = 'stop';
  let final: LoadResult | undefined;
  let resolveDone!: (r: LoadResult) => void;
  const done = new Promise<LoadResult>((r) => (resolveDone = r));
  let onIdle: (() => void) | undefined;

  const drop = (slot: Slot) => {
    const c = slot.conn;
    slot.conn = undefined;
    slot.reused = false;
    c?.socket.destroy();
  };

  const schedule = (slot: Slot, backoff = 0) => {
    if (stopping) return;
    if (backoff > 0) {
      slot.timer = setTimeout(() => {
        slot.timer = undefined;
        schedule(slot);
      }, backoff);
    } else pacers[slot.kind].take(() => fire(slot));
  };

  const fire = (slot: Slot) => {
    if (stopping) return;
    if (issued >= maxRequests) {
      stoppedBy = 'requests';
      void stop();
      return;
    }
    issued++;
    slot.t0 = performance.now();
    if (slot.kind === 'fresh' || !slot.conn || slot.conn.ended) {
      drop(slot);
      connect(slot);
    } else slot.reused = slot.conn.answered > 0;
    slot.conn!.chunks = [];
    slot.conn!.socket.write(requests[slot.kind]);
  };

  const finish = (slot: Slot, outcome: { status: number; body: Buffer; close: boolean } | string) => {
    const now = performance.now();
    const st = stats[slot.kind];
    const reused = slot.reused;
    const started = slot.t0!;
    slot.t0 = undefined;
    let backoff = 0;
    if (typeof outcome === 'string') {
      st.failed(now, outcome, reused);
      drop(slot);
      backoff = FAILURE_BACKOFF_MS;
    } else {
      if (outcome.status >= 200 && outcome.status < 300) st.okay(now, now - started, bodyKey(outcome.body));
      else st.failed(now, describeStatus(outcome.status, outcome.body), reused);
      if (slot.conn) slot.conn.answered++;
      if (slot.kind === 'fresh' || outcome.close) drop(slot);
    }
    if (stopping) onIdle?.();
    else schedule(slot, backoff);
  };

  const connect = (slot: Slot) => {
    const socket = net.connect({ host: address, port, noDelay: true });
    const c: Conn = { socket, chunks: [], answered: 0, ended: false };
    slot.conn = c;
    slot.reused = false;
    stats[slot.kind].connections++;
    socket.on('data', (d: Buffer) => {
      if (slot.conn !== c || slot.t0 === undefined) return;
      c.chunks.push(d);
      const buf = c.chunks.length === 1 ? d : Buffer.concat(c.chunks);
      if (c.chunks.length > 1) c.chunks = [buf];
      const r = parseResponse(buf, false);
      if (r === 'incomplete') return;
      finish(slot, r === 'bad' ? 'bad response' : r);
    });
    socket.on('end', () => (c.ended = true));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      c.error ??= err.code ?? err.message;
    });
    socket.on('close', () => {
      if (slot.conn !== c) return;
      slot.conn = undefined;
      if (slot.t0 === undefined) return;
      const buf = Buffer.concat(c.chunks);
      const r = parseResponse(buf, true);
      if (typeof r === 'object') finish(slot, r);
      else if (r === 'bad') finish(slot, 'bad response');
      else finish(slot, c.error ?? (buf.length > 0 ? 'closed mid-response' : 'closed before response'));
    });
  };

  const sweeper = setInterval(() => {
    const now = performance.now();
    for (const s of slots) if (s.t0 !== undefined && now - s.t0 > requestTimeoutMs) finish(s, 'timeout');
  }, 250);

  let stopAt: number | undefined;
  // Figures up to the moment sending stopped: the wait for the last answers is not part of the run.
  const result = (final_: boolean): LoadResult => {
    const now = stopAt ?? performance.now();
    const cpu = process.cpuUsage(cpu0);
    const wall = performance.now() - t0;
    const cpuMs = (cpu.user + cpu.system) / 1000;
    const inFlight = (k: Kind) => (final_ ? slots.filter((s) => s.kind === k && s.t0 !== undefined).length : 0);
    return {
      elapsedMs: Math.round(now - t0),
      stoppedBy,
      keepalive: stats.keepalive.result(now, inFlight('keepalive')),
      fresh: stats.fresh.result(now, inFlight('fresh')),
      cpuMs: Math.round(cpuMs),
      cpuPercent: Math.round((cpuMs / Math.max(wall, 1)) * 100),
      loopDelayMaxMs: round(loopDelay.max / 1e6),
    };
  };

  let stopping_: Promise<LoadResult> | undefined;
  const stop = (): Promise<LoadResult> => {
    stopping_ ??= (async () => {
      stopping = true;
      stopAt = performance.now();
      clearTimeout(capTimer);
      for (const s of slots) {
        if (s.timer) clearTimeout(s.timer);
        s.timer = undefined;
      }
      pacers.keepalive.close();
      pacers.fresh.close();
      const busy = () => slots.some((s) => s.t0 !== undefined);
      if (busy()) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, stopWaitMs);
          onIdle = () => {
            if (!busy()) {
              clearTimeout(t);
              resolve();
            }
          };
        });
      }
      final = result(true);
      clearInterval(sweeper);
      loopDelay.disable();
      for (const s of slots) {
        s.t0 = undefined;
        drop(s);
      }
      resolveDone(final);
      return final;
    })();
    return stopping_;
  };

  const capTimer = setTimeout(() => {
    stoppedBy = 'duration';
    void stop();
  }, o.durationMs ?? 30_000);

  for (const s of slots) schedule(s);
  if (slots.length === 0) void stop();
  return { stop, done, snapshot: () => final ?? result(false) };
}

function kindLine(name: Kind, k: KindResult): string {
  if (k.requests === 0 && k.unfinished === 0) return `${name} none`;
  const bodies = Object.entries(k.bodies)
    .map(([b, n]) => `${b || '(empty)'}=${n}`)
    .join(',');
  const kinds = Object.entries(k.failureKinds)
    .map(([w, n]) => `${w}×${n}`)
    .join(', ');
  return (
    `${name} ${k.requests} req ${k.rate}/s (lowest second ${k.minWindowRate}/s@${k.minWindowAtMs}ms) ok ${k.ok} fail ${k.failures}` +
    (k.failures ? ` (${k.failuresOnReused} on reused conns: ${kinds})` : '') +
    (k.unfinished ? ` unfinished ${k.unfinished}` : '') +
    ` p50 ${k.p50Ms}ms p99 ${k.p99Ms}ms max ${k.maxMs}ms gap ${k.longestGapMs}ms@${k.longestGapAtMs}ms conns ${k.connections} [${bodies}]`
  );
}

/** One line for a PROBE print. */
export function summary(r: LoadResult): string {
  return `${kindLine('keepalive', r.keepalive)} | ${kindLine('fresh', r.fresh)} | ${(r.elapsedMs / 1000).toFixed(1)}s (${r.stoppedBy}), generator cpu ${r.cpuPercent}% of a core, loop delay max ${r.loopDelayMaxMs}ms`;
}
