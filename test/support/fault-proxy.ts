// A byte-level TCP proxy between harbormaster and a registry or Docker, whose faults can be
// switched at any time: it knows nothing of the protocol, so HTTP/1.1, long streams and gRPC
// over HTTP/2 (the etcd3 client) all go through it the same way.
import net from 'node:net';

export type FaultTarget = { host: string; port: number } | { socketPath: string };

export type FaultMode = 'pass' | 'cut' | 'blackhole' | 'delay';

export interface FaultProxyStats {
  /** Connections accepted since start, refused ones (mode cut) included. */
  accepted: number;
  /** Connections closed at once because the proxy was cut. */
  refused: number;
  /** Connections currently open (client side). */
  open: number;
  /** Bytes forwarded client → target and target → client. */
  bytesUp: number;
  bytesDown: number;
  /** Bytes thrown away by blackhole(). */
  dropped: number;
}

/** One direction of one connection; in delay mode chunks wait here, in order. */
class Lane {
  private readonly queue: { due: number; chunk: Buffer | null }[] = [];
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly from: net.Socket,
    private readonly to: net.Socket,
    private readonly count: (n: number) => void,
  ) {}

  /** A chunk of data, or null for the end of this direction (a FIN, after the data before it). */
  send(chunk: Buffer | null, delayMs: number): void {
    if (delayMs <= 0 && this.queue.length === 0) return this.write(chunk);
    // Never overtake a chunk already waiting, even if the delay was lowered meanwhile.
    const last = this.queue.at(-1)?.due ?? 0;
    this.queue.push({ due: Math.max(Date.now() + delayMs, last), chunk });
    this.schedule();
  }

  /** Waiting chunks go out now (the delay was lifted). */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const q of this.queue.splice(0)) this.write(q.chunk);
  }

  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
  }

  private schedule(): void {
    if (this.timer || this.queue.length === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const now = Date.now();
      while (this.queue.length > 0 && this.queue[0].due <= now) this.write(this.queue.shift()!.chunk);
      this.schedule();
    }, Math.max(0, this.queue[0].due - Date.now()));
  }

  private write(chunk: Buffer | null): void {
    if (this.to.destroyed) return;
    if (chunk === null) {
      this.to.end();
      return;
    }
    this.count(chunk.length);
    // Backpressure: a slow reader slows the writer down instead of filling memory.
    if (!this.to.write(chunk)) {
      this.from.pause();
      this.to.once('drain', () => this.from.resume());
    }
  }
}

interface Conn {
  client: net.Socket;
  upstream: net.Socket;
  up: Lane;
  down: Lane;
  /** blackhole() dropped bytes of it: its streams have a hole. */
  lost: boolean;
  /** Kept by blackhole({ hold: true }), delivered on pass(). */
  held: { lane: Lane; chunk: Buffer | null }[];
}

export class FaultProxy {
  private readonly server: net.Server;
  private readonly conns = new Set<Conn>();
  private modeNow: FaultMode = 'pass';
  private delayMs = 0;
  private hold = false;
  private readonly counters = { accepted: 0, refused: 0, bytesUp: 0, bytesDown: 0, dropped: 0 };

  private constructor(private readonly target: FaultTarget) {
    // Half-open kept: a client's FIN is passed on, and the answer still comes back.
    this.server = net.createServer({ allowHalfOpen: true }, (client) => this.accept(client));
  }

  /** Listen on 127.0.0.1:`port` (0: an ephemeral port) and forward to `target`. */
  static async start(target: FaultTarget, port = 0): Promise<FaultProxy> {
    const p = new FaultProxy(target);
    await new Promise<void>((resolve, reject) => {
      p.server.once('error', reject);
      p.server.listen(port, '127.0.0.1', () => resolve());
    });
    return p;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  /** "127.0.0.1:<port>", for endpoints such as etcd://… or consul://… */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get mode(): FaultMode {
    return this.modeNow;
  }

  stats(): FaultProxyStats {
    return { ...this.counters, open: this.conns.size };
  }

  /**
   * Forward normally. What delay() or blackhole({ hold: true }) kept back is delivered first,
   * in order. Connections that lost bytes under blackhole() are destroyed instead: their streams
   * have a hole, and passing the rest on would be a fault no real network produces.
   */
  pass(): void {
    this.modeNow = 'pass';
    this.delayMs = 0;
    this.release(0);
  }

  /** Destroy every open connection on both sides, and close new ones at once until pass(). */
  cut(): void {
    this.modeNow = 'cut';
    for (const c of this.conns) this.destroy(c);
  }

  /**
   * A partition where TCP stays up: connections stay open, new ones are accepted, and nothing
   * goes through in either direction. Bytes are dropped; with `hold` they are kept and
   * delivered on pass(), as TCP retransmission would after a partition shorter than its timeout.
   */
  blackhole(opts: { hold?: boolean } = {}): void {
    this.modeNow = 'blackhole';
    this.hold = opts.hold ?? false;
  }

  /** Forward each chunk `ms` after it arrived (order is kept in each direction). */
  delay(ms: number): void {
    this.modeNow = 'delay';
    this.delayMs = ms;
    this.release(ms);
  }

  /** Send RST on every open connection, both sides. The mode stays: in pass, new connections go through. */
  reset(): void {
    for (const c of this.conns) {
      this.forget(c);
      rst(c.client);
      rst(c.upstream);
    }
  }

  async close(): Promise<void> {
    for (const c of this.conns) this.destroy(c);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    this.counters.accepted++;
    if (this.modeNow === 'cut') {
      this.counters.refused++;
      client.destroy();
      return;
    }
    const t = this.target;
    const upstream = 'socketPath' in t ? net.connect({ path: t.socketPath, allowHalfOpen: true }) : net.connect({ host: t.host, port: t.port, allowHalfOpen: true });
    client.setNoDelay(true);
    const c: Conn = {
      client,
      upstream,
      up: new Lane(client, upstream, (n) => (this.counters.bytesUp += n)),
      down: new Lane(upstream, client, (n) => (this.counters.bytesDown += n)),
      lost: false,
      held: [],
    };
    this.conns.add(c);
    client.on('data', (chunk: Buffer) => this.carry(c, c.up, chunk));
    upstream.on('data', (chunk: Buffer) => this.carry(c, c.down, chunk));
    client.on('end', () => this.carry(c, c.up, null));
    upstream.on('end', () => this.carry(c, c.down, null));
    // A clean close follows the FINs already carried; after an error the other side goes too.
    const closed = (hadError: boolean) => {
      if (hadError) this.destroy(c);
      else if (client.destroyed && upstream.destroyed) this.forget(c);
    };
    client.on('close', closed);
    upstream.on('close', closed);
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
  }

  private carry(c: Conn, lane: Lane, chunk: Buffer | null): void {
    switch (this.modeNow) {
      case 'blackhole':
        if (this.hold) c.held.push({ lane, chunk });
        else {
          c.lost = true;
          this.counters.dropped += chunk?.length ?? 0;
        }
        return;
      case 'cut':
        return;
      default:
        // Whatever a partition kept back goes first.
        if (c.held.length > 0) c.held.push({ lane, chunk });
        else lane.send(chunk, this.modeNow === 'delay' ? this.delayMs : 0);
    }
  }

  /** Out of a partition: kept bytes go on, connections that lost some are closed. */
  private release(delayMs: number): void {
    for (const c of this.conns) {
      if (c.lost) {
        this.destroy(c);
        continue;
      }
      if (delayMs === 0) {
        c.up.flush();
        c.down.flush();
      }
      for (const h of c.held.splice(0)) h.lane.send(h.chunk, delayMs);
    }
  }

  private forget(c: Conn): void {
    this.conns.delete(c);
    c.up.clear();
    c.down.clear();
  }

  private destroy(c: Conn): void {
    this.forget(c);
    c.client.destroy();
    c.upstream.destroy();
  }
}

/** RST where TCP allows it; a unix socket has no RST, it is just destroyed. */
function rst(s: net.Socket): void {
  try {
    s.resetAndDestroy();
  } catch {
    s.destroy();
  }
}
