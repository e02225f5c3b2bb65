import { PassThrough, Writable } from 'node:stream';
import type Docker from 'dockerode';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { ContainerDetails } from './container.js';
import { DockerSource, signalNumber, stoppingSignal } from './docker-source.js';

describe('signals as Docker writes them', () => {
  it.each([
    ['15', 15],
    ['SIGTERM', 15],
    ['term', 15],
    ['SIGWINCH', 28],
    ['28', 28],
    ['SIGRTMIN+3', 37],
    ['RTMIN+3', 37],
    ['SIGRTMIN', 34],
    ['SIGRTMAX-2', 62],
  ])('%s is %d', (raw, n) => {
    expect(signalNumber(raw)).toBe(n);
  });

  it.each(['', 'SIGNOPE', 'SIGRTMIN+40', '999x'])('%j is no signal', (raw) => {
    expect(signalNumber(raw)).toBeUndefined();
  });

  it('a kill withdraws only for SIGKILL or the container\'s own stop signal (SIGTERM by default), by number or name', () => {
    expect(stoppingSignal('15')).toBe('SIGTERM');
    expect(stoppingSignal('SIGTERM')).toBe('SIGTERM');
    expect(stoppingSignal('KILL')).toBe('SIGKILL');
    expect(stoppingSignal('9', 28)).toBe('SIGKILL');
    expect(stoppingSignal('SIGWINCH', 28)).toBe('SIGWINCH (its stop signal)');
    expect(stoppingSignal('15', 28)).toBeUndefined();
    for (const other of ['3', 'SIGQUIT', 'QUIT', '2', 'INT', '1', 'SIGHUP', 'USR1', '', 'nonsense']) expect(stoppingSignal(other)).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------
// Withdrawals against a scripted Docker: events, listings and inspections under the test's control.
// ---------------------------------------------------------------------------

interface SetCall {
  owner: string;
  ids: string[];
  reason?: string;
}

class FakeDocker {
  readonly containers = new Map<string, ContainerDetails>();
  readonly events = new PassThrough();
  inspects = 0;
  /** While set, inspections wait for it. */
  gate?: Promise<void>;

  async getEvents(): Promise<PassThrough> {
    return this.events;
  }

  async listContainers(): Promise<Array<{ Id: string; Names: string[]; State: string }>> {
    return [...this.containers.values()].map((c) => ({ Id: c.Id, Names: [c.Name], State: c.State?.Running ? 'running' : 'exited' }));
  }

  getContainer(id: string): { inspect: () => Promise<ContainerDetails> } {
    return {
      inspect: async () => {
        this.inspects++;
        await this.gate;
        const c = this.containers.get(id);
        if (!c) throw Object.assign(new Error('no such container'), { statusCode: 404 });
        return structuredClone(c);
      },
    };
  }

  emit(action: string, id: string, name: string): void {
    this.events.write(`${JSON.stringify({ Type: 'container', Action: action, Actor: { ID: id, Attributes: { name } }, timeNano: Date.now() * 1e6 })}\n`);
  }
}

function details(id: string, name: string, hostPort: string): ContainerDetails {
  return {
    Id: id,
    Name: `/${name}`,
    Config: { Image: 'web:1', Env: [], Labels: { SERVICE_NAME: 'web' }, ExposedPorts: { '80/tcp': {} } },
    NetworkSettings: { IPAddress: '172.17.0.2', Ports: { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: hostPort }] } },
    State: { Running: true, StartedAt: new Date(Date.now() - 60_000).toISOString(), Health: null },
  };
}

const ID1 = `${'1'.repeat(12)}${'a'.repeat(52)}`;
const ID2 = `${'2'.repeat(12)}${'b'.repeat(52)}`;

describe('DockerSource withdrawals', () => {
  let source: DockerSource | undefined;
  afterEach(async () => {
    await source?.stop();
    source = undefined;
  });

  function setup(): { docker: FakeDocker; sets: SetCall[]; lines: string[]; wanted: (owner: string) => string[] } {
    const docker = new FakeDocker();
    const sets: SetCall[] = [];
    const lines: string[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push((JSON.parse(c.toString()) as { msg: string }).msg), cb()) }));
    source = new DockerSource({
      docker: docker as unknown as Docker,
      endpoint: 'fake',
      model: { hostname: 'h', hostAddress: '127.0.0.1', internal: false, explicit: false, tags: [] },
      healthGate: true,
      deregister: 'always',
      resyncMs: 0,
      log,
      sink: { set: (owner, instances, reason) => sets.push({ owner, ids: instances.map((i) => i.id), reason }), complete: () => undefined },
    });
    const wanted = (owner: string) => sets.filter((s) => s.owner === owner).at(-1)?.ids ?? [];
    return { docker, sets, lines, wanted };
  }

  it('a withdrawal wins over an inspection already under way; resyncs and health_status events keep it out; DELETE brings it back', async () => {
    const { docker, sets, lines, wanted } = setup();
    docker.containers.set(ID1, details(ID1, 'web-1', '32001'));
    source!.start();
    await waitUntil(() => wanted(ID1).length === 1);
    expect(wanted(ID1)).toEqual(['h:web-1:80']);
    // A health_status event's inspection is under way (held) when the withdrawal arrives.
    let open!: () => void;
    docker.gate = new Promise((r) => (open = r));
    const before = docker.inspects;
    docker.emit('health_status: healthy', ID1, 'web-1');
    await waitUntil(() => docker.inspects > before);
    const w = await source!.withdrawContainer('web-1', 60_000);
    expect(w).toMatchObject({ id: ID1, name: 'web-1', instances: ['h:web-1:80'] });
    expect(sets.at(-1)).toEqual({ owner: ID1, ids: [], reason: 'web-1: withdrawn' });
    open();
    docker.gate = undefined;
    await source!.resync();
    docker.emit('health_status: healthy', ID1, 'web-1');
    const n = docker.inspects;
    await waitUntil(() => docker.inspects > n);
    await new Promise((r) => setTimeout(r, 20));
    expect(wanted(ID1)).toEqual([]);
    expect(lines.some((l) => /^withdrew web-1 \(1 instances\) until \d{4}-\d\d-\d\dT/.test(l))).toBe(true);
    expect(source!.withdrawals().map((x) => x.id)).toEqual([ID1]);
    // Lifted by its id prefix.
    expect(await source!.readmitContainer(ID1.slice(0, 12))).toEqual({ container: { id: ID1, name: 'web-1' }, readmitted: true });
    await waitUntil(() => wanted(ID1).length === 1);
    expect(lines).toContain('re-admitted web-1');
    expect(await source!.readmitContainer('web-1')).toMatchObject({ readmitted: false });
  });

  it('expires and registers the container again; a repeated request extends it', async () => {
    const { docker, lines, wanted } = setup();
    docker.containers.set(ID1, details(ID1, 'web-1', '32001'));
    source!.start();
    await waitUntil(() => wanted(ID1).length === 1);
    await source!.withdrawContainer('web-1', 150);
    const again = await source!.withdrawContainer(ID1, 400);
    expect(again.instances).toEqual(['h:web-1:80']);
    await new Promise((r) => setTimeout(r, 250));
    expect(wanted(ID1)).toEqual([]);
    await waitUntil(() => wanted(ID1).length === 1);
    expect(lines).toContain('withdrawal of web-1 expired');
    expect(source!.withdrawals()).toEqual([]);
  });

  it('forgets the withdrawal of a removed container: a new container with the same name is not withdrawn', async () => {
    const { docker, lines, wanted } = setup();
    docker.containers.set(ID1, details(ID1, 'web-1', '32001'));
    source!.start();
    await waitUntil(() => wanted(ID1).length === 1);
    await source!.withdrawContainer('web-1', 60_000);
    docker.containers.delete(ID1);
    docker.emit('destroy', ID1, 'web-1');
    await waitUntil(() => source!.withdrawals().length === 0);
    expect(lines).toContain('withdrawal of web-1 forgotten: the container is gone');
    docker.containers.set(ID2, details(ID2, 'web-1', '32002'));
    docker.emit('start', ID2, 'web-1');
    await waitUntil(() => wanted(ID2).length === 1);
    await expect(source!.withdrawContainer(ID1, 1000)).rejects.toMatchObject({ status: 404 });
  });

  it('refuses an ambiguous or unknown container with the lookup error, and answers 503 when Docker cannot list', async () => {
    const { docker, wanted } = setup();
    docker.containers.set(ID1, details(ID1, 'web-1', '32001'));
    docker.containers.set(ID2, details(ID2, '111111111111', '32002'));
    source!.start();
    await waitUntil(() => wanted(ID1).length === 1 && wanted(ID2).length === 1);
    await expect(source!.withdrawContainer('111111111111', 1000)).rejects.toMatchObject({ status: 400, message: expect.stringContaining('ambiguous') });
    await expect(source!.withdrawContainer('nope', 1000)).rejects.toMatchObject({ status: 404 });
    await source!.withdrawContainer('web-1', 60_000);
    docker.listContainers = () => Promise.reject(new Error('connect ENOENT /var/run/docker.sock'));
    await expect(source!.withdrawContainer('web-1', 1000)).rejects.toMatchObject({ status: 503, message: "cannot list Docker's containers: connect ENOENT /var/run/docker.sock" });
    // Without Docker's listing a withdrawal is still lifted by what the source knows of it.
    await expect(source!.readmitContainer('222222222222')).rejects.toMatchObject({ status: 503, message: expect.stringContaining('no withdrawal matches "222222222222"') });
    expect(await source!.readmitContainer('web-1')).toMatchObject({ readmitted: true });
    await waitUntil(() => wanted(ID1).length === 1);
  });
});

async function waitUntil(cond: () => boolean, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}
