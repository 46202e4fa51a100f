// Load admission: pure decisions on whether one more call (or more bytes) may be held, and the counters they read.
import { TwokeyError } from './errors.ts';

/**
 * A configured limit as a positive safe integer; anything else (0, a negative number, a fraction,
 * NaN, a string) is refused with ERR_CONFIG_INVALID naming the setting, so a typo cannot turn a
 * limit off or make it refuse everything.
 */
export function positiveLimit(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `${name} must be a positive integer, not ${JSON.stringify(value) ?? String(value)}`);
  }
  return value;
}

/** A limit read from the environment (or its default): a positive integer, else ERR_CONFIG_INVALID naming the variable. */
export function envLimit(env: Readonly<Record<string, string | undefined>>, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  return positiveLimit(name, /^-?\d+(\.\d+)?$/.test(raw.trim()) ? Number(raw.trim()) : raw);
}

/** Pure: whether `held + amount` stays within `limit`. */
export function admits(held: number, amount: number, limit: number): boolean {
  return held + amount <= limit;
}

/**
 * Amounts held per key against one limit (calls in flight per peer, bytes per connection, ...).
 * Keys with nothing held are forgotten, so the map is as large as what is held now.
 */
export class HeldCounter {
  readonly name: string;
  readonly limit: number;
  readonly #held = new Map<string, number>();

  constructor(name: string, limit: number) {
    this.name = name;
    this.limit = positiveLimit(name, limit);
  }

  /** Adds `amount` under `key` when the limit allows it; false (nothing added) when it does not. */
  tryAdd(key: string, amount = 1): boolean {
    const held = this.#held.get(key) ?? 0;
    if (!admits(held, amount, this.limit)) return false;
    this.#held.set(key, held + amount);
    return true;
  }

  remove(key: string, amount = 1): void {
    const left = (this.#held.get(key) ?? 0) - amount;
    if (left > 0) this.#held.set(key, left);
    else this.#held.delete(key);
  }

  held(key: string): number {
    return this.#held.get(key) ?? 0;
  }

  /** How many keys hold something now. */
  get keys(): number {
    return this.#held.size;
  }
}

/** One counter and the key a call is counted under in it. */
export type Claim = readonly [counter: HeldCounter, key: string];

/**
 * Adds `amount` under every claim, or under none: the first counter whose limit would be exceeded
 * is returned (and what was added before it taken back). Undefined when all admitted.
 */
export function claimAll(claims: readonly Claim[], amount = 1): HeldCounter | undefined {
  for (let i = 0; i < claims.length; i++) {
    const [counter, key] = claims[i]!;
    if (!counter.tryAdd(key, amount)) {
      for (let j = 0; j < i; j++) claims[j]![0].remove(claims[j]![1], amount);
      return counter;
    }
  }
  return undefined;
}

export function releaseAll(claims: readonly Claim[], amount = 1): void {
  for (const [counter, key] of claims) counter.remove(key, amount);
}

/** A token bucket's state: tokens left and when they were counted. */
export interface Bucket {
  tokens: number;
  atMs: number;
}

/**
 * Pure: takes one token from a bucket refilled at `perSecond` up to `burst`; the new state, and
 * whether a token was there. A missing bucket is full.
 */
export function takeToken(bucket: Bucket | undefined, nowMs: number, perSecond: number, burst: number): { ok: boolean; bucket: Bucket } {
  const elapsed = bucket === undefined ? Infinity : Math.max(0, nowMs - bucket.atMs);
  const tokens = Math.min(burst, (bucket?.tokens ?? burst) + (elapsed * perSecond) / 1000);
  if (tokens < 1) return { ok: false, bucket: { tokens, atMs: nowMs } };
  return { ok: true, bucket: { tokens: tokens - 1, atMs: nowMs } };
}

/**
 * Token buckets per key (logins per source address), at most `maxKeys` of them: when full, the
 * buckets that are full again are dropped first (they mean nothing), and if none is, new keys share
 * one overflow bucket, so an attacker with many addresses cannot grow the map without bound.
 */
export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  readonly #perSecond: number;
  readonly #burst: number;
  readonly #maxKeys: number;
  readonly #now: () => number;

  constructor(options: { perSecond: number; burst: number; maxKeys?: number; now?: () => number }) {
    if (!(options.perSecond > 0) || !Number.isFinite(options.perSecond)) {
      throw new TwokeyError('ERR_CONFIG_INVALID', `a rate must be a positive number per second, not ${options.perSecond}`);
    }
    this.#perSecond = options.perSecond;
    this.#burst = positiveLimit('burst', options.burst);
    this.#maxKeys = options.maxKeys ?? 10_000;
    this.#now = options.now ?? Date.now;
  }

  /** Whether `key` may act now (and counts it when it may). */
  take(key: string): boolean {
    const now = this.#now();
    let k = key;
    if (!this.#buckets.has(k) && this.#buckets.size >= this.#maxKeys) {
      this.#prune(now);
      if (this.#buckets.size >= this.#maxKeys) k = '(overflow)';
    }
    const { ok, bucket } = takeToken(this.#buckets.get(k), now, this.#perSecond, this.#burst);
    this.#buckets.set(k, bucket);
    return ok;
  }

  #prune(now: number): void {
    for (const [key, b] of this.#buckets) {
      if (b.tokens + ((now - b.atMs) * this.#perSecond) / 1000 >= this.#burst) this.#buckets.delete(key);
    }
  }
}
