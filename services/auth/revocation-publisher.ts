// auth's side of revocation: records revocations, signs the set, and pushes it (and heartbeats) to watchers.
import { normalizeSerial, signRevocationSet, type RevocationSet } from '../authz/revocation-set.ts';
import { TwokeyError } from '../authz/errors.ts';
import type { RevocationEntry, RevocationStore } from './revocation-store.ts';

/**
 * The longest any token can live (the verifier refuses exp - iat beyond it) plus clock leeway: a
 * disabled user's or withdrawn key's entry can leave the set after this, because every token issued
 * before it has expired. The user stays disabled in auth's user table until re-enabled.
 */
export const REVOCATION_REACH_SECONDS = 24 * 3600 + 300;

export interface SetSigner {
  current(): Promise<{ kid: string; privateKey: import('node:crypto').KeyObject }>;
  /** The kids the JWK Set publishes now; each set names them so verifiers fetch a new one at once. */
  publishedKids(): Promise<string[]>;
}

export interface RevocationPublisherOptions {
  store: RevocationStore;
  keys: SetSigner;
  /** Epoch ms. */
  clock?: () => number;
  /**
   * How often the set is re-signed and pushed even when unchanged (so watchers can tell fresh from
   * stale), and how often the store is read for changes made by other processes (`twokey users disable`).
   */
  heartbeatMs?: number;
  onError?: (err: unknown) => void;
}

export type SignedSetListener = (jws: string, set: RevocationSet) => void;

export class RevocationPublisher {
  readonly #store: RevocationStore;
  readonly #keys: SetSigner;
  readonly #clock: () => number;
  readonly #heartbeatMs: number;
  readonly #onError: (err: unknown) => void;
  readonly #listeners = new Set<SignedSetListener>();
  #latest: { jws: string; set: RevocationSet } | null = null;
  #timer: NodeJS.Timeout | null = null;
  #publishing: Promise<{ jws: string; set: RevocationSet }> | null = null;

  constructor(options: RevocationPublisherOptions) {
    this.#store = options.store;
    this.#keys = options.keys;
    this.#clock = options.clock ?? Date.now;
    this.#heartbeatMs = options.heartbeatMs ?? 2000;
    this.#onError = options.onError ?? (() => undefined);
  }

  async start(): Promise<void> {
    await this.publish();
    this.#timer ??= setInterval(() => void this.publish().catch(this.#onError), this.#heartbeatMs);
    this.#timer.unref();
  }

  close(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    this.#listeners.clear();
  }

  /** The newest signed set (signing one first if none yet). */
  async latest(): Promise<{ jws: string; set: RevocationSet }> {
    return this.#latest ?? this.publish();
  }

  /** Pushes every signed set (changes and heartbeats) to `listener` until the returned function is called. */
  subscribe(listener: SignedSetListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Prunes expired entries, signs the current entries with a fresh iat, and pushes it. */
  publish(): Promise<{ jws: string; set: RevocationSet }> {
    // Concurrent callers (a revocation during a heartbeat) share one signing; the next picks up later changes.
    const run = async (): Promise<{ jws: string; set: RevocationSet }> => {
      const now = this.#clock();
      await this.#store.prune(Math.floor(now / 1000));
      const signer = await this.#keys.current();
      const set = { ...(await this.#store.snapshot(now)), publishedKids: await this.#keys.publishedKids() };
      const jws = signRevocationSet(set, signer);
      this.#latest = { jws, set };
      for (const listener of this.#listeners) listener(jws, set);
      return this.#latest;
    };
    const next = (this.#publishing ?? Promise.resolve()).catch(() => undefined).then(run);
    this.#publishing = next;
    void next.finally(() => {
      if (this.#publishing === next) this.#publishing = null;
    }).catch(() => undefined);
    return next;
  }

  list(): Promise<RevocationEntry[]> {
    return this.#store.list();
  }

  /** Records a revocation and pushes the new set at once. */
  async revoke(entry: RevocationEntry): Promise<RevocationSet> {
    await this.#store.add(entry);
    return (await this.publish()).set;
  }

  async disableSubject(subject: string): Promise<RevocationSet> {
    const at = Math.floor(this.#clock() / 1000);
    return this.revoke({ kind: 'user', value: subject, atSeconds: at, keepUntilSeconds: at + REVOCATION_REACH_SECONDS });
  }

  async revokeJti(jti: string, expSeconds: number): Promise<RevocationSet> {
    if (!/^[A-Za-z0-9_-]{16,128}$/.test(jti)) throw new TwokeyError('ERR_REQUEST_INVALID', 'a jti is 16-128 base64url characters');
    if (!Number.isSafeInteger(expSeconds) || expSeconds <= 0) throw new TwokeyError('ERR_REQUEST_INVALID', 'the token exp must be a positive integer');
    // Without the token, its exp is unknown: keep the entry as long as any token could live.
    const at = Math.floor(this.#clock() / 1000);
    return this.revoke({ kind: 'jti', value: jti, atSeconds: at, keepUntilSeconds: Math.min(expSeconds, at + REVOCATION_REACH_SECONDS) + 300 });
  }

  async revokeSerial(serialHex: string, notAfterSeconds: number): Promise<RevocationSet> {
    const at = Math.floor(this.#clock() / 1000);
    return this.revoke({ kind: 'serial', value: normalizeSerial(serialHex), atSeconds: at, keepUntilSeconds: notAfterSeconds });
  }

  async withdrawKid(kid: string): Promise<RevocationSet> {
    if (!/^[\x21-\x7e]{1,128}$/.test(kid)) throw new TwokeyError('ERR_REQUEST_INVALID', 'a kid is 1-128 printable characters');
    const at = Math.floor(this.#clock() / 1000);
    return this.revoke({ kind: 'kid', value: kid, atSeconds: at, keepUntilSeconds: at + REVOCATION_REACH_SECONDS });
  }
}
