// The local mesh's users: alice, bob and an admin on first start; an admin added to older state.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { DEV_ADMIN, ensureDevUsers, stateLayout } from '../../scripts/local-mesh/local-mesh.ts';
import { authDatabasePath, openAuthDatabase } from '../../services/auth/database.ts';
import { SqliteUserRecords } from '../../services/auth/sqlite-auth-records.ts';
import { UserStore } from '../../services/auth/user-store.ts';

describe('local mesh dev users', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'twokey-users-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const roles = async (name: string): Promise<string[]> => {
    const db = openAuthDatabase(authDatabasePath(stateLayout(dir).dataDir('auth')));
    try {
      return await new UserStore(new SqliteUserRecords(db)).roles(name);
    } finally {
      db.close();
    }
  };

  it('creates alice, bob and an admin holding the admin role, then reuses them', async () => {
    const layout = stateLayout(dir);
    mkdirSync(layout.dataDir('auth'), { recursive: true });
    const first = await ensureDevUsers(layout);
    expect(Object.keys(first)).to.deep.equal(['alice', 'bob', DEV_ADMIN]);
    expect(await roles(DEV_ADMIN)).to.deep.equal(['admin']);
    expect(await roles('alice')).to.deep.equal([]);
    expect(await ensureDevUsers(layout)).to.deep.equal(first);
  });

  it('adds the admin to a state directory made before it existed, keeping the other passwords', async () => {
    const layout = stateLayout(dir);
    mkdirSync(layout.dataDir('auth'), { recursive: true });
    const first = await ensureDevUsers(layout);
    const older = { alice: first['alice'], bob: first['bob'] };
    const db = openAuthDatabase(authDatabasePath(layout.dataDir('auth')));
    db.prepare('DELETE FROM user_roles').run();
    db.prepare('DELETE FROM users WHERE username = ?').run(DEV_ADMIN);
    db.close();
    writeFileSync(layout.usersFile, JSON.stringify(older));
    const again = await ensureDevUsers(layout);
    expect(again).to.include(older);
    expect(again[DEV_ADMIN]).to.be.a('string').and.not.equal(first[DEV_ADMIN]);
    expect(JSON.parse(readFileSync(layout.usersFile, 'utf8'))).to.deep.equal(again);
    expect(await roles(DEV_ADMIN)).to.deep.equal(['admin']);
  });

  it('adds users users.json lists but the database lacks (a first start on PostgreSQL after SQLite ones), with the written passwords', async () => {
    const layout = stateLayout(dir);
    mkdirSync(layout.dataDir('auth'), { recursive: true });
    const first = await ensureDevUsers(layout);
    const db = openAuthDatabase(authDatabasePath(layout.dataDir('auth')));
    db.prepare('DELETE FROM user_roles').run();
    db.prepare('DELETE FROM users').run();
    db.close();
    expect(await ensureDevUsers(layout)).to.deep.equal(first);
    const check = openAuthDatabase(authDatabasePath(layout.dataDir('auth')));
    try {
      const store = new UserStore(new SqliteUserRecords(check));
      for (const [user, password] of Object.entries(first)) expect(await store.authenticate(user, password), user).to.not.equal(undefined);
    } finally {
      check.close();
    }
    expect(await roles(DEV_ADMIN)).to.deep.equal(['admin']);
  });
});
