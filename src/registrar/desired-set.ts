// What the sources want registered, by owner (a container) and by instance id. An id claimed by
// two owners (a SERVICE_ID collision) goes to the first; the other takes over if the first lets
// go. Every change costs what it touches, never the size of the whole set.
import type { ServiceInstance } from '../model/service-instance.js';

export interface Claim {
  instance: ServiceInstance;
  owner: string;
}

export interface SetResult {
  /** Ids whose wanted instance may have changed (new, replaced, released or taken over). */
  changed: string[];
  /** Ids this owner asked for that another owner holds (newly seen collisions only). */
  collisions: Array<{ id: string; holder: string }>;
}

export class DesiredSet {
  private readonly byOwner = new Map<string, Map<string, ServiceInstance>>();
  /** id → owners asking for it, the holder first. */
  private readonly claims = new Map<string, string[]>();

  get size(): number {
    return this.claims.size;
  }

  get(id: string): Claim | undefined {
    const owner = this.claims.get(id)?.[0];
    const instance = owner === undefined ? undefined : this.byOwner.get(owner)?.get(id);
    return owner === undefined || !instance ? undefined : { instance, owner };
  }

  ownerOf(id: string): string | undefined {
    return this.claims.get(id)?.[0];
  }

  /** Instance ids one owner asked for. */
  idsOf(owner: string): string[] {
    return [...(this.byOwner.get(owner)?.keys() ?? [])];
  }

  owners(): IterableIterator<string> {
    return this.byOwner.keys();
  }

  /** Replace the instances of one owner; an empty list releases everything it held. */
  set(owner: string, instances: ServiceInstance[]): SetResult {
    const before = this.byOwner.get(owner) ?? new Map<string, ServiceInstance>();
    const after = new Map<string, ServiceInstance>();
    for (const inst of instances) if (!after.has(inst.id)) after.set(inst.id, inst);
    const changed: string[] = [];
    const collisions: SetResult['collisions'] = [];

    for (const id of before.keys()) {
      if (after.has(id)) continue;
      const list = this.claims.get(id);
      if (!list) continue;
      const wasHolder = list[0] === owner;
      const rest = list.filter((o) => o !== owner);
      if (rest.length === 0) this.claims.delete(id);
      else this.claims.set(id, rest);
      if (wasHolder) changed.push(id);
    }
    if (after.size === 0) this.byOwner.delete(owner);
    else this.byOwner.set(owner, after);
    for (const [id, inst] of after) {
      const list = this.claims.get(id);
      if (!list) {
        this.claims.set(id, [owner]);
        changed.push(id);
      } else if (list[0] === owner) {
        if (before.get(id) !== inst) changed.push(id);
      } else if (!list.includes(owner)) {
        list.push(owner);
        collisions.push({ id, holder: list[0] });
      }
    }
    return { changed, collisions };
  }
}
