// auth's side of revocation: records revocations, signs the set, and pushes it (and heartbeats) to watchers.
import { signRevocationSet } from '../authz/revocation-set.ts';
import type { RevocationSet } from '../authz/types.ts';
import type { RevocationEntry, RevocationStore } from './revocation-store.ts';
import { disabledSubjectEntry, jtiEntry, serialEntry, withdrawnKidEntry } from './revocation-entries.ts';


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

  #nowSeconds(): number {
    return Math.floor(this.#clock() / 1000);
  }

  disableSubject(subject: string): Promise<RevocationSet> {
    return this.revoke(disabledSubjectEntry(subject, this.#nowSeconds()));
  }

  /** `expSeconds` undefined (or 0): not known, so kept as long as any token could live. */
  revokeJti(jti: string, expSeconds: number | undefined): Promise<RevocationSet> {
    return this.#revokeBuilt(() => jtiEntry(jti, expSeconds, this.#nowSeconds()));
  }

  /** `notAfterSeconds` undefined (or 0): not known, so kept as long as any certificate could live. */
  revokeSerial(serialHex: string, notAfterSeconds: number | undefined): Promise<RevocationSet> {
    return this.#revokeBuilt(() => serialEntry(serialHex, notAfterSeconds, this.#nowSeconds()));
  }

  withdrawKid(kid: string): Promise<RevocationSet> {
    return this.#revokeBuilt(() => withdrawnKidEntry(kid, this.#nowSeconds()));
  }

  // Validation errors reject the promise rather than throw synchronously.
  async #revokeBuilt(build: () => RevocationEntry): Promise<RevocationSet> {
    return this.revoke(build());
  }
}
