// The render seam: what a template job is, and the configuration of a render loop.
import type { HealthStatus } from '../model/service-instance.js';

/** How to confirm that a reload took, beyond the command's exit status. */
export type VerifySpec =
  | { kind: 'plain' }
  /** A new worker generation of the nginx master named in the pid file appears. */
  | { kind: 'nginx'; pidFile: string }
  /** HAProxy's master CLI (`haproxy -W -S <socket>`) lists a new worker. */
  | { kind: 'haproxy'; masterSocket: string };

export interface TemplateSpec {
  /** Handlebars template file. */
  source: string;
  /** Rendered file. */
  destination: string;
  /** Reload command, run through /bin/sh -c after the destination changed. */
  command?: string;
  /** Check command run against the staged file; `{{src}}` is replaced by its quoted path. */
  check?: string;
  verify: VerifySpec;
  /** File mode of the destination; undefined keeps the current mode (0644 for a new file). */
  perms?: number;
  /** Keep the previous destination as `<destination>.bak`. */
  backup: boolean;
  /**
   * --haproxy-runtime: instance changes go through this admin socket instead of a reload;
   * server state is kept across reloads in `stateFile` (`<destination>.state`).
   */
  haproxyRuntime?: { socket: string; stateFile: string };
}

export interface WaitSpec {
  /** Quiet time: restarts on every change. */
  minMs: number;
  /** Deadline after the first change, and the least time between two runs. */
  maxMs: number;
}

export interface RenderConfig {
  /** Registry URI (the render command's positional argument or the config file's `registry`). */
  registry?: string;
  templates: TemplateSpec[];
  wait: WaitSpec;
  /** Statuses that make an instance routable. */
  statuses: HealthStatus[];
  /** Default hosts are `<service>.<domain>`. */
  domain: string;
  /** Timeout of every check and reload command, and of reload verification. */
  timeoutMs: number;
  /** Render once the catalog is complete, run the commands, and stop. */
  once: boolean;
  /** Print what would be written; write and run nothing. */
  dry: boolean;
  /** Backoff of the retries after a failed run (default 1 s doubling to 60 s). */
  retry?: WaitSpec;
}

export const DEFAULT_WAIT: WaitSpec = { minMs: 500, maxMs: 3000 };
export const DEFAULT_TIMEOUT_MS = 30_000;
