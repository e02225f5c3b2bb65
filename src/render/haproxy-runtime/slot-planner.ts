// Pre-allocated server slots for HAProxy backends, and the plan that moves a running HAProxy
// from one catalog to the next: runtime API commands when only instances changed, a reload when
// the configuration's structure changed (backends, routes) or a backend ran out of slots.
//
// Slots are named s0..sN-1. An instance keeps its slot for as long as it exists (so that its
// connections, health and counters stay with it); a new instance takes the lowest free slot.
// A backend gets max(8, 2 × instances) slots when it first appears, and twice as many (at least
// 2 × instances) when it runs out.
import { isIpAddress } from '../../util/net.js';
import type { TemplateData, UpstreamData } from '../template-data.js';

export const MIN_SLOTS = 8;

/** What HAProxy must hold in a slot. */
export interface SlotInstance {
  id: string;
  address: string;
  port: number;
  /** On HAProxy's 0–256 scale; 0 drains (no new requests). */
  weight: number;
}

export type Slot = SlotInstance | null;

export interface SlotTable {
  /** Everything of the configuration except the instances: a change needs a reload. */
  structure: string;
  backends: ReadonlyMap<string, readonly Slot[]>;
}

/**
 * Commands sent on one connection (HAProxy runs every command of a batch, whatever the answer
 * of the one before): one batch leaves its server in a safe state if any of its commands fails.
 */
export type Batch = string[];

export type SlotPlan =
  /** Per server, batches to run in order, each after the one before succeeded; servers are independent of each other. */
  | { reload: false; table: SlotTable; sequences: Batch[][] }
  | { reload: true; table: SlotTable; reason: string };

/** What a template sees per slot (`upstreams[].slots`). */
export interface SlotData {
  name: string;
  /** Null for a free slot: written as a disabled server. */
  instance: SlotInstance | null;
}

/** The structure of the config: routes and backends, without their instances. */
export function structureKey(data: TemplateData): string {
  return JSON.stringify({
    vhosts: data.vhosts.map((v) => ({
      host: v.host,
      root: v.hasRootRoute,
      routes: v.routes.map((r) => [r.path, r.upstream, r.exact, r.prefix]),
      bare: v.bare.map((b) => [b.path, b.route?.upstream ?? null]),
    })),
    upstreams: data.upstreams.map((u) => u.name),
    env: data.env,
    domain: data.domain,
  });
}

const toSlot = (u: UpstreamData): SlotInstance[] =>
  u.instances.map((i) => ({ id: i.id, address: i.address, port: i.port, weight: i.haproxyWeight }));

/**
 * Places `wanted` into `size` slots, keeping every instance that `prev` already holds where it
 * is. Null when they do not fit.
 */
export function assignSlots(prev: readonly Slot[], wanted: readonly SlotInstance[], size: number): Slot[] | null {
  if (wanted.length > size) return null;
  const slots: Slot[] = new Array<Slot>(size).fill(null);
  const placed = new Set<string>();
  const byId = new Map(wanted.map((w) => [w.id, w]));
  prev.forEach((s, n) => {
    const w = s && n < size ? byId.get(s.id) : undefined;
    if (w) {
      slots[n] = w;
      placed.add(w.id);
    }
  });
  let free = 0;
  for (const w of wanted) {
    if (placed.has(w.id)) continue;
    while (free < size && slots[free] !== null) free++;
    if (free === size) return null;
    slots[free] = w;
  }
  return slots;
}

const initialSize = (count: number) => Math.max(MIN_SLOTS, 2 * count);

/** A table for a config that is (re)loaded: every backend sized to hold its instances. */
function reloadTable(prev: SlotTable | undefined, data: TemplateData, structure: string): SlotTable {
  const backends = new Map<string, Slot[]>();
  for (const u of data.upstreams) {
    const wanted = toSlot(u);
    const old = prev?.backends.get(u.name) ?? [];
    let size = old.length > 0 ? old.length : initialSize(wanted.length);
    if (wanted.length > size) size = Math.max(2 * size, 2 * wanted.length);
    backends.set(u.name, assignSlots(old, wanted, size)!);
  }
  return { structure, backends };
}

const q = (backend: string, slot: number) => `${backend}/s${slot}`;

/**
 * Batches that turn slot `a` into slot `b`; null when the runtime API cannot do it. A slot put
 * in service gets its address and weight in a first batch (out of service: a free slot is, and a
 * slot changing instance goes into maintenance first), and is put in service only once they took.
 */
function slotCommands(server: string, a: Slot, b: Slot): Batch[] | null {
  if (a === null && b === null) return [];
  if (b === null) return [[`set server ${server} state maint`]];
  // HAProxy 2.6 takes only IP addresses at runtime (a host name needs resolvers).
  if (!isIpAddress(b.address)) return null;
  const moved = a === null || a.id !== b.id || a.address !== b.address || a.port !== b.port;
  if (!moved) return a.weight === b.weight ? [] : [[`set weight ${server} ${b.weight}`]];
  return [
    [...(a === null ? [] : [`set server ${server} state maint`]), `set server ${server} addr ${b.address} port ${b.port}`, `set weight ${server} ${b.weight}`],
    // The catalog already says the instance is healthy: serve at once, checks take over.
    [`set server ${server} health up`, `enable health ${server}`, `set server ${server} state ready`],
  ];
}

/**
 * The way from `prev` (what HAProxy runs, or undefined before the first load) to `data`; `force`
 * asks for a reload (with that reason) whatever changed.
 */
export function planSlots(prev: SlotTable | undefined, data: TemplateData, force?: string): SlotPlan {
  const structure = structureKey(data);
  if (!prev) return { reload: true, reason: force ?? 'first load', table: reloadTable(prev, data, structure) };
  if (force) return { reload: true, reason: force, table: reloadTable(prev, data, structure) };
  if (prev.structure !== structure) return { reload: true, reason: 'backends or routes changed', table: reloadTable(prev, data, structure) };
  const backends = new Map<string, Slot[]>();
  const sequences: Batch[][] = [];
  for (const u of data.upstreams) {
    const old = prev.backends.get(u.name) ?? [];
    const slots = assignSlots(old, toSlot(u), old.length);
    if (!slots) return { reload: true, reason: `backend ${u.name} has no free slot`, table: reloadTable(prev, data, structure) };
    for (let n = 0; n < slots.length; n++) {
      const cmds = slotCommands(q(u.name, n), old[n] ?? null, slots[n]);
      if (cmds === null) return { reload: true, reason: `backend ${u.name}: address ${slots[n]!.address} is not an IP address`, table: reloadTable(prev, data, structure) };
      if (cmds.length > 0) sequences.push(cmds);
    }
    backends.set(u.name, slots);
  }
  return { reload: false, table: { structure, backends }, sequences };
}

/** The template data with `slots` on every upstream, for a template that writes slots. */
export interface RuntimeTemplateData extends TemplateData {
  upstreams: (UpstreamData & { slots: SlotData[] })[];
  /** Set in runtime mode only: the template writes slots and the server-state file. */
  haproxyRuntime: { stateFile: string };
}

export function withSlots(data: TemplateData, table: SlotTable, stateFile: string): RuntimeTemplateData {
  return {
    ...data,
    haproxyRuntime: { stateFile },
    upstreams: data.upstreams.map((u) => ({
      ...u,
      slots: (table.backends.get(u.name) ?? []).map((instance, n) => ({ name: `s${n}`, instance })),
    })),
  };
}

/**
 * Keeps the lines of a `show servers state` dump whose server holds the same instance after the
 * reload, so that HAProxy restores their state (health, drain) and takes every other server from
 * the new configuration.
 */
export function keepUnchangedState(dump: string, prev: SlotTable, next: SlotTable): string {
  const same = (backend: string, server: string): boolean => {
    const m = /^s(\d+)$/.exec(server);
    if (!m) return false;
    const a = prev.backends.get(backend)?.[Number(m[1])];
    const b = next.backends.get(backend)?.[Number(m[1])];
    if (a === undefined || b === undefined) return false;
    return a === b || (a !== null && b !== null && a.id === b.id && a.address === b.address && a.port === b.port && a.weight === b.weight);
  };
  return dump
    .split('\n')
    .filter((line) => {
      const f = line.trim().split(/\s+/);
      // The version line and the column header pass; a server line is `be_id be_name srv_id srv_name ...`.
      if (f.length < 4 || line.startsWith('#')) return true;
      return same(f[1], f[3]);
    })
    .join('\n');
}
