// Raw JWS construction for hostile tokens: exact header and payload bytes, signed with any key and algorithm.
import { createHmac, createPublicKey, generateKeyPairSync, randomBytes, sign as nodeSign, type KeyObject } from 'node:crypto';
import type { JWK } from 'jose';

export function b64u(value: unknown): string {
  if (Buffer.isBuffer(value)) return value.toString('base64url');
  return Buffer.from(typeof value === 'string' ? value : (JSON.stringify(value) ?? 'null')).toString('base64url');
}

export const jti = (): string => randomBytes(16).toString('base64url');

/**
 * A signer that writes exactly the header and payload text it is given (duplicate members,
 * odd types and all), unlike jose's SignJWT, which validates what it signs.
 */
export class RawSigner {
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly alg: 'ES256' | 'EdDSA' | 'RS256';

  private constructor(kid: string, alg: RawSigner['alg'], privateKey: KeyObject, publicKey: KeyObject) {
    this.kid = kid;
    this.alg = alg;
    this.privateKey = privateKey;
    this.publicKey = publicKey;
  }

  /** A signer over an existing ES256 private key (e.g. the auth service's own, read from its database). */
  static fromPrivateKey(kid: string, privateKey: KeyObject): RawSigner {
    return new RawSigner(kid, 'ES256', privateKey, createPublicKey(privateKey));
  }

  static create(kid: string, alg: RawSigner['alg'] = 'ES256'): RawSigner {
    const pair =
      alg === 'ES256'
        ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
        : alg === 'EdDSA'
          ? generateKeyPairSync('ed25519')
          : generateKeyPairSync('rsa', { modulusLength: 2048 });
    return new RawSigner(kid, alg, pair.privateKey, pair.publicKey);
  }

  get publicJwk(): JWK {
    return { ...(this.publicKey.export({ format: 'jwk' }) as JWK), kid: this.kid, alg: this.alg, use: 'sig' };
  }

  /** The default header this signer would write. */
  header(extra: Record<string, unknown> = {}): Record<string, unknown> {
    return { alg: this.alg, typ: 'at+jwt', kid: this.kid, ...extra };
  }

  /** Signs `header.payload` (objects are JSON-encoded, strings used verbatim). */
  sign(header: unknown, payload: unknown): string {
    const input = `${b64u(header)}.${b64u(payload)}`;
    return `${input}.${this.signature(input).toString('base64url')}`;
  }

  signature(input: string): Buffer {
    const data = Buffer.from(input);
    if (this.alg === 'ES256') return nodeSign('sha256', data, { key: this.privateKey, dsaEncoding: 'ieee-p1363' });
    if (this.alg === 'EdDSA') return nodeSign(null, data, this.privateKey);
    return nodeSign('sha256', data, this.privateKey);
  }

  /** The same signature in ASN.1 DER form (what OpenSSL emits by default), not JOSE's r||s. */
  derSignature(input: string): Buffer {
    return nodeSign('sha256', Buffer.from(input), { key: this.privateKey, dsaEncoding: 'der' });
  }
}

/** An HS256 token keyed with `secret` (for key-confusion and guessed-secret attacks). */
export function hmacToken(header: unknown, payload: unknown, secret: string | Buffer): string {
  const input = `${b64u(header)}.${b64u(payload)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}
