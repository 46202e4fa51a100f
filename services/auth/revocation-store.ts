// auth's revocation entries and their sequence number: an async interface, for SQLite and PostgreSQL.
import { TwokeyError } from '../authz/errors.ts';
import { MAX_REVOCATION_ENTRIES, buildRevocationSet } from '../authz/revocation-set.ts';
import type { RevocationSet } from '../authz/types.ts';
import { inTransaction, type SqliteDatabase } from '../mesh-runtime/durable-database.ts';
import type { PostgresDatabase } from '../mesh-runtime/postgres-database.ts';

export type RevocationKind = 'user' | 'jti' | 'serial' | 'kid';

/** One revocation as an administrator asks for it. Times are epoch seconds. */
export interface RevocationEntry {
  readonly kind: RevocationKind;
  /** Username or SPIFFE ID, jti, normalized serial, or kid. */
  readonly value: string;
  /** When it was revoked (for a user: tokens issued at or before it are refused). */
  readonly atSeconds: number;
  /**
   * When the entry may leave the set because what it revokes has expired anyway: the token's exp,
   * the certificate's notAfter, or (users, keys) the revocation time plus the longest token lifetime.
   */
  readonly keepUntilSeconds: number;
}

/** Where auth keeps revocations. Async so a shared database can stand behind it. */
export interface RevocationStore {
  /** Adds (or renews) an entry and advances the sequence. Throws ERR_REVOCATION_LIMIT beyond the bound. */
  add(entry: RevocationEntry): Promise<void>;
  /** Removes entries whose keepUntil has passed; advances the sequence when any was removed. */
  prune(nowSeconds: number): Promise<number>;
  /** The live entries and the sequence they are at, as an unsigned set dated `issuedAtMs`. */
  snapshot(issuedAtMs: number): Promise<RevocationSet>;
  /** Every live entry, for `twokey revoke list`. */
  list(): Promise<RevocationEntry[]>;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS revocations (
  kind            TEXT NOT NULL CHECK (kind IN ('user', 'jti', 'serial', 'kid')),
  value           TEXT NOT NULL,
  at_s            INTEGER NOT NULL,
  keep_until_s    INTEGER NOT NULL,
  PRIMARY KEY (kind, value)
) STRICT;
CREATE TABLE IF NOT EXISTS revocation_sequence (
  id              INTEGER PRIMARY KEY CHECK (id = 1),
  seq             INTEGER NOT NULL
) STRICT;
INSERT OR IGNORE INTO revocation_sequence (id, seq) VALUES (1, 0);
`;

// Fail closed and loudly: the revocation is refused, nothing live is dropped to make room.
function limitReached(count: number, limit: number): TwokeyError {
  return new TwokeyError(
    'ERR_REVOCATION_LIMIT',
    `the revocation set already holds ${count} entries (the bound is ${limit}); this revocation was NOT recorded: rotate keys or disable users instead of revoking tokens one by one`,
  );
}

interface Row {
  kind: RevocationKind;
  value: string;
  at_s: number;
  keep_until_s: number;
}

/** The revocation tables in auth's SQLite file (created here, beside auth's own tables). */
export class SqliteRevocationStore implements RevocationStore {
  readonly #db: SqliteDatabase;
  readonly #limit: number;

  constructor(db: SqliteDatabase, opts: { limit?: number } = {}) {
    this.#db = db;
    this.#limit = opts.limit ?? MAX_REVOCATION_ENTRIES;
    db.exec(SCHEMA);
  }

  async add(entry: RevocationEntry): Promise<void> {
    inTransaction(this.#db, () => {
      const exists = this.#db.prepare('SELECT 1 FROM revocations WHERE kind = ? AND value = ?').get(entry.kind, entry.value) !== undefined;
      const count = Number((this.#db.prepare('SELECT count(*) AS n FROM revocations').get() as { n: number }).n);
      // Fail closed and loudly: the revocation is refused, nothing live is dropped to make room.
      if (!exists && count >= this.#limit) {
        throw limitReached(count, this.#limit);
      }
      // Re-revoking keeps the widest reach: the latest disabling time and the longest life.
      this.#db
        .prepare(
          `INSERT INTO revocations (kind, value, at_s, keep_until_s) VALUES (?, ?, ?, ?)
           ON CONFLICT (kind, value) DO UPDATE SET at_s = max(at_s, excluded.at_s), keep_until_s = max(keep_until_s, excluded.keep_until_s)`,
        )
        .run(entry.kind, entry.value, entry.atSeconds, entry.keepUntilSeconds);
      this.#db.exec('UPDATE revocation_sequence SET seq = seq + 1 WHERE id = 1');
    });
  }

  async prune(nowSeconds: number): Promise<number> {
    return inTransaction(this.#db, () => {
      const removed = Number(this.#db.prepare('DELETE FROM revocations WHERE keep_until_s < ?').run(nowSeconds).changes);
      if (removed > 0) this.#db.exec('UPDATE revocation_sequence SET seq = seq + 1 WHERE id = 1');
      return removed;
    });
  }

  async snapshot(issuedAtMs: number): Promise<RevocationSet> {
    // One read transaction: the entries and the sequence they belong to, never a mix.
    this.#db.exec('BEGIN');
    try {
      const seq = Number((this.#db.prepare('SELECT seq FROM revocation_sequence WHERE id = 1').get() as { seq: number }).seq);
      const rows = this.#db.prepare('SELECT kind, value, at_s, keep_until_s FROM revocations').all() as unknown as Row[];
      const by = (kind: RevocationKind, time: (r: Row) => number): Map<string, number> =>
        new Map(rows.filter((r) => r.kind === kind).map((r) => [r.value, time(r)]));
      return buildRevocationSet(seq, issuedAtMs, {
        disabledSubjects: by('user', (r) => r.at_s),
        jtis: by('jti', (r) => r.keep_until_s),
        serials: by('serial', (r) => r.keep_until_s),
        kids: new Set(rows.filter((r) => r.kind === 'kid').map((r) => r.value)),
      });
    } finally {
      this.#db.exec('COMMIT');
    }
  }

  async list(): Promise<RevocationEntry[]> {
    const rows = this.#db.prepare('SELECT kind, value, at_s, keep_until_s FROM revocations ORDER BY kind, at_s, value').all() as unknown as Row[];
    return rows.map((r) => ({ kind: r.kind, value: r.value, atSeconds: r.at_s, keepUntilSeconds: r.keep_until_s }));
  }
}

interface PgRow {
  kind: RevocationKind;
  value: string;
  at_s: string | number;
  keep_until_s: string | number;
}

/** The revocation tables in auth's PostgreSQL database, shared by every auth replica (migration 2). */
export class PostgresRevocationStore implements RevocationStore {
  readonly #db: PostgresDatabase;
  readonly #limit: number;

  constructor(db: PostgresDatabase, opts: { limit?: number } = {}) {
    this.#db = db;
    this.#limit = opts.limit ?? MAX_REVOCATION_ENTRIES;
  }

  async add(entry: RevocationEntry): Promise<void> {
    await this.#db.transaction(async (client) => {
      // One writer at a time: the bound and the sequence are read and moved together.
      await client.query('SELECT seq FROM revocation_sequence WHERE id = 1 FOR UPDATE');
      const exists = (await client.query('SELECT 1 FROM revocations WHERE kind = $1 AND value = $2', [entry.kind, entry.value])).rowCount !== 0;
      const count = Number((await client.query<{ n: string }>('SELECT count(*) AS n FROM revocations')).rows[0]!.n);
      if (!exists && count >= this.#limit) {
        throw limitReached(count, this.#limit);
      }
      await client.query(
        `INSERT INTO revocations (kind, value, at_s, keep_until_s) VALUES ($1, $2, $3, $4)
         ON CONFLICT (kind, value) DO UPDATE SET at_s = greatest(revocations.at_s, excluded.at_s), keep_until_s = greatest(revocations.keep_until_s, excluded.keep_until_s)`,
        [entry.kind, entry.value, entry.atSeconds, entry.keepUntilSeconds],
      );
      await client.query('UPDATE revocation_sequence SET seq = seq + 1 WHERE id = 1');
    });
  }

  async prune(nowSeconds: number): Promise<number> {
    return this.#db.transaction(async (client) => {
      await client.query('SELECT seq FROM revocation_sequence WHERE id = 1 FOR UPDATE');
      const removed = (await client.query('DELETE FROM revocations WHERE keep_until_s < $1', [nowSeconds])).rowCount ?? 0;
      if (removed > 0) await client.query('UPDATE revocation_sequence SET seq = seq + 1 WHERE id = 1');
      return removed;
    });
  }

  async snapshot(issuedAtMs: number): Promise<RevocationSet> {
    // REPEATABLE READ: the entries and the sequence they belong to, never a mix.
    return this.#db.transaction(async (client) => {
      await client.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
      const seq = Number((await client.query<{ seq: string }>('SELECT seq FROM revocation_sequence WHERE id = 1')).rows[0]!.seq);
      const rows = (await client.query<PgRow>('SELECT kind, value, at_s, keep_until_s FROM revocations')).rows;
      const by = (kind: RevocationKind, time: (r: PgRow) => string | number): Map<string, number> =>
        new Map(rows.filter((r) => r.kind === kind).map((r) => [r.value, Number(time(r))]));
      return buildRevocationSet(seq, issuedAtMs, {
        disabledSubjects: by('user', (r) => r.at_s),
        jtis: by('jti', (r) => r.keep_until_s),
        serials: by('serial', (r) => r.keep_until_s),
        kids: new Set(rows.filter((r) => r.kind === 'kid').map((r) => r.value)),
      });
    });
  }

  async list(): Promise<RevocationEntry[]> {
    const rows = await this.#db.query<PgRow>('revocations.list', 'SELECT kind, value, at_s, keep_until_s FROM revocations ORDER BY kind, at_s, value');
    return rows.map((r) => ({ kind: r.kind, value: r.value, atSeconds: Number(r.at_s), keepUntilSeconds: Number(r.keep_until_s) }));
  }
}
