// Token pre-checks and verification: only typed errors, no malleability, and no claim set the contract forbids gets through.
import { expect } from 'chai';
import fc from 'fast-check';
import * as grpc from '@grpc/grpc-js';
import { isIdentityClaiming, stripIdentityMetadata } from '../../services/authz/identity-metadata.ts';
import { bearerToken } from '../../services/authz/token-authenticator.ts';
import type { ErrorCode } from '../../services/authz/errors.ts';
import { StaticKeys } from '../../services/authz/jwks.ts';
import { TokenVerifier, precheck } from '../../services/authz/token-verifier.ts';
import { ISSUER, MESH_AUDIENCE } from '../authz/token-fixtures.ts';
import { RawSigner, jti } from '../adversarial/jws.ts';
import { RUNS, mutated, typedOutcome, typedOutcomeAsync } from './arbitraries.ts';

const NOW = Date.parse('2026-03-01T10:00:00Z');
const NOW_S = NOW / 1000;
const LEEWAY = 30;
const SELF = 'spiffe://twokey.local/ns/twokey/sa/image-store';
const OTHER = 'spiffe://twokey.local/ns/twokey/sa/tagging';
const THUMB = 'A'.repeat(43);
const TOKEN_ERRORS: readonly ErrorCode[] = ['ERR_TOKEN_MALFORMED', 'ERR_TOKEN_INVALID', 'ERR_TOKEN_EXPIRED'];
const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'.split('');

type Claims = Record<string, unknown>;
// An undefined claim is left out of the signed token (JSON drops it); values never depend on other claims.
type Edit = (c: Claims) => void;

// Each edit alone turns a valid user token into one the token contract forbids.
const DEFECTS: Record<string, Edit> = {
  'iss other': (c) => (c['iss'] = 'https://evil.example'),
  'iss trailing slash': (c) => (c['iss'] = `${ISSUER}/`),
  'iss missing': (c) => (c['iss'] = undefined),
  'sub missing': (c) => (c['sub'] = undefined),
  'sub empty': (c) => (c['sub'] = ''),
  'sub number': (c) => (c['sub'] = 7),
  'sub array': (c) => (c['sub'] = ['alice']),
  'sub looks like a workload': (c) => ((c['token_kind'] = 'user'), (c['sub'] = OTHER)),
  'sub uppercase': (c) => (c['sub'] = 'Alice'),
  'aud missing': (c) => (c['aud'] = undefined),
  'aud other service': (c) => (c['aud'] = OTHER),
  'aud two': (c) => (c['aud'] = [MESH_AUDIENCE, OTHER]),
  'aud empty array': (c) => (c['aud'] = []),
  'aud number': (c) => (c['aud'] = 1),
  'exp missing': (c) => (c['exp'] = undefined),
  'exp string': (c) => (c['exp'] = String(NOW_S + 890)),
  'exp fractional': (c) => (c['exp'] = NOW_S + 890.5),
  'exp beyond leeway': (c) => ((c['exp'] = NOW_S - LEEWAY - 1), (c['iat'] = NOW_S - 600), (c['nbf'] = NOW_S - 600)),
  'iat missing': (c) => (c['iat'] = undefined),
  'iat string': (c) => (c['iat'] = String(NOW_S - 10)),
  'iat future': (c) => ((c['iat'] = NOW_S + LEEWAY + 5), (c['exp'] = NOW_S + 900)),
  'exp not after iat': (c) => ((c['iat'] = NOW_S - 10), (c['exp'] = NOW_S - 10)),
  'lifetime too long': (c) => ((c['iat'] = NOW_S - 10), (c['exp'] = NOW_S - 10 + 86400 + 1)),
  'exp far future': (c) => (c['exp'] = NOW_S + 10 * 365 * 86400),
  'nbf string': (c) => (c['nbf'] = String(NOW_S - 10)),
  'nbf future': (c) => (c['nbf'] = NOW_S + LEEWAY + 5),
  'jti missing': (c) => (c['jti'] = undefined),
  'jti short': (c) => (c['jti'] = 'abc'),
  'jti number': (c) => (c['jti'] = 1234567890123456789),
  'jti padded': (c) => (c['jti'] = 'AAAAAAAAAAAAAAAAAAAAAA=='),
  'token_kind missing': (c) => (c['token_kind'] = undefined),
  'token_kind unknown': (c) => (c['token_kind'] = 'admin'),
  'token_kind case': (c) => (c['token_kind'] = 'User'),
  'scope array': (c) => (c['scope'] = ['images:read']),
  'scope double space': (c) => (c['scope'] = 'a  b'),
  'scope leading space': (c) => (c['scope'] = ' a'),
  'scope quote': (c) => (c['scope'] = 'a"b'),
  'user with act': (c) => ((c['token_kind'] = 'user'), (c['act'] = { sub: OTHER })),
  'user with cnf': (c) => ((c['token_kind'] = 'user'), (c['cnf'] = { 'x5t#S256': THUMB })),
  'client_id not SPIFFE': (c) => (c['client_id'] = 'tagging'),
  'client_id number': (c) => (c['client_id'] = 3),
  // Kind-changing defects set every member their kind needs, so no two of them combine into a valid token.
  'delegated without act': (c) => ((c['token_kind'] = 'delegated'), (c['act'] = undefined), (c['cnf'] = { 'x5t#S256': THUMB })),
  'delegated without cnf': (c) => ((c['token_kind'] = 'delegated'), (c['act'] = { sub: OTHER }), (c['cnf'] = undefined)),
  'delegated cnf extra member': (c) => ((c['token_kind'] = 'delegated'), (c['act'] = { sub: OTHER }), (c['cnf'] = { 'x5t#S256': THUMB, jkt: 'x' })),
  'delegated act extra member': (c) => ((c['token_kind'] = 'delegated'), (c['act'] = { sub: OTHER, scope: 'all' }), (c['cnf'] = { 'x5t#S256': THUMB })),
  'delegated act.sub username': (c) => ((c['token_kind'] = 'delegated'), (c['act'] = { sub: 'tagging' }), (c['cnf'] = { 'x5t#S256': THUMB })),
  'delegated chain too deep': (c) => {
    c['token_kind'] = 'delegated';
    c['cnf'] = { 'x5t#S256': THUMB };
    let act: Claims = { sub: OTHER };
    for (let i = 0; i < 4; i++) act = { sub: OTHER, act };
    c['act'] = act;
  },
  'delegated short thumbprint': (c) => ((c['token_kind'] = 'delegated'), (c['act'] = { sub: OTHER }), (c['cnf'] = { 'x5t#S256': 'abc' })),
  'service sub username': (c) => ((c['token_kind'] = 'service'), (c['sub'] = 'alice'), (c['act'] = undefined), (c['cnf'] = { 'x5t#S256': THUMB })),
  'service with act': (c) => ((c['token_kind'] = 'service'), (c['sub'] = OTHER), (c['act'] = { sub: OTHER }), (c['cnf'] = { 'x5t#S256': THUMB })),
  'service without cnf': (c) => ((c['token_kind'] = 'service'), (c['sub'] = OTHER), (c['act'] = undefined), (c['cnf'] = undefined)),
};

// Edits the contract allows: the token must still verify.
const BENIGN: Record<string, Edit> = {
  'unknown claim': (c) => (c['department'] = 'photos'),
  'no scope': (c) => (c['scope'] = undefined),
  'empty scope': (c) => (c['scope'] = ''),
  'any scope': (c) => (c['scope'] = 'images:read:any images:write'),
  'own audience': (c) => (c['aud'] = SELF),
  'audience in a one-element array': (c) => (c['aud'] = [MESH_AUDIENCE]),
  'nbf within leeway': (c) => (c['nbf'] = NOW_S + LEEWAY - 5),
  'no nbf': (c) => (c['nbf'] = undefined),
  'expired within leeway': (c) => ((c['exp'] = NOW_S - LEEWAY + 5), (c['iat'] = NOW_S - 600), (c['nbf'] = NOW_S - 600)),
  'client_id of a workload': (c) => (c['client_id'] = OTHER),
};

describe('property: token pre-checks and verification', function () {
  this.timeout(60_000);
  const issuer = RawSigner.create('k1');
  let verifier: TokenVerifier;
  let keyLookups = 0;

  before(async () => {
    const keys = await StaticKeys.fromJwks({ keys: [issuer.publicJwk] });
    verifier = new TokenVerifier({
      keys: { keyFor: (kid, alg) => ((keyLookups += 1), keys.keyFor(kid, alg)) },
      issuer: ISSUER,
      audiences: [MESH_AUDIENCE, SELF],
      clock: () => NOW,
      leewaySeconds: LEEWAY,
    });
  });

  const base = (): Claims => ({
    iss: ISSUER,
    sub: 'alice',
    aud: MESH_AUDIENCE,
    iat: NOW_S - 10,
    nbf: NOW_S - 10,
    exp: NOW_S + 890,
    jti: jti(),
    scope: 'images:read images:write',
    token_kind: 'user',
  });
  const sign = async (claims: Claims) => issuer.sign(issuer.header(), claims);

  it('precheck throws nothing but ERR_TOKEN_MALFORMED on arbitrary strings and values', () => {
    const anyValue = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.string({ unit: 'binary', maxLength: 200 }),
      fc.array(fc.string({ unit: fc.constantFrom(...B64URL), maxLength: 60 }), { minLength: 1, maxLength: 6 }).map((p) => p.join('.')),
      fc.tuple(fc.jsonValue(), fc.jsonValue()).map(([h, p]) => `${b64(h)}.${b64(p)}.c2ln`),
      fc.anything(),
    );
    fc.assert(
      fc.property(anyValue, (value) => {
        typedOutcome(() => precheck(value), ['ERR_TOKEN_MALFORMED']);
      }),
      { numRuns: RUNS * 4 },
    );
  });

  it('a header with any parameter besides alg, typ and kid, or any other alg, is refused before a key is looked up', async () => {
    const param = fc.oneof(
      fc.constantFrom('crit', 'b64', 'jku', 'jwk', 'x5u', 'x5c', 'x5t', 'x5t#S256', 'zip', 'cty', 'enc', 'epk', 'p2s', 'nonce', 'url', '__proto__', 'constructor', 'ALG', 'Kid'),
      fc.string({ minLength: 1, maxLength: 8 }).filter((s) => !['alg', 'typ', 'kid'].includes(s)),
    );
    const alg = fc.oneof(fc.constantFrom('none', 'None', 'NONE', 'nOnE', 'HS256', 'RS256', 'PS256', 'ES384', 'ES256K', 'es256', 'ES256 ', 'Ed25519', 'eddsa', ''), fc.string({ maxLength: 8 }));
    await fc.assert(
      fc.asyncProperty(param, fc.jsonValue(), alg, fc.boolean(), async (name, value, badAlg, useParam) => {
        const header = useParam
          ? `{"alg":"ES256","typ":"at+jwt","kid":"k1",${JSON.stringify(name)}:${JSON.stringify(value) ?? 'null'}}`
          : JSON.stringify({ alg: badAlg, typ: 'at+jwt', kid: 'k1' });
        if (!useParam && (badAlg === 'ES256' || badAlg === 'EdDSA')) return;
        const token = `${b64(header)}.${b64({ sub: 'alice' })}.c2ln`;
        const before = keyLookups;
        const out = await typedOutcomeAsync(() => verifier.verify(token), ['ERR_TOKEN_MALFORMED']);
        expect(out.ok).to.equal(false);
        expect(keyLookups).to.equal(before);
      }),
      { numRuns: RUNS },
    );
  });

  it('any change to a valid token\'s text makes it fail, with a typed error (no malleable spelling)', async () => {
    const valid = await sign(base());
    await verifier.verify(valid);
    await fc.assert(
      fc.asyncProperty(mutated(fc.constant(valid), [...B64URL, '.', '=', '+', '/', ' ', '\n', '%']), async (token) => {
        if (token === valid) return;
        const out = await typedOutcomeAsync(() => verifier.verify(token), TOKEN_ERRORS);
        expect(out.ok, token).to.equal(false);
      }),
      { numRuns: RUNS },
    );
    // The last character of each part carries spare bits: every other spelling must be refused.
    const parts = valid.split('.');
    for (let part = 0; part < 3; part++) {
      for (const c of B64URL) {
        const edited = [...parts];
        edited[part] = parts[part]!.slice(0, -1) + c;
        const token = edited.join('.');
        if (token === valid) continue;
        const out = await typedOutcomeAsync(() => verifier.verify(token), TOKEN_ERRORS);
        expect(out.ok, `part ${part} ending ${c}`).to.equal(false);
      }
    }
  });

  it('a validly signed claim set with any forbidden claim is refused; the allowed variations verify', async () => {
    const defectNames = Object.keys(DEFECTS);
    const benignNames = Object.keys(BENIGN);
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.constantFrom(...defectNames), { maxLength: 3 }),
        fc.uniqueArray(fc.constantFrom(...benignNames), { maxLength: 2 }),
        async (defects, benign) => {
          const claims = base();
          for (const name of benign) BENIGN[name]!(claims);
          for (const name of defects) DEFECTS[name]!(claims);
          const token = await sign(claims);
          const out = await typedOutcomeAsync(() => verifier.verify(token), TOKEN_ERRORS);
          const label = `defects ${JSON.stringify(defects)} benign ${JSON.stringify(benign)}`;
          expect(out.ok, `${label}: ${out.ok ? 'accepted' : out.error.message}`).to.equal(defects.length === 0);
          if (out.ok) {
            expect(out.value.subject).to.equal('alice');
            expect(out.value.kind).to.equal('user');
            expect(out.value.validUntilMs).to.be.greaterThan(NOW);
          }
        },
      ),
      { numRuns: RUNS },
    );
    // Each defect alone, so none hides behind another in the random combinations.
    for (const [name, edit] of Object.entries(DEFECTS)) {
      const claims = base();
      edit(claims);
      const out = await typedOutcomeAsync(async () => verifier.verify(await sign(claims)), TOKEN_ERRORS);
      expect(out.ok, name).to.equal(false);
    }
  });

  it('random claim values never verify as anything but what they say', async () => {
    const claimValue = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constant(undefined));
    const names = ['sub', 'aud', 'exp', 'iat', 'nbf', 'jti', 'scope', 'token_kind', 'act', 'cnf', 'client_id'];
    // Only what passes is checked, so count both branches: all refused would make the check vacuous.
    const took = { accepted: 0, refused: 0 };
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...names), claimValue, async (name, value) => {
        const claims = base();
        claims[name] = value;
        const token = await sign(claims);
        const out = await typedOutcomeAsync(() => verifier.verify(token), TOKEN_ERRORS);
        if (!out.ok) {
          took.refused += 1;
          return;
        }
        took.accepted += 1;
        const t = out.value;
        // Whatever passed is a consistent token of the contract.
        expect(['user', 'delegated', 'service']).to.include(t.kind);
        expect([MESH_AUDIENCE, SELF]).to.include(t.audience);
        expect(t.validUntilMs).to.be.greaterThan(NOW);
        expect(t.validFromMs).to.be.at.most(NOW);
        if (t.kind === 'user') expect(t.subject).to.match(/^[a-z][a-z0-9._-]{0,63}$/);
        if (t.kind !== 'user') expect(t.boundThumbprint).to.match(/^[A-Za-z0-9_-]{43}$/);
        for (const s of t.scopes) expect(s).to.match(/^[\x21\x23-\x5b\x5d-\x7e]+$/);
      }),
      { numRuns: RUNS },
    );
    expect(took.accepted, 'random claims that verified').to.be.greaterThan(0);
    expect(took.refused, 'random claims that were refused').to.be.greaterThan(0);
  });
});

function b64(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value) ?? 'null').toString('base64url');
}

describe('property: the authorization value and identity metadata', () => {
  const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 40 });

  it('bearerToken returns exactly the token of "Bearer <base64url and dots>", and refuses everything else with ERR_TOKEN_MALFORMED', () => {
    const value = fc.oneof(
      printable,
      printable.map((s) => `Bearer ${s}`),
      fc.array(fc.constantFrom(...'ABCxyz019-_.'.split('')), { minLength: 1, maxLength: 30 }).map((cs) => `Bearer ${cs.join('')}`),
      mutated(fc.constant('Bearer abc.def.ghi'), [' ', 'b', 'B', '=', '+', '/', ',', '.', '~']),
    );
    fc.assert(
      fc.property(value, (v) => {
        const md = new grpc.Metadata();
        // grpc-js itself refuses values outside printable ASCII, so such a value never arrives.
        if (!/^[\x20-\x7e]*$/.test(v)) return;
        md.set('authorization', v);
        const out = typedOutcome(() => bearerToken(md), ['ERR_TOKEN_MALFORMED']);
        const rest = v.startsWith('Bearer ') ? v.slice('Bearer '.length) : null;
        const ok = rest !== null && rest.length > 0 && [...rest].every((c) => /[A-Za-z0-9._-]/.test(c));
        expect(out.ok, JSON.stringify(v)).to.equal(ok);
        if (out.ok) expect(out.value).to.equal(rest);
      }),
      { numRuns: RUNS * 2 },
    );
  });

  it('identity-claiming metadata never survives stripping, whatever its case or suffix; other keys always do', () => {
    const claiming = ['x-forwarded-client-cert', 'x-spiffe-id', 'x-user', 'x-remote-user', 'x-jwt-payload', 'x-twokey-', 'x-amzn-oidc-', 'x-goog-iap-', 'x-ms-client-principal', 'x-consumer-', 'ssl-client-', 'x-ssl-'];
    const suffix = fc.string({ unit: fc.constantFrom(...'abcxyz-019'.split('')), maxLength: 8 });
    const key = fc.oneof(
      fc.tuple(fc.constantFrom(...claiming), suffix).map(([p, s]) => ({ key: `${p}${s}`, claims: true })),
      fc.tuple(fc.constantFrom('x-request-id', 'traceparent', 'content-language', 'x-b3-', 'grpc-accept-'), suffix).map(([p, s]) => ({ key: `${p}${s}`, claims: false })),
    );
    const took = { stripped: 0, kept: 0 };
    fc.assert(
      fc.property(fc.uniqueArray(key, { selector: (k) => k.key, maxLength: 8 }), fc.boolean(), (keys, keepAuthorization) => {
        const md = new grpc.Metadata();
        md.set('authorization', 'Bearer a.b.c');
        for (const k of keys) md.set(k.key, 'v');
        const clean = Object.keys(stripIdentityMetadata(md, { keepAuthorization }).getMap());
        for (const k of keys) {
          // The oracle is the naive list below, not the function under test.
          const expectKept = !k.claims && !naiveIdentityClaiming(k.key);
          expect(clean.includes(k.key), k.key).to.equal(expectKept);
          if (expectKept) took.kept += 1;
          else took.stripped += 1;
        }
        for (const k of keys) if (k.claims) expect(isIdentityClaiming(k.key.toUpperCase()), k.key).to.equal(true);
        expect(clean.includes('authorization')).to.equal(keepAuthorization);
      }),
      { numRuns: RUNS },
    );
    expect(took.stripped, 'generated keys stripped').to.be.greaterThan(0);
    expect(took.kept, 'generated keys kept').to.be.greaterThan(0);
  });

  it('isIdentityClaiming agrees with the naive list on every listed name, its case and suffixes, and on look-alikes', () => {
    const lookAlike = fc.tuple(fc.constantFrom(...NAIVE_PREFIXES, ...NAIVE_EXACT), fc.string({ unit: fc.constantFrom(...'ab-_xX019'.split('')), maxLength: 6 }), fc.constantFrom('', 'y', 'y-', '-')).map(
      ([name, extra, head]) => `${head}${name}${extra}`,
    );
    const took = { claiming: 0, other: 0 };
    fc.assert(
      fc.property(fc.oneof(lookAlike, lookAlike.map((k) => k.toUpperCase()), fc.string({ maxLength: 20 })), (key) => {
        const expected = naiveIdentityClaiming(key);
        expect(isIdentityClaiming(key), key).to.equal(expected);
        if (expected) took.claiming += 1;
        else took.other += 1;
      }),
      { numRuns: RUNS * 2 },
    );
    expect(took.claiming).to.be.greaterThan(0);
    expect(took.other).to.be.greaterThan(0);
  });
});

/** Identity-claiming keys, written out as a plain list and matched by string tests: a second implementation of the rule in identity-metadata.ts. */
const NAIVE_PREFIXES = [
  'x-forwarded-client-cert', 'x-forwarded-user', 'x-forwarded-email', 'x-forwarded-for-user', 'x-spiffe', 'x-user', 'x-remote-user',
  'x-authenticated', 'x-auth-request', 'x-client-cert', 'x-client-verify', 'x-ssl-', 'x-identity', 'x-principal', 'x-subject', 'x-actor',
  'x-jwt', 'x-twokey-', 'x-access-token', 'x-id-token', 'x-auth-token', 'x-amzn-oidc-', 'x-goog-iap-', 'x-goog-authenticated-user-',
  'x-ms-client-principal', 'x-consumer-', 'x-credential-identifier', 'x-client-dn', 'x-arr-clientcert', 'x-envoy-peer-metadata', 'ssl-client-',
];
const NAIVE_EXACT = ['l5d-client-id', 'authorization-bin', 'proxy-authorization'];

function naiveIdentityClaiming(key: string): boolean {
  const k = key.toLowerCase();
  return NAIVE_PREFIXES.some((p) => k.startsWith(p)) || NAIVE_EXACT.some((e) => k === e);
}
