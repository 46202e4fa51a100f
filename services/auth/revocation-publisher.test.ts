// auth's revocation store and publisher on real SQLite: entries, sequence, bound, expiry, signed pushes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { StaticKeys } from '../authz/jwks.ts';
import { TwokeyError } from '../authz/errors.ts';
import { RevocationHolder } from '../authz/revocation-set.ts';
import { openAuthDatabase } from './database.ts';
import { RevocationPublisher } from './revocation-publisher.ts';
import { REVOCATION_REACH_SECONDS } from './revocation-entries.ts';
import { SqliteRevocationStore } from './revocation-store.ts';
import { SigningKeys } from './signing-keys.ts';
import { SqliteKeyRecords } from './sqlite-auth-records.ts';

const NOW = Date.parse('2026-01-01T12:00:00Z');

describe('RevocationPublisher on SQLite', () => {
  let root: string;
  let now: number;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'twokey-revocation-'));
    now = NOW;
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  function open(limit?: number) {
    const db = openAuthDatabase(join(root, 'auth.db'));
    const keys = new SigningKeys(new SqliteKeyRecords(db), { rotationMs: 24 * 3600_000, now: () => now });
    const store = new SqliteRevocationStore(db, limit === undefined ? {} : { limit });
    const publisher = new RevocationPublisher({ store, keys, clock: () => now, heartbeatMs: 60_000 });
    return { db, keys, store, publisher };
  }

  it('signs a set the mesh verifies, advancing seq with each revocation and pushing it', async () => {
    const { db, keys, publisher } = open();
    await keys.current();
    const holder = new RevocationHolder({ keys: await StaticKeys.fromJwks(await keys.jwks()), clock: () => now });
    const pushed: number[] = [];
    publisher.subscribe((jws, set) => {
      pushed.push(set.seq);
      void holder.accept(jws);
    });
    await publisher.disableSubject('alice');
    await publisher.revokeJti('jti-0123456789abcdef', NOW / 1000 + 900);
    await publisher.revokeSerial('00:0a:1b', NOW / 1000 + 3600);
    await publisher.withdrawKid('k-old');
    const { jws, set } = await publisher.latest();
    await new RevocationHolder({ keys: await StaticKeys.fromJwks(await keys.jwks()), clock: () => now }).accept(jws);
    expect(pushed).to.deep.equal([1, 2, 3, 4]);
    expect(set.disabledSubjects.get('alice')).to.equal(NOW / 1000);
    expect(set.serials.has('A1B')).to.equal(true);
    expect([...set.kids]).to.deep.equal(['k-old']);
    expect(holder.current!.seq).to.equal(4);
    db.close();
  });

  it('names the keys the JWK Set publishes in every set, the rotated-in one included', async () => {
    const { db, keys, publisher } = open();
    await keys.current();
    const published = async () => (await keys.jwks()).keys.map((k) => k.kid as string);
    const before = await published();
    expect(before).to.have.length(2); // current and next
    const keysBefore = await StaticKeys.fromJwks(await keys.jwks());
    const first = await new RevocationHolder({ keys: keysBefore, clock: () => now }).accept((await publisher.publish()).jws);
    expect(first.publishedKids).to.deep.equal(before);
    await keys.rotate();
    const after = await published();
    expect(after).to.have.length(3);
    expect(after).to.not.deep.equal(before);
    // Signed with the rotated-in key, which the holder's keys from before the rotation already hold (it was next).
    const second = await new RevocationHolder({ keys: keysBefore, clock: () => now }).accept((await publisher.publish()).jws);
    expect(second.publishedKids).to.deep.equal(after);
    expect(second.signedBy).to.equal(before[1]);
    db.close();
  });

  it('keeps entries across a restart and drops each when what it revokes has expired', async () => {
    let { db, keys, publisher } = open();
    await keys.current();
    await publisher.revokeJti('jti-0123456789abcdef', NOW / 1000 + 60);
    await publisher.disableSubject('alice');
    db.close();
    ({ db, publisher } = open());
    expect((await publisher.publish()).set.jtis.size).to.equal(1);
    now += 400_000; // past the jti's exp (+ leeway), long before the user's reach
    const after = (await publisher.publish()).set;
    expect(after.jtis.size).to.equal(0);
    expect(after.disabledSubjects.has('alice')).to.equal(true);
    expect(after.seq).to.equal(3);
    now = NOW + (REVOCATION_REACH_SECONDS + 1) * 1000;
    expect((await publisher.publish()).set.disabledSubjects.size).to.equal(0);
    db.close();
  });

  it('refuses a revocation beyond the bound, keeping every live entry', async () => {
    const { db, keys, publisher, store } = open(2);
    await keys.current();
    await publisher.disableSubject('alice');
    await publisher.disableSubject('bob');
    try {
      await publisher.disableSubject('carol');
      expect.fail('a third entry was accepted over a bound of 2');
    } catch (err) {
      expect((err as TwokeyError).code).to.equal('ERR_REVOCATION_LIMIT');
      expect((err as TwokeyError).message).to.contain('was NOT recorded');
    }
    // Renewing an existing entry is no new entry.
    await publisher.disableSubject('alice');
    expect((await store.list()).map((e) => e.value)).to.deep.equal(['alice', 'bob']);
    db.close();
  });
});
