// A bounded LRU of verified tokens, so a token is verified once, yet expiry still holds on every use.
import { hash } from 'node:crypto';
import type { VerifiedToken } from './types.ts';
import type { TwokeyError } from './errors.ts';

export interface TokenCacheOptions {
  maxEntries?: number;
  /** Bound of the remembered signature failures (see rememberFailure). */
  maxFailures?: number;
  /** How long a signature failure is remembered, in ms. */
  failureTtlMs?: number;
}

interface Failure {
  readonly error: TwokeyError;
  readonly untilMs: number;
}

/**
 * Keyed by the SHA-256 of the token string: the cache does not keep bearer tokens as keys, and a
 * hit requires the exact same bytes that were verified.
 */
export class TokenCache {
  readonly #max: number;
  readonly #entries = new Map<string, VerifiedToken>();
  readonly #maxFailures: number;
  readonly #failureTtlMs: number;
  readonly #failures = new Map<string, Failure>();
  #generation = 0;
  #hits = 0;
  #misses = 0;

  constructor(options: TokenCacheOptions = {}) {
    this.#max = options.maxEntries ?? 10_000;
    if (!Number.isSafeInteger(this.#max) || this.#max < 1) throw new RangeError('maxEntries must be a positive integer');
    this.#maxFailures = options.maxFailures ?? 1_000;
    if (!Number.isSafeInteger(this.#maxFailures) || this.#maxFailures < 0) throw new RangeError('maxFailures must be a non-negative integer');
    this.#failureTtlMs = options.failureTtlMs ?? 30_000;
    if (!Number.isSafeInteger(this.#failureTtlMs) || this.#failureTtlMs < 0) throw new RangeError('failureTtlMs must be a non-negative integer');
  }

  /**
   * Changes on every clear(). A verification that started before a clear must not store its
   * outcome after it: it was checked against keys that may be gone.
   */
  get generation(): number {
    return this.#generation;
  }

  static keyOf(token: string): string {
    // One-shot hash: no Hash object per call (Node >= 20.12).
    return hash('sha256', token, 'base64url');
  }

  /** The verified token for this string if cached and still within its lifetime at `now`. */
  get(token: string, now: number): VerifiedToken | undefined {
    const key = TokenCache.keyOf(token);
    const entry = this.#entries.get(key);
    if (entry === undefined) {
      this.#misses += 1;
      return undefined;
    }
    this.#entries.delete(key);
    if (now >= entry.validUntilMs) {
      this.#misses += 1;
      return undefined;
    }
    this.#entries.set(key, entry); // most recently used goes last
    this.#hits += 1;
    return entry;
  }

  /** Stores a verified token; ignored when the cache was cleared since `generation` was read. */
  set(token: string, verified: VerifiedToken, generation = this.#generation): void {
    if (generation !== this.#generation) return;
    const key = TokenCache.keyOf(token);
    this.#entries.delete(key);
    this.#entries.set(key, verified);
    while (this.#entries.size > this.#max) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
  }

  /** The remembered failure of this exact token string, if remembered and not older than the TTL. */
  failure(token: string, now: number): TwokeyError | undefined {
    if (this.#failures.size === 0) return undefined;
    const key = TokenCache.keyOf(token);
    const entry = this.#failures.get(key);
    if (entry === undefined) return undefined;
    if (now < entry.untilMs) return entry.error;
    this.#failures.delete(key);
    return undefined;
  }

  /**
   * Remembers, briefly, a failure that the same keys would repeat for the same bytes: a signature
   * that does not verify under the key its kid names. Callers must not pass anything that could
   * turn into a success (an unknown kid, keys unavailable, a token not yet valid); clear() forgets
   * these too, since a replaced key could verify the same bytes.
   */
  rememberFailure(token: string, error: TwokeyError, now: number, generation: number): void {
    if (generation !== this.#generation || this.#maxFailures === 0) return;
    const key = TokenCache.keyOf(token);
    this.#failures.delete(key);
    this.#failures.set(key, { error, untilMs: now + this.#failureTtlMs });
    while (this.#failures.size > this.#maxFailures) {
      const oldest = this.#failures.keys().next().value as string;
      this.#failures.delete(oldest);
    }
  }

  /** Forgets everything, e.g. when the signing keys change. */
  clear(): void {
    this.#entries.clear();
    this.#failures.clear();
    this.#generation += 1;
  }

  /** Lookups that found a usable verified token (for metrics). */
  get hits(): number {
    return this.#hits;
  }

  /** Lookups that did not (absent or lapsed). */
  get misses(): number {
    return this.#misses;
  }

  get size(): number {
    return this.#entries.size;
  }
}
