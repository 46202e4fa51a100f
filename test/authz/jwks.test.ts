// The JWKS key set: rotation, unknown-kid refetch cooldown, and the last good keys when auth is down.
import { expect } from 'chai';
import { JwksKeySet, importJwks } from '../../services/authz/jwks.ts';
import { TokenVerifier } from '../../services/authz/token-verifier.ts';
import { TwokeyError } from '../../services/authz/errors.ts';
import { ISSUER, MESH_AUDIENCE, TestIssuer } from './token-fixtures.ts';

const NOW = Date.parse('2026-01-01T12:00:00Z');

/** Auth's JWKS endpoint as the key set sees it: it publishes what `published` holds, or is down. */
class AuthEndpoint {
  published: TestIssuer[] = [];
  down = false;
  garbage: string | null = null;
  calls = 0;
  fetch = async (): Promise<unknown> => {
    this.calls += 1;
    if (this.down) throw new Error('connect ECONNREFUSED 127.0.0.1:8443');
    if (this.garbage !== null) return this.garbage;
    return JSON.stringify(TestIssuer.jwks(...this.published));
  };
}

describe('JwksKeySet', () => {
  let k1: TestIssuer;
  let k2: TestIssuer;
  let forged: TestIssuer;
  let auth: AuthEndpoint;
  let now: number;
  let keys: JwksKeySet;
  let verifier: TokenVerifier;
  const failures: TwokeyError[] = [];

  before(async () => {
    [k1, k2, forged] = await Promise.all([TestIssuer.create('k1'), TestIssuer.create('k2'), TestIssuer.create('k-forged')]);
  });
  beforeEach(async () => {
    now = NOW;
    auth = new AuthEndpoint();
    auth.published = [k1];
    failures.length = 0;
    keys = new JwksKeySet({ fetch: auth.fetch, clock: () => now, cooldownMs: 30_000, refreshIntervalMs: 0, onFetchError: (e) => failures.push(e) });
    verifier = new TokenVerifier({ keys, issuer: ISSUER, audiences: [MESH_AUDIENCE], clock: () => now });
    await keys.start();
  });
  afterEach(() => keys.close());

  const sign = (by: TestIssuer) => by.sign({}, { nowMs: now });

  it('keeps accepting tokens signed by either published key across a rotation', async () => {
    const old = await sign(k1);
    expect((await verifier.verify(old)).subject).to.equal('alice');
    // Auth rotates: publishes k2 as current, k1 as previous. A k2 token arrives before any refresh.
    auth.published = [k2, k1];
    now += 31_000;
    const fresh = await sign(k2);
    expect((await verifier.verify(fresh)).subject).to.equal('alice');
    expect(auth.calls).to.equal(2);
    expect((await verifier.verify(old)).subject).to.equal('alice');
    expect(keys.kids.sort()).to.deep.equal(['k1', 'k2']);
  });

  it('refetches at most once per cooldown for unknown kids', async () => {
    expect(auth.calls).to.equal(1);
    now += 30_000;
    const bogus = await Promise.all(Array.from({ length: 20 }, () => sign(forged)));
    const results = await Promise.allSettled(bogus.map((t) => verifier.verify(t)));
    expect(results.every((r) => r.status === 'rejected' && (r.reason as TwokeyError).code === 'ERR_TOKEN_INVALID')).to.equal(true);
    expect((results[0] as PromiseRejectedResult).reason.message).to.equal('invalid token: unknown signing key id');
    expect((results[0] as PromiseRejectedResult).reason.untrusted).to.deep.equal({ kid: 'k-forged' });
    expect(auth.calls).to.equal(2);
    now += 29_999;
    await Promise.allSettled(bogus.map((t) => verifier.verify(t)));
    expect(auth.calls).to.equal(2);
    now += 1;
    await Promise.allSettled(bogus.map((t) => verifier.verify(t)));
    expect(auth.calls).to.equal(3);
  });

  it('keeps the last good keys when auth is unreachable', async () => {
    auth.down = true;
    now += 60_000;
    await keys.refresh().catch(() => undefined);
    expect(failures.at(-1)?.code).to.equal('ERR_JWKS_UNAVAILABLE');
    expect(failures.at(-1)?.message).to.contain('ECONNREFUSED');
    expect((await verifier.verify(await sign(k1))).subject).to.equal('alice');
    // A new key cannot be learned while auth is down, and that is a plain invalid token.
    now += 60_000;
    const err = await verifier.verify(await sign(k2)).catch((e: TwokeyError) => e);
    expect((err as TwokeyError).code).to.equal('ERR_TOKEN_INVALID');
    // Auth comes back: the next unknown kid after the cooldown picks the new key up.
    auth.down = false;
    auth.published = [k2, k1];
    now += 30_000;
    expect((await verifier.verify(await sign(k2))).subject).to.equal('alice');
  });

  it('after a failed refetch for an unknown kid, tries again a second later rather than a whole cooldown', async () => {
    auth.down = true;
    now += 30_000;
    const err = (await verifier.verify(await sign(k2)).catch((e: TwokeyError) => e)) as TwokeyError;
    expect(err.code).to.equal('ERR_TOKEN_INVALID');
    expect(auth.calls).to.equal(2);
    // auth is back (a service's channel reconnected); within the second nothing more is fetched.
    auth.down = false;
    auth.published = [k2, k1];
    now += 999;
    await verifier.verify(await sign(k2)).catch(() => undefined);
    expect(auth.calls).to.equal(2);
    now += 1;
    expect((await verifier.verify(await sign(k2))).subject).to.equal('alice');
    expect(auth.calls).to.equal(3);
    // A successful refetch arms the whole cooldown again.
    now += 29_999;
    await verifier.verify(await sign(forged)).catch(() => undefined);
    expect(auth.calls).to.equal(3);
  });

  it('refetches at once when auth names a kid it does not hold, whatever the cooldown; not when it holds them all', async () => {
    now += 30_000;
    await verifier.verify(await sign(forged)).catch(() => undefined);
    expect(auth.calls).to.equal(2);
    // Inside the cooldown a caller's unknown kid fetches nothing; auth's word that it publishes k2 does.
    auth.published = [k1, k2];
    await keys.expectKids(['k1']);
    await keys.expectKids(undefined);
    expect(auth.calls).to.equal(2);
    await keys.expectKids(['k1', 'k2']);
    expect(auth.calls).to.equal(3);
    expect(keys.kids.sort()).to.deep.equal(['k1', 'k2']);
    await keys.expectKids(['k2', 'k1']);
    expect(auth.calls).to.equal(3);
    // When the fetch fails the last good keys stay and nothing is thrown at the caller.
    auth.down = true;
    await keys.expectKids(['k3']);
    expect(keys.kids.sort()).to.deep.equal(['k1', 'k2']);
  });

  it('keeps the last good keys when auth serves garbage', async () => {
    auth.garbage = '{"keys": [{"kty":"EC","crv":"P-256","kid":"k9","x":"AA","y":"AA","d":"AA"}]}';
    now += 60_000;
    const err = await keys.refresh().catch((e: TwokeyError) => e);
    expect((err as TwokeyError).message).to.contain('private key material');
    expect(keys.kids).to.deep.equal(['k1']);
  });

  it('reports ERR_JWKS_UNAVAILABLE when no key set was ever fetched', async () => {
    const down = new AuthEndpoint();
    down.down = true;
    const empty = new JwksKeySet({ fetch: down.fetch, clock: () => now, refreshIntervalMs: 0 });
    await empty.start();
    const v = new TokenVerifier({ keys: empty, issuer: ISSUER, audiences: [MESH_AUDIENCE], clock: () => now });
    const err = (await v.verify(await sign(k1)).catch((e: TwokeyError) => e)) as TwokeyError;
    expect(err.code).to.equal('ERR_JWKS_UNAVAILABLE');
  });

  it('refreshes in the background', async () => {
    const bg = new AuthEndpoint();
    bg.published = [k1];
    const set = new JwksKeySet({ fetch: bg.fetch, refreshIntervalMs: 20 });
    await set.start();
    bg.published = [k2];
    // Waits for the refreshes themselves (a deadline, not a fixed sleep): the new key, then more fetches after it.
    const calls = bg.calls;
    const deadline = Date.now() + 5000;
    while (!(set.kids.includes('k2') && bg.calls > calls + 1)) {
      if (Date.now() > deadline) expect.fail(`no background refresh within 5 s (kids ${set.kids.join(',')}, fetches ${bg.calls})`);
      await new Promise((r) => setTimeout(r, 5));
    }
    set.close();
    expect(set.kids).to.deep.equal(['k2']);
    expect(bg.calls).to.be.greaterThan(2);
  });
});

describe('importJwks', () => {
  it('skips key types twokey never verifies with, and refuses sets with none it does', async () => {
    const k = await TestIssuer.create('k1');
    const set = await importJwks({ keys: [{ kty: 'RSA', kid: 'r', n: 'AQAB', e: 'AQAB' }, k.publicJwk] });
    expect([...set.keys()]).to.deep.equal(['k1']);
    const err = await importJwks({ keys: [{ kty: 'RSA', kid: 'r', n: 'AQAB', e: 'AQAB' }] }).catch((e: TwokeyError) => e);
    expect((err as TwokeyError).message).to.contain('no ES256 or EdDSA signing key');
  });
  it('refuses duplicate kids and symmetric keys', async () => {
    const k = await TestIssuer.create('k1');
    expect(((await importJwks({ keys: [k.publicJwk, k.publicJwk] }).catch((e) => e)) as Error).message).to.contain('duplicate kid');
    expect(((await importJwks({ keys: [{ kty: 'oct', kid: 's', k: 'AAAA' }] }).catch((e) => e)) as Error).message).to.contain('private key material');
  });
});
