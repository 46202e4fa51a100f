// The auth service's embedded database: users, login failures and signing keys in one SQLite file.
import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';

export type AuthDatabase = Database.Database;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS users (
  username      TEXT PRIMARY KEY,
  password_hash TEXT NOT NULL,
  disabled      INTEGER NOT NULL DEFAULT 0,
  created_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS login_failures (
  key           TEXT NOT NULL,
  at_ms         INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures (key, at_ms);
CREATE TABLE IF NOT EXISTS signing_keys (
  kid           TEXT PRIMARY KEY,
  private_pkcs8 TEXT NOT NULL,
  public_jwk    TEXT NOT NULL,
  state         TEXT NOT NULL CHECK (state IN ('current', 'previous')),
  created_at_ms INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS one_current_key ON signing_keys (state) WHERE state = 'current';
CREATE UNIQUE INDEX IF NOT EXISTS one_previous_key ON signing_keys (state) WHERE state = 'previous';
`;

/** The path of the auth database inside a data directory. */
export function authDatabasePath(dataDir: string): string {
  return `${dataDir.replace(/\/+$/, '')}/auth.db`;
}

/**
 * Opens (creating on first use) the auth database. The file holds password hashes and private
 * keys, so it is created owner-only before SQLite ever writes to it.
 */
export function openAuthDatabase(path: string): AuthDatabase {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  closeSync(openSync(path, 'a', 0o600));
  chmodSync(path, 0o600);
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  db.exec(SCHEMA);
  return db;
}
