// The few Consul agent endpoints the registrar writes to, over undici with a timeout on every
// call, so that each failure can be told apart: no answer (unreachable), an answer refusing
// the call (403 ACL, 429 rate limit, 5xx), or a 400 refusing this registration for what it is.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { Agent, request } from 'undici';
import { addSecret } from '../log/redact.js';
import { NoAnswerError } from '../util/time.js';
import { explainConsulFailure, explainConsulRefusal } from './explain.js';
import { RefusedError, RejectedError, UsageError } from './types.js';

type Env = Record<string, string | undefined>;

export interface ConsulHttpTarget {
  host: string;
  port: number;
  secure: boolean;
}

const DEFINITION_ERROR = /scripts are disabled|invalid (check|service|address|port|meta)|must (be|not|have)|is not a valid|cannot be|unsupported/i;

export class ConsulHttpError extends RefusedError {
  override name = 'ConsulHttpError';
}

/** Where and how to reach a Consul agent, from its target and Consul's own environment variables. */
export interface ConsulConnection {
  /** `http(s)://host:port`, IPv6 hosts bracketed. */
  origin: string;
  token?: string;
  /** Client TLS material (CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY) for https targets. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
}

export function consulConnection(target: ConsulHttpTarget, env: Env): ConsulConnection {
  const host = target.host.includes(':') && !target.host.startsWith('[') ? `[${target.host}]` : target.host;
  const read = (name: string) => {
    const file = env[name];
    if (!file) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new Error(`${name}=${file}: ${(err as Error).message}`);
    }
  };
  addSecret(env.CONSUL_HTTP_TOKEN);
  const tls = target.secure ? { ca: read('CONSUL_CACERT'), cert: read('CONSUL_CLIENT_CERT'), key: read('CONSUL_CLIENT_KEY') } : undefined;
  if (tls) checkPem(tls, env);
  return {
    origin: `${target.secure ? 'https' : 'http'}://${host}:${target.port}`,
    token: env.CONSUL_HTTP_TOKEN || undefined,
    tls,
  };
}

/**
 * The TLS files checked when read: a file that is not PEM (or a key of another certificate)
 * would otherwise fail on the first connection with OpenSSL's words and no variable named.
 */
function checkPem(tls: NonNullable<ConsulConnection['tls']>, env: Env): void {
  if (tls.ca) {
    try {
      new X509Certificate(tls.ca);
    } catch (err) {
      throw new UsageError(`CONSUL_CACERT=${env.CONSUL_CACERT}: not a PEM certificate (${(err as Error).message})`);
    }
  }
  if (!tls.cert !== !tls.key) throw new UsageError(`consul TLS: CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY go together (only ${tls.cert ? 'CONSUL_CLIENT_CERT' : 'CONSUL_CLIENT_KEY'} is set)`);
  if (tls.cert && tls.key) {
    try {
      createSecureContext({ cert: tls.cert, key: tls.key });
    } catch (err) {
      throw new UsageError(`CONSUL_CLIENT_CERT=${env.CONSUL_CLIENT_CERT}, CONSUL_CLIENT_KEY=${env.CONSUL_CLIENT_KEY}: not a PEM certificate and its key (${(err as Error).message})`);
    }
  }
}

export class ConsulHttp {
  private readonly dispatcher: Agent;
  private readonly base: string;
  private readonly token?: string;
  private readonly secure: boolean;

  constructor(target: ConsulHttpTarget, env: Env, private readonly timeoutMs: number) {
    this.secure = target.secure;
    const conn = consulConnection(target, env);
    this.base = `${conn.origin}/v1`;
    this.token = conn.token;
    this.dispatcher = new Agent({
      connections: 32,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      connectTimeout: Math.min(timeoutMs, 5_000),
      ...(conn.tls ? { connect: conn.tls } : {}),
    });
  }

  /**
   * The parsed JSON answer (undefined for an empty body); throws classified errors. A call sent
   * but not answered within its timeout (`timeoutMs` overrides the client's, for reads whose
   * cost grows with the agent's size) throws NoAnswerError: the agent may be slow, not gone.
   */
  async call<T>(method: 'GET' | 'PUT', path: string, body?: unknown, signal?: AbortSignal, timeoutMs = this.timeoutMs): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.token) headers['x-consul-token'] = this.token;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const deadline = AbortSignal.timeout(timeoutMs);
    const fail = (err: unknown, what: string) => {
      const text = `${method} ${path}: ${what}`;
      return deadline.aborted || isUndiciTimeout(err) ? new NoAnswerError(text) : new Error(text);
    };
    let res;
    try {
      res = await request(`${this.base}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        dispatcher: this.dispatcher,
        signal: signal ? AbortSignal.any([signal, deadline]) : deadline,
        ...(timeoutMs > this.timeoutMs ? { headersTimeout: timeoutMs, bodyTimeout: timeoutMs } : {}),
      });
    } catch (err) {
      throw fail(err, explainConsulFailure(errText(err), this.secure));
    }
    let text: string;
    try {
      text = await res.body.text();
    } catch (err) {
      throw fail(err, `reading the answer: ${errText(err)}`);
    }
    if (res.statusCode >= 400) {
      const why = `${method} ${path}: ${res.statusCode} ${explainConsulRefusal(res.statusCode, text.trim().slice(0, 200) || 'no reason given')}`;
      // Consul refuses this definition (bad check, bad address, script checks disabled on the
      // agent): retrying it unchanged is useless. Older agents answer these with a 500.
      if (res.statusCode === 400 || (res.statusCode === 500 && DEFINITION_ERROR.test(text))) throw new RejectedError(why);
      throw new ConsulHttpError(why, res.statusCode);
    }
    if (!text) return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ConsulHttpError(`${method} ${path}: answer is not JSON`, res.statusCode);
    }
  }

  async close(): Promise<void> {
    await this.dispatcher.close().catch(() => undefined);
  }
}

/** undici's own waits for the answer's headers or body ran out (the connection was made). */
function isUndiciTimeout(err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code;
  return code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT';
}

function errText(err: unknown): string {
  const e = err as Error & { code?: string; cause?: Error & { code?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return 'no answer (timed out)';
  const cause = e?.cause?.code ?? e?.code;
  return cause ? `${e.message} (${cause})` : String(e?.message ?? err);
}
