// Opens the image store's repository: PostgreSQL when TWOKEY_DATABASE_URL is set (replicas share
// it), else SQLite in the data directory.
import { postgresConfig } from '../mesh-runtime/database-config.ts';
import type { Env } from '../mesh-runtime/env.ts';
import { imageDatabasePath, openImageDatabase } from './image-database.ts';
import type { ImageRepository } from './image-repository.ts';
import { PostgresImageRepository } from './postgres-image-repository.ts';
import { SqliteImageRepository } from './sqlite-image-repository.ts';

/** `dataDir`: where the SQLite file lives when PostgreSQL is not configured. */
export async function openImageRepository(env: Env, dataDir: string): Promise<ImageRepository> {
  const pg = postgresConfig(env);
  if (pg !== undefined) return PostgresImageRepository.open(pg);
  return new SqliteImageRepository(openImageDatabase(imageDatabasePath(dataDir)));
}
