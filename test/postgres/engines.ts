// Runs one repository test suite against every storage engine: SQLite always, PostgreSQL on a
// throwaway server (skipped with a printed reason only when no server can run here).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PostgresConfig } from '../../services/mesh-runtime/database-config.ts';
import { PostgresServer, skipWithoutPostgres } from './postgres-server.ts';

/** What a shared suite gets: a fresh empty store location per test, opened as often as it likes. */
export interface EngineFixture {
  readonly engine: 'sqlite' | 'postgres';
  /** A temporary SQLite file path inside a fresh directory (SQLite engine). */
  sqlitePath(file: string): string;
  /** The fresh database for this test (PostgreSQL engine). */
  postgres(): PostgresConfig;
  /** The running server, for restart tests (PostgreSQL engine). */
  server(): PostgresServer;
}

/** Calls `suite` once per engine, each inside its own describe block. */
export function forEachEngine(title: string, suite: (fx: EngineFixture) => void): void {
  describe(`${title} (SQLite)`, () => {
    let dir = '';
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), 'twokey-engine-'));
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));
    suite({
      engine: 'sqlite',
      sqlitePath: (file) => join(dir, file),
      postgres: () => {
        throw new Error('not a PostgreSQL suite');
      },
      server: () => {
        throw new Error('not a PostgreSQL suite');
      },
    });
  });

  describe(`${title} (PostgreSQL)`, function () {
    let server: PostgresServer | undefined;
    let database = '';
    before(async function () {
      this.timeout(60_000);
      skipWithoutPostgres(this);
      server = await PostgresServer.start();
    });
    after(async () => server?.stop());
    beforeEach(async () => {
      database = await server!.createDatabase('suite');
    });
    suite({
      engine: 'postgres',
      sqlitePath: () => {
        throw new Error('not a SQLite suite');
      },
      postgres: () => ({ connectionString: server!.url(database), redactedUrl: server!.urlWithoutPassword(database) }),
      server: () => server!,
    });
  });
}
