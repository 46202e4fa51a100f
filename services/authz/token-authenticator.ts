// Reads the one bearer token of a call and verifies it, through the verified-token cache.
import type { Metadata } from '@grpc/grpc-js';
import { TwokeyError, isTwokeyError } from './errors.ts';
import type { TokenResult } from './types.ts';
import { TokenCache } from './token-cache.ts';
import { isSignatureFailure, type TokenVerifier } from './token-verifier.ts';

const BEARER = /^Bearer ([A-Za-z0-9._-]+)$/;

/** The bearer token string of a call's metadata; throws TwokeyError unless there is exactly one. */
export function bearerToken(metadata: Metadata): string {
  const values = metadata.get('authorization');
  if (values.length === 0) throw new TwokeyError('ERR_TOKEN_MISSING', 'no "authorization: Bearer <token>" metadata');
  if (values.length > 1) throw new TwokeyError('ERR_TOKEN_MALFORMED', 'malformed token: more than one authorization value');
  const value = values[0];
  if (typeof value !== 'string') throw new TwokeyError('ERR_TOKEN_MALFORMED', 'malformed token: authorization is binary');
  const match = BEARER.exec(value);
  if (match === null) throw new TwokeyError('ERR_TOKEN_MALFORMED', 'malformed token: authorization is not "Bearer <compact JWS>"');
  return match[1]!;
}

export interface TokenAuthenticatorOptions {
  verifier: TokenVerifier;
  cache?: TokenCache;
  clock?: () => number;
}

export class TokenAuthenticator {
  readonly #verifier: TokenVerifier;
  readonly cache: TokenCache;
  readonly #clock: () => number;

  constructor(options: TokenAuthenticatorOptions) {
    this.#verifier = options.verifier;
    this.cache = options.cache ?? new TokenCache();
    this.#clock = options.clock ?? Date.now;
  }

  /** Synchronous on a cache hit, so an allowed call with a known token takes no extra tick. */
  fromMetadata(metadata: Metadata): TokenResult | Promise<TokenResult> {
    let raw: string;
    try {
      raw = bearerToken(metadata);
    } catch (err) {
      return { ok: false, error: err as TwokeyError };
    }
    return this.verify(raw);
  }

  verify(raw: string): TokenResult | Promise<TokenResult> {
    const now = this.#clock();
    const cached = this.cache.get(raw, now);
    if (cached !== undefined) return { ok: true, token: cached, raw };
    // A forged signature repeated costs one lookup, not one verification per call.
    const failed = this.cache.failure(raw, now);
    if (failed !== undefined) return { ok: false, error: failed };
    const generation = this.cache.generation;
    return this.#verifier.verify(raw).then(
      (token): TokenResult => {
        this.cache.set(raw, token, generation);
        return { ok: true, token, raw };
      },
      (err: unknown): TokenResult => {
        const error = isTwokeyError(err) ? err : new TwokeyError('ERR_TOKEN_INVALID', 'invalid token: verification failed', { cause: err });
        if (isSignatureFailure(error)) this.cache.rememberFailure(raw, error, this.#clock(), generation);
        return { ok: false, error };
      },
    );
  }
}
