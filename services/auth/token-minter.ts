// Mints twokey access tokens (user, delegated, service) with the claims the token contract fixes.
import { randomBytes } from 'node:crypto';
import { SignJWT, type JWTPayload } from 'jose';
import type { SigningKeys } from './signing-keys.ts';

export interface Actor {
  /** The actor's SPIFFE ID. */
  sub: string;
  act?: Actor;
}

export type TokenRequest =
  | { kind: 'user'; subject: string; scopes: readonly string[]; audience: string; clientId: string; ttlMs: number }
  | {
      kind: 'delegated';
      subject: string;
      scopes: readonly string[];
      audience: string;
      clientId: string;
      ttlMs: number;
      act: Actor;
      thumbprint: string;
    }
  | { kind: 'service'; subject: string; scopes: readonly string[]; audience: string; clientId: string; ttlMs: number; thumbprint: string };

export interface MintedToken {
  token: string;
  jti: string;
  expiresInSeconds: number;
  scope: string;
}

export class TokenMinter {
  readonly #keys: SigningKeys;
  readonly #issuer: string;
  readonly #now: () => number;
  readonly #random: (bytes: number) => Buffer;

  constructor(opts: { keys: SigningKeys; issuer: string; now?: () => number; random?: (bytes: number) => Buffer }) {
    this.#keys = opts.keys;
    this.#issuer = opts.issuer;
    this.#now = opts.now ?? Date.now;
    this.#random = opts.random ?? randomBytes;
  }

  async mint(request: TokenRequest): Promise<MintedToken> {
    const key = await this.#keys.current();
    const iat = Math.floor(this.#now() / 1000);
    const lifetime = Math.max(1, Math.floor(request.ttlMs / 1000));
    const jti = this.#random(16).toString('base64url');
    const scope = request.scopes.join(' ');
    const claims: JWTPayload = { scope, client_id: request.clientId, token_kind: request.kind };
    if (request.kind === 'delegated') claims['act'] = request.act;
    if (request.kind !== 'user') claims['cnf'] = { 'x5t#S256': request.thumbprint };
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: key.kid })
      .setIssuer(this.#issuer)
      .setSubject(request.subject)
      .setAudience(request.audience)
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(iat + lifetime)
      .setJti(jti)
      .sign(key.privateKey);
    return { token, jti, expiresInSeconds: lifetime, scope };
  }
}
