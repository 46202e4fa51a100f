// Auth's users, failed logins and signing keys in its SQLite file: the embedded default, one replica.
import { inTransaction, type SqliteStatement as Statement } from '../mesh-runtime/durable-database.ts';
import type { AuthDatabase } from './database.ts';
import type { FailureRecords } from './login-throttle.ts';
import { keyRowOf, type KeyColumns, type KeyRecords, type KeyRow, type NewKey } from './signing-keys.ts';
import type { UserRecords, UserRow } from './user-store.ts';

interface SqliteUserRow {
  username: string;
  password_hash: string;
  disabled: number;
  created_at_ms: number;
  updated_at_ms: number;
}

function toUserRow(r: SqliteUserRow): UserRow {
  return { username: r.username, passwordHash: r.password_hash, disabled: r.disabled === 1, createdAtMs: r.created_at_ms, updatedAtMs: r.updated_at_ms };
}

export class SqliteUserRecords implements UserRecords {
  // Prepared once: every login reads the user and its roles.
  readonly #select: Statement;
  readonly #selectRoles: Statement;
  readonly #insert: Statement;
  readonly #disable: Statement;
  readonly #addRole: Statement;
  readonly #list: Statement;
  readonly #db: AuthDatabase;

  constructor(db: AuthDatabase) {
    this.#db = db;
    this.#select = db.prepare('SELECT * FROM users WHERE username = ?');
    this.#selectRoles = db.prepare('SELECT role FROM user_roles WHERE username = ? ORDER BY role');
    this.#insert = db.prepare(
      'INSERT INTO users (username, password_hash, disabled, created_at_ms, updated_at_ms) VALUES (?, ?, 0, ?, ?) ON CONFLICT (username) DO NOTHING',
    );
    this.#disable = db.prepare('UPDATE users SET disabled = ?, updated_at_ms = ? WHERE username = ?');
    this.#addRole = db.prepare('INSERT OR IGNORE INTO user_roles (username, role) VALUES (?, ?)');
    this.#list = db.prepare('SELECT * FROM users ORDER BY username');
  }

  async insert(username: string, passwordHash: string, nowMs: number): Promise<boolean> {
    return Number(this.#insert.run(username, passwordHash, nowMs, nowMs).changes) === 1;
  }

  async setDisabled(username: string, disabled: boolean, nowMs: number): Promise<boolean> {
    return Number(this.#disable.run(disabled ? 1 : 0, nowMs, username).changes) === 1;
  }

  async addRole(username: string, role: string): Promise<boolean> {
    return inTransaction(this.#db, () => {
      if (this.#select.get(username) === undefined) return false;
      this.#addRole.run(username, role);
      return true;
    });
  }

  async roles(username: string): Promise<string[]> {
    return (this.#selectRoles.all(username) as unknown as Array<{ role: string }>).map((r) => r.role);
  }

  async find(username: string): Promise<UserRow | undefined> {
    const row = this.#select.get(username) as unknown as SqliteUserRow | undefined;
    return row === undefined ? undefined : toUserRow(row);
  }

  async list(): Promise<UserRow[]> {
    return (this.#list.all() as unknown as SqliteUserRow[]).map(toUserRow);
  }
}

export class SqliteFailureRecords implements FailureRecords {
  readonly #db: AuthDatabase;
  readonly #select: Statement;
  readonly #insert: Statement;
  readonly #prune: Statement;
  readonly #clear: Statement;

  constructor(db: AuthDatabase) {
    this.#db = db;
    this.#select = db.prepare('SELECT at_ms FROM login_failures WHERE key = ? AND at_ms > ?');
    this.#insert = db.prepare('INSERT INTO login_failures (key, at_ms) VALUES (?, ?)');
    this.#prune = db.prepare('DELETE FROM login_failures WHERE at_ms <= ?');
    // The key itself and the keys under it (`key|...`), compared as text: no LIKE wildcards.
    this.#clear = db.prepare('DELETE FROM login_failures WHERE key = ? OR substr(key, 1, length(?)) = ?');
  }

  async since(key: string, sinceMs: number): Promise<number[]> {
    return (this.#select.all(key, sinceMs) as unknown as { at_ms: number }[]).map((r) => r.at_ms);
  }

  async record(keys: readonly string[], nowMs: number, pruneBeforeMs: number): Promise<void> {
    inTransaction(this.#db, () => {
      for (const key of keys) this.#insert.run(key, nowMs);
      this.#prune.run(pruneBeforeMs);
    });
  }

  async clear(key: string): Promise<number> {
    return Number(this.#clear.run(key, `${key}|`, `${key}|`).changes);
  }
}

export class SqliteKeyRecords implements KeyRecords {
  readonly #db: AuthDatabase;
  readonly #all: Statement;
  readonly #current: Statement;
  readonly #next: Statement;
  readonly #insert: Statement;
  readonly #dropPrevious: Statement;
  readonly #retire: Statement;
  readonly #activate: Statement;

  constructor(db: AuthDatabase) {
    this.#db = db;
    this.#all = db.prepare('SELECT * FROM signing_keys');
    this.#current = db.prepare("SELECT kid FROM signing_keys WHERE state = 'current'");
    this.#next = db.prepare("SELECT kid FROM signing_keys WHERE state = 'next'");
    this.#insert = db.prepare(
      'INSERT INTO signing_keys (kid, private_pkcs8, public_jwk, state, created_at_ms, activated_at_ms) VALUES (?, ?, ?, ?, ?, ?)',
    );
    this.#dropPrevious = db.prepare("DELETE FROM signing_keys WHERE state = 'previous'");
    this.#retire = db.prepare("UPDATE signing_keys SET state = 'previous' WHERE state = 'current'");
    this.#activate = db.prepare("UPDATE signing_keys SET state = 'current', activated_at_ms = ? WHERE state = 'next'");
  }

  /** The rows now, synchronously (offline tools reading a read-only file). */
  allNow(): KeyRow[] {
    return (this.#all.all() as unknown as KeyColumns[]).map(keyRowOf);
  }

  async all(): Promise<KeyRow[]> {
    return this.allNow();
  }

  async rotate(expectedCurrent: string | undefined, fresh: NewKey, second: NewKey, nowMs: number): Promise<boolean> {
    return inTransaction(this.#db, () => {
      const current = (this.#current.get() as { kid: string } | undefined)?.kid;
      if (current !== expectedCurrent) return false;
      this.#dropPrevious.run();
      this.#retire.run();
      if (this.#next.get() === undefined) this.#insert.run(second.kid, second.pkcs8, second.jwk, 'next', nowMs, null);
      this.#activate.run(nowMs);
      this.#insert.run(fresh.kid, fresh.pkcs8, fresh.jwk, 'next', nowMs, null);
      return true;
    });
  }

  onChange(): void {
    // One process owns the file: nobody else rotates its keys.
  }
}
