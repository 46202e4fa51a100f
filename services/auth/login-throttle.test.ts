// Failed-login limits per username and per source, users, and signing keys shared by replicas:
// the same suite on SQLite and on PostgreSQL.
import { expect } from 'chai';
import { forEachEngine } from '../../test/postgres/engines.ts';
import { AuthService } from './auth-service.ts';
import { openAuthStorage, type AuthStorage } from './auth-storage.ts';
import { DEFAULT_THROTTLE, LoginThrottle, type ThrottlePolicy } from './login-throttle.ts';
import { SigningKeys } from './signing-keys.ts';
import { TokenMinter } from './token-minter.ts';
import { UserStore } from './user-store.ts';

forEachEngine('login throttling, the user store and signing keys', (fx) => {
  let db: AuthStorage;
  let now: number;
  const opened: AuthStorage[] = [];
  /** Another process on the same state (a second replica, or a restart). */
  const open = async (): Promise<AuthStorage> => {
    const s = await openAuthStorage(fx.engine === 'sqlite' ? { dataDir: fx.sqlitePath('') } : { postgres: fx.postgres() });
    opened.push(s);
    return s;
  };
  beforeEach(async () => {
    db = await open();
    now = 1_000_000_000;
  });
  afterEach(async () => {
    for (const s of opened.splice(0)) await s.close();
  });

  const gateway = { spiffeId: 'spiffe://twokey.local/ns/twokey/sa/gateway', thumbprint: 'A'.repeat(43) };

  /** A policy for tests: `pair` free failures per username and source, then 1 s doubling; `lock` locks the username. */
  const policy = (o: Partial<ThrottlePolicy> = {}): ThrottlePolicy => ({ ...DEFAULT_THROTTLE, windowMs: 60_000, lockWindowMs: 3_600_000, ...o });

  /** An auth service over the test database: three failures from one source delay that source's next guess. */
  function authService(users: UserStore, roleScopes: Record<string, string[]>): AuthService {
    const keys = new SigningKeys(db.keys, { rotationMs: 3_600_000 });
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
      throttle: new LoginThrottle(db.failures, policy({ freePerPair: 3, lockAfter: 5 }), () => now),
      keys,
      minter: new TokenMinter({ keys, issuer: 'https://auth.twokey.local' }),
      verifySubjectToken: () => Promise.reject(new Error('not used')),
    });
  }

  it('delays a guesser after five failures with doubling waits, while the user logs in from elsewhere', async () => {
    const throttle = new LoginThrottle(db.failures, policy(), () => now);
    for (let i = 0; i < 5; i++) {
      await throttle.check('alice', 'gateway|10.0.0.66');
      await throttle.recordFailure('alice', 'gateway|10.0.0.66');
    }
    expect(await messageOf(throttle.check('alice', 'gateway|10.0.0.66'))).to.equal('too many failed logins for this username from this address; retry in 1 s');
    // The stranger's guesses do not lock alice out: she logs in from her own address.
    await throttle.check('alice', 'gateway|192.0.2.1');
    now += 1000;
    await throttle.check('alice', 'gateway|10.0.0.66');
    await throttle.recordFailure('alice', 'gateway|10.0.0.66');
    expect(await messageOf(throttle.check('alice', 'gateway|10.0.0.66'))).to.match(/retry in 2 s$/);
    now += 2000;
    await throttle.recordFailure('alice', 'gateway|10.0.0.66');
    expect(await messageOf(throttle.check('alice', 'gateway|10.0.0.66'))).to.match(/retry in 4 s$/);
  });

  it('delays a source guessing across usernames after its free failures', async () => {
    const throttle = new LoginThrottle(db.failures, policy({ freePerSource: 3 }), () => now);
    for (const user of ['a', 'b', 'c']) await throttle.recordFailure(user, 'gateway|10.0.0.9');
    expect(await messageOf(throttle.check('d', 'gateway|10.0.0.9'))).to.equal('too many failed logins from this address; retry in 1 s');
    await throttle.check('d', 'gateway|10.0.0.10');
  });

  it('locks a username for everyone only at the much higher threshold, from any source and any replica', async () => {
    const other = await open();
    const p = policy({ lockAfter: 12 });
    const replicas = [new LoginThrottle(db.failures, p, () => now), new LoginThrottle(other.failures, p, () => now)];
    for (let i = 0; i < 11; i++) await replicas[i % 2]!.recordFailure('alice', `src${i}`);
    await replicas[0]!.check('alice', 'fresh');
    await replicas[1]!.recordFailure('alice', 'src11');
    for (const throttle of replicas) {
      expect(await messageOf(throttle.check('alice', 'fresh'))).to.equal('this username is locked after 12 failed logins; retry in 3600 s');
      await throttle.check('bob', 'fresh');
    }
    now += 3_600_001;
    await replicas[1]!.check('alice', 'fresh');
  });

  it('a successful login ends the run: the count towards the lock starts again', async () => {
    const throttle = new LoginThrottle(db.failures, policy({ lockAfter: 3 }), () => now);
    for (let i = 0; i < 2; i++) await throttle.recordFailure('alice', `s${i}`);
    await throttle.recordSuccess('alice');
    for (let i = 0; i < 2; i++) await throttle.recordFailure('alice', `t${i}`);
    await throttle.check('alice', 'u');
  });

  it('counts concurrent attempts still being checked, so a burst of guesses cannot outrun the limit', async () => {
    const users = new UserStore(db.users);
    await users.add('alice', 'correct horse battery');
    const service = authService(users, {});
    const attempts = Array.from({ length: 8 }, () =>
      service.login(gateway, 'src', { username: 'alice', password: 'wrong password here' }).then(
        () => 'OK',
        (err: { code: string }) => err.code,
      ),
    );
    const codes = await Promise.all(attempts);
    expect(codes.filter((c) => c === 'ERR_LOGIN_FAILED')).to.have.length(3);
    expect(codes.filter((c) => c === 'ERR_LOGIN_THROTTLED')).to.have.length(5);
    let err: unknown;
    await service.login(gateway, 'src', { username: 'alice', password: 'correct horse battery' }).catch((e) => (err = e));
    expect(err).to.have.property('code', 'ERR_LOGIN_THROTTLED');
    // From another address alice is not held up by the guesses.
    expect((await service.login(gateway, 'elsewhere', { username: 'alice', password: 'correct horse battery' })).token_type).to.equal('Bearer');
  });

  it('survives reopening the database, and an unlock clears the username from every source', async () => {
    await new LoginThrottle(db.failures, policy({ lockAfter: 1 }), () => now).recordFailure('alice', 's');
    await db.close();
    opened.splice(opened.indexOf(db), 1);
    db = await open();
    const again = new LoginThrottle(db.failures, policy({ lockAfter: 1, freePerPair: 1 }), () => now);
    expect(await messageOf(again.check('alice', 'other'))).to.match(/locked after 1 failed logins/);
    expect(await messageOf(again.check('alice', 's'))).to.match(/locked/);
    expect(await again.unlock('alice')).to.equal(1);
    await again.check('alice', 's');
    await again.check('alice', 'other');
  });

  it('authenticates only enabled users with the right password', async () => {
    const users = new UserStore(db.users);
    await users.add('alice', 'correct horse battery');
    expect((await users.authenticate('alice', 'correct horse battery'))?.username).to.equal('alice');
    expect(await users.authenticate('alice', 'wrong password here')).to.equal(undefined);
    expect(await users.authenticate('nobody', 'correct horse battery')).to.equal(undefined);
    await users.setDisabled('alice', true);
    expect(await users.authenticate('alice', 'correct horse battery')).to.equal(undefined);
    expect((await users.list()).map((u) => [u.username, u.disabled])).to.deep.equal([['alice', true]]);
  });

  it('rejects usernames shaped like workload IDs and short passwords', async () => {
    const users = new UserStore(db.users);
    let err: unknown;
    await users.add('spiffe://twokey.local/ns/x/sa/y', 'long enough password').catch((e) => (err = e));
    expect(err).to.have.property('code', 'ERR_REQUEST_INVALID');
    err = undefined;
    await users.add('carol', 'short').catch((e) => (err = e));
    expect((err as Error).message).to.include('at least 12 characters');
  });

  it('adds the scopes of a user\'s roles to the login token, and only of roles the registry defines', async () => {
    const users = new UserStore(db.users);
    await users.add('alice', 'correct horse battery');
    await users.add('root', 'correct horse battery');
    await users.addRole('root', 'admin');
    await users.addRole('root', 'admin');
    await users.addRole('root', 'unlisted');
    await users.addRole('root', 'constructor');
    expect(await users.roles('root')).to.deep.equal(['admin', 'constructor', 'unlisted']);
    expect(await messageOf(users.addRole('nobody', 'admin'))).to.match(/no user nobody/);
    expect(await messageOf(users.addRole('alice', 'Admin!'))).to.match(/invalid role/);
    const service = authService(users, { admin: ['console:read'] });
    const admin = await service.login(gateway, 's', { username: 'root', password: 'correct horse battery' });
    const plain = await service.login(gateway, 's', { username: 'alice', password: 'correct horse battery' });
    expect(admin.scope).to.equal('images:read console:read');
    expect(plain.scope).to.equal('images:read');
  });

  it('refuses a second user of the same name added through another replica', async () => {
    const other = new UserStore((await open()).users);
    await new UserStore(db.users).add('carol', 'correct horse battery');
    expect(await codeOf(other.add('carol', 'another long password'))).to.equal('ERR_REQUEST_INVALID');
  });

  it('two replicas due at once rotate exactly once, and both then sign with and publish the same keys', async () => {
    const other = await open();
    let clock = Date.UTC(2026, 0, 1);
    const rotations: string[] = [];
    const make = (s: AuthStorage) => new SigningKeys(s.keys, { rotationMs: 3_600_000, now: () => clock, onRotated: (kid) => rotations.push(kid), refreshMs: 0 });
    const a = make(db);
    const b = make(other);
    const [first, firstB] = await Promise.all([a.current(), b.current()]);
    expect(rotations).to.have.length(1);
    expect(firstB.kid).to.equal(first.kid);
    clock += 3_600_000;
    for (let round = 0; round < 5; round++) {
      const got = await Promise.all([a.current(), b.current(), a.current(), b.current()]);
      expect(new Set(got.map((k) => k.kid)).size, `round ${round}`).to.equal(1);
    }
    expect(rotations).to.have.length(2);
    const [ja, jb] = [await a.jwks(), await b.jwks()];
    expect(ja).to.deep.equal(jb);
    expect(ja.keys.map((k) => k.kid)).to.have.length(3).and.include(first.kid);
    expect(ja.keys[0]!.kid).to.equal((await b.current()).kid);
  });

  it('a replica that did not rotate signs with the new key once the other rotates on demand', async function () {
    const other = await open();
    const a = new SigningKeys(db.keys, { rotationMs: 3_600_000 });
    const b = new SigningKeys(other.keys, { rotationMs: 3_600_000, refreshMs: 200 });
    const before = (await b.current()).kid;
    expect((await a.current()).kid).to.equal(before);
    const rotated = await a.rotate();
    expect(rotated).to.not.equal(before);
    // NOTIFY (PostgreSQL) or the refresh bound: bounded wait, never a fixed sleep.
    const deadline = Date.now() + 5_000;
    while ((await b.current()).kid !== rotated && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect((await b.current()).kid).to.equal(rotated);
  });
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'none',
    (err: { code?: string }) => err.code ?? 'no code',
  );
}

async function messageOf(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'none',
    (err: Error) => err.message,
  );
}
