// What the image store keeps: images, their durable event log and the request ids of keyed writes,
// behind one seam with a SQLite and a PostgreSQL implementation. Storage only: who may touch what
// is decided by the caller.
import type { RequestKey } from './request-keys.ts';

export interface StoredImage {
  id: string;
  owner: string;
  name: string;
  contentType: string;
  content: Buffer | undefined;
  tags: string[];
  createdAtMs: number;
  updatedAtMs: number;
  sizeBytes: number;
}

export interface ImageEventRecord {
  sequence: number;
  type: 'created' | 'updated' | 'deleted';
  imageId: string;
  owner: string;
  atMs: number;
}

/** What both implementations take besides their database. */
export interface RepositoryOptions {
  now?: () => number;
  random?: (n: number) => Buffer;
  /** How long a keyed write is remembered (default 24 h). */
  requestKeyTtlMs?: number;
}

export interface ListQuery {
  /** Undefined lists every owner's images. */
  owner: string | undefined;
  tag: string | undefined;
  afterSeq: number;
  limit: number;
}

export interface ListPage {
  images: StoredImage[];
  /** The sequence of the last image of the page (the next page starts after it). */
  lastSeq: number | undefined;
  more: boolean;
}

/**
 * Every write commits the image change and its event together, and event sequences are committed
 * in order, so a reader that has seen sequence n never later meets a smaller one.
 *
 * A write given a RequestKey is remembered under it in the same transaction (so across replicas
 * on PostgreSQL): repeated with the same key and request within the key's lifetime, it writes
 * nothing and returns the image the first one wrote, as it is now; with another request under
 * the same key it throws ERR_REQUEST_ID_REUSED.
 */
export interface ImageRepository {
  /** Called after any event is committed, by this process or (PostgreSQL) another replica. */
  onEvent(listener: () => void): () => void;
  create(input: { owner: string; name: string; contentType: string; content: Buffer; tags: string[] }, key?: RequestKey): Promise<StoredImage>;
  get(id: string, withContent: boolean): Promise<StoredImage | undefined>;
  /** Metadata only, in upload order. */
  list(query: ListQuery): Promise<ListPage>;
  update(id: string, changes: { name?: string; contentType?: string; content?: Buffer }): Promise<StoredImage | undefined>;
  setTags(id: string, tags: string[], key?: RequestKey): Promise<StoredImage | undefined>;
  /** Forgets request keys past their lifetime; returns how many. Keyed writes also prune now and then. */
  pruneRequestKeys(): Promise<number>;
  delete(id: string): Promise<boolean>;
  eventsAfter(sequence: number, limit: number): Promise<ImageEventRecord[]>;
  /** Resolves when the database answers (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;
}
