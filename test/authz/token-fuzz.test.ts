// Generated inputs: the verifier rejects every altered or arbitrary token with a TwokeyError, never anything else.
import { expect } from 'chai';
import fc from 'fast-check';
import { StaticKeys } from '../../services/authz/jwks.ts';
import { TokenVerifier } from '../../services/authz/token-verifier.ts';
import { TwokeyError } from '../../services/authz/errors.ts';
import { ISSUER, MESH_AUDIENCE, TestIssuer } from './token-fixtures.ts';

describe('token verifier under generated input', () => {
  let issuer: TestIssuer;
  let verifier: TokenVerifier;
  let valid: string;

  before(async () => {
    issuer = await TestIssuer.create('k1');
    verifier = new TokenVerifier({ keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)), issuer: ISSUER, audiences: [MESH_AUDIENCE] });
    valid = await issuer.sign();
    expect((await verifier.verify(valid)).subject).to.equal('alice');
  });

  const rejectsWithTwokeyError = async (token: string) => {
    try {
      await verifier.verify(token);
    } catch (err) {
      return err instanceof TwokeyError && ['ERR_TOKEN_MALFORMED', 'ERR_TOKEN_INVALID', 'ERR_TOKEN_EXPIRED'].includes(err.code);
    }
    return false;
  };

  it('rejects any single-character change of a valid token', async () => {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ';
    await fc.assert(
      fc.asyncProperty(fc.nat(), fc.constantFrom(...alphabet), async (pos, ch) => {
        const i = pos % valid.length;
        fc.pre(valid[i] !== ch);
        return rejectsWithTwokeyError(valid.slice(0, i) + ch + valid.slice(i + 1));
      }),
      { numRuns: 300 },
    );
  });

  it('rejects arbitrary strings and arbitrary three-part strings', async () => {
    await fc.assert(fc.asyncProperty(fc.string({ maxLength: 300 }), rejectsWithTwokeyError), { numRuns: 200 });
    const part = fc.base64String({ maxLength: 120 }).map((s) => s.replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_'));
    await fc.assert(fc.asyncProperty(part, part, part, async (a, b, c) => rejectsWithTwokeyError(`${a}.${b}.${c}`)), { numRuns: 200 });
  });

  it('rejects valid signatures over arbitrary JSON claims that break the token contract', async () => {
    const claims = fc.dictionary(fc.constantFrom('sub', 'aud', 'exp', 'iat', 'jti', 'scope', 'token_kind', 'act', 'cnf', 'iss'), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 6 });
    await fc.assert(
      fc.asyncProperty(claims, async (c) => {
        // The generated claims replace the valid defaults; "sub" is forced to something invalid for every kind.
        const token = await issuer.sign({ ...c, sub: ['', 'Alice', 'spiffe://'][Object.keys(c).length % 3] });
        return rejectsWithTwokeyError(token);
      }),
      { numRuns: 100 },
    );
  });
});
