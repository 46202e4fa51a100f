// Images and their event log in PostgreSQL, shared by every image-store replica. Storage only.
import { randomBytes } from 'node:crypto';
import type { PostgresConfig } from '../mesh-runtime/database-config.ts';
import { PostgresDatabase, type Migration, type PgClient } from '../mesh-runtime/postgres-database.ts';
import type { ImageEventRecord, ImageRepository, ListPage, ListQuery, StoredImage } from './image-repository.ts';

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
];

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
  readonly #listeners = new Set<() => void>();

  private constructor(db: PostgresDatabase, opts: { now?: () => number; random?: (n: number) => Buffer }) {
    this.#db = db;
    this.#now = opts.now ?? Date.now;
    this.#random = opts.random ?? randomBytes;
    db.listen(CHANNEL, () => this.#notify());
  }

  static async open(config: PostgresConfig, opts: { now?: () => number; random?: (n: number) => Buffer } = {}): Promise<PostgresImageRepository> {
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

  async create(input: { owner: string; name: string; contentType: string; content: Buffer; tags: string[] }): Promise<StoredImage> {
    const id = `img_${this.#random(16).toString('hex')}`;
    const now = this.#now();
    await this.#write(async (c) => {
      await c.query({
        name: 'images_insert',
        text: 'INSERT INTO images (id, owner, name, content_type, content, tags, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)',
        values: [id, input.owner, input.name, input.contentType, input.content, JSON.stringify(input.tags), now, now],
      });
      return { result: undefined, event: { type: 'created', id, owner: input.owner, at: now } };
    });
    const stored = await this.get(id, true);
    if (stored === undefined) throw new Error(`image ${id} vanished right after it was stored`);
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

  async setTags(id: string, tags: string[]): Promise<StoredImage | undefined> {
    const now = this.#now();
    const done = await this.#write(async (c) => {
      const owner = await this.#owner(c, id);
      if (owner === undefined) return { result: false };
      await c.query({ name: 'images_set_tags', text: 'UPDATE images SET tags = $1::jsonb, updated_at_ms = $2 WHERE id = $3', values: [JSON.stringify(tags), now, id] });
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
