// The auth service's signing keys: fetched through an injected source, refreshed, last good set kept.
import { importJWK, type JWK } from 'jose';
import type { KeyObject } from 'node:crypto';
import { TwokeyError } from './errors.ts';
import type { VerificationKeys } from './token-verifier.ts';

/** Returns the JWK Set JSON (a string or parsed value); the mesh calls auth's GetJwks over mTLS. */
export type JwksFetcher = () => Promise<unknown>;

export interface JwksKeySetOptions {
  fetch: JwksFetcher;
  /** Epoch ms. */
  clock?: () => number;
  /** Least time between two fetches triggered by an unknown kid. */
  cooldownMs?: number;
  /** Background refresh period; 0 disables it. */
  refreshIntervalMs?: number;
  /** Called after a fetch fails (the last good set stays in use). */
  onFetchError?: (err: TwokeyError) => void;
}

interface PublicKey {
  readonly alg: 'ES256' | 'EdDSA';
  readonly key: CryptoKey | KeyObject;
  /** The public key's parameters, to notice a kid whose key was replaced. */
  readonly material: string;
}

const MAX_KEYS = 16;
const MAX_JWKS_BYTES = 64 * 1024;
// Private members: a set that carries them is a leak, not a key set to trust.
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];

function unavailable(why: string, cause?: unknown): TwokeyError {
  return new TwokeyError('ERR_JWKS_UNAVAILABLE', why, { cause });
}

/** Parses and imports a JWK Set, keeping only ES256 (P-256) and EdDSA (Ed25519) signing keys. */
export async function importJwks(input: unknown): Promise<Map<string, PublicKey>> {
  let value = input;
  if (typeof value === 'string' || Buffer.isBuffer(value)) {
    const text = value.toString();
    if (text.length > MAX_JWKS_BYTES) throw unavailable(`JWK Set larger than ${MAX_JWKS_BYTES} bytes`);
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw unavailable('JWK Set is not JSON', err);
    }
  }
  const keys = (value as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) throw unavailable('JWK Set has no "keys" array');
  if (keys.length > MAX_KEYS) throw unavailable(`JWK Set holds more than ${MAX_KEYS} keys`);
  const out = new Map<string, PublicKey>();
  for (const [i, jwk] of keys.entries()) {
    if (jwk === null || typeof jwk !== 'object' || Array.isArray(jwk)) throw unavailable(`keys[${i}] is not an object`);
    const k = jwk as Record<string, unknown>;
    if (PRIVATE_MEMBERS.some((m) => m in k)) throw unavailable(`keys[${i}] carries private key material`);
    if (typeof k['kid'] !== 'string' || k['kid'] === '') throw unavailable(`keys[${i}] has no "kid"`);
    if (out.has(k['kid'])) throw unavailable(`keys[${i}]: duplicate kid "${k['kid']}"`);
    if (k['use'] !== undefined && k['use'] !== 'sig') continue;
    let alg: PublicKey['alg'];
    if (k['kty'] === 'EC' && k['crv'] === 'P-256' && (k['alg'] === undefined || k['alg'] === 'ES256')) alg = 'ES256';
    else if (k['kty'] === 'OKP' && k['crv'] === 'Ed25519' && (k['alg'] === undefined || k['alg'] === 'EdDSA' || k['alg'] === 'Ed25519')) alg = 'EdDSA';
    else continue; // a key type twokey never verifies with
    try {
      const key = await importJWK({ ...(k as JWK), alg }, alg);
      if (key instanceof Uint8Array) throw new Error('symmetric key');
      out.set(k['kid'], { alg, key, material: `${k['kty']} ${k['crv']} ${k['x']} ${k['y'] ?? ''}` });
    } catch (err) {
      throw unavailable(`keys[${i}] (kid "${k['kid']}") does not import`, err);
    }
  }
  if (out.size === 0) throw unavailable('JWK Set holds no ES256 or EdDSA signing key');
  return out;
}

function keyFrom(keys: ReadonlyMap<string, PublicKey>, kid: string, alg: string): CryptoKey | KeyObject {
  const entry = keys.get(kid);
  // The kid is unverified: named to the log, never in the message a caller gets back.
  if (entry === undefined) throw new TwokeyError('ERR_TOKEN_INVALID', 'invalid token: unknown signing key id', { untrusted: { kid } });
  if (entry.alg !== alg) throw new TwokeyError('ERR_TOKEN_INVALID', `invalid token: the key its kid names is not an ${alg} key`, { untrusted: { kid } });
  return entry.key;
}

const FAILED_FETCH_RETRY_MS = 1000;

/**
 * The verification keys of the mesh. An unknown kid triggers a refetch at most once per cooldown
 * (a flood of forged kids cannot turn into a flood of fetches); a failed fetch keeps the last
 * good set, so an auth outage does not stop services from verifying tokens they already trust.
 */
export class JwksKeySet implements VerificationKeys {
  readonly #fetch: JwksFetcher;
  readonly #clock: () => number;
  readonly #cooldownMs: number;
  readonly #refreshIntervalMs: number;
  readonly #onFetchError: ((err: TwokeyError) => void) | undefined;
  readonly #changeListeners = new Set<(kids: readonly string[]) => void>();
  #keys = new Map<string, PublicKey>();
  // Only refetches an unknown kid asked for count here: a periodic refresh just before a rotation
  // must not make the rotated-in key wait out a cooldown it did not cause.
  #lastOnDemand = Number.NEGATIVE_INFINITY;
  #inFlight: Promise<void> | null = null;
  #timer: NodeJS.Timeout | null = null;
  #fetchCount = 0;
  #fetchFailures = 0;
  #lastFetchedMs: number | undefined;

  constructor(options: JwksKeySetOptions) {
    this.#fetch = options.fetch;
    this.#clock = options.clock ?? Date.now;
    this.#cooldownMs = options.cooldownMs ?? 30_000;
    this.#refreshIntervalMs = options.refreshIntervalMs ?? 5 * 60_000;
    this.#onFetchError = options.onFetchError;
  }

  /** Fetches once now (subject to nothing), then refreshes in the background. */
  async start(): Promise<void> {
    await this.refresh().catch(() => undefined);
    if (this.#refreshIntervalMs > 0 && this.#timer === null) {
      this.#timer = setInterval(() => void this.refresh().catch(() => undefined), this.#refreshIntervalMs);
      this.#timer.unref();
    }
  }

  close(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Called whenever the set of key ids changes (e.g. to drop tokens verified with a retired key). */
  addChangeListener(listener: (kids: readonly string[]) => void): void {
    this.#changeListeners.add(listener);
  }

  get kids(): string[] {
    return [...this.#keys.keys()];
  }

  /** How many fetches were attempted (for operators and tests). */
  get fetchCount(): number {
    return this.#fetchCount;
  }

  /** How many fetches failed (the last good set stayed in use). */
  get fetchFailures(): number {
    return this.#fetchFailures;
  }

  /** Epoch ms of the last successful fetch; undefined before the first. */
  get lastFetchedMs(): number | undefined {
    return this.#lastFetchedMs;
  }

  /** Fetches the set now; concurrent callers share one fetch. Throws when it fails. */
  refresh(): Promise<void> {
    if (this.#inFlight !== null) return this.#inFlight;
    this.#fetchCount += 1;
    this.#inFlight = (async () => {
      try {
        let fetched: Map<string, PublicKey>;
        try {
          fetched = await importJwks(await this.#fetch());
        } catch (err) {
          const error = err instanceof TwokeyError ? err : unavailable(`fetching the JWK Set failed: ${(err as Error)?.message ?? err}`, err);
          this.#fetchFailures += 1;
          this.#onFetchError?.(error);
          throw error;
        }
        // A kid now naming another key is a change too: verified tokens, and signature failures,
        // are cached only for the keys they were checked against.
        const changed =
          fetched.size !== this.#keys.size ||
          [...fetched].some(([kid, key]) => this.#keys.get(kid)?.material !== key.material || this.#keys.get(kid)?.alg !== key.alg);
        this.#keys = fetched;
        this.#lastFetchedMs = this.#clock();
        if (changed) for (const listener of this.#changeListeners) listener(this.kids);
      } finally {
        this.#inFlight = null;
      }
    })();
    return this.#inFlight;
  }

  /**
   * auth says it publishes `kids` (in a set it signed and sent over mTLS): refetches at once when
   * one is not held. Not subject to the unknown-kid cooldown, which exists for kids a caller names.
   */
  expectKids(kids: readonly string[] | undefined): Promise<void> {
    if (kids === undefined || kids.every((kid) => this.#keys.has(kid))) return Promise.resolve();
    return this.refresh().catch(() => undefined);
  }

  async keyFor(kid: string, alg: string): Promise<CryptoKey | KeyObject> {
    let entry = this.#keys.get(kid);
    if (entry === undefined && this.#clock() - this.#lastOnDemand >= this.#cooldownMs) {
      this.#lastOnDemand = this.#clock();
      try {
        await this.refresh();
      } catch (err) {
        // A fetch that failed cost auth nothing: the next unknown kid may try again within a
        // second rather than a whole cooldown (a service reconnecting to auth recovers at once).
        this.#lastOnDemand = this.#clock() - this.#cooldownMs + Math.min(this.#cooldownMs, FAILED_FETCH_RETRY_MS);
        if (this.#keys.size === 0) throw unavailable('no verification keys: the JWK Set could not be fetched', err);
      }
      entry = this.#keys.get(kid);
    } else if (entry === undefined && this.#inFlight !== null) {
      await this.#inFlight.catch(() => undefined);
      entry = this.#keys.get(kid);
    }
    if (entry === undefined && this.#keys.size === 0) throw unavailable('no verification keys: the JWK Set could not be fetched');
    return keyFrom(this.#keys, kid, alg);
  }
}

/** A fixed key set (offline checks, tests): never refetches. */
export class StaticKeys implements VerificationKeys {
  readonly #keys: Map<string, PublicKey>;

  private constructor(keys: Map<string, PublicKey>) {
    this.#keys = keys;
  }

  static async fromJwks(jwks: unknown): Promise<StaticKeys> {
    return new StaticKeys(await importJwks(jwks));
  }

  async keyFor(kid: string, alg: string): Promise<CryptoKey | KeyObject> {
    return keyFrom(this.#keys, kid, alg);
  }
}
