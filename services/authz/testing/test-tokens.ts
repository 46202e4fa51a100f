// Tokens for tests: a throwaway signing key, the key set that verifies it, and tokens shaped the way auth mints them.
import { randomBytes } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair, importJWK, type JWK, type JWTPayload } from 'jose';
import { StaticKeys } from '../jwks.ts';
import type { VerificationKeys } from '../token-verifier.ts';

export interface TestTokensOptions {
  /** The `iss` of every token; a mesh server under test must expect the same. */
  issuer: string;
  /** The audience of user tokens: the mesh's trust domain ID, `spiffe://<trust domain>`. */
  audience: string;
  /** Epoch ms; tokens are issued at this time. */
  clock?: () => number;
}

/** Signs tokens with a key that exists only in this process; `keys` and `jwks` verify them. */
export class TestTokens {
  readonly issuer: string;
  readonly audience: string;
  /** Verification keys for a mesh server under test. */
  readonly keys: VerificationKeys;
  /** The public JWK Set, e.g. to hand to `twokey authz check --jwks` or another language's verifier. */
  readonly jwks: { keys: JWK[] };
  readonly #privateKey: CryptoKey;
  readonly #kid: string;
  readonly #clock: () => number;

  private constructor(opts: TestTokensOptions, keys: VerificationKeys, jwks: { keys: JWK[] }, privateKey: CryptoKey, kid: string) {
    this.issuer = opts.issuer;
    this.audience = opts.audience;
    this.keys = keys;
    this.jwks = jwks;
    this.#privateKey = privateKey;
    this.#kid = kid;
    this.#clock = opts.clock ?? Date.now;
  }

  static async create(opts: TestTokensOptions): Promise<TestTokens> {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    return TestTokens.fromPrivateJwk({ ...(await exportJWK(privateKey)), kid: `test-${randomBytes(6).toString('base64url')}` }, opts);
  }

  /** A fresh ES256 private key as a JWK with a kid, to keep in a file for fromPrivateJwk (never auth's). */
  static async generatePrivateJwk(kidPrefix = 'dev'): Promise<JWK> {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    return { ...(await exportJWK(privateKey)), kid: `${kidPrefix}-${randomBytes(6).toString('base64url')}`, alg: 'ES256', use: 'sig' };
  }

  /** Signs with a kept ES256 private JWK (with its kid), e.g. from generatePrivateJwk. */
  static async fromPrivateJwk(jwk: JWK, opts: TestTokensOptions): Promise<TestTokens> {
    if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || typeof jwk.d !== 'string' || typeof jwk.kid !== 'string') {
      throw new TypeError('expected an ES256 (EC P-256) private JWK with a "kid"');
    }
    const privateKey = (await importJWK({ ...jwk, alg: 'ES256' }, 'ES256')) as CryptoKey;
    const { d: _d, ...pub } = jwk;
    const jwks = { keys: [{ ...pub, kid: jwk.kid, alg: 'ES256', use: 'sig' }] };
    return new TestTokens(opts, await StaticKeys.fromJwks(jwks), jwks, privateKey, jwk.kid);
  }

  /** A user token for `subject` carrying `scopes`, valid for 15 minutes; `claims` override any claim. */
  userToken(subject: string, scopes: readonly string[], claims: Record<string, unknown> = {}): Promise<string> {
    return this.sign({ sub: subject, scope: scopes.join(' '), token_kind: 'user', ...claims });
  }

  /** Signs exactly these claims over defaults for iss, aud, iat, nbf, exp and jti (a claim set to undefined is left out). */
  sign(claims: Record<string, unknown>): Promise<string> {
    const iat = Math.floor(this.#clock() / 1000);
    const payload: JWTPayload = { iss: this.issuer, aud: this.audience, iat, nbf: iat, exp: iat + 900, jti: randomBytes(16).toString('base64url'), ...claims };
    for (const [name, value] of Object.entries(payload)) if (value === undefined) delete payload[name];
    return new SignJWT(payload).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: this.#kid }).sign(this.#privateKey);
  }
}
