// Failed-login limits per username and per source.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { authDatabasePath, openAuthDatabase, type AuthDatabase } from './database.ts';
import { LoginThrottle } from './login-throttle.ts';
import { UserStore } from './user-store.ts';

describe('login throttling and the user store', () => {
  let dir: string;
  let db: AuthDatabase;
  let now: number;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'twokey-auth-'));
    db = openAuthDatabase(authDatabasePath(dir));
    now = 1_000_000_000;
  });
  afterEach(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('locks a username after five failures within the window, from any source', () => {
    const throttle = new LoginThrottle(db, { windowMs: 60_000, maxFailuresPerUser: 5, maxFailuresPerSource: 100 }, () => now);
    for (let i = 0; i < 5; i++) {
      throttle.check('alice', `src${i}`);
      throttle.recordFailure('alice', `src${i}`);
    }
    expect(() => throttle.check('alice', 'fresh')).to.throw(/too many failed logins for this username; retry in 60 s/);
    throttle.check('bob', 'fresh');
    now += 60_001;
    throttle.check('alice', 'fresh');
  });

  it('locks a source guessing across usernames', () => {
    const throttle = new LoginThrottle(db, { windowMs: 60_000, maxFailuresPerUser: 100, maxFailuresPerSource: 3 }, () => now);
    for (const user of ['a', 'b', 'c']) throttle.recordFailure(user, 'gateway|10.0.0.9');
    expect(() => throttle.check('d', 'gateway|10.0.0.9')).to.throw(/for this source/);
    throttle.check('d', 'gateway|10.0.0.10');
  });

  it('survives reopening the database', () => {
    new LoginThrottle(db, { windowMs: 60_000, maxFailuresPerUser: 1, maxFailuresPerSource: 100 }, () => now).recordFailure('alice', 's');
    db.close();
    db = openAuthDatabase(authDatabasePath(dir));
    const again = new LoginThrottle(db, { windowMs: 60_000, maxFailuresPerUser: 1, maxFailuresPerSource: 100 }, () => now);
    expect(() => again.check('alice', 's')).to.throw(/too many failed logins/);
  });

  it('authenticates only enabled users with the right password', async () => {
    const users = new UserStore(db);
    await users.add('alice', 'correct horse battery');
    expect((await users.authenticate('alice', 'correct horse battery'))?.username).to.equal('alice');
    expect(await users.authenticate('alice', 'wrong password here')).to.equal(undefined);
    expect(await users.authenticate('nobody', 'correct horse battery')).to.equal(undefined);
    users.setDisabled('alice', true);
    expect(await users.authenticate('alice', 'correct horse battery')).to.equal(undefined);
    expect(users.list().map((u) => [u.username, u.disabled])).to.deep.equal([['alice', true]]);
  });

  it('rejects usernames shaped like workload IDs and short passwords', async () => {
    const users = new UserStore(db);
    let err: unknown;
    await users.add('spiffe://twokey.local/ns/x/sa/y', 'long enough password').catch((e) => (err = e));
    expect(err).to.have.property('code', 'ERR_REQUEST_INVALID');
    err = undefined;
    await users.add('carol', 'short').catch((e) => (err = e));
    expect((err as Error).message).to.include('at least 12 characters');
  });
});
