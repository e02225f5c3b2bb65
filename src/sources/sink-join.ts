// Several sources (Docker, a folder of service files) feeding one registrar. Owners never clash
// (container IDs; `file:<path>`), so set() passes straight through; complete() waits until every
// source has listed everything once, because before that the registrar would take the services
// of a slower source for leftovers and clean them up.
import type { DesiredSink } from '../registrar/registrar.js';

export class SinkJoin {
  private readonly complete = new Map<string, { partial: boolean }>();

  constructor(
    private readonly sink: DesiredSink,
    private readonly sources: readonly string[],
  ) {}

  /** The sink one source writes to. */
  for(source: string): DesiredSink {
    if (!this.sources.includes(source)) throw new Error(`unknown source ${source}`);
    return {
      set: (owner, instances, reason, label) => this.sink.set(owner, instances, reason, label),
      move: (from, to, instances, reason, label) => {
        if (this.sink.move) return this.sink.move(from, to, instances, reason, label);
        this.sink.set(to, instances, reason, label);
        this.sink.set(from, [], reason);
      },
      complete: (opts) => {
        this.complete.set(source, { partial: !!opts?.partial });
        if (this.sources.every((s) => this.complete.has(s))) {
          this.sink.complete({ partial: [...this.complete.values()].some((c) => c.partial) });
        }
      },
    };
  }
}
