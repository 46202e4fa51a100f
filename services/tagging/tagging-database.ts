// The tagging worker's durable cursor: the last image event it finished, in SQLite.
import type Database from 'better-sqlite3';
import { openDurableDatabase } from '../mesh-runtime/durable-database.ts';

export class CursorStore {
  readonly #db: Database.Database;

  private constructor(db: Database.Database) {
    this.#db = db;
  }

  static open(path: string): CursorStore {
    const db = openDurableDatabase(path);
    db.exec('CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, sequence INTEGER NOT NULL) STRICT');
    return new CursorStore(db);
  }

  get(name: string): number {
    const row = this.#db.prepare('SELECT sequence FROM cursors WHERE name = ?').get(name) as { sequence: number } | undefined;
    return row?.sequence ?? 0;
  }

  set(name: string, sequence: number): void {
    this.#db
      .prepare('INSERT INTO cursors (name, sequence) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET sequence = excluded.sequence')
      .run(name, sequence);
  }

  close(): void {
    this.#db.close();
  }
}

export function taggingDatabasePath(dataDir: string): string {
  return `${dataDir.replace(/\/+$/, '')}/tagging.db`;
}
