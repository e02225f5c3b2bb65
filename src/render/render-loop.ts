// Follow a catalog and keep the destinations current: the first snapshot renders at once, later
// ones after the --wait quiescence; template files are watched and an edit re-renders. Runs are
// serialized: a change during a run is applied by the next one. A run whose check, write or
// reload failed is tried again with backoff (1 s doubling to 60 s), not only at the next change.
import { watch as watchFiles, type FSWatcher } from 'chokidar';
import type { Catalog } from '../catalog/catalog.js';
import type { CatalogWatch } from '../catalog/watch.js';
import type { Logger } from '../log/logger.js';
import { HEALTH_STATUSES, type HealthStatus } from '../model/service-instance.js';
import { UsageError } from '../registry/types.js';
import { backoffMs } from '../util/time.js';
import { AddressGuard, type Resolver } from './address-guard.js';
import { createHandlebars } from './helpers.js';
import { HaproxyRuntime } from './haproxy-runtime/runtime.js';
import { Quiescence } from './quiescence.js';
import { Renderer, type RunResult, type TemplateJob } from './renderer.js';
import { CatalogInput } from './render-input.js';
import { loadTemplate } from './template-file.js';
import type { RenderConfig } from './types.js';

/**
 * Statuses the CatalogWatch given to startRender should keep: all of them, so that a service
 * whose instances are all failing keeps its hosts (answered with 503). --status filters later.
 */
export const RENDER_WATCH_STATUSES: HealthStatus[] = [...HEALTH_STATUSES];

export interface RenderHandle {
  /** Completed runs (one per applied change). */
  readonly runs: number;
  /** The result of the latest run. */
  readonly last?: RunResult;
  /** Resolves when no run is in progress or scheduled. */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

export interface RenderIo {
  /** Where --dry prints (default: stdout). */
  out?: (s: string) => void;
  env?: NodeJS.ProcessEnv;
  /** How instance host names are looked up before rendering (default: the system resolver). */
  resolver?: Resolver;
}

async function loadJobs(cfg: RenderConfig, hb = createHandlebars()): Promise<TemplateJob[]> {
  // A template that does not compile at start is a configuration error: fail with file:line.
  return Promise.all(
    cfg.templates.map(async (spec) => {
      try {
        const runtime = spec.haproxyRuntime ? new HaproxyRuntime({ ...spec.haproxyRuntime, timeoutMs: Math.min(cfg.timeoutMs, 2000) }) : undefined;
        return { spec, template: await loadTemplate(spec.source, hb), runtime };
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
    }),
  );
}

function rendererFor(cfg: RenderConfig, log: Logger, io: RenderIo): Renderer {
  return new Renderer({ timeoutMs: cfg.timeoutMs, dry: cfg.dry, out: io.out ?? ((s) => void process.stdout.write(s)), env: io.env }, log);
}

/** Template data of a catalog without the instances whose addresses the proxies cannot load. */
const inputFor = async (cfg: RenderConfig, catalog: Catalog, guard: AddressGuard, io: RenderIo) =>
  new CatalogInput(await guard.apply(catalog), { statuses: cfg.statuses, domain: cfg.domain, env: io.env ?? process.env });

export const RETRY_BASE_MS = 1_000;
export const RETRY_MAX_MS = 60_000;

/** --once: wait for the first complete catalog, render, run the commands; true when all went well. */
export async function renderOnce(cfg: RenderConfig, watch: CatalogWatch, log: Logger, io: RenderIo = {}): Promise<RunResult> {
  const jobs = await loadJobs(cfg);
  const catalog = await watch.first();
  return rendererFor(cfg, log, io).run(jobs, await inputFor(cfg, catalog, new AddressGuard(log, io.resolver), io));
}

export async function startRender(cfg: RenderConfig, watch: CatalogWatch, log: Logger, io: RenderIo = {}): Promise<RenderHandle> {
  // One Handlebars instance for the start and for templates re-read when their files change.
  const hb = createHandlebars();
  const jobs = await loadJobs(cfg, hb);
  const renderer = rendererFor(cfg, log, io);
  const guard = new AddressGuard(log, io.resolver);
  let latest: Catalog | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  let failures = 0;
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  let runs = 0;
  let last: RunResult | undefined;
  let idleWaiters: Array<() => void> = [];
  /** The input of a catalog already read by the quiet-time bypass: the run takes it as it is. */
  let ready: { catalog: Catalog; input: CatalogInput } | undefined;

  const settle = () => {
    if (running || quiet.pending) return;
    const w = idleWaiters;
    idleWaiters = [];
    w.forEach((fn) => fn());
  };
  const kick = () => {
    if (stopped || !latest) return settle();
    if (running) {
      again = true;
      return;
    }
    clearTimeout(retryTimer);
    retryTimer = undefined;
    running = (async () => {
      let retry = false;
      do {
        again = false;
        try {
          const c = latest!;
          last = await renderer.run(jobs, ready?.catalog === c ? ready.input : await inputFor(cfg, c, guard, io));
          retry = last.retry;
        } catch (err) {
          retry = true;
          log.error({ event: 'error', err: (err as Error).message }, `render: ${(err as Error).message}`);
        }
        runs++;
      } while (again && !stopped);
      // A failed check, write or reload is not left until the next change.
      if (!retry) failures = 0;
      else if (!stopped) {
        const ms = backoffMs(failures++, cfg.retry?.minMs ?? RETRY_BASE_MS, cfg.retry?.maxMs ?? RETRY_MAX_MS);
        log.warn({ event: 'retry', ms }, `render failed; trying again in ${ms} ms`);
        retryTimer = setTimeout(() => {
          retryTimer = undefined;
          kick();
        }, ms);
        retryTimer.unref?.();
      }
    })().finally(() => {
      running = undefined;
      settle();
    });
  };
  const quiet = new Quiescence(cfg.wait, kick);

  // One template file may feed several destinations.
  const bySource = new Map<string, TemplateJob[]>();
  for (const j of jobs) bySource.set(j.spec.source, [...(bySource.get(j.spec.source) ?? []), j]);
  const files: FSWatcher = watchFiles([...bySource.keys()], { ignoreInitial: true, awaitWriteFinish: { stabilityThreshold: 50, pollInterval: 20 } });
  files.on('all', (event, path) => {
    const users = bySource.get(path);
    if (!users || (event !== 'change' && event !== 'add')) return;
    loadTemplate(path, hb).then(
      (t) => {
        for (const j of users) j.template = t;
        log.info({ event: 'template', template: path }, `template ${path} changed; re-rendering`);
        quiet.notify();
      },
      (err: Error) => {
        // Leave the destinations alone until the template is fixed.
        for (const j of users) j.template = undefined;
        log.error({ event: 'template-error', template: path }, `${err.message}; ${users.map((j) => j.spec.destination).join(', ')} left as it is until the template is fixed`);
      },
    );
  });
  files.on('error', (err) => log.warn({ event: 'error', err: (err as Error).message }, `watching templates: ${(err as Error).message}`));
  await new Promise<void>((resolve) => files.once('ready', () => resolve()));

  const pairs = cfg.templates.map((t) => `${t.source} → ${t.destination}`);
  log.info(
    { event: 'start', registry: cfg.registry, templates: pairs, wait: cfg.wait },
    `harbormaster render${cfg.registry ? ` ${cfg.registry}` : ''}: ${pairs.join(', ')} (wait ${cfg.wait.minMs}ms:${cfg.wait.maxMs}ms)`,
  );

  // --haproxy-runtime on every template: the quiet time spaces reloads, and a change that HAProxy
  // takes through its runtime API reloads nothing, so it runs at once. Planning changes nothing.
  const allRuntime = jobs.length > 0 && jobs.every((j) => j.runtime);
  const atRuntime = async (c: Catalog): Promise<boolean> => {
    if (!allRuntime || jobs.some((j) => !j.template)) return false;
    const input = await inputFor(cfg, c, guard, io);
    ready = { catalog: c, input };
    return jobs.every((j) => !j.runtime!.prepare(input.data).plan.reload);
  };

  let first = true;
  const off = watch.subscribe((c) => {
    latest = c;
    // The first snapshot renders at once and does not count toward the one-run-per-max spacing.
    if (first) {
      first = false;
      kick();
    } else if (allRuntime) {
      void atRuntime(c).then(
        (now) => {
          // A later snapshot decides for itself.
          if (latest !== c) return;
          if (now) kick();
          else quiet.notify();
        },
        () => quiet.notify(),
      );
    } else quiet.notify();
  });

  return {
    get runs() {
      return runs;
    },
    get last() {
      return last;
    },
    idle: () => new Promise<void>((resolve) => {
      idleWaiters.push(resolve);
      settle();
    }),
    async stop() {
      stopped = true;
      clearTimeout(retryTimer);
      off();
      quiet.cancel();
      await files.close();
      await running;
      settle();
    },
  };
}
