// How often each image's tags were written, read from the image store's event log in PostgreSQL:
// every committed SetTags appends one 'updated' event, whether or not its caller saw the answer.
import pg from 'pg';

export interface TagWriteCounts {
  /** Images never written after their upload. */
  never: string[];
  /** Images written more than once, with the count. */
  more: Record<string, number>;
}

/** Counts the 'updated' events of `ids` (images nothing but tagging updates) in the database at `url`. */
export async function tagWrites(url: string, ids: readonly string[]): Promise<TagWriteCounts> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const rows = (await c.query("SELECT image_id, count(*)::int AS n FROM image_events WHERE type = 'updated' AND image_id = ANY($1) GROUP BY image_id", [ids])).rows as {
      image_id: string;
      n: number;
    }[];
    const counts = new Map(rows.map((r) => [r.image_id, r.n]));
    return {
      never: ids.filter((id) => !counts.has(id)),
      more: Object.fromEntries(ids.filter((id) => (counts.get(id) ?? 0) > 1).map((id) => [id, counts.get(id)!])),
    };
  } finally {
    await c.end();
  }
}
