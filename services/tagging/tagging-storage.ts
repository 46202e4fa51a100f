// Opens the tagging worker's cursor store: the engine is chosen here and nowhere else.
import { postgresConfig } from '../mesh-runtime/database-config.ts';
import type { Env } from '../mesh-runtime/env.ts';
import type { CursorStore } from './cursor-store.ts';
import { PostgresCursorStore } from './postgres-cursor-store.ts';
import { SqliteCursorStore, taggingDatabasePath } from './sqlite-cursor-store.ts';

/** PostgreSQL when TWOKEY_DATABASE_URL is set (replicas share it), else SQLite in the data directory. */
export async function openCursorStore(env: Env, dataDir: string): Promise<CursorStore> {
  const pg = postgresConfig(env);
  if (pg !== undefined) return PostgresCursorStore.open(pg);
  return SqliteCursorStore.open(taggingDatabasePath(dataDir));
}
