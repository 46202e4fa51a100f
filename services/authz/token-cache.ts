// A bounded LRU of verified tokens, so a token is verified once, yet expiry still holds on every use.
import { hash } from 'node:crypto';
import type { VerifiedToken } from './decision.ts';

export interface TokenCacheOptions {
  maxEntries?: number;
}

/**
 * Keyed by the SHA-256 of the token string: the cache does not keep bearer tokens as keys, and a
 * hit requires the exact same bytes that were verified.
 */
export class TokenCache {
  readonly #max: number;
  readonly #entries = new Map<string, VerifiedToken>();

  constructor(options: TokenCacheOptions = {}) {
    this.#max = options.maxEntries ?? 10_000;
    if (!Number.isSafeInteger(this.#max) || this.#max < 1) throw new RangeError('maxEntries must be a positive integer');
  }

  static keyOf(token: string): string {
    // One-shot hash: no Hash object per call (Node >= 20.12).
    return hash('sha256', token, 'base64url');
  }

  /** The verified token for this string if cached and still within its lifetime at `now`. */
  get(token: string, now: number): VerifiedToken | undefined {
    const key = TokenCache.keyOf(token);
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    this.#entries.delete(key);
    if (now >= entry.validUntilMs) return undefined;
    this.#entries.set(key, entry); // most recently used goes last
    return entry;
  }

  set(token: string, verified: VerifiedToken): void {
    const key = TokenCache.keyOf(token);
    this.#entries.delete(key);
    this.#entries.set(key, verified);
    while (this.#entries.size > this.#max) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
  }

  /** Forgets everything, e.g. when the signing keys change. */
  clear(): void {
    this.#entries.clear();
  }

  get size(): number {
    return this.#entries.size;
  }
}
