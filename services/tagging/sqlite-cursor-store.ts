// The tagging worker's cursor and lease in SQLite: the embedded default, one replica.
import { inTransaction, openDurableDatabase, type SqliteDatabase, type SqliteStatement } from '../mesh-runtime/durable-database.ts';
import { leaseLost, type CursorStore } from './cursor-store.ts';

export class SqliteCursorStore implements CursorStore {
  readonly #db: SqliteDatabase;
  // Prepared once: the worker reads and writes the cursor on every event.
  readonly #insert: SqliteStatement;
  readonly #take: SqliteStatement;
  readonly #advance: SqliteStatement;
  readonly #release: SqliteStatement;

  private constructor(db: SqliteDatabase) {
    this.#db = db;
    this.#insert = db.prepare('INSERT INTO cursors (name, sequence, holder, lease_until) VALUES (?, 0, ?, ?) ON CONFLICT (name) DO NOTHING');
    this.#take = db.prepare('UPDATE cursors SET holder = ?, lease_until = ? WHERE name = ? AND (holder IS NULL OR holder = ? OR lease_until < ?) RETURNING sequence');
    this.#advance = db.prepare('UPDATE cursors SET sequence = ?, lease_until = ? WHERE name = ? AND holder = ?');
    this.#release = db.prepare('UPDATE cursors SET holder = NULL, lease_until = 0 WHERE name = ? AND holder = ?');
  }

  static open(path: string): SqliteCursorStore {
    const db = openDurableDatabase(path);
    db.exec('CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, sequence INTEGER NOT NULL) STRICT');
    // Version 1 had no lease; its cursor is kept and starts unleased.
    const columns = db.prepare('PRAGMA table_info(cursors)').all() as Array<{ name: string }>;
    if (!columns.some((c) => c.name === 'holder')) {
      inTransaction(db, () => {
        db.exec('ALTER TABLE cursors ADD COLUMN holder TEXT');
        db.exec('ALTER TABLE cursors ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0');
      });
    }
    return new SqliteCursorStore(db);
  }

  async acquire(name: string, holder: string, nowMs: number, ttlMs: number): Promise<number | undefined> {
    return inTransaction(this.#db, () => {
      this.#insert.run(name, null, 0);
      const row = this.#take.get(holder, nowMs + ttlMs, name, holder, nowMs) as { sequence: number } | undefined;
      return row?.sequence;
    });
  }

  async advance(name: string, holder: string, sequence: number, nowMs: number, ttlMs: number): Promise<void> {
    const result = this.#advance.run(sequence, nowMs + ttlMs, name, holder);
    if (Number(result.changes) !== 1) throw leaseLost(name);
  }

  async release(name: string, holder: string): Promise<void> {
    this.#release.run(name, holder);
  }

  async ping(): Promise<void> {
    // The file is local: reachable while the process runs.
  }

  async close(): Promise<void> {
    this.#db.close();
  }
}

export function taggingDatabasePath(dataDir: string): string {
  return `${dataDir.replace(/\/+$/, '')}/tagging.db`;
}
