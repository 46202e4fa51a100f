// Generators for the property tests: valid values by grammar, and hostile variations of them.
import fc from 'fast-check';
import { TwokeyError, type ErrorCode } from '../../services/authz/errors.ts';

/** Bounded runs keep `npm test` fast; FC_RUNS raises them for a longer local search. */
export const RUNS = Number(process.env['FC_RUNS'] ?? 300);

const TD_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789.-_'.split('');
const SEGMENT_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_'.split('');
// Characters a hostile SPIFFE ID or grant would use to look like something it is not.
export const TRICKY_CHARS = [
  '/', '%', '?', '#', '@', ':', ' ', '\t', '\n', '\0', '*', '.', '..', '\\', 'A', 'Z', '\u00e9', '\u0130', '\u212a', '\uff0f', '\u200b', '\ud83d\ude00',
];

export const trustDomain = fc
  .array(fc.constantFrom(...TD_CHARS), { minLength: 1, maxLength: 24 })
  .map((cs) => cs.join(''));

export const pathSegment = fc
  .array(fc.constantFrom(...SEGMENT_CHARS), { minLength: 1, maxLength: 12 })
  .map((cs) => cs.join(''))
  .filter((s) => s !== '.' && s !== '..');

export const spiffeIdText = fc
  .tuple(trustDomain, fc.array(pathSegment, { maxLength: 5 }))
  .map(([td, segs]) => `spiffe://${td}${segs.map((s) => `/${s}`).join('')}`);

const IDENT_START = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_'.split('');
const IDENT_REST = [...IDENT_START, ...'0123456789'.split('')];
export const identifier = fc
  .tuple(fc.constantFrom(...IDENT_START), fc.array(fc.constantFrom(...IDENT_REST), { maxLength: 10 }))
  .map(([h, t]) => h + t.join(''));

/** A package-qualified service name, e.g. `a.b.Service`. */
export const serviceName = fc.array(identifier, { minLength: 2, maxLength: 4 }).map((parts) => parts.join('.'));

export const grantText = fc.oneof(
  fc.tuple(serviceName, identifier).map(([s, m]) => `/${s}/${m}`),
  serviceName.map((s) => `/${s}/*`),
);

/** A string edited at a random place: inserted, deleted or replaced characters. */
export function mutated(base: fc.Arbitrary<string>, chars: readonly string[] = TRICKY_CHARS): fc.Arbitrary<string> {
  return fc
    .tuple(base, fc.nat(), fc.constantFrom('insert', 'delete', 'replace', 'upper', 'lower', 'append', 'prepend'), fc.constantFrom(...chars))
    .map(([s, n, op, c]) => {
      const i = s.length === 0 ? 0 : n % s.length;
      switch (op) {
        case 'insert':
          return s.slice(0, i) + c + s.slice(i);
        case 'delete':
          return s.slice(0, i) + s.slice(i + 1);
        case 'replace':
          return s.slice(0, i) + c + s.slice(i + 1);
        case 'upper':
          return s.slice(0, i) + s.slice(i).toUpperCase();
        case 'lower':
          return s.slice(0, i) + s.slice(i).toLowerCase();
        case 'append':
          return s + c;
        default:
          return c + s;
      }
    });
}

/** Runs `fn`; returns its value, or the TwokeyError it threw. Anything else thrown fails the property. */
export function typedOutcome<T>(fn: () => T, allowed: readonly ErrorCode[]): { ok: true; value: T } | { ok: false; error: TwokeyError } {
  try {
    return { ok: true, value: fn() };
  } catch (err) {
    if (!(err instanceof TwokeyError)) throw new Error(`threw a ${(err as Error)?.constructor?.name ?? typeof err}, not a TwokeyError: ${String(err)}`);
    if (!allowed.includes(err.code)) throw new Error(`threw ${err.code} (${err.message}); expected one of ${allowed.join(', ')}`);
    return { ok: false, error: err };
  }
}

/** The async form of typedOutcome. */
export async function typedOutcomeAsync<T>(
  fn: () => Promise<T>,
  allowed: readonly ErrorCode[],
): Promise<{ ok: true; value: T } | { ok: false; error: TwokeyError }> {
  try {
    return { ok: true, value: await fn() };
  } catch (err) {
    if (!(err instanceof TwokeyError)) throw new Error(`threw a ${(err as Error)?.constructor?.name ?? typeof err}, not a TwokeyError: ${String(err)}`);
    if (!allowed.includes(err.code)) throw new Error(`threw ${err.code} (${err.message}); expected one of ${allowed.join(', ')}`);
    return { ok: false, error: err };
  }
}
