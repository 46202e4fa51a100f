// Failed-login limits per username and per source.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { AuthService } from './auth-service.ts';
import { authDatabasePath, openAuthDatabase, type AuthDatabase } from './database.ts';
import { LoginThrottle } from './login-throttle.ts';
import { SigningKeys } from './signing-keys.ts';
import { TokenMinter } from './token-minter.ts';
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

  const gateway = { spiffeId: 'spiffe://twokey.local/ns/twokey/sa/gateway', thumbprint: 'A'.repeat(43) };

  /** An auth service over the test database: three failures lock a username. */
  function authService(users: UserStore, roleScopes: Record<string, string[]>): AuthService {
    const keys = new SigningKeys(db, { rotationMs: 3_600_000 });
    return new AuthService({
      policy: {
        issuer: 'https://auth.twokey.local',
        trustDomainId: 'spiffe://twokey.local',
        userScopes: ['images:read'],
        roleScopes,
        userTokenTtlMs: 60_000,
        delegatedTokenTtlMs: 60_000,
        serviceTokenTtlMs: 60_000,
        maxDelegationDepth: 2,
        workloads: new Map(),
      },
      users,
      throttle: new LoginThrottle(db, { windowMs: 60_000, maxFailuresPerUser: 3, maxFailuresPerSource: 100 }, () => now),
      keys,
      minter: new TokenMinter({ keys, issuer: 'https://auth.twokey.local' }),
      verifySubjectToken: () => Promise.reject(new Error('not used')),
    });
  }

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

  it('counts concurrent attempts still being checked, so a burst of guesses cannot outrun the limit', async () => {
    const users = new UserStore(db);
    await users.add('alice', 'correct horse battery');
    const service = authService(users, {});
    const attempts = Array.from({ length: 8 }, (_, i) =>
      service.login(gateway, `src${i}`, { username: 'alice', password: 'wrong password here' }).then(
        () => 'OK',
        (err: { code: string }) => err.code,
      ),
    );
    const codes = await Promise.all(attempts);
    expect(codes.filter((c) => c === 'ERR_LOGIN_FAILED')).to.have.length(3);
    expect(codes.filter((c) => c === 'ERR_LOGIN_THROTTLED')).to.have.length(5);
    let err: unknown;
    await service.login(gateway, 'src9', { username: 'alice', password: 'correct horse battery' }).catch((e) => (err = e));
    expect(err).to.have.property('code', 'ERR_LOGIN_THROTTLED');
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

  it('adds the scopes of a user\'s roles to the login token, and only of roles the registry defines', async () => {
    const users = new UserStore(db);
    await users.add('alice', 'correct horse battery');
    await users.add('root', 'correct horse battery');
    users.addRole('root', 'admin');
    users.addRole('root', 'unlisted');
    users.addRole('root', 'constructor');
    expect(() => users.addRole('nobody', 'admin')).to.throw(/no user nobody/);
    expect(() => users.addRole('alice', 'Admin!')).to.throw(/invalid role/);
    const service = authService(users, { admin: ['console:read'] });
    const admin = await service.login(gateway, 's', { username: 'root', password: 'correct horse battery' });
    const plain = await service.login(gateway, 's', { username: 'alice', password: 'correct horse battery' });
    expect(admin.scope).to.equal('images:read console:read');
    expect(plain.scope).to.equal('images:read');
  });
});
