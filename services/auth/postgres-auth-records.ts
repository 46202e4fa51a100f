// Auth's users, failed logins and signing keys in PostgreSQL, shared by every auth replica.
import type { PostgresConfig } from '../mesh-runtime/database-config.ts';
import { PostgresDatabase, type Migration } from '../mesh-runtime/postgres-database.ts';
import type { FailureRecords } from './login-throttle.ts';
import { keyRowOf, type KeyColumns, type KeyRecords, type KeyRow, type NewKey } from './signing-keys.ts';
import type { UserRecords, UserRow } from './user-store.ts';

const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    sql: `
CREATE TABLE users (
  username      text PRIMARY KEY,
  password_hash text NOT NULL,
  disabled      boolean NOT NULL DEFAULT false,
  created_at_ms bigint NOT NULL,
  updated_at_ms bigint NOT NULL
);
CREATE TABLE user_roles (
  username      text NOT NULL REFERENCES users (username),
  role          text NOT NULL,
  PRIMARY KEY (username, role)
);
CREATE TABLE login_failures (
  key           text NOT NULL,
  at_ms         bigint NOT NULL
);
CREATE INDEX login_failures_key ON login_failures (key, at_ms);
CREATE TABLE signing_keys (
  kid             text PRIMARY KEY,
  private_pkcs8   text NOT NULL,
  public_jwk      text NOT NULL,
  state           text NOT NULL CHECK (state IN ('next', 'current', 'previous')),
  created_at_ms   bigint NOT NULL,
  activated_at_ms bigint
);
CREATE UNIQUE INDEX one_key_per_state ON signing_keys (state);`,
  },
  {
    version: 2,
    sql: `
CREATE TABLE revocations (
  kind          text NOT NULL CHECK (kind IN ('user', 'jti', 'serial', 'kid')),
  value         text NOT NULL,
  at_s          bigint NOT NULL,
  keep_until_s  bigint NOT NULL,
  PRIMARY KEY (kind, value)
);
CREATE TABLE revocation_sequence (
  id            integer PRIMARY KEY CHECK (id = 1),
  seq           bigint NOT NULL
);
INSERT INTO revocation_sequence (id, seq) VALUES (1, 0);`,
  },
];

/** A rotation by any replica wakes the others, which then re-read the keys. */
const KEYS_CHANNEL = 'twokey_signing_keys';
// Rotations are serialized across replicas; the condition on the current kid makes the loser a no-op.
const ROTATION_LOCK = 0x74776b20;

export function openAuthPostgres(config: PostgresConfig): Promise<PostgresDatabase> {
  return PostgresDatabase.open(config, 'auth', MIGRATIONS);
}

interface PgUserRow {
  username: string;
  password_hash: string;
  disabled: boolean;
  created_at_ms: number;
  updated_at_ms: number;
}

function toUserRow(r: PgUserRow): UserRow {
  return { username: r.username, passwordHash: r.password_hash, disabled: r.disabled, createdAtMs: r.created_at_ms, updatedAtMs: r.updated_at_ms };
}

export class PostgresUserRecords implements UserRecords {
  readonly #db: PostgresDatabase;

  constructor(db: PostgresDatabase) {
    this.#db = db;
  }

  async insert(username: string, passwordHash: string, nowMs: number): Promise<boolean> {
    const rows = await this.#db.query(
      'auth_user_insert',
      'INSERT INTO users (username, password_hash, disabled, created_at_ms, updated_at_ms) VALUES ($1, $2, false, $3, $3) ON CONFLICT (username) DO NOTHING RETURNING username',
      [username, passwordHash, nowMs],
    );
    return rows.length === 1;
  }

  async setDisabled(username: string, disabled: boolean, nowMs: number): Promise<boolean> {
    const rows = await this.#db.query('auth_user_disable', 'UPDATE users SET disabled = $1, updated_at_ms = $2 WHERE username = $3 RETURNING username', [disabled, nowMs, username]);
    return rows.length === 1;
  }

  async addRole(username: string, role: string): Promise<boolean> {
    // The foreign key refuses a role for a missing user; the SELECT answers which case it was.
    const rows = await this.#db.query<{ username: string }>(
      'auth_user_add_role',
      'INSERT INTO user_roles (username, role) SELECT username, $2 FROM users WHERE username = $1 ON CONFLICT DO NOTHING RETURNING username',
      [username, role],
    );
    if (rows.length === 1) return true;
    return (await this.find(username)) !== undefined;
  }

  async roles(username: string): Promise<string[]> {
    return (await this.#db.query<{ role: string }>('auth_user_roles', 'SELECT role FROM user_roles WHERE username = $1 ORDER BY role', [username])).map((r) => r.role);
  }

  async find(username: string): Promise<UserRow | undefined> {
    const rows = await this.#db.query<PgUserRow>('auth_user_find', 'SELECT * FROM users WHERE username = $1', [username]);
    return rows[0] === undefined ? undefined : toUserRow(rows[0]);
  }

  async list(): Promise<UserRow[]> {
    return (await this.#db.query<PgUserRow>('auth_user_list', 'SELECT * FROM users ORDER BY username')).map(toUserRow);
  }
}

export class PostgresFailureRecords implements FailureRecords {
  readonly #db: PostgresDatabase;

  constructor(db: PostgresDatabase) {
    this.#db = db;
  }

  async since(key: string, sinceMs: number): Promise<number[]> {
    return (await this.#db.query<{ at_ms: number }>('auth_failures_since', 'SELECT at_ms FROM login_failures WHERE key = $1 AND at_ms > $2', [key, sinceMs])).map((r) => r.at_ms);
  }

  async record(keys: readonly string[], nowMs: number, pruneBeforeMs: number): Promise<void> {
    await this.#db.transaction(async (c) => {
      await c.query({ name: 'auth_failures_insert_keys', text: 'INSERT INTO login_failures (key, at_ms) SELECT k, $2 FROM unnest($1::text[]) AS k', values: [keys, nowMs] });
      await c.query({ name: 'auth_failures_prune', text: 'DELETE FROM login_failures WHERE at_ms <= $1', values: [pruneBeforeMs] });
    });
  }

  async clear(key: string): Promise<number> {
    // The key itself and the keys under it (`key|...`), compared as text: no LIKE wildcards.
    return (await this.#db.query('auth_failures_clear_tree', 'DELETE FROM login_failures WHERE key = $1 OR substr(key, 1, length($2)) = $2 RETURNING 1', [key, `${key}|`])).length;
  }
}

export class PostgresKeyRecords implements KeyRecords {
  readonly #db: PostgresDatabase;

  constructor(db: PostgresDatabase) {
    this.#db = db;
  }

  async all(): Promise<KeyRow[]> {
    const rows = await this.#db.query<KeyColumns>('auth_keys_all', 'SELECT * FROM signing_keys');
    return rows.map(keyRowOf);
  }

  async rotate(expectedCurrent: string | undefined, fresh: NewKey, second: NewKey, nowMs: number): Promise<boolean> {
    return this.#db.transaction(async (c) => {
      await c.query('SELECT pg_advisory_xact_lock($1)', [ROTATION_LOCK]);
      const current = (await c.query("SELECT kid FROM signing_keys WHERE state = 'current'")).rows[0] as { kid: string } | undefined;
      if (current?.kid !== expectedCurrent) return false;
      const insert = 'INSERT INTO signing_keys (kid, private_pkcs8, public_jwk, state, created_at_ms, activated_at_ms) VALUES ($1, $2, $3, $4, $5, NULL)';
      await c.query("DELETE FROM signing_keys WHERE state = 'previous'");
      await c.query("UPDATE signing_keys SET state = 'previous' WHERE state = 'current'");
      const next = (await c.query("SELECT kid FROM signing_keys WHERE state = 'next'")).rows[0];
      if (next === undefined) await c.query(insert, [second.kid, second.pkcs8, second.jwk, 'next', nowMs]);
      await c.query("UPDATE signing_keys SET state = 'current', activated_at_ms = $1 WHERE state = 'next'", [nowMs]);
      await c.query(insert, [fresh.kid, fresh.pkcs8, fresh.jwk, 'next', nowMs]);
      await c.query(`SELECT pg_notify('${KEYS_CHANNEL}', '')`);
      return true;
    });
  }

  onChange(listener: () => void): void {
    this.#db.listen(KEYS_CHANNEL, listener);
  }
}
