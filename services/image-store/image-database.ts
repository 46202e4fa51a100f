// The image store's embedded database: images and a durable event log, written in one transaction
// so every acknowledged upload and its event survive a crash (WAL, synchronous=FULL).
import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';

export type ImageDatabase = Database.Database;

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
`;

export function imageDatabasePath(dataDir: string): string {
  return `${dataDir.replace(/\/+$/, '')}/images.db`;
}

export function openImageDatabase(path: string): ImageDatabase {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  closeSync(openSync(path, 'a', 0o600));
  chmodSync(path, 0o600);
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  // FULL: a commit is on disk before the call returns, so an acknowledged upload survives kill -9.
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  db.exec(SCHEMA);
  return db;
}
