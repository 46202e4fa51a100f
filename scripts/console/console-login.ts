// Console login: the auth service's own login (through the gateway, as any user app), then the
// returned token verified against auth's published keys and required to hold console:read.
import { request } from 'node:https';
import * as grpc from '@grpc/grpc-js';
import type { VerifiedToken } from '../../services/authz/types.ts';
import { JwksKeySet } from '../../services/authz/jwks.ts';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { TokenVerifier } from '../../services/authz/token-verifier.ts';
import { AuthClient, unary } from '../../services/mesh-runtime/protos.ts';
import { CONSOLE_SCOPE } from './console-sessions.ts';

export interface ConsoleLoginOptions {
  /** host:port of the gateway's public TLS listener, and the CA that signs its certificate. */
  gatewayAddress: string;
  gatewayCa: Buffer;
  /** auth's HTTPS JWKS URL, and the CA that signs its certificate. */
  jwksUrl: string;
  jwksCa: Buffer;
  issuer: string;
  trustDomain: string;
}

/**
 * Why a login failed. A wrong password and a missing scope are both `refused`: the page must not
 * confirm a password; `unverified` means auth's token failed verification against its own keys.
 */
export type LoginFailure = 'refused' | 'throttled' | 'unverified';

export type LoginResult = { ok: true; token: VerifiedToken } | { ok: false; why: LoginFailure };

function fetchJwks(url: string, ca: Buffer): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > 64 * 1024) req.destroy(new Error('JWKS response over 64 KiB'));
        else chunks.push(c);
      });
      res.on('end', () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks).toString('utf8')) : reject(new Error(`JWKS answered HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error('JWKS request timed out')));
    req.on('error', reject);
    req.end();
  });
}

export class ConsoleLogin {
  readonly #client: grpc.Client;
  readonly #keys: JwksKeySet;
  readonly #verifier: TokenVerifier;

  constructor(opts: ConsoleLoginOptions) {
    this.#client = new AuthClient(opts.gatewayAddress, grpc.credentials.createSsl(opts.gatewayCa));
    this.#keys = new JwksKeySet({ fetch: () => fetchJwks(opts.jwksUrl, opts.jwksCa), cooldownMs: 5000, refreshIntervalMs: 0 });
    this.#verifier = new TokenVerifier({ keys: this.#keys, issuer: opts.issuer, audiences: [SpiffeId.forTrustDomain(opts.trustDomain).toString()] });
  }

  /**
   * Logs in as `username`. The token is verified and then dropped: the console calls nothing on
   * the user's behalf, so it keeps no token at all. Every failure, whatever its cause, is a denial.
   */
  async login(username: string, password: string): Promise<LoginResult> {
    let raw: string;
    try {
      raw = (await unary<{ access_token: string }>(this.#client, 'Login', { username, password }, undefined, 10_000)).access_token;
    } catch (err) {
      return { ok: false, why: (err as grpc.ServiceError).code === grpc.status.RESOURCE_EXHAUSTED ? 'throttled' : 'refused' };
    }
    let token: VerifiedToken;
    try {
      token = await this.#verifier.verify(raw);
    } catch {
      return { ok: false, why: 'unverified' };
    }
    if (token.kind !== 'user' || !token.scopes.has(CONSOLE_SCOPE)) return { ok: false, why: 'refused' };
    return { ok: true, token };
  }

  close(): void {
    this.#client.close();
    this.#keys.close();
  }
}
