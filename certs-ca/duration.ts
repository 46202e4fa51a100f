// Durations as operators write them ("90s", "15m", "24h", "30d", "1h30m"), held as whole seconds.
import { TwokeyError, type ErrorCode } from '../services/authz/errors.ts';

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };
const SHAPE = /^(?:\d+[smhd])+$/;
const PART = /(\d+)([smhd])/g;
// A century: anything longer is a typo, and larger values would lose precision as Date offsets.
const MAX_SECONDS = 100 * 365 * 86400;

/**
 * Parses a duration to whole seconds. A number is taken as seconds. Zero, negative, fractional and
 * unit-less strings are rejected with `code`; `what` (may be empty) prefixes the message.
 */
export function parseDuration(input: unknown, what: string, code: ErrorCode = 'ERR_CA_POLICY'): number {
  let seconds: number;
  if (typeof input === 'number') {
    seconds = input;
  } else if (typeof input === 'string' && SHAPE.test(input)) {
    seconds = 0;
    for (const [, n, unit] of input.matchAll(PART)) seconds += Number(n) * UNIT_SECONDS[unit!]!;
  } else {
    throw new TwokeyError(code, `${prefix(what)}invalid duration ${JSON.stringify(input)} (use e.g. 90s, 15m, 24h, 30d)`);
  }
  if (!Number.isSafeInteger(seconds) || seconds <= 0 || seconds > MAX_SECONDS) {
    throw new TwokeyError(code, `${prefix(what)}duration ${JSON.stringify(input)} must be a whole number of seconds between 1s and 100 years`);
  }
  return seconds;
}

const prefix = (what: string): string => (what === '' ? '' : `${what}: `);

/** The shortest exact rendering: 86400 -> "1d", 5400 -> "1h30m". */
export function formatDuration(seconds: number): string {
  let rest = seconds;
  let out = '';
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * size;
  }
  return out === '' ? '0s' : out;
}
