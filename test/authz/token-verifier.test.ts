// Token verification: pinned algorithms, prechecks before crypto, claims and token-kind consistency.
import { expect } from 'chai';
import { StaticKeys } from '../../services/authz/jwks.ts';
import { TokenVerifier } from '../../services/authz/token-verifier.ts';
import { TokenCache } from '../../services/authz/token-cache.ts';
import { TwokeyError, type ErrorCode } from '../../services/authz/errors.ts';
import { ISSUER, MESH_AUDIENCE, TestIssuer } from './token-fixtures.ts';

const NOW = Date.parse('2026-01-01T12:00:00Z');
const STORE = 'spiffe://twokey.local/ns/twokey/sa/image-store';
const TAGGING = 'spiffe://twokey.local/ns/twokey/sa/tagging';
const THUMB = 'T'.repeat(43);

async function rejection(p: Promise<unknown>): Promise<TwokeyError> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(TwokeyError);
    return err as TwokeyError;
  }
  throw new Error('expected a rejection');
}

function b64(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

describe('TokenVerifier', () => {
  let issuer: TestIssuer;
  let ed: TestIssuer;
  let verifier: TokenVerifier;
  let now: number;

  before(async () => {
    issuer = await TestIssuer.create('k1');
    ed = await TestIssuer.create('k-ed', 'EdDSA');
  });
  beforeEach(async () => {
    now = NOW;
    verifier = new TokenVerifier({
      keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer, ed)),
      issuer: ISSUER,
      audiences: [MESH_AUDIENCE, STORE],
      clock: () => now,
    });
  });

  const sign = (claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}, by = issuer) =>
    by.sign(claims, { nowMs: NOW, header });
  const expectCode = async (token: string | Promise<string>, code: ErrorCode, message?: RegExp) => {
    const err = await rejection(verifier.verify(await token));
    expect(err.code, err.message).to.equal(code);
    if (message) expect(err.message).to.match(message);
    return err;
  };

  it('accepts a user token and returns its claims', async () => {
    const t = await verifier.verify(await sign());
    expect(t).to.include({ kind: 'user', subject: 'alice', issuer: ISSUER, audience: MESH_AUDIENCE });
    expect([...t.scopes]).to.deep.equal(['images:read', 'images:write']);
    expect(t.validUntilMs).to.equal(NOW + 900_000 + 30_000);
  });

  it('accepts EdDSA as well as ES256', async () => {
    expect((await verifier.verify(await sign({}, {}, ed))).kind).to.equal('user');
  });

  it('accepts a delegated token with its actor chain and binding', async () => {
    const t = await verifier.verify(await sign({ token_kind: 'delegated', aud: STORE, act: { sub: TAGGING }, cnf: { 'x5t#S256': THUMB } }));
    expect(t.actorChain).to.deep.equal([TAGGING]);
    expect(t.boundThumbprint).to.equal(THUMB);
  });

  it('accepts a service token whose subject is a SPIFFE ID', async () => {
    const t = await verifier.verify(await sign({ token_kind: 'service', sub: TAGGING, cnf: { 'x5t#S256': THUMB } }));
    expect(t).to.include({ kind: 'service', subject: TAGGING, boundThumbprint: THUMB });
  });

  describe('prechecks refuse before any crypto', () => {
    it('oversized tokens', async () => {
      await expectCode(sign({ pad: 'x'.repeat(9000) }), 'ERR_TOKEN_MALFORMED', /longer than 8192/);
    });
    it('anything but three base64url parts', async () => {
      await expectCode('a.b', 'ERR_TOKEN_MALFORMED', /compact JWS/);
      await expectCode('a.b.c.d.e', 'ERR_TOKEN_MALFORMED', /compact JWS/);
      await expectCode(`${b64({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })}.${b64({})}.`, 'ERR_TOKEN_MALFORMED', /compact JWS/);
    });
    for (const param of ['crit', 'b64', 'jku', 'jwk', 'x5u', 'x5c', 'x5t', 'zip', 'cty']) {
      it(`header parameter "${param}"`, async () => {
        const value = param === 'crit' ? ['exp'] : param === 'b64' ? false : 'https://evil.example/jwks';
        const token = `${b64({ alg: 'ES256', typ: 'at+jwt', kid: 'k1', [param]: value })}.${b64({ sub: 'alice' })}.c2ln`;
        await expectCode(token, 'ERR_TOKEN_MALFORMED', new RegExp(`"${param}" is not accepted`));
      });
    }
    it('does not echo an unknown header parameter; the log gets it without control characters, bounded', async () => {
      for (const name of ['\x1b[31mred', `${'\x1b[2J'.repeat(30)}long`]) {
        const token = `${b64({ alg: 'ES256', typ: 'at+jwt', kid: 'k1', [name]: 1 })}.${b64({ sub: 'alice' })}.c2ln`;
        const err = await expectCode(token, 'ERR_TOKEN_MALFORMED', /^malformed token: header parameter \(a name not registered for JWTs\) is not accepted$/);
        const logged = err.untrusted!['parameter']!;
        expect(logged).not.to.match(/[^\x20-\x7e]/);
        expect(logged.length).to.be.at.most(67);
        expect(logged).to.include(name.includes('red') ? '?[31mred' : '?[2J');
      }
    });
    it('alg none, HS256 and RS256 (algorithm pinning)', async () => {
      for (const alg of ['none', 'HS256', 'RS256', 'ES384', 'es256']) {
        const token = `${b64({ alg, typ: 'at+jwt', kid: 'k1' })}.${b64({ sub: 'alice' })}.c2ln`;
        await expectCode(token, 'ERR_TOKEN_MALFORMED', /"alg" must be one of ES256, EdDSA/);
      }
    });
    it('a non-string or missing kid', async () => {
      await expectCode(`${b64({ alg: 'ES256', typ: 'at+jwt', kid: 7 })}.${b64({})}.c2ln`, 'ERR_TOKEN_MALFORMED', /"kid"/);
      await expectCode(`${b64({ alg: 'ES256', typ: 'at+jwt' })}.${b64({})}.c2ln`, 'ERR_TOKEN_MALFORMED', /"kid"/);
    });
    it('a header or payload that is not a JSON object', async () => {
      await expectCode(`${b64('[1]')}.${b64({})}.c2ln`, 'ERR_TOKEN_MALFORMED', /header is not a JSON object/);
      await expectCode(`${b64('{"alg":')}.${b64({})}.c2ln`, 'ERR_TOKEN_MALFORMED', /header is not UTF-8 JSON/);
      await expectCode(`${b64({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })}.${b64('"x"')}.c2ln`, 'ERR_TOKEN_MALFORMED', /payload is not a JSON object/);
    });
    it('claims nested too deep or too many', async () => {
      let nested: unknown = 'x';
      for (let i = 0; i < 12; i++) nested = { a: nested };
      await expectCode(sign({ deep: nested }), 'ERR_TOKEN_MALFORMED', /nested deeper/);
      const many = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`c${i}`, i]));
      await expectCode(sign(many), 'ERR_TOKEN_MALFORMED', /more than 32 claims/);
    });
    it('error messages never echo the token', async () => {
      const token = await sign({ aud: 'spiffe://elsewhere' });
      const err = await expectCode(token, 'ERR_TOKEN_INVALID');
      expect(err.message).not.to.contain(token.split('.')[2]!);
      expect(err.message).not.to.contain(token.split('.')[1]!);
    });
  });

  describe('signature, header and registered claims', () => {
    it('a signature by a key not in the set (same kid)', async () => {
      const impostor = await TestIssuer.create('k1');
      await expectCode(sign({}, {}, impostor), 'ERR_TOKEN_INVALID', /signature does not verify/);
    });
    it('a tampered payload', async () => {
      const [h, , s] = (await sign()).split('.');
      await expectCode(`${h}.${b64({ sub: 'mallory', iss: ISSUER })}.${s}`, 'ERR_TOKEN_INVALID');
    });
    it('an unknown kid', async () => {
      const err = await expectCode(sign({}, { kid: 'nope' }), 'ERR_TOKEN_INVALID', /^invalid token: unknown signing key id$/);
      expect(err.untrusted).to.deep.equal({ kid: 'nope' });
    });
    it('an algorithm other than the key\'s', async () => {
      await expectCode(sign({}, { kid: 'k-ed' }), 'ERR_TOKEN_INVALID', /not an ES256 key/);
    });
    it('typ other than at+jwt', async () => {
      await expectCode(sign({}, { typ: 'JWT' }), 'ERR_TOKEN_INVALID', /typ/);
    });
    it('another issuer', async () => {
      await expectCode(sign({ iss: 'https://evil.example' }), 'ERR_TOKEN_INVALID', /iss/);
    });
    for (const claim of ['iss', 'sub', 'aud', 'exp', 'iat', 'jti']) {
      it(`a missing "${claim}"`, async () => {
        await expectCode(sign({ [claim]: undefined }), 'ERR_TOKEN_INVALID', new RegExp(claim));
      });
    }
    it('an audience not accepted here, or more than one', async () => {
      await expectCode(sign({ aud: 'spiffe://twokey.local/ns/twokey/sa/cleaner' }), 'ERR_TOKEN_INVALID', /audience .* is not accepted/);
      await expectCode(sign({ aud: [MESH_AUDIENCE, STORE] }), 'ERR_TOKEN_INVALID', /exactly one audience/);
      expect((await verifier.verify(await sign({ aud: [STORE] }))).audience).to.equal(STORE);
    });
    it('expiry with 30 s leeway', async () => {
      const token = await sign();
      now = NOW + 900_000 + 29_000;
      await verifier.verify(token);
      now = NOW + 900_000 + 31_000;
      await expectCode(token, 'ERR_TOKEN_EXPIRED');
    });
    it('nbf and iat in the future beyond the leeway', async () => {
      now = NOW - 60_000;
      await expectCode(sign(), 'ERR_TOKEN_INVALID', /nbf|iat/);
      await expectCode(sign({ nbf: undefined }), 'ERR_TOKEN_INVALID', /iat/);
    });
    it('a lifetime beyond the maximum', async () => {
      await expectCode(sign({ exp: Math.floor(NOW / 1000) + 2 * 86400 }), 'ERR_TOKEN_INVALID', /lifetime/);
    });
    it('a short or odd jti', async () => {
      await expectCode(sign({ jti: 'abc' }), 'ERR_TOKEN_INVALID', /jti/);
      await expectCode(sign({ jti: 12345678901234567890 }), 'ERR_TOKEN_INVALID', /jti/);
    });
    it('ill-formed scope', async () => {
      await expectCode(sign({ scope: ['images:read'] }), 'ERR_TOKEN_INVALID', /scope/);
      await expectCode(sign({ scope: 'images:read  images:write' }), 'ERR_TOKEN_INVALID', /scope/);
      await expectCode(sign({ scope: 'images:"read' }), 'ERR_TOKEN_INVALID', /scope/);
    });
  });

  describe('token kind consistency', () => {
    it('token_kind is required and closed', async () => {
      await expectCode(sign({ token_kind: undefined }), 'ERR_TOKEN_INVALID', /token_kind/);
      await expectCode(sign({ token_kind: 'admin' }), 'ERR_TOKEN_INVALID', /token_kind/);
    });
    it('a user token with act or cnf', async () => {
      await expectCode(sign({ act: { sub: TAGGING } }), 'ERR_TOKEN_INVALID', /user token carries no/);
      await expectCode(sign({ cnf: { 'x5t#S256': THUMB } }), 'ERR_TOKEN_INVALID', /user token carries no/);
    });
    it('a user token whose subject looks like a SPIFFE ID', async () => {
      await expectCode(sign({ sub: TAGGING }), 'ERR_TOKEN_INVALID', /not a username/);
    });
    it('a delegated token addressed to anyone but this service, when the service says who it is', async () => {
    const own = new TokenVerifier({ keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)), issuer: ISSUER, audiences: [MESH_AUDIENCE, STORE], delegatedAudience: STORE, clock: () => now });
    const claims = { token_kind: 'delegated', act: { sub: TAGGING }, cnf: { 'x5t#S256': THUMB } };
    expect((await own.verify(await sign({ ...claims, aud: STORE }))).audience).to.equal(STORE);
    const err = await rejection(own.verify(await sign({ ...claims, aud: MESH_AUDIENCE })));
    expect(err.message).to.match(/must be addressed to this service/);
  });

  it('a delegated token addressed to the whole trust domain, even when the verifier serves no one service', async () => {
    const claims = { token_kind: 'delegated', act: { sub: TAGGING }, cnf: { 'x5t#S256': THUMB } };
    expect((await verifier.verify(await sign({ ...claims, aud: STORE }))).audience).to.equal(STORE);
    await expectCode(sign({ ...claims, aud: MESH_AUDIENCE }), 'ERR_TOKEN_INVALID', /must be addressed to one service, not the whole trust domain/);
  });

  it('a delegated token without act, without cnf, or with a bad actor', async () => {
      const base = { token_kind: 'delegated', aud: STORE };
      await expectCode(sign({ ...base, cnf: { 'x5t#S256': THUMB } }), 'ERR_TOKEN_INVALID', /actor/);
      await expectCode(sign({ ...base, act: { sub: TAGGING } }), 'ERR_TOKEN_INVALID', /cnf/);
      await expectCode(sign({ ...base, act: { sub: 'tagging' }, cnf: { 'x5t#S256': THUMB } }), 'ERR_TOKEN_INVALID', /act.sub/);
      await expectCode(sign({ ...base, act: { sub: TAGGING, role: 'x' }, cnf: { 'x5t#S256': THUMB } }), 'ERR_TOKEN_INVALID', /"act" may hold only/);
      await expectCode(sign({ ...base, act: { sub: TAGGING }, cnf: { 'x5t#S256': THUMB, jkt: 'x' } }), 'ERR_TOKEN_INVALID', /cnf/);
    });
    it('a delegation chain deeper than the maximum', async () => {
      let act: Record<string, unknown> = { sub: TAGGING };
      for (let i = 0; i < 4; i++) act = { sub: TAGGING, act };
      await expectCode(sign({ token_kind: 'delegated', act, cnf: { 'x5t#S256': THUMB } }), 'ERR_TOKEN_INVALID', /deeper than 4/);
    });
    it('a service token whose subject is a username, or with act, or unbound', async () => {
      await expectCode(sign({ token_kind: 'service', cnf: { 'x5t#S256': THUMB } }), 'ERR_TOKEN_INVALID', /"sub" is not a SPIFFE ID/);
      await expectCode(sign({ token_kind: 'service', sub: TAGGING, act: { sub: TAGGING }, cnf: { 'x5t#S256': THUMB } }), 'ERR_TOKEN_INVALID', /no "act"/);
      await expectCode(sign({ token_kind: 'service', sub: TAGGING }), 'ERR_TOKEN_INVALID', /bound/);
    });
  });
});

describe('TokenCache', () => {
  const verified = (validUntilMs: number) => ({
    kind: 'user' as const, subject: 'alice', issuer: ISSUER, audience: MESH_AUDIENCE, jti: 'j'.repeat(22),
    scopes: new Set<string>(), actorChain: [], boundThumbprint: undefined, clientId: undefined, validFromMs: 0, validUntilMs,
  });
  it('returns a cached token only while it is valid, and never for other bytes', () => {
    const cache = new TokenCache({ maxEntries: 4 });
    cache.set('tok-a', verified(1000));
    expect(cache.get('tok-a', 999)?.subject).to.equal('alice');
    expect(cache.get('tok-a ', 999)).to.equal(undefined);
    expect(cache.get('tok-a', 1000)).to.equal(undefined);
    expect(cache.size).to.equal(0);
  });
  it('evicts the least recently used beyond its bound', () => {
    const cache = new TokenCache({ maxEntries: 2 });
    cache.set('a', verified(10));
    cache.set('b', verified(10));
    cache.get('a', 0);
    cache.set('c', verified(10));
    expect(cache.get('b', 0)).to.equal(undefined);
    expect(cache.get('a', 0)).to.not.equal(undefined);
    expect(cache.size).to.equal(2);
  });
});
