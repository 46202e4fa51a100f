// The JWK Set an auth data directory publishes, read without changing it (for offline tools).
import { existsSync } from 'node:fs';
import { openReadOnlyDatabase } from '../mesh-runtime/durable-database.ts';
import { authDatabasePath } from './database.ts';
import { publishedKeySet, type JsonWebKeySet } from './signing-keys.ts';
import { SqliteKeyRecords } from './sqlite-auth-records.ts';

/** The public keys auth would serve from `dataDir`; undefined when the directory holds no auth database. */
export function publishedJwks(dataDir: string): JsonWebKeySet | undefined {
  const path = authDatabasePath(dataDir);
  if (!existsSync(path)) return undefined;
  const db = openReadOnlyDatabase(path);
  try {
    return publishedKeySet(new SqliteKeyRecords(db).allNow());
  } finally {
    db.close();
  }
}
