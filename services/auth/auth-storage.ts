// Opens auth's state: PostgreSQL when TWOKEY_DATABASE_URL is set (every replica shares users,
// failed logins, signing keys and revocations), else the SQLite file in the data directory.
import type { PostgresConfig } from '../mesh-runtime/database-config.ts';
import { authDatabasePath, openAuthDatabase } from './database.ts';
import type { FailureRecords } from './login-throttle.ts';
import { openAuthPostgres, PostgresFailureRecords, PostgresKeyRecords, PostgresUserRecords } from './postgres-auth-records.ts';
import type { KeyRecords } from './signing-keys.ts';
import { SqliteFailureRecords, SqliteKeyRecords, SqliteUserRecords } from './sqlite-auth-records.ts';
import type { UserRecords } from './user-store.ts';
import { PostgresRevocationStore, SqliteRevocationStore, type RevocationStore } from './revocation-store.ts';

export interface AuthStorage {
  users: UserRecords;
  failures: FailureRecords;
  keys: KeyRecords;
  revocations: RevocationStore;
  /** Resolves when the database answers (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;
}

export async function openAuthStorage(where: { postgres: PostgresConfig } | { dataDir: string }): Promise<AuthStorage> {
  if ('postgres' in where) {
    const db = await openAuthPostgres(where.postgres);
    return {
      users: new PostgresUserRecords(db),
      failures: new PostgresFailureRecords(db),
      keys: new PostgresKeyRecords(db),
      revocations: new PostgresRevocationStore(db),
      ping: () => db.ping(),
      close: () => db.close(),
    };
  }
  const db = openAuthDatabase(authDatabasePath(where.dataDir));
  return {
    users: new SqliteUserRecords(db),
    failures: new SqliteFailureRecords(db),
    keys: new SqliteKeyRecords(db),
    revocations: new SqliteRevocationStore(db),
    ping: async () => undefined,
    close: async () => db.close(),
  };
}
