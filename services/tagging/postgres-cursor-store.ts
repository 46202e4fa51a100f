// The tagging worker's cursor and lease in PostgreSQL, shared by every tagging replica.
import type { PostgresConfig } from '../mesh-runtime/database-config.ts';
import { PostgresDatabase, type Migration } from '../mesh-runtime/postgres-database.ts';
import { leaseLost, type CursorStore } from './cursor-store.ts';

const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    sql: 'CREATE TABLE tagging_cursors (name text PRIMARY KEY, sequence bigint NOT NULL, holder text, lease_until bigint NOT NULL DEFAULT 0)',
  },
];

export class PostgresCursorStore implements CursorStore {
  readonly #db: PostgresDatabase;

  private constructor(db: PostgresDatabase) {
    this.#db = db;
  }

  static async open(config: PostgresConfig): Promise<PostgresCursorStore> {
    return new PostgresCursorStore(await PostgresDatabase.open(config, 'tagging', MIGRATIONS, { poolSize: 4 }));
  }

  async acquire(name: string, holder: string, nowMs: number, ttlMs: number): Promise<number | undefined> {
    await this.#db.query('tagging_cursor_insert', 'INSERT INTO tagging_cursors (name, sequence) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING', [name]);
    // One conditional UPDATE: row locking makes two replicas racing for a lapsed lease see one winner.
    const rows = await this.#db.query<{ sequence: number }>(
      'tagging_cursor_take',
      'UPDATE tagging_cursors SET holder = $2, lease_until = $3 WHERE name = $1 AND (holder IS NULL OR holder = $2 OR lease_until < $4) RETURNING sequence',
      [name, holder, nowMs + ttlMs, nowMs],
    );
    return rows[0]?.sequence;
  }

  async advance(name: string, holder: string, sequence: number, nowMs: number, ttlMs: number): Promise<void> {
    const rows = await this.#db.query<{ name: string }>(
      'tagging_cursor_advance',
      'UPDATE tagging_cursors SET sequence = $3, lease_until = $4 WHERE name = $1 AND holder = $2 RETURNING name',
      [name, holder, sequence, nowMs + ttlMs],
    );
    if (rows.length !== 1) throw leaseLost(name);
  }

  async release(name: string, holder: string): Promise<void> {
    await this.#db.query('tagging_cursor_release', 'UPDATE tagging_cursors SET holder = NULL, lease_until = 0 WHERE name = $1 AND holder = $2', [name, holder]);
  }

  ping(): Promise<void> {
    return this.#db.ping();
  }

  async close(): Promise<void> {
    await this.#db.close();
  }
}
