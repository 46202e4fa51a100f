// A service's PostgreSQL connection pool: versioned migrations safe under concurrent starts,
// transactions, a LISTEN connection that reconnects, and one mapping of "database gone" errors.
import pg from 'pg';
import { TwokeyError } from '../authz/errors.ts';
import type { PostgresConfig } from './database-config.ts';

export type PgClient = pg.PoolClient;

/** One schema step. Applied in order, each in its own transaction, recorded in twokey_schema_versions. */
export interface Migration {
  version: number;
  sql: string;
}

// Every replica of every service takes this session lock around its migrations, so two replicas
// starting at once apply each step exactly once; the second sees the version the first recorded.
const MIGRATION_LOCK = 0x74776b01;

const INT8_OID = 20;

/** int8 columns (counts, sequences, epoch milliseconds) as numbers; beyond 2^53 is refused, never rounded. */
function parseInt8(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new TwokeyError('ERR_STORAGE_UNAVAILABLE', `database returned ${text}, beyond a safe integer`);
  return value;
}

const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID ? parseInt8 : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

// SQLSTATE classes meaning the server is unreachable, shutting down or out of resources.
const UNAVAILABLE_CLASSES = new Set(['08', '53', '57']);
const UNAVAILABLE_ERRNO = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EPIPE', 'EHOSTUNREACH', 'EAI_AGAIN']);

/** True when `err` says the database could not be reached (as opposed to a query it refused). */
export function isUnavailable(err: unknown): boolean {
  if (err instanceof TwokeyError) return err.code === 'ERR_STORAGE_UNAVAILABLE';
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  if (UNAVAILABLE_ERRNO.has(code) || UNAVAILABLE_CLASSES.has(code.slice(0, 2))) return true;
  const message = typeof e?.message === 'string' ? e.message : '';
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Query read timeout/.test(message);
}

/** Rethrows an unreachable-database error as ERR_STORAGE_UNAVAILABLE (UNAVAILABLE, retryable). */
export function storageError(err: unknown): never {
  if (isUnavailable(err) && !(err instanceof TwokeyError)) {
    throw new TwokeyError('ERR_STORAGE_UNAVAILABLE', 'the database is unreachable; retry', { cause: err });
  }
  throw err;
}

export class PostgresDatabase {
  readonly pool: pg.Pool;
  readonly #config: PostgresConfig;
  readonly #listeners = new Set<{ close: () => Promise<void> }>();

  private constructor(config: PostgresConfig, pool: pg.Pool) {
    this.#config = config;
    this.pool = pool;
  }

  /** Connects and applies `component`'s migrations; fails with the redacted URL when it cannot. */
  static async open(config: PostgresConfig, component: string, migrations: readonly Migration[], opts: { poolSize?: number } = {}): Promise<PostgresDatabase> {
    const pool = new pg.Pool({
      connectionString: config.connectionString,
      max: opts.poolSize ?? 10,
      connectionTimeoutMillis: 3000,
      idleTimeoutMillis: 30_000,
      // A query stuck on a dead server fails instead of holding a call forever.
      query_timeout: 10_000,
      statement_timeout: 10_000,
      keepAlive: true,
      types: TYPES,
    });
    // An idle connection dropped by a server restart is reported here; the pool replaces it.
    pool.on('error', () => undefined);
    // The pool listens for errors only on idle clients. A connection the server ends while it is
    // checked out (a transaction between two statements, a migration) emits 'error' on the client
    // itself, and unhandled that ends the process. The statement in flight or the next one fails
    // on its own, and the pool discards the client on release since it is no longer queryable.
    pool.on('connect', (client) => client.on('error', () => undefined));
    const db = new PostgresDatabase(config, pool);
    try {
      await db.#migrate(component, migrations);
    } catch (err) {
      await pool.end().catch(() => undefined);
      const reason = isUnavailable(err) ? 'unreachable' : (err as Error).message;
      throw new TwokeyError('ERR_CONFIG_INVALID', `PostgreSQL at ${config.redactedUrl}: ${reason}`, { cause: err });
    }
    return db;
  }

  get redactedUrl(): string {
    return this.#config.redactedUrl;
  }

  async #migrate(component: string, migrations: readonly Migration[]): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
      try {
        await client.query(
          'CREATE TABLE IF NOT EXISTS twokey_schema_versions (component text PRIMARY KEY, version integer NOT NULL, migrated_at timestamptz NOT NULL DEFAULT now())',
        );
        const row = (await client.query('SELECT version FROM twokey_schema_versions WHERE component = $1', [component])).rows[0] as { version: number } | undefined;
        const current = row?.version ?? 0;
        const latest = Math.max(0, ...migrations.map((m) => m.version));
        if (current > latest) {
          throw new TwokeyError('ERR_CONFIG_INVALID', `${component} schema is at version ${current}, newer than this build knows (${latest}); upgrade this replica`);
        }
        for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
          if (m.version <= current) continue;
          await client.query('BEGIN');
          try {
            await client.query(m.sql);
            await client.query(
              'INSERT INTO twokey_schema_versions (component, version) VALUES ($1, $2) ON CONFLICT (component) DO UPDATE SET version = excluded.version, migrated_at = now()',
              [component, m.version],
            );
            await client.query('COMMIT');
          } catch (err) {
            await client.query('ROLLBACK').catch(() => undefined);
            throw err;
          }
        }
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
      }
    } finally {
      client.release();
    }
  }

  /** One statement on any pooled connection; `name` prepares it once per connection. */
  async query<R>(name: string, text: string, values: unknown[] = []): Promise<R[]> {
    try {
      return (await this.pool.query({ name, text, values })).rows as R[];
    } catch (err) {
      return storageError(err);
    }
  }

  /** Runs `work` in one transaction on one connection; any throw rolls all of it back. */
  async transaction<T>(work: (client: PgClient) => Promise<T>): Promise<T> {
    let client: PgClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      return storageError(err);
    }
    let broken = false;
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => (broken = true));
      return storageError(err);
    } finally {
      // A connection that could not even roll back is discarded rather than reused.
      client.release(broken);
    }
  }

  /** Resolves when the server answers a trivial query; readiness probes call it. */
  async ping(): Promise<void> {
    await this.query('twokey_ping', 'SELECT 1');
  }

  /**
   * Calls `onNotify` for every NOTIFY on `channel`, and once after each (re)connect, since
   * notifications sent while disconnected are lost: the caller re-reads its table then.
   */
  listen(channel: string, onNotify: () => void): void {
    if (!/^[a-z_]+$/.test(channel)) throw new TwokeyError('ERR_CONFIG_INVALID', `bad channel name ${channel}`);
    let closed = false;
    let client: pg.Client | undefined;
    let timer: NodeJS.Timeout | undefined;
    const connect = async (): Promise<void> => {
      if (closed) return;
      const c = new pg.Client({ connectionString: this.#config.connectionString, connectionTimeoutMillis: 3000, keepAlive: true });
      c.on('error', () => undefined);
      c.on('end', () => {
        if (closed) return;
        client = undefined;
        timer = setTimeout(() => void connect(), 500);
      });
      c.on('notification', () => onNotify());
      try {
        await c.connect();
        await c.query(`LISTEN ${channel}`);
        client = c;
        onNotify();
      } catch {
        c.removeAllListeners('end');
        await c.end().catch(() => undefined);
        if (!closed) timer = setTimeout(() => void connect(), 500);
      }
    };
    void connect();
    this.#listeners.add({
      close: async () => {
        closed = true;
        clearTimeout(timer);
        await client?.end().catch(() => undefined);
      },
    });
  }

  async close(): Promise<void> {
    for (const l of this.#listeners) await l.close();
    this.#listeners.clear();
    await this.pool.end();
  }
}
