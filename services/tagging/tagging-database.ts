// The tagging worker's durable cursor: the last image event it finished, in SQLite.
import { openDurableDatabase, type SqliteDatabase, type SqliteStatement } from '../mesh-runtime/durable-database.ts';

export class CursorStore {
  readonly #db: SqliteDatabase;
  // Prepared once: the worker reads and writes the cursor on every event.
  readonly #select: SqliteStatement;
  readonly #upsert: SqliteStatement;

  private constructor(db: SqliteDatabase) {
    this.#db = db;
    this.#select = db.prepare('SELECT sequence FROM cursors WHERE name = ?');
    this.#upsert = db.prepare(
      'INSERT INTO cursors (name, sequence) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET sequence = excluded.sequence',
    );
  }

  static open(path: string): CursorStore {
    const db = openDurableDatabase(path);
    db.exec('CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, sequence INTEGER NOT NULL) STRICT');
    return new CursorStore(db);
  }

  get(name: string): number {
    const row = this.#select.get(name) as unknown as { sequence: number } | undefined;
    return row?.sequence ?? 0;
  }

  set(name: string, sequence: number): void {
    this.#upsert.run(name, sequence);
  }

  close(): void {
    this.#db.close();
  }
}

export function taggingDatabasePath(dataDir: string): string {
  return `${dataDir.replace(/\/+$/, '')}/tagging.db`;
}
