// The PostgreSQL `npm start -- --replicas 2` runs from the system's binaries when no
// TWOKEY_DATABASE_URL is given: initialised once in the state directory, kept across restarts.
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import pg from 'pg';
import { freePort } from '../../scripts/local-mesh/ports.ts';
import { findPostgresBin, startLocalPostgres } from '../../scripts/local-mesh/local-postgres.ts';
import { postgresConfig } from '../../services/mesh-runtime/database-config.ts';
import { skipWithoutPostgres } from '../postgres/postgres-server.ts';

describe('local PostgreSQL for the replicated mesh', function () {
  this.timeout(90_000);
  let root = '';
  before(function () {
    skipWithoutPostgres(this);
  });
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'twokey-state-'));
    mkdirSync(root, { recursive: true, mode: 0o700 });
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const query = async (url: string, passwordFile: string, sql: string, values: unknown[] = []): Promise<unknown[]> => {
    const config = postgresConfig({ TWOKEY_DATABASE_URL: url, TWOKEY_DATABASE_PASSWORD_FILE: passwordFile })!;
    const c = new pg.Client({ connectionString: config.connectionString });
    await c.connect();
    try {
      return (await c.query(sql, values)).rows;
    } finally {
      await c.end();
    }
  };

  it('initialises once in <state>/postgres with a private password file, and keeps the data across a restart', async () => {
    const bin = findPostgresBin();
    expect(bin, 'binaries found').to.be.a('string');
    const first = await startLocalPostgres(root, await freePort(), bin!);
    try {
      expect(first.url).to.match(/^postgres:\/\/twokey@127\.0\.0\.1:\d+\/twokey$/);
      expect(statSync(first.passwordFile).mode & 0o777).to.equal(0o600);
      await query(first.url, first.passwordFile, 'CREATE TABLE kept (v text)');
      await query(first.url, first.passwordFile, "INSERT INTO kept VALUES ('x')");
    } finally {
      await first.stop();
    }
    const second = await startLocalPostgres(root, await freePort(), bin!);
    try {
      expect(await query(second.url, second.passwordFile, 'SELECT v FROM kept')).to.deep.equal([{ v: 'x' }]);
      // Nothing but 127.0.0.1, and a password is required.
      const refused = await new pg.Client({ connectionString: `postgres://twokey:wrong@127.0.0.1:${second.port}/twokey` }).connect().then(
        () => 'connected',
        (err: Error) => err.message,
      );
      expect(refused).to.match(/password authentication failed/);
    } finally {
      await second.stop();
    }
  });
});
