// An HTTP/1.1 reverse proxy with faults per request, for the HTTP APIs harbormaster talks to:
// the Docker engine (a unix socket, reached as --docker tcp://127.0.0.1:<port>) and Consul.
// Rules answer, hold or slow down matching requests; long responses (Docker /events, Consul
// blocking queries) stream through chunk by chunk and can have raw bytes injected or be cut.
// Connection upgrades (Docker attach/exec hijacking) are not proxied: harbormaster uses none.
import http from 'node:http';
import type net from 'node:net';

export type HttpTarget = { host: string; port: number } | { socketPath: string };

/** A path regex (it sees the query string too), optionally with a method. */
export type Match = RegExp | { method?: string; path?: RegExp };

export type RuleKind = 'respond' | 'hang' | 'delay';

export interface Rule {
  readonly kind: RuleKind;
  /** Requests this rule has taken. */
  readonly hits: number;
  remove(): void;
}

export type Outcome = 'pending' | 'forwarded' | 'responded' | 'hung' | 'destroyed' | 'failed';

export interface LoggedRequest {
  method: string;
  path: string;
  /** Status sent to the client, once sent. */
  status?: number;
  outcome: Outcome;
  /** The rule that took the request, if any. */
  rule?: RuleKind;
  /** Date.now() when the request arrived, and how long until its response ended or was cut. */
  time: number;
  ms?: number;
}

interface Exchange {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  entry: LoggedRequest;
  upstream?: http.ClientRequest;
  upstreamRes?: http.IncomingMessage;
  /** The response has headers out and no Content-Length: bytes can be added to it. */
  streaming: boolean;
  timer?: NodeJS.Timeout;
}

class RuleImpl implements Rule {
  hits = 0;
  readonly hung = new Set<Exchange>();
  constructor(
    readonly kind: RuleKind,
    readonly match: Match,
    private readonly owner: HttpFaultProxy,
    readonly times: number,
    readonly apply: (ex: Exchange) => void,
  ) {}

  remove(): void {
    this.owner.dropRule(this);
  }
}

// Hop-by-hop headers belong to one connection, not to the exchange.
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade', 'te', 'trailer']);

function endToEnd(h: http.IncomingHttpHeaders): http.OutgoingHttpHeaders {
  return Object.fromEntries(Object.entries(h).filter(([k, v]) => !HOP.has(k) && v !== undefined));
}

export function matches(m: Match | undefined, method: string, path: string): boolean {
  if (!m) return true;
  const { method: mm, path: re } = m instanceof RegExp ? { method: undefined, path: m } : m;
  if (mm && mm.toUpperCase() !== method.toUpperCase()) return false;
  if (!re) return true;
  re.lastIndex = 0;
  return re.test(path);
}

export class HttpFaultProxy {
  readonly log: LoggedRequest[] = [];
  private readonly server: http.Server;
  private readonly agent = new http.Agent({ keepAlive: true });
  private readonly rules: RuleImpl[] = [];
  private readonly open = new Set<Exchange>();
  /** Delayed requests to send whether or not their client still waits. */
  private readonly late = new Set<NodeJS.Timeout>();

  private constructor(private readonly target: HttpTarget) {
    this.server = http.createServer((req, res) => this.handle(req, res));
    // Hung and streaming requests may last as long as a test wants.
    this.server.requestTimeout = 0;
  }

  /** Listen on 127.0.0.1:`port` (0: an ephemeral port) and forward to `target`. */
  static async start(target: HttpTarget, port = 0): Promise<HttpFaultProxy> {
    const p = new HttpFaultProxy(target);
    await new Promise<void>((resolve, reject) => {
      p.server.once('error', reject);
      p.server.listen(port, '127.0.0.1', () => resolve());
    });
    return p;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /**
   * Answer matching requests directly with `status` and `body` (an object is sent as JSON),
   * for `times` requests (default: until removed). Rules are tried in the order they were added.
   */
  respond(match: Match, status: number, body: string | object = '', opts: { times?: number; headers?: Record<string, string> } = {}): Rule {
    const json = typeof body !== 'string';
    const text = json ? JSON.stringify(body) : body;
    return this.add('respond', match, opts.times, (ex) => {
      ex.req.resume();
      ex.entry.outcome = 'responded';
      ex.entry.status = status;
      ex.res.writeHead(status, { 'content-type': json ? 'application/json' : 'text/plain; charset=utf-8', ...opts.headers });
      ex.res.end(text);
    });
  }

  /**
   * Never answer matching requests (their connection stays open). Removing the rule, or
   * releaseHung(), forwards them then; releaseHung('destroy') drops their connections instead.
   */
  hang(match: Match, opts: { times?: number } = {}): Rule {
    const rule: RuleImpl = this.add('hang', match, opts.times, (ex) => {
      ex.entry.outcome = 'hung';
      rule.hung.add(ex);
    });
    return rule;
  }

  /**
   * Forward matching requests `ms` late. With `evenIfClientLeft`, a request whose client gave up
   * waiting is still sent then (its answer dropped), as a slow server still applies what it got.
   */
  delay(match: Match, ms: number, opts: { times?: number; evenIfClientLeft?: boolean } = {}): Rule {
    return this.add('delay', match, opts.times, (ex) => {
      if (!opts.evenIfClientLeft) {
        ex.timer = setTimeout(() => this.forward(ex), ms);
        return;
      }
      const chunks: Buffer[] = [];
      ex.req.on('data', (c: Buffer) => chunks.push(c));
      ex.req.once('end', () => {
        const t = setTimeout(() => {
          this.late.delete(t);
          const body = Buffer.concat(chunks);
          if (!ex.res.destroyed) return this.forward(ex, body);
          const where = 'socketPath' in this.target ? { socketPath: this.target.socketPath } : { host: this.target.host, port: this.target.port };
          const up = http.request({ ...where, method: ex.req.method, path: ex.req.url, headers: endToEnd(ex.req.headers), agent: this.agent }, (ur) => ur.resume());
          up.on('error', () => undefined);
          up.end(body);
        }, ms);
        this.late.add(t);
      });
    });
  }

  /** Let every hung request go: forwarded (default) or its connection destroyed. Returns how many. */
  releaseHung(how: 'forward' | 'destroy' = 'forward'): number {
    let n = 0;
    for (const r of this.rules) n += this.release(r, how);
    return n;
  }

  /** How many requests are held by hang() rules right now. */
  get hungCount(): number {
    return this.rules.reduce((n, r) => n + r.hung.size, 0);
  }

  /**
   * Write raw bytes into every open streaming response (headers sent, chunked) whose request
   * matches; each call is one chunk on the wire, so a character can be split across two calls.
   * Returns how many streams got the bytes.
   */
  inject(data: string | Buffer, match?: Match): number {
    let n = 0;
    for (const ex of this.open) {
      if (!ex.streaming || !ex.res.writable || !matches(match, ex.entry.method, ex.entry.path)) continue;
      ex.res.write(data);
      n++;
    }
    return n;
  }

  /** Open exchanges (waiting for the target, or streaming) whose request matches. */
  streams(match?: Match): LoggedRequest[] {
    return [...this.open].filter((ex) => matches(match, ex.entry.method, ex.entry.path)).map((ex) => ex.entry);
  }

  /**
   * End every open exchange whose request matches: the client's connection is destroyed, so it
   * sees the stream break off. With `clean`, a streaming response is ended properly instead (the
   * final chunk is sent, as a server closing the stream would). Returns how many.
   */
  cutStreams(match?: Match, opts: { clean?: boolean } = {}): number {
    let n = 0;
    for (const ex of [...this.open]) {
      if (!matches(match, ex.entry.method, ex.entry.path) || ex.entry.outcome === 'hung') continue;
      n++;
      if (opts.clean && ex.streaming && ex.res.writable) {
        ex.upstreamRes?.unpipe(ex.res);
        ex.upstream?.destroy();
        ex.res.end();
      } else {
        ex.entry.outcome = 'destroyed';
        ex.res.destroy();
      }
    }
    return n;
  }

  /** Logged requests matching, in arrival order. */
  requests(match?: Match): LoggedRequest[] {
    return this.log.filter((e) => matches(match, e.method, e.path));
  }

  /** Remove every rule; hung requests are forwarded. */
  clearRules(): void {
    for (const r of [...this.rules]) r.remove();
  }

  async close(): Promise<void> {
    for (const r of this.rules) this.release(r, 'destroy');
    this.rules.length = 0;
    for (const t of this.late) clearTimeout(t);
    this.late.clear();
    for (const ex of this.open) {
      clearTimeout(ex.timer);
      ex.upstream?.destroy();
    }
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.agent.destroy();
  }

  /** @internal */
  dropRule(r: RuleImpl): void {
    const i = this.rules.indexOf(r);
    if (i >= 0) this.rules.splice(i, 1);
    this.release(r, 'forward');
  }

  private add(kind: RuleKind, match: Match, times: number | undefined, apply: (ex: Exchange) => void): RuleImpl {
    const r = new RuleImpl(kind, match, this, times ?? Infinity, apply);
    this.rules.push(r);
    return r;
  }

  private release(r: RuleImpl, how: 'forward' | 'destroy'): number {
    const held = [...r.hung].filter((ex) => !ex.res.destroyed);
    r.hung.clear();
    for (const ex of held) {
      if (how === 'forward') this.forward(ex);
      else {
        ex.entry.outcome = 'destroyed';
        ex.res.destroy();
      }
    }
    return held.length;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const entry: LoggedRequest = { method: req.method ?? 'GET', path: req.url ?? '/', outcome: 'pending', time: Date.now() };
    this.log.push(entry);
    const ex: Exchange = { req, res, entry, streaming: false };
    this.open.add(ex);
    res.on('close', () => {
      this.open.delete(ex);
      clearTimeout(ex.timer);
      entry.ms = Date.now() - entry.time;
      if (!res.writableFinished) {
        // The client went away, or the exchange was cut: nothing more to fetch for it.
        ex.upstream?.destroy();
        if (entry.outcome === 'pending' || entry.outcome === 'hung') entry.outcome = 'destroyed';
      }
      for (const r of this.rules) r.hung.delete(ex);
    });
    // A rule whose `times` are used up stays listed (its hung requests with it) but takes no more.
    const rule = this.rules.find((r) => r.hits < r.times && matches(r.match, entry.method, entry.path));
    if (!rule) return this.forward(ex);
    rule.hits++;
    entry.rule = rule.kind;
    rule.apply(ex);
  }

  /** Send the exchange's request on; `body`, when its body was read already. */
  private forward(ex: Exchange, body?: Buffer): void {
    const { req, res, entry } = ex;
    if (res.destroyed) return;
    entry.outcome = 'pending';
    const where = 'socketPath' in this.target ? { socketPath: this.target.socketPath } : { host: this.target.host, port: this.target.port };
    const up = http.request({ ...where, method: req.method, path: req.url, headers: endToEnd(req.headers), agent: this.agent });
    ex.upstream = up;
    up.on('response', (ur) => {
      ex.upstreamRes = ur;
      entry.status = ur.statusCode;
      entry.outcome = 'forwarded';
      res.writeHead(ur.statusCode ?? 502, ur.statusMessage, endToEnd(ur.headers));
      // Headers go out now, not with the first body chunk: a stream may stay silent a long time.
      res.flushHeaders();
      ex.streaming = ur.headers['content-length'] === undefined;
      ur.pipe(res);
      // A target that breaks off mid-body: the client must see a broken response, not an end.
      ur.on('close', () => {
        if (!ur.complete && !res.writableEnded) res.destroy();
      });
    });
    up.on('error', (err) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      entry.outcome = 'failed';
      entry.status = 502;
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`fault proxy: ${err.message}\n`);
    });
    if (body) up.end(body);
    else req.pipe(up);
  }
}
