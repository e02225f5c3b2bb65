// The rollout itself: batch by batch, replace each old container by a new one without the service
// ever having fewer ready containers than it started with. Every step that changes Docker is
// written to the journal first, so that an interrupted run is finished or undone by the next one,
// and the containers are locked, so that two runs never work on the same ones.
import type Docker from 'dockerode';
import { UsageError } from '../registry/types.js';
import type { ModelOptions } from '../sources/docker/service-model.js';
import { cloneSpec, createClone, describeRefusal, NotCreated } from './clone-spec.js';
import { Journal, type Pair } from './journal.js';
import { ContainerLocks } from './lock.js';
import { batchSize, type Order, type RolloutConfig } from './options.js';
import { Interrupted, monitor, NotReady, notReadyNow, remainingInstances, sleep, waitReady, type ReadinessDeps, type ReadyTimes } from './readiness.js';
import type { RegistryView, Sidecar } from './registry-view.js';
import type { Reporter } from './reporter.js';
import { LABEL_PREFIX, LABELS, nameOf, replacementName, resolveImage, running, serviceContainers } from './targets.js';

export interface EngineDeps {
  docker: Docker;
  view: RegistryView;
  sidecar: Sidecar;
  model: ModelOptions;
  reporter: Reporter;
  signal: AbortSignal;
}

/** What a finished run measured (for --json's last event and the bench). */
export interface RolloutResult {
  status: 'done' | 'rolled-back' | 'paused' | 'interrupted' | 'nothing';
  replaced: number;
  totalMs: number;
  /** Time spent waiting for replacements to become ready (Docker health, registry, --via). */
  readyWaitMs: number;
  drainMs: number;
  failure?: string;
  /** Old containers that did not become ready again when put back: their replacements stayed. */
  notRestored?: string[];
}

/** A replacement could not be made ready: which container and why, in one line. */
class BatchFailed extends Error {}

type Container = Docker.ContainerInspectInfo;
type Ref = { id: string; name: string };

interface Plan {
  order: Order;
  size: number;
  batches: Container[][];
  previousOf?: Map<string, Ref>;
}

const WITHDRAW_SETTLE_MS = 10_000;

export class Rollout {
  private readonly deps: ReadinessDeps;
  private journal?: Journal;
  private locks?: ContainerLocks;
  /** The signal the steps obey: the command's, or (for clean-up after an interrupt) one that never fires. */
  private signal: AbortSignal;
  private sidecarOk = true;
  private readyWaitMs = 0;
  private drainTotalMs = 0;
  private replaced = 0;
  private readonly notRestored: string[] = [];
  /** Kind of replacement: a clone of the old container, or (for --rollback) the kept previous container started again. */
  private restoring = false;
  /** The --image of this run, or of the unfinished run it resumes. */
  private targetImage?: string;
  private readonly imageCache = new Map<string, Docker.ImageInspectInfo>();

  constructor(
    private readonly cfg: RolloutConfig,
    private readonly d: EngineDeps,
  ) {
    this.deps = { docker: d.docker, view: d.view, model: d.model, via: cfg.via };
    this.signal = d.signal;
  }

  private say(event: string, message: string, extra: Record<string, unknown> = {}): void {
    this.d.reporter.emit({ event, message, ...extra });
  }

  async run(): Promise<RolloutResult> {
    const t0 = Date.now();
    const { cfg, d } = this;
    const all = await serviceContainers(d.docker, cfg.service, cfg.composeService, d.model);
    const live = running(all);
    for (const c of live) {
      const refusal = describeRefusal(c) ?? (c.HostConfig?.AutoRemove ? 'started with --rm: Docker deletes it as soon as it stops, so a failed rollout could not start it again; recreate it without --rm to roll it out' : undefined);
      if (refusal) throw new UsageError(`${nameOf(c)}: ${refusal}`);
    }
    const file = Journal.fileFor(cfg.stateDir, cfg.service, cfg.composeService);
    const recorded = Journal.load(cfg.stateDir, cfg.service, cfg.composeService);
    if (recorded?.ownedByLiveProcess()) throw new UsageError(`a rollout of ${cfg.service} is running (pid ${recorded.data.pid}, since ${recorded.data.startedAt})`);
    const ids = [...live.map((c) => c.Id), ...(recorded?.unfinished() ? recorded.containerIds() : [])];
    if (cfg.dryRun) {
      for (const id of ids) {
        const holder = ContainerLocks.holder(cfg.stateDir, id);
        if (holder) throw new UsageError(`a rollout of these containers is running (pid ${holder.pid} on ${holder.host}: ${holder.command})`);
      }
    } else {
      this.locks = await ContainerLocks.acquire(cfg.stateDir, ids, { journal: file, command: cfg.command ?? `harbormaster rollout ${cfg.service}` });
    }
    try {
      return await this.locked(t0, all, live, file);
    } finally {
      this.locks?.release();
    }
  }

  private async locked(t0: number, all: Container[], live: Container[], file: string): Promise<RolloutResult> {
    const { cfg, d } = this;
    // Read again under the lock: a run that finished meanwhile may have changed it.
    const previous = Journal.load(cfg.stateDir, cfg.service, cfg.composeService);
    if (previous?.ownedByLiveProcess()) throw new UsageError(`a rollout of ${cfg.service} is running (pid ${previous.data.pid}, since ${previous.data.startedAt})`);
    const unfinished = previous?.unfinished() ? previous : undefined;
    const ours = new Set([...live.map((c) => c.Id), ...(unfinished?.containerIds() ?? [])]);
    for (const other of Journal.others(cfg.stateDir, file)) {
      if (!other.containerIds().some((id) => ours.has(id))) continue;
      throw new UsageError(`an unfinished ${other.data.restore ? 'rollback' : 'rollout'} of these containers (started ${other.data.startedAt}${other.data.command ? ` as \`${other.data.command}\`` : ''}) is recorded in ${other.file}: run that command again to finish it, or with --rollback to undo it`);
    }
    if (live.length === 0 && !unfinished) throw new UsageError(`no running container of ${cfg.composeService ? 'compose service' : 'service'} ${cfg.service} on this host`);

    if (unfinished && cfg.rollback && !unfinished.data.restore) {
      const undo = [...unfinished.data.pairs].reverse().filter((p) => p.phase !== 'rolled-back');
      if (cfg.dryRun) {
        this.say('plan', `would roll back the unfinished rollout of ${cfg.service} (started ${unfinished.data.startedAt}): ${undo.map((p) => `${p.old.name} back${p.new ? `, ${p.new.name} removed` : ''} (${p.phase})`).join('; ') || 'nothing to undo'}`, { pairs: undo.length });
        return { status: 'nothing', replaced: 0, totalMs: Date.now() - t0, readyWaitMs: 0, drainMs: 0 };
      }
      await this.undoJournal(unfinished);
      if (this.notRestored.length > 0) return { ...this.result(t0), status: 'rolled-back', failure: `${this.notRestored.join(', ')} did not become ready again; their replacements stay` };
      this.say('done', `done: the unfinished rollout of ${cfg.service} (started ${unfinished.data.startedAt}) is rolled back`);
      return { ...this.result(t0), status: 'done' };
    }
    // --rollback after a finished rollout: the same machinery, with each replica's kept previous
    // container (started again) as the replacement of the current one.
    if (unfinished && !!unfinished.data.restore !== cfg.rollback) {
      throw new UsageError(`an unfinished ${unfinished.data.restore ? 'rollback' : 'rollout'} of ${cfg.service} (started ${unfinished.data.startedAt}): run it again ${unfinished.data.restore ? 'with' : 'without'} --rollback to finish it${unfinished.data.restore ? '' : ', or with --rollback to undo it'}`);
    }
    if (unfinished && cfg.image !== undefined && cfg.image !== unfinished.data.targetImage) {
      throw new UsageError(`an unfinished rollout of ${cfg.service} to ${unfinished.data.targetImage ?? 'the image each container was created from'} (started ${unfinished.data.startedAt}): run it again without --image to resume it with that image, or with --rollback`);
    }
    this.restoring = cfg.rollback;
    this.targetImage = cfg.image ?? unfinished?.data.targetImage;

    // What is left to do: the pairs of an unfinished run are finished (replacement known ready) or
    // undone and redone; every other running container of the service is replaced.
    const open = unfinished?.data.pairs.filter((p) => p.phase !== 'stopped' && p.phase !== 'rolled-back') ?? [];
    const finishing = open.filter((p) => finishable(p));
    const madeByIt = new Set(unfinished?.data.pairs.flatMap((p) => (p.new?.id && p.phase !== 'rolled-back' ? [p.new.id] : [])) ?? []);
    const targets = live.filter((c) => !madeByIt.has(c.Id) && !finishing.some((p) => p.old.id === c.Id));
    for (const p of open.filter((x) => !finishable(x) && !targets.some((c) => c.Id === x.old.id))) {
      // Stopped by a stop-first step: started again before the batches.
      const c = await this.inspectOrUndefined(p.old.id);
      if (c) targets.push(c);
    }
    targets.sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
    const idle = all.filter((c) => !live.includes(c) && !targets.includes(c));
    const done = unfinished?.data.pairs.filter((p) => p.phase === 'stopped').length ?? 0;
    const replicas = targets.length + finishing.length + done;

    if (unfinished) {
      const list = open.map((p) => `${p.old.name}${p.new ? ` → ${p.new.name}` : ''} (${p.phase}): ${finishable(p) ? 'finished if its replacement is still ready' : `${p.old.name} serves again and is replaced anew`}`);
      this.say('plan', `${cfg.dryRun ? 'would resume' : 'resuming'} the ${unfinished.data.restore ? 'rollback' : 'rollout'} of ${cfg.service} started ${unfinished.data.startedAt}${this.targetImage ? ` (image ${this.targetImage})` : ''}: ${list.join('; ') || 'no pair half done'}`);
    }
    const plan = await this.plan(targets, replicas, unfinished, true);
    if (idle.length > 0) this.say('note', `  not running, left as they are (only running containers are replaced): ${idle.map(nameOf).join(', ')}`);
    if (cfg.dryRun) return { status: 'nothing', replaced: 0, totalMs: Date.now() - t0, readyWaitMs: 0, drainMs: 0 };

    this.sidecarOk = await this.checkSidecar();
    this.journal =
      unfinished ??
      Journal.create(cfg.stateDir, {
        service: cfg.service,
        composeService: cfg.composeService,
        image: plan.previousOf ? 'previous containers' : (this.targetImage ?? 'the image each container was created from'),
        targetImage: this.targetImage,
        command: cfg.command,
        imageId: '',
        order: plan.order,
        restore: !!plan.previousOf,
        pairs: [],
      });
    this.journal.data.order = plan.order;
    this.journal.take();
    try {
      let batches = plan.batches;
      if (unfinished) {
        await this.resumePairs(unfinished);
        // A pair whose replacement was no longer ready is replaced anew: plan what is left now.
        const now = running(await serviceContainers(d.docker, cfg.service, cfg.composeService, d.model)).filter((c) => !this.journal!.data.pairs.some((p) => p.phase === 'stopped' && p.new?.id === c.Id));
        if (now.map((c) => c.Id).join() !== targets.map((c) => c.Id).join()) batches = (await this.plan(now, replicas, unfinished, false)).batches;
      }
      for (let i = 0; i < batches.length; i++) {
        if (i > 0 && cfg.pauseMs > 0) {
          this.say('pause', `pausing ${cfg.pauseMs / 1000} s before batch ${i + 1}`, { ms: cfg.pauseMs });
          await sleep(cfg.pauseMs, this.signal);
        }
        this.checkpoint();
        const stopFirst = plan.order === 'stop-first';
        const pairs = batches[i].map((c) => {
          const known = this.journal!.pair(c.Id);
          const p = known ?? this.journal!.add({ old: { id: c.Id, name: nameOf(c) }, phase: 'planned' });
          // Undone by an earlier run (paused, or put back on resume): this one tries again.
          if (known && known.phase === 'rolled-back') {
            delete known.new;
            delete known.oldRestart;
            known.phase = 'planned';
          }
          if (plan.previousOf) p.new = plan.previousOf.get(c.Id);
          p.stopFirst = stopFirst;
          this.journal!.save();
          return p;
        });
        // Per container: created (or started again), ready, withdrawn and drained, stopped.
        this.d.reporter.batch(i + 1, batches.length, batches[i].length * 4);
        this.say('batch', `batch ${i + 1}/${batches.length}: ${pairs.map((p) => p.old.name).join(', ')}`, { batch: i + 1, batches: batches.length });
        if (stopFirst) await this.stopFirst(pairs, batches[i]);
        else await this.startFirst(pairs, batches[i]);
      }
    } catch (err) {
      return this.afterError(t0, err);
    }
    await this.cleanup(this.journal);
    this.journal.finish('done');
    if (this.restoring) this.say('done', `done: ${this.replaced} previous container(s) of ${cfg.service} serve again`);
    else this.say('done', `done: ${this.replaced} container(s) of ${cfg.service} replaced in ${((Date.now() - t0) / 1000).toFixed(1)} s (${(this.readyWaitMs / 1000).toFixed(1)} s waiting for readiness)`, { replaced: this.replaced, ms: Date.now() - t0, readyWaitMs: this.readyWaitMs });
    return { ...this.result(t0), status: 'done' };
  }

  /** Interrupted, a replacement that failed, or an error of Docker or the registry: leave the service whole. */
  private async afterError(t0: number, err: unknown): Promise<RolloutResult> {
    const j = this.journal!;
    // Clean-up is not cut short by the signal that stopped the steps: it is what leaves the service whole.
    const calm = new AbortController().signal;
    if (err instanceof Interrupted || this.d.signal.aborted) {
      await this.withSignal(calm, () => this.settleAfterInterrupt());
      j.finish('interrupted');
      this.say('interrupted', `interrupted: ${this.cfg.service} is left with every old or new container that was ready serving; run the same command again to resume, or add --rollback`);
      return { ...this.result(t0), status: 'interrupted' };
    }
    const failure = err instanceof BatchFailed ? err.message : String((err as Error)?.message ?? err).split('\n')[0];
    this.say('fail', `failed: ${failure}`, { reason: failure });
    try {
      if (this.cfg.failureAction === 'pause') {
        const open = j.data.pairs.filter((p) => p.phase !== 'stopped' && p.phase !== 'rolled-back').reverse();
        await this.withSignal(calm, () => this.undoPairs(j, open));
        j.finish('paused');
        this.say('paused', `paused: batches already replaced stay; the failed replacement was removed and its old container serves again. Run again to go on, or with --rollback to undo`);
        return { ...this.result(t0), status: 'paused', failure };
      }
      await this.undoJournal(j);
    } catch (undoErr) {
      j.finish('interrupted');
      throw new RolloutFailed(`rollout of ${this.cfg.service} failed (${failure}) and undoing it failed too: ${(undoErr as Error).message}; run the same command again to finish it, or with --rollback`);
    }
    return { ...this.result(t0), status: 'rolled-back', failure, ...(this.notRestored.length ? { notRestored: this.notRestored } : {}) };
  }

  /** Images, order, batches; says the plan (`say`: the first time). Exit 2 for what cannot be done, before anything changes. */
  private async plan(targets: Container[], replicas: number, unfinished: Journal | undefined, say: boolean): Promise<Plan> {
    const { cfg, d } = this;
    const previousOf = cfg.rollback ? await this.previousContainers(targets, unfinished) : undefined;
    for (const ref of new Set(targets.map((c) => this.imageRef(c)))) {
      if (!this.imageCache.has(ref)) this.imageCache.set(ref, await resolveImage(d.docker, ref, this.restoring ? 'never' : cfg.pull, (m) => this.say('note', m), cfg.dryRun));
    }
    const plans = [];
    for (const c of targets) plans.push({ c, clone: cloneSpec({ container: c, oldImage: await this.imageById(c.Image), newImage: this.imageCache.get(this.imageRef(c))!, newImageRef: this.imageRef(c), name: 'planned', dropLabelPrefixes: [LABEL_PREFIX] }) });
    const fixed = plans.filter((p) => p.clone.fixedHostPorts.length > 0 || p.clone.staticAddresses.length > 0);
    let order: Order = cfg.order ?? unfinished?.data.order ?? 'start-first';
    if (fixed.length > 0 && order === 'start-first') {
      const what = fixed.map((p) => `${nameOf(p.c)} (${[...p.clone.fixedHostPorts, ...p.clone.staticAddresses].join(', ')})`).join('; ');
      if (cfg.order === 'start-first') throw new UsageError(`--order start-first: ${what} hold a fixed host port or address, which a replacement cannot hold at the same time: use --order stop-first, or publish ephemeral ports`);
      order = 'stop-first';
      if (say) this.say('note', `order stop-first: ${what} hold a fixed host port or address, which old and new cannot hold at once`);
    }
    const total = Math.max(1, replicas);
    let size = batchSize(cfg.batch, total);
    if (order === 'stop-first' && size >= total && total > 1) {
      size = total - 1;
      if (say) this.say('note', `batch ${size}: stop-first keeps at least one container serving`);
    }
    if (say && order === 'stop-first' && total === 1) this.say('note', `stop-first with one container: ${cfg.service} has no instance from the old one's stop until the new one is ready`);
    const batches: Container[][] = [];
    for (let i = 0; i < targets.length; i += size) batches.push(targets.slice(i, i + size));
    if (!say) return { order, size, batches, previousOf };

    const firstRef = targets[0] ? this.imageRef(targets[0]) : (this.targetImage ?? '');
    if (previousOf) {
      this.say('plan', `${cfg.dryRun ? 'would put' : 'putting'} back the previous containers of ${cfg.service} in ${batches.length} batch(es) of ${size}, ${order}: ${targets.map((c) => `${previousOf.get(c.Id)!.name} instead of ${nameOf(c)}`).join(', ')}`, { order, batches: batches.length, batchSize: size });
    } else {
      const image = this.imageCache.get(firstRef);
      this.say(
        'plan',
        `${cfg.dryRun ? 'would roll' : 'rolling'} ${cfg.service}: ${targets.length} container(s) in ${batches.length} batch(es) of ${size}, ${order}, image ${firstRef}${image ? ` (${shortId(image.Id)})` : ''}`,
        { containers: targets.map(nameOf), batches: batches.length, batchSize: size, order, image: firstRef },
      );
      batches.forEach((b, i) => this.say('plan', `  batch ${i + 1}: ${b.map((c) => `${nameOf(c)} (${shortId(c.Image)} → ${shortId(this.imageCache.get(this.imageRef(c))!.Id)})`).join(', ')}`, { batch: i + 1, containers: b.map(nameOf) }));
    }
    const ready = ['Docker running and healthy (if it has a HEALTHCHECK)', `passing in ${cfg.registry}`];
    if (cfg.via) ready.push(`${cfg.via.url.href} answers${cfg.via.host ? ` for Host ${cfg.via.host}` : ''}`);
    this.say('plan', `  ready = ${ready.join(' + ')}, within ${cfg.healthTimeoutMs / 1000} s, then watched ${cfg.monitorMs / 1000} s; old: withdrawn, drained ${cfg.drainMs / 1000} s, stopped (${cfg.stopTimeoutS} s grace), ${cfg.keep > 0 ? `last ${cfg.keep} kept stopped` : 'removed'}${cfg.pauseMs > 0 ? `; ${cfg.pauseMs / 1000} s between batches` : ''}`);
    for (const p of plans) for (const n of p.clone.notes) this.say('note', `  ${nameOf(p.c)}: ${n}`);
    return { order, size, batches, previousOf };
  }

  /** The image reference a replacement of `c` runs. */
  private imageRef(c: Container): string {
    return this.restoring ? c.Image : (this.targetImage ?? c.Config.Image);
  }

  private result(t0: number): Omit<RolloutResult, 'status'> {
    return { replaced: this.replaced, totalMs: Date.now() - t0, readyWaitMs: this.readyWaitMs, drainMs: this.drainTotalMs };
  }

  private async checkSidecar(): Promise<boolean> {
    const err = await this.d.sidecar.reachable();
    if (!err) return true;
    this.say('note', `the sidecar's API is not reachable (${err}): old containers leave the registry only when they are stopped, so they are not drained first`);
    return false;
  }

  private checkpoint(): void {
    if (this.signal.aborted) throw new Interrupted();
  }

  /** Runs steps side by side and waits for every one of them, so that nothing is still in flight when a failure is handled. */
  private async settled(steps: (Promise<void> | undefined)[]): Promise<void> {
    const results = await Promise.allSettled(steps.map((s) => s ?? Promise.resolve()));
    const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
    if (rejected.length === 0) return;
    if (this.signal.aborted || rejected.some((r) => r instanceof Interrupted)) throw new Interrupted();
    throw rejected.find((r) => r instanceof BatchFailed) ?? rejected[0];
  }

  // --- the two orders -------------------------------------------------------------------------

  private async startFirst(pairs: Pair[], olds: Container[]): Promise<void> {
    await this.settled(pairs.map((p, i) => (p.phase === 'planned' ? this.createAndStart(p, olds[i]) : undefined)));
    this.checkpoint();
    await this.readyAll(pairs.filter((p) => p.phase === 'created'));
    this.checkpoint();
    await this.retire(pairs.filter((p) => p.phase === 'ready' || p.phase === 'withdrawn'));
  }

  private async stopFirst(pairs: Pair[], olds: Container[]): Promise<void> {
    await this.withdrawAndDrain(pairs.filter((p) => p.phase === 'planned' || p.phase === 'withdrawn'));
    this.checkpoint();
    await this.settled(pairs.map((p) => (p.phase === 'withdrawn' ? this.stopOld(p, 'stopped-first') : undefined)));
    this.checkpoint();
    await this.settled(pairs.map((p, i) => (p.phase === 'stopped-first' ? this.createAndStart(p, olds[i]) : undefined)));
    this.checkpoint();
    await this.readyAll(pairs.filter((p) => p.phase === 'created'));
    for (const p of pairs.filter((x) => x.phase === 'ready')) {
      this.journal!.set(p, 'stopped');
      this.replaced++;
    }
  }

  /** Create the replacement from the old container's configuration and start it. */
  private async createAndStart(p: Pair, old: Container): Promise<void> {
    const { docker } = this.d;
    if (this.restoring) {
      const prev = p.new!;
      await this.locks?.add(prev.id);
      this.journal!.set(p, 'created');
      // Kept with restart policy "no" (so that a Docker restart does not start it beside the current one): it gets the current one's back.
      const policy = p.oldRestart ?? old.HostConfig?.RestartPolicy;
      if (policy?.Name) await this.setRestart(prev.id, { Name: policy.Name, MaximumRetryCount: policy.MaximumRetryCount });
      try {
        await docker.getContainer(prev.id).start();
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode !== 304) throw new BatchFailed(`${prev.name} does not start again: ${dockerMessage(err)}`);
      }
      this.say('start', `started ${prev.name} again (instead of ${p.old.name})`, { container: prev.name, replaces: p.old.name });
      // Withdrawn when it was replaced: back in rotation once it is ready.
      await this.readmit(prev);
      this.d.reporter.step();
      return;
    }
    const taken = new Set(this.journal!.data.pairs.flatMap((x) => (x.new ? [x.new.name] : [])));
    const n = await replacementName(docker, old, taken);
    const ref = this.imageRef(old);
    const plan = cloneSpec({
      container: (await this.inspectOrUndefined(old.Id)) ?? old,
      oldImage: await this.imageById(old.Image),
      newImage: this.imageCache.get(ref)!,
      newImageRef: ref,
      name: n.name,
      labels: { [LABELS.base]: n.base, [LABELS.generation]: String(n.generation), [LABELS.replaces]: old.Id },
      dropLabelPrefixes: [LABEL_PREFIX],
    });
    // Stop-first set the old one's policy to "no" before it stopped: the replacement gets the real one.
    if (p.oldRestart && plan.create.HostConfig) plan.create.HostConfig.RestartPolicy = { Name: p.oldRestart.Name, MaximumRetryCount: p.oldRestart.MaximumRetryCount ?? 0 };
    // Recorded before the create, so that a kill in between leaves a name the next run can find.
    p.new = { id: '', name: n.name };
    this.journal!.save();
    let id: string;
    try {
      id = await createClone(docker, plan);
    } catch (err) {
      if (err instanceof NotCreated) {
        // Nothing to look for or remove when undoing (a read-only Docker endpoint would refuse that too).
        delete p.new;
        this.journal!.save();
      }
      throw new BatchFailed((err as Error).message);
    }
    p.new = { id, name: n.name };
    await this.locks?.add(id);
    this.journal!.set(p, 'created');
    this.say('create', `created ${n.name} (replaces ${p.old.name})`, { container: n.name, replaces: p.old.name });
    this.d.reporter.step();
    try {
      await docker.getContainer(id).start();
    } catch (err) {
      throw new BatchFailed(`${n.name} does not start: ${dockerMessage(err)}`);
    }
    this.say('start', `started ${n.name}`, { container: n.name });
  }

  private async imageById(id: string): Promise<Docker.ImageInspectInfo | undefined> {
    try {
      return await this.d.docker.getImage(id).inspect();
    } catch {
      return undefined;
    }
  }

  /** Wait for every replacement of the batch; the first that fails fails the batch (after all are settled). */
  private async readyAll(pairs: Pair[]): Promise<void> {
    const t0 = Date.now();
    try {
      await this.settled(pairs.map((p) => this.readyOne(p)));
    } catch (err) {
      if (err instanceof NotReady) throw new BatchFailed(err.message);
      throw err;
    } finally {
      this.readyWaitMs += Date.now() - t0;
    }
  }

  private async readyOne(p: Pair): Promise<void> {
    const times: ReadyTimes = await waitReady(this.deps, p.new!.id, this.cfg.healthTimeoutMs, this.signal);
    this.say('ready', `${p.new!.name} ready in ${(times.readyMs / 1000).toFixed(1)} s (Docker ${(times.dockerMs / 1000).toFixed(1)} s, registry ${(times.registryMs / 1000).toFixed(1)} s)`, { container: p.new!.name, ...times });
    this.d.reporter.step();
    if (this.cfg.monitorMs > 0) await monitor(this.deps, p.new!.id, this.cfg.monitorMs, this.signal);
    this.journal!.set(p, 'ready');
  }

  /** Old containers of ready pairs: out of rotation, drained, stopped. */
  private async retire(pairs: Pair[]): Promise<void> {
    await this.withdrawAndDrain(pairs);
    this.checkpoint();
    await this.settled(pairs.map((p) => this.stopOld(p, 'stopped')));
    this.replaced += pairs.length;
  }

  private async withdrawAndDrain(pairs: Pair[]): Promise<void> {
    if (pairs.length === 0) return;
    await this.settled(pairs.map((p) => this.withdraw(p.old, () => this.journal!.set(p, 'withdrawn')).then(() => undefined)));
    if (this.cfg.drainMs > 0 && this.sidecarOk) {
      this.say('drain', `draining ${pairs.map((p) => p.old.name).join(', ')} for ${this.cfg.drainMs / 1000} s`);
      const t0 = Date.now();
      try {
        await sleep(this.cfg.drainMs, this.signal);
      } finally {
        this.drainTotalMs += Date.now() - t0;
      }
    }
    for (const _ of pairs) this.d.reporter.step();
  }

  /**
   * Take a container out of rotation through the sidecar and wait until the registry no longer
   * holds it (a failed read of the registry is read again). True when the registry held it.
   */
  private async withdraw(c: Ref, recorded?: () => void): Promise<boolean> {
    recorded?.();
    if (!this.sidecarOk) return false;
    const forMs = this.cfg.drainMs + this.cfg.stopTimeoutS * 1000 + 60_000;
    const t0 = Date.now();
    try {
      await this.d.sidecar.withdraw(c.id, forMs);
    } catch (err) {
      this.say('note', `withdrawal of ${c.name} failed (${(err as Error).message}): it leaves the registry when it is stopped`);
      return false;
    }
    const info = await this.inspectOrUndefined(c.id);
    if (!info) return false;
    let held: boolean | undefined;
    for (;;) {
      let left: string[] | undefined;
      try {
        left = await remainingInstances(this.deps, info);
      } catch (err) {
        if (Date.now() - t0 > WITHDRAW_SETTLE_MS) {
          this.say('note', `the registry could not be read ${WITHDRAW_SETTLE_MS / 1000} s after the withdrawal of ${c.name} (${(err as Error).message}); going on`);
          return true;
        }
      }
      if (left !== undefined) {
        held ??= left.length > 0;
        if (left.length === 0) break;
        if (Date.now() - t0 > WITHDRAW_SETTLE_MS) {
          this.say('note', `${c.name} is still in the registry ${WITHDRAW_SETTLE_MS / 1000} s after its withdrawal (${left.join(', ')}); going on`);
          return true;
        }
      }
      await sleep(100, this.signal);
    }
    this.say('withdraw', `withdrew ${c.name} (${Date.now() - t0} ms until the registry no longer held it)`, { container: c.name, ms: Date.now() - t0 });
    return held ?? false;
  }

  /** Stop an old container, its restart policy set to "no" first (recorded, to be put back if it is started again). */
  private async stopOld(p: Pair, phase: 'stopped' | 'stopped-first'): Promise<void> {
    const policy = (await this.inspectOrUndefined(p.old.id))?.HostConfig?.RestartPolicy;
    if (policy?.Name && policy.Name !== 'no' && !p.oldRestart) {
      p.oldRestart = { Name: policy.Name, MaximumRetryCount: policy.MaximumRetryCount };
      this.journal!.save();
      await this.setRestart(p.old.id, { Name: 'no', MaximumRetryCount: 0 });
    }
    await this.stop(p.old);
    this.journal!.set(p, phase);
    this.d.reporter.step();
  }

  private async setRestart(id: string, policy: { Name: string; MaximumRetryCount?: number }): Promise<void> {
    try {
      await this.d.docker.getContainer(id).update({ RestartPolicy: { Name: policy.Name, MaximumRetryCount: policy.Name === 'on-failure' ? (policy.MaximumRetryCount ?? 0) : 0 } });
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404) throw err;
    }
  }

  private async stop(c: Ref): Promise<void> {
    try {
      await this.d.docker.getContainer(c.id).stop({ t: this.cfg.stopTimeoutS });
    } catch (err) {
      const code = (err as { statusCode?: number }).statusCode;
      if (code !== 304 && code !== 404) throw err;
    }
    this.say('stop', `stopped ${c.name}`, { container: c.name });
  }

  /** `volumes`: also its anonymous volumes (a replacement's, made for it alone; never an old container's data). */
  private async remove(c: Ref, volumes = false): Promise<void> {
    try {
      await this.d.docker.getContainer(c.id).remove({ force: true, v: volumes });
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404) throw err;
    }
    this.say('remove', `removed ${c.name}`, { container: c.name });
  }

  private async readmit(c: Ref): Promise<void> {
    if (!this.sidecarOk) return;
    try {
      await this.d.sidecar.readmit(c.id);
      this.say('readmit', `${c.name} back in rotation`, { container: c.name });
    } catch (err) {
      this.say('note', `could not put ${c.name} back in rotation (${(err as Error).message}); its withdrawal expires by itself`);
    }
  }

  // --- undoing --------------------------------------------------------------------------------

  /**
   * The old container of `p` serves again, then its replacement goes. The old one is started again
   * if it was stopped (its restart policy put back), put back in rotation and waited for; when it
   * does not become ready, a replacement that is ready stays (the service keeps as many ready
   * containers) and the pair counts as replaced. True when the old one serves again.
   */
  private async putBack(p: Pair): Promise<boolean> {
    const old = await this.inspectOrUndefined(p.old.id);
    const policy = p.oldRestart;
    let started = false;
    let why: string | undefined;
    if (!old) why = 'it no longer exists';
    else {
      if (policy) {
        await this.setRestart(p.old.id, policy);
        delete p.oldRestart;
        this.journal!.save();
      }
      if (!old.State.Running) {
        try {
          await this.d.docker.getContainer(p.old.id).start();
          started = true;
          this.say('start', `started ${p.old.name} again`, { container: p.old.name });
        } catch (err) {
          if ((err as { statusCode?: number }).statusCode !== 304) why = `it does not start again: ${dockerMessage(err)}`;
        }
      }
      await this.readmit(p.old);
      if (!why) {
        try {
          await waitReady(this.deps, p.old.id, this.cfg.healthTimeoutMs, this.signal);
        } catch (err) {
          if (!(err instanceof NotReady)) throw err;
          why = err.message;
        }
      }
    }
    if (why) {
      if (p.new?.id && (await notReadyNow(this.deps, p.new.id)) === undefined) {
        this.say('note', `${p.old.name} did not become ready again (${why}): ${p.new.name} stays, so that ${this.cfg.service} keeps as many ready containers`, { container: p.old.name, replaces: p.new.name });
        this.notRestored.push(p.old.name);
        if (old && started) {
          // Back as it was: stopped, out of the way of its replacement.
          if (policy) {
            p.oldRestart = policy;
            await this.setRestart(p.old.id, { Name: 'no' });
          }
          await this.withdraw(p.old);
          await this.stop(p.old);
        }
        this.journal!.set(p, 'stopped');
        return false;
      }
      this.say('note', `${p.old.name} did not become ready again: ${why}`, { container: p.old.name });
    }
    if (p.new?.id) await this.discardNew(p.new);
    else if (p.new) await this.removeByName(p.new.name);
    return true;
  }

  /** Interrupted: nothing half done stays; pairs whose replacement is ready stay for the next run. */
  private async settleAfterInterrupt(): Promise<void> {
    const j = this.journal!;
    for (const p of [...j.data.pairs].reverse()) {
      if (p.phase === 'stopped' || p.phase === 'rolled-back') continue;
      if (finishable(p) && p.stopFirst) {
        // Old stopped, replacement ready: this pair is done.
        j.set(p, 'stopped');
        this.replaced++;
      } else if (finishable(p)) {
        if (p.phase === 'withdrawn') await this.readmit(p.old);
        j.set(p, 'ready');
      } else if (untouched(p)) {
        j.set(p, 'rolled-back');
      } else if (await this.putBack(p)) {
        j.set(p, 'rolled-back');
      }
    }
  }

  /** A second run after an interrupt or a kill: pairs whose replacement is ready are finished, the others undone (and replaced anew by the batches). */
  private async resumePairs(j: Journal): Promise<void> {
    for (const p of [...j.data.pairs]) {
      if (p.phase === 'stopped' || p.phase === 'rolled-back') continue;
      this.say('resume', `resuming ${p.old.name}${p.new ? ` → ${p.new.name}` : ''} (${p.phase})`, { container: p.old.name, phase: p.phase });
      if (untouched(p)) {
        j.set(p, 'rolled-back');
        continue;
      }
      if (finishable(p) && p.new?.id) {
        try {
          await waitReady(this.deps, p.new.id, this.cfg.healthTimeoutMs, this.signal);
          if (p.stopFirst) {
            j.set(p, 'stopped');
            this.replaced++;
          } else await this.retire([p]);
          continue;
        } catch (err) {
          if (!(err instanceof NotReady)) throw err;
          this.say('note', `${p.new.name} is not ready any more (${err.message}): ${p.old.name} serves again and is replaced anew`);
        }
      }
      if (await this.putBack(p)) j.set(p, 'rolled-back');
    }
  }

  /** A replacement that goes: out of rotation first, drained if the registry held it, stopped (a kept previous container, restart policy "no") or removed. */
  private async discardNew(n: Ref): Promise<void> {
    const held = await this.withdraw(n);
    if (held && this.cfg.drainMs > 0) await sleep(this.cfg.drainMs, this.signal);
    if (this.restoring) {
      await this.setRestart(n.id, { Name: 'no' });
      await this.stop(n);
    } else await this.remove(n, true);
  }

  private async removeByName(name: string): Promise<void> {
    try {
      await this.d.docker.getContainer(name).remove({ force: true, v: true });
      this.say('remove', `removed ${name}`, { container: name });
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404) throw err;
    }
  }

  /** Roll every pair of a journal back, last first: old containers serve again, replacements go. */
  private async undoJournal(j: Journal): Promise<void> {
    this.journal = j;
    if (j.data.pid !== process.pid || j.data.status !== 'running') j.take();
    this.sidecarOk = (await this.d.sidecar.reachable()) === undefined;
    const undo = [...j.data.pairs].reverse().filter((p) => p.phase !== 'rolled-back');
    this.say('rollback', `rolling back ${undo.length} replacement(s) of ${this.cfg.service}`);
    // A rollback is not cut short by a second Ctrl-C: it is what leaves the service whole.
    await this.withSignal(new AbortController().signal, () => this.undoPairs(j, undo));
    j.finish('rolled-back');
  }

  private async undoPairs(j: Journal, undo: Pair[]): Promise<void> {
    for (const p of undo) {
      if (untouched(p)) {
        j.set(p, 'rolled-back');
        continue;
      }
      const wasDone = p.phase === 'stopped';
      if (!(await this.putBack(p))) continue;
      if (wasDone) this.replaced--;
      j.set(p, 'rolled-back');
      this.say('rollback', `${p.old.name} serves again${p.new ? `; ${p.new.name} ${this.restoring ? 'stopped' : 'removed'}` : ''}`, { container: p.old.name, replaces: p.new?.name });
    }
    this.replaced = Math.max(0, this.replaced);
  }

  private async withSignal<T>(signal: AbortSignal, f: () => Promise<T>): Promise<T> {
    const saved = this.signal;
    this.signal = signal;
    try {
      return await f();
    } finally {
      this.signal = saved;
    }
  }

  /** --rollback: the kept previous container of each current one (exit 2 when one has none). */
  private async previousContainers(current: Container[], unfinished?: Journal): Promise<Map<string, Ref>> {
    if (current.length === 0 && !unfinished) throw new UsageError(`no running container of ${this.cfg.service} to roll back`);
    const out = new Map<string, Ref>();
    for (const c of current) {
      const recorded = unfinished?.pair(c.Id)?.new;
      if (recorded?.id) {
        out.set(c.Id, recorded);
        continue;
      }
      const id = c.Config.Labels?.[LABELS.replaces];
      // A stopped container publishes no port, so the service model no longer counts it in: look it up.
      const prev = id ? await this.inspectOrUndefined(id) : undefined;
      if (prev && !prev.State.Running) out.set(c.Id, { id: prev.Id, name: nameOf(prev) });
    }
    const missing = current.filter((c) => !out.has(c.Id));
    if (missing.length > 0) throw new UsageError(`--rollback: no kept previous container for ${missing.map(nameOf).join(', ')} (roll out with --keep 1 or more to keep them)`);
    return out;
  }

  /** After a successful rollout: old containers removed, except the last --keep of each replica (stopped, restart policy "no"). */
  private async cleanup(j: Journal): Promise<void> {
    for (const p of j.data.pairs.filter((x) => x.phase === 'stopped')) {
      if (this.restoring) {
        await this.remove(p.old);
        continue;
      }
      // The chain of predecessors of this replica, newest first.
      const chain: Ref[] = [p.old];
      let next = (await this.inspectOrUndefined(p.old.id))?.Config.Labels?.[LABELS.replaces];
      while (next) {
        const c = await this.inspectOrUndefined(next);
        if (!c || c.State.Running) break;
        chain.push({ id: c.Id, name: nameOf(c) });
        next = c.Config.Labels?.[LABELS.replaces];
      }
      for (const [i, c] of chain.entries()) {
        if (i < this.cfg.keep) {
          // A Docker restart would start a kept container with "always" beside the current one.
          await this.setRestart(c.id, { Name: 'no' });
          this.say('keep', `kept ${c.name} (stopped, restart policy "no") for --rollback`, { container: c.name });
        } else await this.remove(c);
      }
    }
  }

  private async inspectOrUndefined(id: string): Promise<Container | undefined> {
    try {
      return await this.d.docker.getContainer(id).inspect();
    } catch {
      return undefined;
    }
  }
}

/** The replacement of this pair was ready (and the old one not yet gone for good): the pair is finished, not redone. */
function finishable(p: Pair): boolean {
  return p.stopFirst ? p.phase === 'ready' : p.phase === 'ready' || p.phase === 'withdrawn';
}

/** Planned and nothing done yet: no replacement may exist (one whose create may have run has a name and no id). */
function untouched(p: Pair): boolean {
  return p.phase === 'planned' && !(p.new && p.new.id === '');
}

export class RolloutFailed extends Error {}

function dockerMessage(err: unknown): string {
  return String((err as Error).message ?? err)
    .replace(/^\(HTTP code \d+\) [a-z ]+ - /, '')
    .split('\n')[0]
    .trim();
}

function shortId(id: string): string {
  return id.replace(/^sha256:/, '').slice(0, 12);
}
