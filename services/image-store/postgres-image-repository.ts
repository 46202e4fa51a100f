// Images and their event log in PostgreSQL, shared by every image-store replica. Storage only.
import { randomBytes } from 'node:crypto';
import type { PostgresConfig } from '../mesh-runtime/database-config.ts';
import { PostgresDatabase, type Migration, type PgClient } from '../mesh-runtime/postgres-database.ts';
import { ExampleError } from '../mesh-runtime/example-errors.ts';
import type { ImageEventRecord, ImageRepository, ListPage, ListQuery, RepositoryOptions, StoredImage } from './image-repository.ts';
import { DEFAULT_REQUEST_KEY_TTL_MS, judgeRequestKey, type RememberedKey, type RequestKey } from './request-keys.ts';

const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    sql: `
CREATE TABLE images (
  seq           bigserial PRIMARY KEY,
  id            text NOT NULL UNIQUE,
  owner         text NOT NULL,
  name          text NOT NULL,
  content_type  text NOT NULL,
  content       bytea NOT NULL,
  tags          jsonb NOT NULL,
  created_at_ms bigint NOT NULL,
  updated_at_ms bigint NOT NULL
);
CREATE INDEX images_owner ON images (owner, seq);
CREATE TABLE image_events (
  sequence      bigserial PRIMARY KEY,
  type          text NOT NULL CHECK (type IN ('created', 'updated', 'deleted')),
  image_id      text NOT NULL,
  owner         text NOT NULL,
  at_ms         bigint NOT NULL
);`,
  },
  {
    version: 2,
    sql: `
CREATE TABLE request_keys (
  subject       text NOT NULL,
  request_id    text NOT NULL,
  method        text NOT NULL,
  fingerprint   text NOT NULL,
  resource_id   text NOT NULL,
  created_at_ms bigint NOT NULL,
  PRIMARY KEY (subject, request_id)
);
CREATE INDEX request_keys_created ON request_keys (created_at_ms);`,
  },
];

/** Keyed writes prune expired keys at most this often per process. */
const PRUNE_EVERY_MS = 60_000;

/** Replicas wake each other's watchers through this channel; the table stays the truth. */
const CHANNEL = 'twokey_image_events';

// Every write takes this transaction lock before it draws a sequence, so sequences commit in order
// across replicas: a watcher that read event n can never later meet a smaller, slower-committing one.
const WRITE_LOCK = 0x74776b10;

const META_COLUMNS = 'seq, id, owner, name, content_type, octet_length(content) AS size_bytes, tags, created_at_ms, updated_at_ms';

interface ImageRow {
  seq: number;
  id: string;
  owner: string;
  name: string;
  content_type: string;
  content?: Buffer;
  size_bytes: number;
  tags: string[];
  created_at_ms: number;
  updated_at_ms: number;
}

function toImage(row: ImageRow): StoredImage {
  return {
    id: row.id,
    owner: row.owner,
    name: row.name,
    contentType: row.content_type,
    content: row.content,
    tags: row.tags,
    createdAtMs: row.created_at_ms,
    updatedAtMs: row.updated_at_ms,
    sizeBytes: row.size_bytes,
  };
}

/** One named statement per filter combination, so each is prepared once per connection. */
function listStatement(byOwner: boolean, byTag: boolean): { name: string; text: string } {
  const where = ['seq > $1'];
  let n = 1;
  if (byOwner) where.push(`owner = $${++n}`);
  if (byTag) where.push(`tags @> jsonb_build_array($${++n}::text)`);
  return {
    name: `images_list_${byOwner ? 'o' : ''}${byTag ? 't' : ''}`,
    text: `SELECT ${META_COLUMNS} FROM images WHERE ${where.join(' AND ')} ORDER BY seq LIMIT $${++n}`,
  };
}

export class PostgresImageRepository implements ImageRepository {
  readonly #db: PostgresDatabase;
  readonly #now: () => number;
  readonly #random: (n: number) => Buffer;
  readonly #ttlMs: number;
  readonly #listeners = new Set<() => void>();
  #prunedAtMs = Number.NEGATIVE_INFINITY;

  private constructor(db: PostgresDatabase, opts: RepositoryOptions) {
    this.#db = db;
    this.#now = opts.now ?? Date.now;
    this.#random = opts.random ?? randomBytes;
    this.#ttlMs = opts.requestKeyTtlMs ?? DEFAULT_REQUEST_KEY_TTL_MS;
    db.listen(CHANNEL, () => this.#notify());
  }

  static async open(config: PostgresConfig, opts: RepositoryOptions = {}): Promise<PostgresImageRepository> {
    return new PostgresImageRepository(await PostgresDatabase.open(config, 'image-store', MIGRATIONS), opts);
  }

  onEvent(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #notify(): void {
    for (const listener of this.#listeners) listener();
  }

  /** One write: the lock, the change, its event and the wake-up, committed together. */
  async #write<T>(work: (c: PgClient) => Promise<{ result: T; event?: { type: ImageEventRecord['type']; id: string; owner: string; at: number } }>): Promise<T> {
    const out = await this.#db.transaction(async (c) => {
      await c.query({ name: 'images_write_lock', text: 'SELECT pg_advisory_xact_lock($1)', values: [WRITE_LOCK] });
      const done = await work(c);
      if (done.event !== undefined) {
        const e = done.event;
        await c.query({ name: 'images_event', text: 'INSERT INTO image_events (type, image_id, owner, at_ms) VALUES ($1, $2, $3, $4)', values: [e.type, e.id, e.owner, e.at] });
        // Delivered at commit, to every replica's listener (this one's too).
        await c.query({ name: 'images_notify', text: `SELECT pg_notify('${CHANNEL}', '')` });
      }
      return done;
    });
    if (out.event !== undefined) this.#notify();
    return out.result;
  }

  async #owner(c: PgClient, id: string): Promise<string | undefined> {
    const rows = (await c.query({ name: 'images_owner_for_update', text: 'SELECT owner FROM images WHERE id = $1 FOR UPDATE', values: [id] })).rows as Array<{ owner: string }>;
    return rows[0]?.owner;
  }

  /**
   * Inside a write (the lock held, so no other replica is between its check and its insert):
   * the first result's id when `key` was seen with this request, undefined to go ahead.
   */
  async #replayOf(c: PgClient, key: RequestKey | undefined, now: number): Promise<string | undefined> {
    if (key === undefined) return undefined;
    if (now - this.#prunedAtMs >= PRUNE_EVERY_MS) {
      await c.query({ name: 'request_keys_prune', text: 'DELETE FROM request_keys WHERE created_at_ms <= $1', values: [now - this.#ttlMs] });
      this.#prunedAtMs = now;
    }
    const rows = (
      await c.query({
        name: 'request_keys_get',
        text: 'SELECT method, fingerprint, resource_id AS "resourceId", created_at_ms AS "createdAtMs" FROM request_keys WHERE subject = $1 AND request_id = $2',
        values: [key.subject, key.requestId],
      })
    ).rows as RememberedKey[];
    const verdict = judgeRequestKey(key, rows[0], now, this.#ttlMs);
    if (verdict !== 'new') return verdict.replayOf;
    if (rows[0] !== undefined) await c.query({ name: 'request_keys_forget', text: 'DELETE FROM request_keys WHERE subject = $1 AND request_id = $2', values: [key.subject, key.requestId] });
    return undefined;
  }

  async #remember(c: PgClient, key: RequestKey | undefined, resourceId: string, now: number): Promise<void> {
    if (key === undefined) return;
    await c.query({
      name: 'request_keys_insert',
      text: 'INSERT INTO request_keys (subject, request_id, method, fingerprint, resource_id, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)',
      values: [key.subject, key.requestId, key.method, key.fingerprint, resourceId, now],
    });
  }

  async pruneRequestKeys(): Promise<number> {
    const now = this.#now();
    const rows = await this.#db.query<{ n: number }>('request_keys_prune_count', 'WITH gone AS (DELETE FROM request_keys WHERE created_at_ms <= $1 RETURNING 1) SELECT count(*)::int AS n FROM gone', [now - this.#ttlMs]);
    this.#prunedAtMs = now;
    return rows[0]?.n ?? 0;
  }

  async create(input: { owner: string; name: string; contentType: string; content: Buffer; tags: string[] }, key?: RequestKey): Promise<StoredImage> {
    const now = this.#now();
    const id = await this.#write(async (c) => {
      const replayOf = await this.#replayOf(c, key, now);
      if (replayOf !== undefined) return { result: replayOf };
      const id = `img_${this.#random(16).toString('hex')}`;
      await c.query({
        name: 'images_insert',
        text: 'INSERT INTO images (id, owner, name, content_type, content, tags, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)',
        values: [id, input.owner, input.name, input.contentType, input.content, JSON.stringify(input.tags), now, now],
      });
      await this.#remember(c, key, id, now);
      return { result: id, event: { type: 'created', id, owner: input.owner, at: now } };
    });
    const stored = await this.get(id, true);
    if (stored === undefined) throw new ExampleError('ERR_RESOURCE_NOT_FOUND', `image ${id}, stored under request_id ${key?.requestId ?? '(none)'}, has since been deleted`);
    return stored;
  }

  async get(id: string, withContent: boolean): Promise<StoredImage | undefined> {
    const rows = withContent
      ? await this.#db.query<ImageRow>('images_get_content', `SELECT ${META_COLUMNS}, content FROM images WHERE id = $1`, [id])
      : await this.#db.query<ImageRow>('images_get_meta', `SELECT ${META_COLUMNS} FROM images WHERE id = $1`, [id]);
    return rows[0] === undefined ? undefined : toImage(rows[0]);
  }

  async list(query: ListQuery): Promise<ListPage> {
    const values: unknown[] = [query.afterSeq];
    if (query.owner !== undefined) values.push(query.owner);
    if (query.tag !== undefined) values.push(query.tag);
    values.push(query.limit + 1);
    const s = listStatement(query.owner !== undefined, query.tag !== undefined);
    const rows = await this.#db.query<ImageRow>(s.name, s.text, values);
    const more = rows.length > query.limit;
    const page = rows.slice(0, query.limit);
    return { images: page.map(toImage), lastSeq: page.at(-1)?.seq, more };
  }

  async update(id: string, changes: { name?: string; contentType?: string; content?: Buffer }): Promise<StoredImage | undefined> {
    const now = this.#now();
    const done = await this.#write(async (c) => {
      const owner = await this.#owner(c, id);
      if (owner === undefined) return { result: false };
      await c.query({
        name: 'images_update',
        text: 'UPDATE images SET name = coalesce($1::text, name), content_type = coalesce($2::text, content_type), content = coalesce($3::bytea, content), updated_at_ms = $4 WHERE id = $5',
        values: [changes.name ?? null, changes.contentType ?? null, changes.content ?? null, now, id],
      });
      return { result: true, event: { type: 'updated', id, owner, at: now } };
    });
    return done ? this.get(id, false) : undefined;
  }

  async setTags(id: string, tags: string[], key?: RequestKey): Promise<StoredImage | undefined> {
    const now = this.#now();
    const done = await this.#write(async (c) => {
      if ((await this.#replayOf(c, key, now)) !== undefined) return { result: true };
      const owner = await this.#owner(c, id);
      if (owner === undefined) return { result: false };
      await c.query({ name: 'images_set_tags', text: 'UPDATE images SET tags = $1::jsonb, updated_at_ms = $2 WHERE id = $3', values: [JSON.stringify(tags), now, id] });
      await this.#remember(c, key, id, now);
      return { result: true, event: { type: 'updated', id, owner, at: now } };
    });
    return done ? this.get(id, false) : undefined;
  }

  async delete(id: string): Promise<boolean> {
    const now = this.#now();
    return this.#write(async (c) => {
      const owner = await this.#owner(c, id);
      if (owner === undefined) return { result: false };
      await c.query({ name: 'images_delete', text: 'DELETE FROM images WHERE id = $1', values: [id] });
      return { result: true, event: { type: 'deleted', id, owner, at: now } };
    });
  }

  async eventsAfter(sequence: number, limit: number): Promise<ImageEventRecord[]> {
    const rows = await this.#db.query<{ sequence: number; type: ImageEventRecord['type']; image_id: string; owner: string; at_ms: number }>(
      'images_events_after',
      'SELECT sequence, type, image_id, owner, at_ms FROM image_events WHERE sequence > $1 ORDER BY sequence LIMIT $2',
      [sequence, limit],
    );
    return rows.map((r) => ({ sequence: r.sequence, type: r.type, imageId: r.image_id, owner: r.owner, atMs: r.at_ms }));
  }

  ping(): Promise<void> {
    return this.#db.ping();
  }

  async close(): Promise<void> {
    await this.#db.close();
  }
}
