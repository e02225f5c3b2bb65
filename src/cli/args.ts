// Strict flag parsing on node:util parseArgs; every problem becomes a one-line UsageError.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../registry/types.js';

export type Options = NonNullable<ParseArgsConfig['options']>;

export const COMMON_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  'log-format': { type: 'string' },
  'log-level': { type: 'string' },
} as const satisfies Options;

export function parse<T extends Options>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    // parseArgs messages are multi-line with hints; keep the first sentence.
    throw new UsageError(String((err as Error).message).split('\n')[0].replace(/\. To specify a positional.*$/, ''));
  }
}

export function intFlag(name: string, raw: string | undefined, def: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (raw === undefined) return def;
  if (!/^-?\d+$/.test(raw)) throw new UsageError(`--${name} ${raw}: not a whole number`);
  const n = Number(raw);
  if (n < min || n > max) throw new UsageError(`--${name} ${raw}: must be between ${min} and ${max}`);
  return n;
}

export function choiceFlag<C extends string>(name: string, raw: string | undefined, choices: readonly C[], def: C): C {
  if (raw === undefined) return def;
  if (!(choices as readonly string[]).includes(raw)) throw new UsageError(`--${name} ${raw}: expected one of ${choices.join(', ')}`);
  return raw as C;
}
