// The services' SQLite opening: owner-only files, WAL, FULL sync on every open, a busy timeout.
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { inTransaction, openDurableDatabase, pragmaValue } from './durable-database.ts';

describe('openDurableDatabase', () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'twokey-durable-'));
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('creates the directory 0700 and the file 0600, in WAL mode with synchronous=FULL and a 5 s busy timeout', () => {
    const path = join(root, 'data', 'x.db');
    const db = openDurableDatabase(path);
    try {
      expect(statSync(join(root, 'data')).mode & 0o777).to.equal(0o700);
      expect(statSync(path).mode & 0o777).to.equal(0o600);
      expect(pragmaValue(db, 'journal_mode')).to.equal('wal');
      expect(pragmaValue(db, 'synchronous')).to.equal(2);
      expect(pragmaValue(db, 'busy_timeout')).to.equal(5000);
    } finally {
      db.close();
    }
  });

  it('keeps synchronous=FULL when reopening a file already in WAL mode, and narrows a readable file to 0600', () => {
    const path = join(root, 'x.db');
    writeFileSync(path, '', { mode: 0o644 });
    openDurableDatabase(path).close();
    const db = openDurableDatabase(path);
    try {
      expect(statSync(path).mode & 0o777).to.equal(0o600);
      expect(pragmaValue(db, 'journal_mode')).to.equal('wal');
      expect(pragmaValue(db, 'synchronous')).to.equal(2);
    } finally {
      db.close();
    }
  });

  it('commits a transaction whole, and rolls all of it back when its work throws', () => {
    const db = openDurableDatabase(join(root, 't.db'));
    try {
      db.exec('CREATE TABLE t (v INTEGER NOT NULL) STRICT');
      const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
      expect(inTransaction(db, () => (insert.run(1), insert.run(2), 'done'))).to.equal('done');
      expect(() =>
        inTransaction(db, () => {
          insert.run(3);
          throw new Error('midway');
        }),
      ).to.throw('midway');
      expect(db.isTransaction).to.equal(false);
      expect(db.prepare('SELECT v FROM t ORDER BY v').all().map((r) => r.v)).to.deep.equal([1, 2]);
    } finally {
      db.close();
    }
  });
});
