// Reading the one bearer token of a call, and verifying it once.
import { expect } from 'chai';
import { Metadata } from '@grpc/grpc-js';
import { StaticKeys } from '../../services/authz/jwks.ts';
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
    try {
      bearerToken(md('Token secret-value-123'));
    } catch (err) {
      expect((err as Error).message).not.to.contain('secret-value-123');
    }
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
});
