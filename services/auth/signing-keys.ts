// ES256 signing keys: persisted, rotated on a schedule or on demand. The JWKS publishes three:
// the next key (published before it signs anything, so verifiers already hold it when it takes
// over), the current key, and the previous one (so tokens signed just before a rotation verify).
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose';

export interface SigningKey {
  kid: string;
  privateKey: KeyObject;
  /** When it became the signing key. */
  activatedAtMs: number;
}

export interface JsonWebKeySet {
  keys: JWK[];
}

export type KeyState = 'next' | 'current' | 'previous';

export interface KeyRow {
  kid: string;
  privatePkcs8: string;
  publicJwk: string;
  state: KeyState;
  createdAtMs: number;
  activatedAtMs: number | null;
}

/** The signing_keys table's columns, as both engines return them. */
export interface KeyColumns {
  kid: string;
  private_pkcs8: string;
  public_jwk: string;
  state: KeyState;
  created_at_ms: number;
  activated_at_ms: number | null;
}

export function keyRowOf(r: KeyColumns): KeyRow {
  return { kid: r.kid, privatePkcs8: r.private_pkcs8, publicJwk: r.public_jwk, state: r.state, createdAtMs: r.created_at_ms, activatedAtMs: r.activated_at_ms };
}

export interface NewKey {
  kid: string;
  pkcs8: string;
  jwk: string;
}

/** Where the keys live: SQLite (sqlite-auth-records.ts) or PostgreSQL, shared by replicas (postgres-auth-records.ts). */
export interface KeyRecords {
  all(): Promise<KeyRow[]>;
  /**
   * In one transaction, and only while the current key is still `expectedCurrent` (undefined:
   * there is none): previous is destroyed, current becomes previous, next (or `second` when there
   * is none) becomes current at `nowMs`, and `fresh` is published as next. Returns whether it
   * rotated: false means another replica rotated first, which is the point of the condition.
   */
  rotate(expectedCurrent: string | undefined, fresh: NewKey, second: NewKey, nowMs: number): Promise<boolean>;
  /** Calls `listener` when another process may have changed the keys (PostgreSQL NOTIFY). */
  onChange(listener: () => void): void;
}

export type KeyGenerator = () => KeyObject;

export const generateP256Key: KeyGenerator = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;

const PUBLISH_ORDER: Record<KeyState, number> = { current: 0, next: 1, previous: 2 };

/** Public keys only, in publishing order: current, next, previous. */
export function publishedKeySet(rows: readonly KeyRow[]): JsonWebKeySet {
  const sorted = [...rows].sort((a, b) => PUBLISH_ORDER[a.state] - PUBLISH_ORDER[b.state]);
  return { keys: sorted.map((r) => JSON.parse(r.publicJwk) as JWK) };
}

export class SigningKeys {
  readonly #records: KeyRecords;
  readonly #rotationMs: number;
  readonly #now: () => number;
  readonly #generate: KeyGenerator;
  readonly #refreshMs: number;
  readonly #cache = new Map<string, KeyObject>();
  readonly #onRotated: (kid: string, why: string) => void;
  // Every token minted reads the current key: it comes from this snapshot, re-read when another
  // replica says the keys changed and at least every `refreshMs`, so a replica that did not rotate
  // signs with the new key within that bound (the old one stays published meanwhile).
  #rows: KeyRow[] = [];
  #readAtMs = -Infinity;

  constructor(
    records: KeyRecords,
    opts: { rotationMs: number; now?: () => number; generate?: KeyGenerator; onRotated?: (kid: string, why: string) => void; refreshMs?: number },
  ) {
    this.#records = records;
    this.#rotationMs = opts.rotationMs;
    this.#now = opts.now ?? Date.now;
    this.#generate = opts.generate ?? generateP256Key;
    this.#onRotated = opts.onRotated ?? (() => undefined);
    this.#refreshMs = opts.refreshMs ?? 2000;
    records.onChange(() => (this.#readAtMs = -Infinity));
  }

  async #reload(): Promise<void> {
    this.#rows = await this.#records.all();
    this.#readAtMs = this.#now();
  }

  async #snapshot(): Promise<KeyRow[]> {
    const age = this.#now() - this.#readAtMs;
    if (!(age >= 0 && age < this.#refreshMs)) await this.#reload();
    return this.#rows;
  }

  #due(row: KeyRow | undefined): boolean {
    return row === undefined || this.#now() - (row.activatedAtMs ?? row.createdAtMs) >= this.#rotationMs;
  }

  /** The key to sign with now; rotates first when the current one is due (or missing). */
  async current(): Promise<SigningKey> {
    let row = (await this.#snapshot()).find((r) => r.state === 'current');
    if (this.#due(row)) {
      // Another replica may have rotated since the snapshot: read again before rotating.
      await this.#reload();
      row = this.#rows.find((r) => r.state === 'current');
      if (this.#due(row)) await this.#rotate(row === undefined ? 'first key' : 'schedule', row?.kid);
      row = this.#rows.find((r) => r.state === 'current');
      if (row === undefined) throw new Error('no current signing key after rotation');
    }
    return { kid: row!.kid, privateKey: this.#privateKey(row!), activatedAtMs: row!.activatedAtMs ?? row!.createdAtMs };
  }

  /**
   * The next key becomes current, current becomes previous, the old previous is destroyed, and a
   * new next key is published. Returns the new current kid. (To withdraw a key at once, rotate twice.)
   */
  async rotate(why = 'on demand'): Promise<string> {
    await this.#reload();
    return this.#rotate(why, this.#rows.find((r) => r.state === 'current')?.kid);
  }

  /** Rotates once if the current key is still `expected`; replicas racing for one rotation get one. */
  async #rotate(why: string, expected: string | undefined): Promise<string> {
    const fresh = await this.#newKey();
    // Normally the next key has been published for a whole rotation period; only on first start
    // (or after an upgrade) is there none, and this freshly generated key takes its place.
    const second = await this.#newKey();
    const rotated = await this.#records.rotate(expected, fresh, second, this.#now());
    await this.#reload();
    const kid = this.#rows.find((r) => r.state === 'current')!.kid;
    if (rotated) this.#onRotated(kid, why);
    return kid;
  }

  /** Public keys only: current, next, previous. */
  async jwks(): Promise<JsonWebKeySet> {
    return publishedKeySet(await this.#snapshot());
  }

  async publishedKids(): Promise<string[]> {
    return (await this.jwks()).keys.map((k) => k.kid as string);
  }

  async #newKey(): Promise<NewKey> {
    const privateKey = this.#generate();
    const jwk = await exportJWK(privateKey);
    delete jwk.d;
    const kid = await calculateJwkThumbprint(jwk, 'sha256');
    return {
      kid,
      pkcs8: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      jwk: JSON.stringify({ ...jwk, kid, alg: 'ES256', use: 'sig' }),
    };
  }

  #privateKey(row: KeyRow): KeyObject {
    let key = this.#cache.get(row.kid);
    if (key === undefined) {
      key = createPrivateKey(row.privatePkcs8);
      this.#cache.clear();
      this.#cache.set(row.kid, key);
    }
    return key;
  }
}
