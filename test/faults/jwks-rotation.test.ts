// Key rotation against the JWKS key set's refetch rules, with an injected clock: when may a new kid be refused?
import { expect } from 'chai';
import type { JWK } from 'jose';
import type { TwokeyError } from '../../services/authz/errors.ts';
import { JwksKeySet } from '../../services/authz/jwks.ts';
import { TokenVerifier } from '../../services/authz/token-verifier.ts';
import { ISSUER, MESH_AUDIENCE } from '../authz/token-fixtures.ts';
import { userClaims } from '../adversarial/hostile-tokens.ts';
import { RawSigner } from '../adversarial/jws.ts';

describe('faults: signing-key rotation and the JWKS refetch cooldown', () => {
  const k1 = RawSigner.create('k1');
  const k2 = RawSigner.create('k2');
  const attacker = RawSigner.create('forged');
  let published: JWK[];
  let fetches: number;
  let now: number;
  let keys: JwksKeySet;
  let verifier: TokenVerifier;
  const token = (by: RawSigner) => {
    const s = Math.floor(now / 1000);
    return by.sign(by.header(), userClaims({ iat: s, nbf: s, exp: s + 600 }));
  };

  beforeEach(async () => {
    published = [k1.publicJwk];
    fetches = 0;
    now = Date.parse('2026-06-01T00:00:00Z');
    keys = new JwksKeySet({
      fetch: async () => {
        fetches += 1;
        return { keys: published };
      },
      clock: () => now,
      cooldownMs: 5000,
      refreshIntervalMs: 0,
    });
    await keys.start();
    verifier = new TokenVerifier({ keys, issuer: ISSUER, audiences: [MESH_AUDIENCE], clock: () => now });
  });
  afterEach(() => keys.close());

  it('a rotation just after a periodic background refresh: the first new-key token is accepted', async () => {
    now += 60_000;
    // The periodic refresh (the same call the background timer makes) happens, then auth rotates.
    await keys.refresh();
    published = [k2.publicJwk, k1.publicJwk];
    now += 1000;
    const t = await verifier.verify(token(k2));
    expect(t.subject).to.equal('alice');
    expect(fetches).to.equal(3);
  });

  it('unknown kids still trigger at most one refetch per cooldown, whatever the background refreshes do', async () => {
    now += 60_000;
    const forged = Array.from({ length: 50 }, () => token(attacker));
    await Promise.allSettled(forged.map((t) => verifier.verify(t)));
    expect(fetches).to.equal(2);
    await keys.refresh();
    now += 4999;
    await Promise.allSettled(forged.map((t) => verifier.verify(t)));
    expect(fetches).to.equal(3);
    now += 1;
    await Promise.allSettled(forged.map((t) => verifier.verify(t)));
    expect(fetches).to.equal(4);
  });

  it('under a flood of forged kids, a rotation is learned within one cooldown (the bound the mesh fault test measures)', async () => {
    now += 60_000;
    await Promise.allSettled([token(attacker)].map((t) => verifier.verify(t)));
    published = [k2.publicJwk, k1.publicJwk];
    now += 100;
    const early = await verifier.verify(token(k2)).then(() => 'accepted', (e: TwokeyError) => `${e.message} ${JSON.stringify(e.untrusted)}`);
    expect(early).to.equal('invalid token: unknown signing key id {"kid":"k2"}');
    now += 4900;
    expect((await verifier.verify(token(k2))).subject).to.equal('alice');
  });
});
