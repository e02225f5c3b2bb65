// Strict flag parsing on node:util parseArgs; every problem becomes a one-line UsageError.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../registry/types.js';

export type Options = NonNullable<ParseArgsConfig['options']>;

export const COMMON_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  'log-format': { type: 'string' },
  'log-level': { type: 'string' },
} as const satisfies Options;

/** A value that starts with '-' but is a number, not an option: `-1`, `-0.5`. */
const NEGATIVE_NUMBER = /^-\d+(\.\d+)?$/;

/**
 * parseArgs refuses `--opt -1` as ambiguous. For options declared as strings, join a following
 * negative number to its option (`--opt=-1`, `-o=-1` as `--long=-1`), so that documented values
 * such as `--retry-attempts -1` parse. Nothing after `--` is touched.
 */
export function joinNegativeValues(argv: readonly string[], options: Options): string[] {
  const out: string[] = [];
  const byShort = new Map(Object.entries(options).flatMap(([name, o]) => (o.short ? [[o.short, name] as const] : [])));
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const long = /^--([^=]+)$/.exec(a)?.[1];
    const name = long ?? (/^-([^-])$/.test(a) ? byShort.get(a[1]) : undefined);
    const next = argv[i + 1];
    if (name !== undefined && options[name]?.type === 'string' && next !== undefined && NEGATIVE_NUMBER.test(next)) {
      out.push(`--${name}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

export function parse<T extends Options>(argv: string[], options: T) {
  try {
    return parseArgs({ args: joinNegativeValues(argv, options), options, allowPositionals: true, strict: true });
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
