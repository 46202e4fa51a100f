// Reading the one bearer token of a call, and verifying it once.
import { expect } from 'chai';
import { Metadata } from '@grpc/grpc-js';
import { JwksKeySet, StaticKeys } from '../../services/authz/jwks.ts';
import { TokenCache } from '../../services/authz/token-cache.ts';
import { TokenAuthenticator, bearerToken } from '../../services/authz/token-authenticator.ts';
import { TokenVerifier } from '../../services/authz/token-verifier.ts';
import { TwokeyError } from '../../services/authz/errors.ts';
import { ISSUER, MESH_AUDIENCE, TestIssuer } from './token-fixtures.ts';

function md(...values: Array<string | Buffer>): Metadata {
  const m = new Metadata();
  for (const v of values) m.add(typeof v === 'string' ? 'authorization' : 'authorization-bin', v as never);
  return m;
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as TwokeyError).code;
  }
  return 'none';
}

describe('bearerToken()', () => {
  it('takes exactly one "Bearer <compact JWS>" value', () => {
    expect(bearerToken(md('Bearer a.b.c'))).to.equal('a.b.c');
    expect(codeOf(() => bearerToken(new Metadata()))).to.equal('ERR_TOKEN_MISSING');
    expect(codeOf(() => bearerToken(md('Bearer a.b.c', 'Bearer d.e.f')))).to.equal('ERR_TOKEN_MALFORMED');
    expect(codeOf(() => bearerToken(md('Basic YWxpY2U6cHc=')))).to.equal('ERR_TOKEN_MALFORMED');
    expect(codeOf(() => bearerToken(md('Bearer  a.b.c')))).to.equal('ERR_TOKEN_MALFORMED');
    expect(codeOf(() => bearerToken(md('Bearer a.b.c extra')))).to.equal('ERR_TOKEN_MALFORMED');
  });
  it('never puts the value in the error message', () => {
    let caught: unknown;
    try {
      bearerToken(md('Token secret-value-123'));
    } catch (err) {
      caught = err;
    }
    expect(caught).to.be.instanceOf(TwokeyError);
    expect((caught as TwokeyError).code).to.equal('ERR_TOKEN_MALFORMED');
    expect((caught as TwokeyError).message).not.to.contain('secret-value-123');
  });
});

describe('TokenAuthenticator', () => {
  it('verifies a token once, then answers from the cache synchronously until it expires', async () => {
    const issuer = await TestIssuer.create('k1');
    let now = Date.now();
    let verifications = 0;
    const verifier = new TokenVerifier({ keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)), issuer: ISSUER, audiences: [MESH_AUDIENCE], clock: () => now });
    const counting = Object.assign(Object.create(verifier), { verify: (t: string) => (verifications++, verifier.verify(t)) }) as TokenVerifier;
    const auth = new TokenAuthenticator({ verifier: counting, clock: () => now });
    const token = await issuer.sign({}, { nowMs: now });
    const first = auth.verify(token);
    expect(first).to.be.instanceOf(Promise);
    expect((await first).ok).to.equal(true);
    const second = auth.verify(token);
    expect(second).not.to.be.instanceOf(Promise);
    expect((second as { ok: boolean }).ok).to.equal(true);
    expect(verifications).to.equal(1);
    now += 900_000 + 31_000;
    const late = await auth.verify(token);
    expect(late.ok).to.equal(false);
    expect(!late.ok && late.error.code).to.equal('ERR_TOKEN_EXPIRED');
  });
  it('does not cache failures', async () => {
    const issuer = await TestIssuer.create('k1');
    const verifier = new TokenVerifier({ keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)), issuer: ISSUER, audiences: [MESH_AUDIENCE] });
    const auth = new TokenAuthenticator({ verifier });
    const bad = await issuer.sign({ aud: 'spiffe://elsewhere' });
    expect((await auth.verify(bad)).ok).to.equal(false);
    expect(auth.cache.size).to.equal(0);
  });

  it('does not verify a forged signature again while the keys stay the same, for a short while only', async () => {
    const issuer = await TestIssuer.create('k1');
    const forger = await TestIssuer.create('k1'); // same kid, another private key
    let now = Date.now();
    let verifications = 0;
    const verifier = new TokenVerifier({ keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)), issuer: ISSUER, audiences: [MESH_AUDIENCE], clock: () => now });
    const counting = Object.assign(Object.create(verifier), { verify: (t: string) => (verifications++, verifier.verify(t)) }) as TokenVerifier;
    const cache = new TokenCache({ failureTtlMs: 30_000 });
    const auth = new TokenAuthenticator({ verifier: counting, cache, clock: () => now });
    const forged = await forger.sign({}, { nowMs: now });
    const first = await auth.verify(forged);
    expect(!first.ok && [first.error.code, first.error.message]).to.deep.equal(['ERR_TOKEN_INVALID', 'invalid token: signature does not verify']);
    const again = auth.verify(forged);
    expect(again, 'answered synchronously').not.to.be.instanceOf(Promise);
    expect(!(again as { ok: boolean }).ok && (again as { error: TwokeyError }).error.message).to.equal('invalid token: signature does not verify');
    expect(verifications).to.equal(1);
    expect(cache.size, 'never in the verified cache').to.equal(0);
    now += 30_000;
    expect((await auth.verify(forged)).ok).to.equal(false);
    expect(verifications, 'verified again after the TTL').to.equal(2);
    cache.clear();
    const afterClear = auth.verify(forged);
    expect(afterClear).to.be.instanceOf(Promise);
    expect((await afterClear).ok).to.equal(false);
    expect(verifications, 'verified again after the keys changed').to.equal(3);
  });

  it('verifies again every failure that could turn into a success: unknown kid, wrong audience', async () => {
    const k1 = await TestIssuer.create('k1');
    const k2 = await TestIssuer.create('k2');
    const published = [k1];
    const keys = new JwksKeySet({ fetch: async () => JSON.stringify(TestIssuer.jwks(...published)), cooldownMs: 0, refreshIntervalMs: 0 });
    await keys.start();
    const cache = new TokenCache();
    keys.addChangeListener(() => cache.clear());
    const auth = new TokenAuthenticator({ verifier: new TokenVerifier({ keys, issuer: ISSUER, audiences: [MESH_AUDIENCE] }), cache });
    const early = await k2.sign();
    const unknown = await auth.verify(early);
    expect(!unknown.ok && unknown.error.message).to.equal('invalid token: unknown signing key id');
    expect(!unknown.ok && unknown.error.untrusted).to.deep.equal({ kid: 'k2' });
    const second = auth.verify(early);
    expect(second, 'an unknown kid is looked up again').to.be.instanceOf(Promise);
    expect((await second).ok).to.equal(false);
    published.push(k2); // auth publishes its next key
    expect((await auth.verify(early)).ok).to.equal(true);
    const elsewhere = await k1.sign({ aud: 'spiffe://elsewhere' });
    expect((await auth.verify(elsewhere)).ok).to.equal(false);
    const elsewhereAgain = auth.verify(elsewhere);
    expect(elsewhereAgain, 'a claim failure is verified again').to.be.instanceOf(Promise);
    expect((await elsewhereAgain).ok).to.equal(false);
    keys.close();
  });

  it('forgets a remembered signature failure when the key its kid names is replaced', async () => {
    const before = await TestIssuer.create('k1');
    const after = await TestIssuer.create('k1'); // auth replaced k1's key, keeping the kid
    let published = before;
    const keys = new JwksKeySet({ fetch: async () => JSON.stringify(TestIssuer.jwks(published)), cooldownMs: 0, refreshIntervalMs: 0 });
    await keys.start();
    const cache = new TokenCache();
    keys.addChangeListener(() => cache.clear());
    const auth = new TokenAuthenticator({ verifier: new TokenVerifier({ keys, issuer: ISSUER, audiences: [MESH_AUDIENCE] }), cache });
    const token = await after.sign();
    expect((await auth.verify(token)).ok).to.equal(false);
    expect(auth.verify(token), 'remembered').not.to.be.instanceOf(Promise);
    published = after;
    await keys.refresh();
    expect((await auth.verify(token)).ok).to.equal(true);
    keys.close();
  });

  it('stores no outcome of a verification that started before the cache was cleared', async () => {
    const issuer = await TestIssuer.create('k1');
    const cache = new TokenCache();
    const generation = cache.generation;
    cache.clear();
    const verifier = new TokenVerifier({ keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)), issuer: ISSUER, audiences: [MESH_AUDIENCE] });
    const token = await issuer.sign();
    cache.set(token, await verifier.verify(token), generation);
    expect(cache.size).to.equal(0);
    cache.rememberFailure(token, new TwokeyError('ERR_TOKEN_INVALID', 'x'), Date.now(), generation);
    expect(cache.failure(token, Date.now())).to.equal(undefined);
  });
});
