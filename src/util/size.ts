/** Sizes as nginx writes them: bytes, or a whole number of k, m or g (1024-based); 0 allowed. */

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** The bytes of `raw`, or undefined when it is not a size. */
export function parseSize(raw: string): number | undefined {
  const m = /^(\d{1,16})([kKmMgG]?)$/.exec(raw.trim());
  if (!m) return undefined;
  const n = Number(m[1]) * UNITS[m[2].toLowerCase()];
  return Number.isSafeInteger(n) ? n : undefined;
}

export const SIZE_HINT = 'expected a size in bytes, or with k, m or g (e.g. 512m)';
