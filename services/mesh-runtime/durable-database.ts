// Opens a service's SQLite file owner-only, in WAL mode, with commits that survive a crash.
import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';

export type SqliteDatabase = DatabaseSync;
export type SqliteStatement = StatementSync;

/**
 * Opens (creating on first use) the database at `path`. The directory is created 0700 and the file
 * 0600 before SQLite writes a byte, since these files hold password hashes, keys and user data.
 */
export function openDurableDatabase(path: string): SqliteDatabase {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  closeSync(openSync(path, 'a', 0o600));
  // openSync's mode applies only to a new file: an existing one is narrowed too.
  chmodSync(path, 0o600);
  // A write while another connection (a second process, a CLI) holds the lock waits up to 5 s
  // instead of failing at once.
  const db = new DatabaseSync(path, { timeout: 5000 });
  db.exec('PRAGMA journal_mode = WAL');
  // FULL syncs the WAL to disk at every commit, so a write acknowledged to a caller survives an OS
  // crash or power loss, not only kill -9 (WAL's usual NORMAL may lose the last commits).
  db.exec('PRAGMA synchronous = FULL');
  return db;
}

/** Opens an existing database read-only (offline tools reading a running service's state). */
export function openReadOnlyDatabase(path: string): SqliteDatabase {
  return new DatabaseSync(path, { readOnly: true, timeout: 5000 });
}

/**
 * Runs `work` in one write transaction. BEGIN IMMEDIATE takes the write lock up front, so two
 * processes that read-then-write cannot both read the old state; any throw rolls the whole of it back.
 */
export function inTransaction<T>(db: SqliteDatabase, work: () => T): T {
  db.exec('BEGIN IMMEDIATE');
  try {
    const result = work();
    db.exec('COMMIT');
    return result;
  } catch (error) {
    if (db.isTransaction) db.exec('ROLLBACK');
    throw error;
  }
}

/** The value of a single-valued PRAGMA (user_version, journal_mode, ...). */
export function pragmaValue(db: SqliteDatabase, name: string): unknown {
  const row = db.prepare(`PRAGMA ${name}`).get();
  return row === undefined ? undefined : Object.values(row)[0];
}
