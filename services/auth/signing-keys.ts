// ES256 signing keys: persisted, rotated on a schedule or on demand. The JWKS publishes three:
// the next key (published before it signs anything, so verifiers already hold it when it takes
// over), the current key, and the previous one (so tokens signed just before a rotation verify).
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose';
import { inTransaction, type SqliteStatement as Statement } from '../mesh-runtime/durable-database.ts';
import type { AuthDatabase } from './database.ts';

export interface SigningKey {
  kid: string;
  privateKey: KeyObject;
  /** When it became the signing key. */
  activatedAtMs: number;
}

export interface JsonWebKeySet {
  keys: JWK[];
}

type KeyState = 'next' | 'current' | 'previous';

interface KeyRow {
  kid: string;
  private_pkcs8: string;
  public_jwk: string;
  state: KeyState;
  created_at_ms: number;
  activated_at_ms: number | null;
}

export type KeyGenerator = () => KeyObject;

export const generateP256Key: KeyGenerator = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;

const PUBLISH_ORDER: Record<KeyState, number> = { current: 0, next: 1, previous: 2 };

export class SigningKeys {
  readonly #db: AuthDatabase;
  readonly #rotationMs: number;
  readonly #now: () => number;
  readonly #generate: KeyGenerator;
  readonly #cache = new Map<string, KeyObject>();
  readonly #onRotated: (kid: string, why: string) => void;
  // Prepared once: every token minted reads the current key, every GetJwks the published ones.
  readonly #selectState: Statement;
  readonly #selectAll: Statement;

  constructor(
    db: AuthDatabase,
    opts: { rotationMs: number; now?: () => number; generate?: KeyGenerator; onRotated?: (kid: string, why: string) => void },
  ) {
    this.#db = db;
    this.#rotationMs = opts.rotationMs;
    this.#now = opts.now ?? Date.now;
    this.#generate = opts.generate ?? generateP256Key;
    this.#onRotated = opts.onRotated ?? (() => undefined);
    this.#selectState = db.prepare('SELECT * FROM signing_keys WHERE state = ?');
    this.#selectAll = db.prepare('SELECT * FROM signing_keys');
  }

  /** The key to sign with now; rotates first when the current one is due (or missing). */
  async current(): Promise<SigningKey> {
    let row = this.#row('current');
    if (row === undefined || this.#now() - (row.activated_at_ms ?? row.created_at_ms) >= this.#rotationMs) {
      await this.rotate(row === undefined ? 'first key' : 'schedule');
      row = this.#row('current')!;
    }
    return { kid: row.kid, privateKey: this.#privateKey(row), activatedAtMs: row.activated_at_ms ?? row.created_at_ms };
  }

  /**
   * The next key becomes current, current becomes previous, the old previous is destroyed, and a
   * new next key is published. Returns the new current kid. (To withdraw a key at once, rotate twice.)
   */
  async rotate(why = 'on demand'): Promise<string> {
    const fresh = await this.#newKey();
    const second = this.#row('next') === undefined ? await this.#newKey() : undefined;
    const now = this.#now();
    const insert = this.#db.prepare(
      'INSERT INTO signing_keys (kid, private_pkcs8, public_jwk, state, created_at_ms, activated_at_ms) VALUES (?, ?, ?, ?, ?, ?)',
    );
    const kid = inTransaction(this.#db, () => {
      this.#db.prepare("DELETE FROM signing_keys WHERE state = 'previous'").run();
      this.#db.prepare("UPDATE signing_keys SET state = 'previous' WHERE state = 'current'").run();
      // Normally the next key has been published for a whole rotation period; only on first
      // start (or after an upgrade) is there none, and a freshly generated key takes its place.
      if (this.#row('next') === undefined) insert.run(second!.kid, second!.pkcs8, second!.jwk, 'next', now, null);
      this.#db.prepare("UPDATE signing_keys SET state = 'current', activated_at_ms = ? WHERE state = 'next'").run(now);
      insert.run(fresh.kid, fresh.pkcs8, fresh.jwk, 'next', now, null);
      return this.#row('current')!.kid;
    });
    this.#onRotated(kid, why);
    return kid;
  }

  /** Public keys only: current, next, previous. */
  jwks(): JsonWebKeySet {
    const rows = this.#selectAll.all() as unknown as KeyRow[];
    rows.sort((a, b) => PUBLISH_ORDER[a.state] - PUBLISH_ORDER[b.state]);
    return { keys: rows.map((r) => JSON.parse(r.public_jwk) as JWK) };
  }

  async #newKey(): Promise<{ kid: string; pkcs8: string; jwk: string }> {
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

  #row(state: KeyState): KeyRow | undefined {
    return this.#selectState.get(state) as unknown as KeyRow | undefined;
  }

  #privateKey(row: KeyRow): KeyObject {
    let key = this.#cache.get(row.kid);
    if (key === undefined) {
      key = createPrivateKey(row.private_pkcs8);
      this.#cache.clear();
      this.#cache.set(row.kid, key);
    }
    return key;
  }
}
