// The rollout itself: batch by batch, replace each old container by a new one without the service
// ever having fewer ready containers than it started with. Every step that changes Docker is
// written to the journal first, so that an interrupted run is finished or undone by the next one.
import type Docker from 'dockerode';
import { UsageError } from '../registry/types.js';
import type { ModelOptions } from '../sources/docker/service-model.js';
import { cloneSpec, createClone, describeRefusal } from './clone-spec.js';
import { Journal, type Pair } from './journal.js';
import { batchSize, type Order, type RolloutConfig } from './options.js';
import { Interrupted, monitor, NotReady, remainingInstances, sleep, waitReady, type ReadinessDeps, type ReadyTimes } from './readiness.js';
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
}

/** A replacement could not be made ready: which container and why, in one line. */
class BatchFailed extends Error {}

const WITHDRAW_SETTLE_MS = 10_000;

export class Rollout {
  private readonly deps: ReadinessDeps;
  private journal?: Journal;
  private sidecarOk = true;
  private readyWaitMs = 0;
  private drainTotalMs = 0;
  private replaced = 0;
  /** Kind of replacement: a clone of the old container, or (for --rollback) the kept previous container started again. */
  private restoring = false;
  private readonly imageCache = new Map<string, Docker.ImageInspectInfo>();

  constructor(
    private readonly cfg: RolloutConfig,
    private readonly d: EngineDeps,
  ) {
    this.deps = { docker: d.docker, view: d.view, model: d.model, via: cfg.via };
  }

  private say(event: string, message: string, extra: Record<string, unknown> = {}): void {
    this.d.reporter.emit({ event, message, ...extra });
  }

  async run(): Promise<RolloutResult> {
    const t0 = Date.now();
    const { cfg, d } = this;
    const all = await serviceContainers(d.docker, cfg.service, cfg.composeService, d.model);
    for (const c of all) {
      const refusal = describeRefusal(c);
      if (refusal) throw new UsageError(`${nameOf(c)}: ${refusal}`);
    }
    const previous = Journal.load(cfg.stateDir, cfg.service, cfg.composeService);
    if (previous?.ownedByLiveProcess()) throw new UsageError(`a rollout of ${cfg.service} is running (pid ${previous.data.pid}, since ${previous.data.startedAt})`);
    const unfinished = previous?.unfinished() ? previous : undefined;
    if (unfinished && cfg.rollback && !unfinished.data.restore) {
      await this.undoJournal(unfinished);
      this.say('done', `done: the unfinished rollout of ${cfg.service} (started ${unfinished.data.startedAt}) is rolled back`);
      return this.finishResult(t0, 'done');
    }
    // --rollback after a finished rollout: the same machinery, with each replica's kept previous
    // container (started again) as the replacement of the current one.
    if (unfinished && !!unfinished.data.restore !== cfg.rollback) {
      throw new UsageError(`an unfinished ${unfinished.data.restore ? 'rollback' : 'rollout'} of ${cfg.service} (started ${unfinished.data.startedAt}): run it again ${unfinished.data.restore ? 'with' : 'without'} --rollback to finish it${unfinished.data.restore ? '' : ', or with --rollback to undo it'}`);
    }
    const targets = running(all).filter((c) => !unfinished?.data.pairs.some((p) => p.new?.id === c.Id || (p.old.id === c.Id && p.phase !== 'rolled-back' && p.phase !== 'planned')));
    if (running(all).length === 0) throw new UsageError(`no running container of ${cfg.composeService ? 'compose service' : 'service'} ${cfg.service} on this host`);
    const previousOf = cfg.rollback ? (targets.length > 0 || !unfinished ? await this.previousContainers(targets) : new Map<string, { id: string; name: string }>()) : undefined;
    this.restoring = cfg.rollback;
    const imageRef = (c: Docker.ContainerInspectInfo) => (this.restoring ? c.Image : (cfg.image ?? c.Config.Image));
    for (const ref of new Set(targets.map(imageRef))) this.imageCache.set(ref, await resolveImage(d.docker, ref, this.restoring ? 'never' : cfg.pull, (m) => this.say('note', m)));
    if (unfinished) {
      const want = this.imageCache.get(cfg.image ?? unfinished.data.image);
      if (cfg.image !== undefined && cfg.image !== unfinished.data.image) {
        throw new UsageError(`an unfinished rollout of ${cfg.service} to ${unfinished.data.image} (started ${unfinished.data.startedAt}): run it again without --image to resume, or with --rollback`);
      }
      void want;
    }

    const plans = [];
    for (const c of targets) plans.push({ c, clone: cloneSpec({ container: c, oldImage: await this.imageById(c.Image), newImage: this.imageCache.get(imageRef(c))!, newImageRef: imageRef(c), name: 'planned', dropLabelPrefixes: [LABEL_PREFIX] }) });
    const fixed = plans.filter((p) => p.clone.fixedHostPorts.length > 0 || p.clone.staticAddresses.length > 0);
    let order: Order = cfg.order ?? unfinished?.data.order ?? 'start-first';
    if (fixed.length > 0 && order === 'start-first') {
      const what = fixed.map((p) => `${nameOf(p.c)} (${[...p.clone.fixedHostPorts, ...p.clone.staticAddresses].join(', ')})`).join('; ');
      if (cfg.order === 'start-first') throw new UsageError(`--order start-first: ${what} hold a fixed host port or address, which a replacement cannot hold at the same time: use --order stop-first, or publish ephemeral ports`);
      order = 'stop-first';
      this.say('note', `order stop-first: ${what} hold a fixed host port or address, which old and new cannot hold at once`);
    }
    const total = targets.length + (unfinished?.data.pairs.filter((p) => p.phase !== 'stopped' && p.phase !== 'rolled-back').length ?? 0);
    let size = batchSize(cfg.batch, Math.max(1, total));
    if (order === 'stop-first' && size >= total && total > 1) {
      size = total - 1;
      this.say('note', `batch ${size}: stop-first keeps at least one container serving`);
    }
    if (order === 'stop-first' && total === 1) this.say('note', `stop-first with one container: ${cfg.service} has no instance from the old one's stop until the new one is ready`);
    const batches: Docker.ContainerInspectInfo[][] = [];
    for (let i = 0; i < targets.length; i += size) batches.push(targets.slice(i, i + size));

    const firstRef = targets[0] ? imageRef(targets[0]) : unfinished?.data.image ?? '';
    if (previousOf) {
      this.say('plan', `${cfg.dryRun ? 'would put' : 'putting'} back the previous containers of ${cfg.service} in ${batches.length} batch(es) of ${size}, ${order}: ${targets.map((c) => `${previousOf.get(c.Id)!.name} instead of ${nameOf(c)}`).join(', ')}`, { order, batches: batches.length, batchSize: size });
    } else this.say(
      'plan',
      `${cfg.dryRun ? 'would roll' : 'rolling'} ${cfg.service}: ${targets.length} container(s) in ${batches.length} batch(es) of ${size}, ${order}, image ${firstRef}${this.imageCache.get(firstRef) ? ` (${shortId(this.imageCache.get(firstRef)!.Id)})` : ''}${unfinished ? `; resuming the rollout started ${unfinished.data.startedAt}` : ''}`,
      { containers: targets.map(nameOf), batches: batches.length, batchSize: size, order, image: firstRef },
    );
    if (!previousOf) batches.forEach((b, i) => this.say('plan', `  batch ${i + 1}: ${b.map((c) => `${nameOf(c)} (${shortId(c.Image)} → ${shortId(this.imageCache.get(imageRef(c))!.Id)})`).join(', ')}`, { batch: i + 1, containers: b.map(nameOf) }));
    const ready = ['Docker running and healthy (if it has a HEALTHCHECK)', `passing in ${cfg.registry}`];
    if (cfg.via) ready.push(`${cfg.via.url.href} answers${cfg.via.host ? ` for Host ${cfg.via.host}` : ''}`);
    this.say('plan', `  ready = ${ready.join(' + ')}, within ${cfg.healthTimeoutMs / 1000} s, then watched ${cfg.monitorMs / 1000} s; old: withdrawn, drained ${cfg.drainMs / 1000} s, stopped (${cfg.stopTimeoutS} s grace), ${cfg.keep > 0 ? `last ${cfg.keep} kept stopped` : 'removed'}`);
    for (const p of plans) for (const n of p.clone.notes) this.say('note', `  ${nameOf(p.c)}: ${n}`);
    if (cfg.dryRun) return { status: 'nothing', replaced: 0, totalMs: Date.now() - t0, readyWaitMs: 0, drainMs: 0 };

    this.sidecarOk = await this.checkSidecar();
    this.journal = unfinished ?? Journal.create(cfg.stateDir, { service: cfg.service, composeService: cfg.composeService, image: previousOf ? 'previous containers' : firstRef, imageId: this.imageCache.get(firstRef)?.Id ?? '', order, restore: !!previousOf, pairs: [] });
    this.journal.take();
    try {
      if (unfinished) await this.resumePairs(unfinished, order);
      for (let i = 0; i < batches.length; i++) {
        if (i > 0 && cfg.pauseMs > 0) await sleep(cfg.pauseMs, d.signal);
        d.reporter.batch(i + 1, batches.length, batches[i].length * 5);
        const pairs = batches[i].map((c) => {
          const known = this.journal!.pair(c.Id);
          if (!known) return this.journal!.add({ old: { id: c.Id, name: nameOf(c) }, new: previousOf?.get(c.Id), phase: 'planned' });
          // Undone by an earlier run that paused: this one tries again.
          if (known.phase === 'rolled-back') {
            delete known.new;
            this.journal!.set(known, 'planned');
          }
          return known;
        });
        this.say('batch', `batch ${i + 1}/${batches.length}: ${pairs.map((p) => p.old.name).join(', ')}`, { batch: i + 1, batches: batches.length });
        if (order === 'start-first') await this.startFirst(pairs, batches[i], imageRef);
        else await this.stopFirst(pairs, batches[i], imageRef);
      }
    } catch (err) {
      if (err instanceof Interrupted) {
        await this.settleAfterInterrupt();
        this.journal.finish('interrupted');
        this.say('interrupted', `interrupted: ${cfg.service} is left with every old or new container that was ready serving; run the same command again to resume, or add --rollback`);
        return { ...this.result(t0), status: 'interrupted' };
      }
      if (!(err instanceof BatchFailed)) throw err;
      const failure = err.message;
      this.say('fail', `failed: ${failure}`, { reason: failure });
      if (cfg.failureAction === 'pause') {
        const j = this.journal;
        const open = j.data.pairs.filter((p) => p.phase !== 'stopped' && p.phase !== 'rolled-back').reverse();
        await this.withSignal(new AbortController().signal, () => this.undoPairs(j, open));
        j.finish('paused');
        this.say('paused', `paused: batches already replaced stay; the failed replacement was removed and its old container serves again. Run again to go on, or with --rollback to undo`);
        return { ...this.result(t0), status: 'paused', failure };
      }
      await this.undoJournal(this.journal);
      return { ...this.result(t0), status: 'rolled-back', failure };
    }
    await this.cleanup(this.journal);
    this.journal.finish('done');
    if (this.restoring) this.say('done', `done: ${this.replaced} previous container(s) of ${cfg.service} serve again`);
    else this.say('done', `done: ${this.replaced} container(s) of ${cfg.service} replaced in ${((Date.now() - t0) / 1000).toFixed(1)} s (${(this.readyWaitMs / 1000).toFixed(1)} s waiting for readiness)`, { replaced: this.replaced, ms: Date.now() - t0, readyWaitMs: this.readyWaitMs });
    return { ...this.result(t0), status: 'done' };
  }

  private result(t0: number): Omit<RolloutResult, 'status'> {
    return { replaced: this.replaced, totalMs: Date.now() - t0, readyWaitMs: this.readyWaitMs, drainMs: this.drainTotalMs };
  }

  private finishResult(t0: number, status: RolloutResult['status']): RolloutResult {
    return { ...this.result(t0), status };
  }

  private async checkSidecar(): Promise<boolean> {
    const err = await this.d.sidecar.reachable();
    if (!err) return true;
    this.say('note', `the sidecar's API is not reachable (${err}): old containers leave the registry only when they are stopped, so they are not drained first`);
    return false;
  }

  // --- the two orders -------------------------------------------------------------------------

  private async startFirst(pairs: Pair[], olds: Docker.ContainerInspectInfo[], imageRef: (c: Docker.ContainerInspectInfo) => string): Promise<void> {
    await Promise.all(pairs.map((p, i) => (p.phase === 'planned' ? this.createAndStart(p, olds[i], imageRef(olds[i])) : undefined)));
    await this.readyAll(pairs.filter((p) => p.phase === 'created'));
    await this.retire(pairs.filter((p) => p.phase === 'ready' || p.phase === 'withdrawn'));
  }

  private async stopFirst(pairs: Pair[], olds: Docker.ContainerInspectInfo[], imageRef: (c: Docker.ContainerInspectInfo) => string): Promise<void> {
    const planned = pairs.filter((p) => p.phase === 'planned' || p.phase === 'withdrawn');
    await this.withdrawAndDrain(planned);
    await Promise.all(planned.map((p) => this.stopOld(p, 'stopped-first')));
    await Promise.all(pairs.map((p, i) => (p.phase === 'stopped-first' ? this.createAndStart(p, olds[i], imageRef(olds[i])) : undefined)));
    await this.readyAll(pairs.filter((p) => p.phase === 'created'));
    for (const p of pairs.filter((x) => x.phase === 'ready')) {
      this.journal!.set(p, 'stopped');
      this.replaced++;
    }
  }

  /** Create the replacement from the old container's configuration and start it. */
  private async createAndStart(p: Pair, old: Docker.ContainerInspectInfo, ref: string): Promise<void> {
    const { docker } = this.d;
    if (this.restoring) {
      this.journal!.set(p, 'created');
      try {
        await docker.getContainer(p.new!.id).start();
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode !== 304) throw new BatchFailed(`${p.new!.name} does not start again: ${dockerMessage(err)}`);
      }
      // Withdrawn when it was replaced: back in rotation once it is ready.
      await this.readmit(p.new!);
      this.say('start', `started ${p.new!.name} again (instead of ${p.old.name})`, { container: p.new!.name, replaces: p.old.name });
      this.d.reporter.step();
      return;
    }
    const taken = new Set(this.journal!.data.pairs.flatMap((x) => (x.new ? [x.new.name] : [])));
    const n = await replacementName(docker, old, taken);
    const plan = cloneSpec({
      container: old,
      oldImage: await this.imageById(old.Image),
      newImage: this.imageCache.get(ref)!,
      newImageRef: ref,
      name: n.name,
      labels: { [LABELS.base]: n.base, [LABELS.generation]: String(n.generation), [LABELS.replaces]: old.Id },
      dropLabelPrefixes: [LABEL_PREFIX],
    });
    // Recorded before the create, so that a kill in between leaves a name the next run can find.
    p.new = { id: '', name: n.name };
    this.journal!.save();
    let id: string;
    try {
      id = await createClone(docker, plan);
    } catch (err) {
      throw new BatchFailed((err as Error).message);
    }
    p.new = { id, name: n.name };
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
    const results = await Promise.allSettled(pairs.map((p) => this.readyOne(p)));
    this.readyWaitMs += Date.now() - t0;
    const interrupted = results.find((r) => r.status === 'rejected' && r.reason instanceof Interrupted);
    if (interrupted) throw new Interrupted();
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) {
      const reason = (failed as PromiseRejectedResult).reason as Error;
      if (!(reason instanceof NotReady)) throw reason;
      throw new BatchFailed(reason.message);
    }
  }

  private async readyOne(p: Pair): Promise<void> {
    const times: ReadyTimes = await waitReady(this.deps, p.new!.id, this.cfg.healthTimeoutMs, this.d.signal);
    this.say('ready', `${p.new!.name} ready in ${(times.readyMs / 1000).toFixed(1)} s (Docker ${(times.dockerMs / 1000).toFixed(1)} s, registry ${(times.registryMs / 1000).toFixed(1)} s)`, { container: p.new!.name, ...times });
    this.d.reporter.step();
    if (this.cfg.monitorMs > 0) await monitor(this.deps, p.new!.id, this.cfg.monitorMs, this.d.signal);
    this.journal!.set(p, 'ready');
  }

  /** Old containers of ready pairs: out of rotation, drained, stopped. */
  private async retire(pairs: Pair[]): Promise<void> {
    await this.withdrawAndDrain(pairs);
    await Promise.all(pairs.map((p) => this.stopOld(p, 'stopped')));
    this.replaced += pairs.length;
  }

  private async withdrawAndDrain(pairs: Pair[]): Promise<void> {
    if (pairs.length === 0) return;
    await Promise.all(pairs.map((p) => this.withdraw(p.old, () => this.journal!.set(p, 'withdrawn'))));
    if (this.cfg.drainMs > 0 && this.sidecarOk) {
      this.say('drain', `draining ${pairs.map((p) => p.old.name).join(', ')} for ${this.cfg.drainMs / 1000} s`);
      const t0 = Date.now();
      await sleep(this.cfg.drainMs, this.d.signal);
      this.drainTotalMs += Date.now() - t0;
    }
    for (const _ of pairs) this.d.reporter.step();
  }

  /** Take a container out of rotation through the sidecar and wait until the registry no longer holds it. */
  private async withdraw(c: { id: string; name: string }, recorded?: () => void): Promise<void> {
    recorded?.();
    if (!this.sidecarOk) return;
    const forMs = this.cfg.drainMs + this.cfg.stopTimeoutS * 1000 + 60_000;
    const t0 = Date.now();
    try {
      await this.d.sidecar.withdraw(c.id, forMs);
    } catch (err) {
      this.say('note', `withdrawal of ${c.name} failed (${(err as Error).message}): it leaves the registry when it is stopped`);
      return;
    }
    const info = await this.d.docker.getContainer(c.id).inspect();
    for (;;) {
      const left = await remainingInstances(this.deps, info);
      if (left.length === 0) break;
      if (Date.now() - t0 > WITHDRAW_SETTLE_MS) {
        this.say('note', `${c.name} is still in the registry ${WITHDRAW_SETTLE_MS / 1000} s after its withdrawal (${left.join(', ')}); going on`);
        break;
      }
      await sleep(100, this.d.signal);
    }
    this.say('withdraw', `withdrew ${c.name} (${Date.now() - t0} ms until the registry no longer held it)`, { container: c.name, ms: Date.now() - t0 });
  }

  private async stopOld(p: Pair, phase: 'stopped' | 'stopped-first'): Promise<void> {
    await this.stop(p.old);
    this.journal!.set(p, phase);
    this.d.reporter.step();
  }

  private async stop(c: { id: string; name: string }): Promise<void> {
    try {
      await this.d.docker.getContainer(c.id).stop({ t: this.cfg.stopTimeoutS });
    } catch (err) {
      const code = (err as { statusCode?: number }).statusCode;
      if (code !== 304 && code !== 404) throw err;
    }
    this.say('stop', `stopped ${c.name}`, { container: c.name });
  }

  private async remove(c: { id: string; name: string }): Promise<void> {
    try {
      await this.d.docker.getContainer(c.id).remove({ force: true });
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404) throw err;
    }
    this.say('remove', `removed ${c.name}`, { container: c.name });
  }

  private async readmit(c: { id: string; name: string }): Promise<void> {
    if (!this.sidecarOk) return;
    try {
      await this.d.sidecar.readmit(c.id);
      this.say('readmit', `${c.name} back in rotation`, { container: c.name });
    } catch (err) {
      this.say('note', `could not put ${c.name} back in rotation (${(err as Error).message}); its withdrawal expires by itself`);
    }
  }

  // --- undoing --------------------------------------------------------------------------------

  /** Interrupted: nothing half done stays; ready pairs stay for the next run. */
  private async settleAfterInterrupt(): Promise<void> {
    const j = this.journal!;
    for (const p of [...j.data.pairs].reverse()) {
      if (p.phase === 'created') {
        if (p.new?.id) await this.discardNew(p, false);
        j.data.pairs.splice(j.data.pairs.indexOf(p), 1);
        j.save();
      } else if (p.phase === 'withdrawn') {
        await this.readmit(p.old);
        j.set(p, j.data.order === 'stop-first' ? 'planned' : 'ready');
      } else if (p.phase === 'stopped-first') {
        await this.restartOld(p);
        if (p.new?.id) await this.discardNew(p, false);
        j.data.pairs.splice(j.data.pairs.indexOf(p), 1);
        j.save();
      } else if (p.phase === 'planned') {
        if (p.new?.id === '') await this.removeByName(p.new.name);
        j.data.pairs.splice(j.data.pairs.indexOf(p), 1);
        j.save();
      }
    }
  }

  /** A second run after an interrupt or a kill: finish the pairs it left where they stand. */
  private async resumePairs(j: Journal, order: Order): Promise<void> {
    for (const p of [...j.data.pairs]) {
      if (p.phase === 'stopped' || p.phase === 'rolled-back') continue;
      this.say('resume', `resuming ${p.old.name}${p.new ? ` → ${p.new.name}` : ''} (${p.phase})`);
      if (p.phase === 'planned' || p.phase === 'created') {
        // Not known to be ready: the replacement goes, the old one serves, and the pair is redone.
        if (p.new?.id) await this.discardNew(p, true);
        else if (p.new) await this.removeByName(p.new.name);
        await this.readmit(p.old);
        j.data.pairs.splice(j.data.pairs.indexOf(p), 1);
        j.save();
      } else if (p.phase === 'ready' || p.phase === 'withdrawn') {
        try {
          await waitReady(this.deps, p.new!.id, this.cfg.healthTimeoutMs, this.d.signal);
        } catch (err) {
          if (!(err instanceof NotReady)) throw err;
          await this.readmit(p.old);
          await this.discardNew(p, true);
          j.data.pairs.splice(j.data.pairs.indexOf(p), 1);
          j.save();
          continue;
        }
        await this.retire([p]);
      } else if (p.phase === 'stopped-first') {
        await this.restartOld(p);
        if (p.new?.id) await this.discardNew(p, true);
        j.data.pairs.splice(j.data.pairs.indexOf(p), 1);
        j.save();
      }
    }
    void order;
  }

  /** Start an old container again and put it back in rotation. */
  private async restartOld(p: Pair): Promise<void> {
    const { docker } = this.d;
    try {
      await docker.getContainer(p.old.id).start();
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 304) throw err;
    }
    this.say('start', `started ${p.old.name} again`, { container: p.old.name });
    await this.readmit(p.old);
    try {
      await waitReady(this.deps, p.old.id, this.cfg.healthTimeoutMs, this.d.signal);
    } catch (err) {
      if (err instanceof Interrupted) throw err;
      this.say('note', `${p.old.name} did not become ready again: ${(err as Error).message}`);
    }
  }

  /** A replacement that goes: out of rotation first if it may be in it, drained if it served, stopped, removed. */
  private async discardNew(p: Pair, served: boolean): Promise<void> {
    const n = p.new!;
    await this.withdraw(n);
    if (served && this.cfg.drainMs > 0 && this.sidecarOk) await sleep(this.cfg.drainMs, this.d.signal).catch(() => undefined);
    if (this.restoring) await this.stop(n);
    else await this.remove(n);
  }

  private async removeByName(name: string): Promise<void> {
    try {
      await this.d.docker.getContainer(name).remove({ force: true });
      this.say('remove', `removed ${name}`, { container: name });
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404) throw err;
    }
  }

  /** Roll every pair of a journal back, last first: old containers serve again, replacements go. */
  private async undoJournal(j: Journal): Promise<RolloutResult['status']> {
    this.journal = j;
    if (j.data.pid !== process.pid || j.data.status !== 'running') j.take();
    this.sidecarOk = (await this.d.sidecar.reachable()) === undefined;
    const undo = [...j.data.pairs].reverse().filter((p) => p.phase !== 'rolled-back');
    this.say('rollback', `rolling back ${undo.length} replacement(s) of ${this.cfg.service}`);
    // A rollback is not cut short by a second Ctrl-C: it is what leaves the service whole.
    await this.withSignal(new AbortController().signal, () => this.undoPairs(j, undo));
    j.finish('rolled-back');
    return 'rolled-back';
  }

  private async undoPairs(j: Journal, undo: Pair[]): Promise<void> {
    for (const p of undo) {
      switch (p.phase) {
        case 'planned':
          if (p.new && !p.new.id) await this.removeByName(p.new.name);
          break;
        case 'created':
        case 'ready':
          await this.discardNew(p, p.phase === 'ready');
          await this.readmit(p.old);
          break;
        case 'withdrawn':
          await this.readmit(p.old);
          if (p.new?.id) await this.discardNew(p, true);
          break;
        case 'stopped-first':
        case 'stopped':
          await this.restartOld(p);
          if (p.new?.id) await this.discardNew(p, true);
          break;
      }
      j.set(p, 'rolled-back');
      this.say('rollback', `${p.old.name} serves again${p.new ? `; ${p.new.name} ${this.restoring ? 'stopped' : 'removed'}` : ''}`, { container: p.old.name, replaces: p.new?.name });
    }
  }

  private async withSignal<T>(signal: AbortSignal, f: () => Promise<T>): Promise<T> {
    const saved = this.d.signal;
    (this.d as { signal: AbortSignal }).signal = signal;
    try {
      return await f();
    } finally {
      (this.d as { signal: AbortSignal }).signal = saved;
    }
  }

  /** --rollback: the kept previous container of each current one (exit 2 when one has none). */
  private async previousContainers(current: Docker.ContainerInspectInfo[]): Promise<Map<string, { id: string; name: string }>> {
    if (current.length === 0) throw new UsageError(`no running container of ${this.cfg.service} to roll back`);
    const out = new Map<string, { id: string; name: string }>();
    for (const c of current) {
      const id = c.Config.Labels?.[LABELS.replaces];
      // A stopped container publishes no port, so the service model no longer counts it in: look it up.
      const prev = id ? await this.inspectOrUndefined(id) : undefined;
      if (prev && !prev.State.Running) out.set(c.Id, { id: prev.Id, name: nameOf(prev) });
    }
    const missing = current.filter((c) => !out.has(c.Id));
    if (missing.length > 0) throw new UsageError(`--rollback: no kept previous container for ${missing.map(nameOf).join(', ')} (roll out with --keep 1 or more to keep them)`);
    return out;
  }

  /** After a successful rollout: old containers removed, except the last --keep of each replica. */
  private async cleanup(j: Journal): Promise<void> {
    for (const p of j.data.pairs.filter((x) => x.phase === 'stopped')) {
      if (this.restoring) {
        await this.remove(p.old);
        continue;
      }
      // The chain of predecessors of this replica, newest first.
      const chain: { id: string; name: string }[] = [p.old];
      let next = (await this.inspectOrUndefined(p.old.id))?.Config.Labels?.[LABELS.replaces];
      while (next) {
        const c = await this.inspectOrUndefined(next);
        if (!c || c.State.Running) break;
        chain.push({ id: c.Id, name: nameOf(c) });
        next = c.Config.Labels?.[LABELS.replaces];
      }
      for (const [i, c] of chain.entries()) {
        if (i < this.cfg.keep) this.say('keep', `kept ${c.name} (stopped) for --rollback`, { container: c.name });
        else await this.remove(c);
      }
    }
  }

  private async inspectOrUndefined(id: string): Promise<Docker.ContainerInspectInfo | undefined> {
    try {
      return await this.d.docker.getContainer(id).inspect();
    } catch {
      return undefined;
    }
  }
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
