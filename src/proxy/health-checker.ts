// Optional active health checks: every interval, GET a path on each routed instance; a non-2xx/3xx
// answer, a connection error or a timeout takes it out of rotation until a check passes again.
// A passing check also ends a passive ejection at once. New instances are routed to before their
// first check (the registry already vouched for them).
import http from 'node:http';
import type { Logger } from '../log/logger.js';
import { endEjection, type Upstream } from './balancer.js';

export interface HealthCheckOptions {
  path: string;
  intervalMs: number;
  timeoutMs: number;
  log: Logger;
}

const CONCURRENCY = 32;

/** One check: resolves with undefined when healthy, or the reason it is not; always within `timeoutMs`. */
export function probe(u: Upstream, path: string, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const done = (problem: string | undefined) => {
      clearTimeout(timer);
      resolve(problem);
    };
    const req = http.get({
      host: u.address,
      port: u.port,
      path,
      agent: false,
      headers: { host: u.address.includes(':') ? `[${u.address}]:${u.port}` : `${u.address}:${u.port}`, 'user-agent': 'harbormaster-health-check' },
    });
    // Settles the check even when no event follows (a socket left open after an odd answer).
    timer = setTimeout(() => {
      req.destroy();
      resolve(`no answer within ${timeoutMs} ms`);
    }, timeoutMs);
    req.once('response', (res) => {
      res.resume();
      res.once('end', () => {
        const s = res.statusCode ?? 0;
        done(s >= 200 && s < 400 ? undefined : `GET ${path} answered ${s}`);
      });
      res.once('error', (err) => done(err.message));
    });
    // A 101 to a plain GET: not a health answer.
    req.once('upgrade', (_res, socket) => {
      socket.destroy();
      done(`GET ${path} answered 101`);
    });
    req.once('error', (err: Error & { code?: string }) => done(err.code ?? err.message));
  });
}

export class HealthChecker {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;

  constructor(
    private readonly upstreams: () => Iterable<Upstream>,
    private readonly opts: HealthCheckOptions,
  ) {}

  start(): void {
    const tick = () => {
      this.running = this.round().finally(() => {
        this.running = undefined;
        if (!this.stopped) this.timer = setTimeout(tick, this.opts.intervalMs);
      });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** Check every instance once. */
  async round(): Promise<void> {
    const list = [...this.upstreams()];
    for (let i = 0; i < list.length && !this.stopped; i += CONCURRENCY) {
      await Promise.all(list.slice(i, i + CONCURRENCY).map((u) => this.check(u)));
    }
  }

  private async check(u: Upstream): Promise<void> {
    const problem = await probe(u, this.opts.path, this.opts.timeoutMs);
    const failed = problem !== undefined;
    const where = `instance ${u.id} (${u.address}:${u.port}) of ${u.service}`;
    if (!failed && u.state.ejectedUntil !== 0 && endEjection(u.state, Date.now())) {
      this.opts.log.info({ event: 'ejection-ended', service: u.service, id: u.id }, `${where} passes its health check; its ejection ends`);
    }
    if (failed === u.state.checkFailed) return;
    u.state.checkFailed = failed;
    if (failed) this.opts.log.warn({ event: 'check-failed', service: u.service, id: u.id, err: problem }, `${where} failed its health check (${problem}); out of rotation`);
    else this.opts.log.info({ event: 'check-passed', service: u.service, id: u.id }, `${where} passes its health check again; back in rotation`);
  }
}
