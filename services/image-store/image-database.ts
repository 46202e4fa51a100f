// The image store's embedded database: images, a durable event log and the request ids of keyed
// writes, written in one transaction so every acknowledged upload and its event survive a crash
// (WAL, synchronous=FULL).
import { openDurableDatabase, type SqliteDatabase } from '../mesh-runtime/durable-database.ts';

export type ImageDatabase = SqliteDatabase;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS images (
  seq           INTEGER PRIMARY KEY AUTOINCREMENT,
  id            TEXT NOT NULL UNIQUE,
  owner         TEXT NOT NULL,
  name          TEXT NOT NULL,
  content_type  TEXT NOT NULL,
  content       BLOB NOT NULL,
  tags          TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS images_owner ON images (owner, seq);
CREATE TABLE IF NOT EXISTS image_events (
  sequence      INTEGER PRIMARY KEY AUTOINCREMENT,
  type          TEXT NOT NULL CHECK (type IN ('created', 'updated', 'deleted')),
  image_id      TEXT NOT NULL,
  owner         TEXT NOT NULL,
  at_ms         INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS request_keys (
  subject       TEXT NOT NULL,
  request_id    TEXT NOT NULL,
  method        TEXT NOT NULL,
  fingerprint   TEXT NOT NULL,
  resource_id   TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL,
  PRIMARY KEY (subject, request_id)
) STRICT;
CREATE INDEX IF NOT EXISTS request_keys_created ON request_keys (created_at_ms);
`;

export function imageDatabasePath(dataDir: string): string {
  return `${dataDir.replace(/\/+$/, '')}/images.db`;
}

export function openImageDatabase(path: string): ImageDatabase {
  const db = openDurableDatabase(path);
  db.exec(SCHEMA);
  return db;
}
