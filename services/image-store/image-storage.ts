// Opens the image store's repository: PostgreSQL when TWOKEY_DATABASE_URL is set (replicas share
// it), else SQLite in the data directory.
import { TwokeyError } from '../authz/errors.ts';
import { postgresConfig } from '../mesh-runtime/database-config.ts';
import { envDurationMs, type Env } from '../mesh-runtime/env.ts';
import { imageDatabasePath, openImageDatabase } from './image-database.ts';
import type { ImageRepository } from './image-repository.ts';
import { PostgresImageRepository } from './postgres-image-repository.ts';
import { SqliteImageRepository } from './sqlite-image-repository.ts';

/** `dataDir`: where the SQLite file lives when PostgreSQL is not configured. */
export async function openImageRepository(env: Env, dataDir: string): Promise<ImageRepository> {
  // How long a keyed write (AIP-155 request_id) is remembered; a repeat after that stores again.
  const requestKeyTtlMs = envDurationMs(env, 'TWOKEY_REQUEST_ID_TTL', '24h');
  if (requestKeyTtlMs <= 0) throw new TwokeyError('ERR_CONFIG_INVALID', 'TWOKEY_REQUEST_ID_TTL must be above 0');
  const pg = postgresConfig(env);
  if (pg !== undefined) return PostgresImageRepository.open(pg, { requestKeyTtlMs });
  return new SqliteImageRepository(openImageDatabase(imageDatabasePath(dataDir)), { requestKeyTtlMs });
}
