// Opens a service's SQLite file owner-only, in WAL mode, with commits that survive a crash.
import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';

/**
 * Opens (creating on first use) the database at `path`. The directory is created 0700 and the file
 * 0600 before SQLite writes a byte, since these files hold password hashes, keys and user data.
 */
export function openDurableDatabase(path: string): Database.Database {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  closeSync(openSync(path, 'a', 0o600));
  // openSync's mode applies only to a new file: an existing one is narrowed too.
  chmodSync(path, 0o600);
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  // FULL syncs the WAL to disk at every commit, so a write acknowledged to a caller survives an OS
  // crash or power loss, not only kill -9. better-sqlite3 is built to use NORMAL on a file already
  // in WAL mode (every open after the first), which may lose the last commits.
  db.pragma('synchronous = FULL');
  // A write while another connection (a second process, a CLI) holds the lock waits up to 5 s
  // instead of failing at once.
  db.pragma('busy_timeout = 5000');
  return db;
}
