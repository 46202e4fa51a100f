// Test issuers: real ES256/EdDSA keys signing tokens the way auth does, and the ways it must not.
import { randomBytes } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair, type JWK, type JWTPayload } from 'jose';

export const ISSUER = 'https://auth.twokey.local';
export const MESH_AUDIENCE = 'spiffe://twokey.local';

export class TestIssuer {
  readonly kid: string;
  readonly alg: 'ES256' | 'EdDSA';
  readonly #privateKey: CryptoKey;
  readonly publicJwk: JWK;

  private constructor(kid: string, alg: 'ES256' | 'EdDSA', privateKey: CryptoKey, publicJwk: JWK) {
    this.kid = kid;
    this.alg = alg;
    this.#privateKey = privateKey;
    this.publicJwk = publicJwk;
  }

  static async create(kid: string, alg: 'ES256' | 'EdDSA' = 'ES256'): Promise<TestIssuer> {
    const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
    const jwk = await exportJWK(publicKey);
    return new TestIssuer(kid, alg, privateKey, { ...jwk, kid, alg, use: 'sig' });
  }

  /** A JWK Set publishing these issuers' public keys. */
  static jwks(...issuers: TestIssuer[]): { keys: JWK[] } {
    return { keys: issuers.map((i) => i.publicJwk) };
  }

  /** Signs claims with defaults for a valid user token at `nowMs`; header fields may be overridden. */
  async sign(claims: Record<string, unknown> = {}, opts: { nowMs?: number; header?: Record<string, unknown> } = {}): Promise<string> {
    const iat = Math.floor((opts.nowMs ?? Date.now()) / 1000);
    const payload: JWTPayload = {
      iss: ISSUER,
      sub: 'alice',
      aud: MESH_AUDIENCE,
      iat,
      nbf: iat,
      exp: iat + 900,
      jti: randomBytes(16).toString('base64url'),
      scope: 'images:read images:write',
      token_kind: 'user',
      ...claims,
    };
    for (const [k, v] of Object.entries(payload)) if (v === undefined) delete payload[k];
    return new SignJWT(payload)
      .setProtectedHeader({ alg: this.alg, typ: 'at+jwt', kid: this.kid, ...opts.header } as { alg: string })
      .sign(this.#privateKey);
  }
}
