// The auth service's embedded database: users, login failures and signing keys in one SQLite file.
import { inTransaction, openDurableDatabase, pragmaValue, type SqliteDatabase } from '../mesh-runtime/durable-database.ts';

export type AuthDatabase = SqliteDatabase;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS users (
  username      TEXT PRIMARY KEY,
  password_hash TEXT NOT NULL,
  disabled      INTEGER NOT NULL DEFAULT 0,
  created_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS user_roles (
  username      TEXT NOT NULL REFERENCES users (username),
  role          TEXT NOT NULL,
  PRIMARY KEY (username, role)
) STRICT;
CREATE TABLE IF NOT EXISTS login_failures (
  key           TEXT NOT NULL,
  at_ms         INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures (key, at_ms);
CREATE TABLE IF NOT EXISTS signing_keys (
  kid             TEXT PRIMARY KEY,
  private_pkcs8   TEXT NOT NULL,
  public_jwk      TEXT NOT NULL,
  state           TEXT NOT NULL CHECK (state IN ('next', 'current', 'previous')),
  created_at_ms   INTEGER NOT NULL,
  activated_at_ms INTEGER
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS one_key_per_state ON signing_keys (state);
`;

/**
 * Version 1 kept only current and previous keys; version 2 also publishes the next key ahead of
 * its use. Old key rows are dropped: verifiers refetch on the new kid, and the cost is that tokens
 * signed before the upgrade stop verifying (they live minutes).
 */
function migrate(db: SqliteDatabase): void {
  const version = Number(pragmaValue(db, 'user_version'));
  if (version >= 2) return;
  inTransaction(db, () => {
    db.exec('DROP TABLE IF EXISTS signing_keys');
    db.exec('PRAGMA user_version = 2');
  });
}

/** The path of the auth database inside a data directory. */
export function authDatabasePath(dataDir: string): string {
  return `${dataDir.replace(/\/+$/, '')}/auth.db`;
}

/**
 * Opens (creating on first use) the auth database. The file holds password hashes and private
 * keys, so it is created owner-only before SQLite ever writes to it.
 */
export function openAuthDatabase(path: string): AuthDatabase {
  const db = openDurableDatabase(path);
  migrate(db);
  db.exec(SCHEMA);
  return db;
}
