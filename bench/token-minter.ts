// Mints the user access tokens the load process presents, in the shape the auth service issues
// them (contracts: ES256, typ at+jwt, kid, iss/sub/aud/exp/iat/nbf/jti/scope/client_id/token_kind).
import crypto from 'node:crypto';
import { SignJWT, importJWK, type JWK } from 'jose';

const MINT_BATCH = 256;

export interface TokenSpec {
  /** The signing key, a private ES256 JWK with its kid. */
  privateJwk: JWK;
  issuer: string;
  audience: string;
  scope: string;
  clientId: string;
  /** Token i has subject `${subjectPrefix}${i}`. */
  subjectPrefix: string;
  ttlSeconds: number;
}

export async function mintTokens(spec: TokenSpec, count: number): Promise<string[]> {
  if (spec.privateJwk.kid === undefined) throw new Error('token signing JWK has no kid');
  const key = await importJWK(spec.privateJwk, 'ES256');
  const now = Math.floor(Date.now() / 1000);
  const mint = (i: number): Promise<string> =>
    new SignJWT({ scope: spec.scope, client_id: spec.clientId, token_kind: 'user' })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: spec.privateJwk.kid! })
      .setIssuer(spec.issuer)
      .setSubject(`${spec.subjectPrefix}${i}`)
      .setAudience(spec.audience)
      .setIssuedAt(now)
      .setNotBefore(now - 5)
      .setExpirationTime(now + spec.ttlSeconds)
      .setJti(crypto.randomBytes(16).toString('base64url'))
      .sign(key);
  const tokens: string[] = [];
  // Signing runs on libuv's thread pool: batches of concurrent signatures use every core.
  for (let i = 0; i < count; i += MINT_BATCH) {
    const batch = Array.from({ length: Math.min(MINT_BATCH, count - i) }, (_, j) => mint(i + j));
    tokens.push(...(await Promise.all(batch)));
  }
  return tokens;
}

/** A fresh ES256 key pair as JWKs, the public one ready to publish in a JWKS. */
export async function generateSigningKey(kid: string): Promise<{ privateJwk: JWK; publicJwk: JWK }> {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const base = { kid, alg: 'ES256', use: 'sig' };
  return {
    privateJwk: { ...(privateKey.export({ format: 'jwk' }) as JWK), ...base },
    publicJwk: { ...(publicKey.export({ format: 'jwk' }) as JWK), ...base },
  };
}
