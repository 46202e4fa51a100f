// ES256 signing keys: persisted, rotated on a schedule or on demand; the JWKS publishes the
// current and the previous key so tokens signed just before a rotation still verify.
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose';
import type { AuthDatabase } from './database.ts';

export interface SigningKey {
  kid: string;
  privateKey: KeyObject;
  createdAtMs: number;
}

export interface JsonWebKeySet {
  keys: JWK[];
}

interface KeyRow {
  kid: string;
  private_pkcs8: string;
  public_jwk: string;
  state: 'current' | 'previous';
  created_at_ms: number;
}

export type KeyGenerator = () => KeyObject;

export const generateP256Key: KeyGenerator = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;

export class SigningKeys {
  readonly #db: AuthDatabase;
  readonly #rotationMs: number;
  readonly #now: () => number;
  readonly #generate: KeyGenerator;
  readonly #cache = new Map<string, KeyObject>();

  constructor(db: AuthDatabase, opts: { rotationMs: number; now?: () => number; generate?: KeyGenerator }) {
    this.#db = db;
    this.#rotationMs = opts.rotationMs;
    this.#now = opts.now ?? Date.now;
    this.#generate = opts.generate ?? generateP256Key;
  }

  /** The key to sign with now; rotates first when the current one is due (or missing). */
  async current(): Promise<SigningKey> {
    let row = this.#row('current');
    if (row === undefined || this.#now() - row.created_at_ms >= this.#rotationMs) {
      await this.rotate();
      row = this.#row('current')!;
    }
    return { kid: row.kid, privateKey: this.#privateKey(row), createdAtMs: row.created_at_ms };
  }

  /** New current key; the old current becomes previous; the old previous is destroyed. */
  async rotate(): Promise<string> {
    const privateKey = this.#generate();
    const jwk = await exportJWK(privateKey);
    delete jwk.d;
    const kid = await calculateJwkThumbprint(jwk, 'sha256');
    const publicJwk = { ...jwk, kid, alg: 'ES256', use: 'sig' };
    const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    this.#db.transaction(() => {
      this.#db.prepare("DELETE FROM signing_keys WHERE state = 'previous'").run();
      this.#db.prepare("UPDATE signing_keys SET state = 'previous' WHERE state = 'current'").run();
      this.#db
        .prepare("INSERT INTO signing_keys (kid, private_pkcs8, public_jwk, state, created_at_ms) VALUES (?, ?, ?, 'current', ?)")
        .run(kid, pkcs8, JSON.stringify(publicJwk), this.#now());
    }).immediate();
    return kid;
  }

  /** Public keys only: current first, then previous. */
  jwks(): JsonWebKeySet {
    const rows = this.#db.prepare("SELECT * FROM signing_keys ORDER BY state = 'current' DESC").all() as KeyRow[];
    return { keys: rows.map((r) => JSON.parse(r.public_jwk) as JWK) };
  }

  #row(state: 'current' | 'previous'): KeyRow | undefined {
    return this.#db.prepare('SELECT * FROM signing_keys WHERE state = ?').get(state) as KeyRow | undefined;
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
