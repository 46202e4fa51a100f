// The Auth service's logic: login, JWKS, token exchange and service tokens. Transport-free: the
// gRPC adapter passes the verified mTLS peer and the decoded request.
import type { VerifiedToken } from '../authz/types.ts';
import { TwokeyError, isTwokeyError } from '../authz/errors.ts';
import { userScopesFor, type AuthPolicy } from './auth-policy.ts';
import { decideExchange, decideServiceToken, splitScopes, type ExchangeSubject } from './delegation-policy.ts';
import type { LoginThrottle } from './login-throttle.ts';
import type { SigningKeys } from './signing-keys.ts';
import type { TokenMinter } from './token-minter.ts';
import type { User, UserStore } from './user-store.ts';
import { isUsername } from './username.ts';

/** The caller as its verified certificate names it. */
export interface CallerWorkload {
  spiffeId: string;
  thumbprint: string;
}

const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

export interface AuthServiceDeps {
  policy: AuthPolicy;
  users: UserStore;
  throttle: LoginThrottle;
  keys: SigningKeys;
  minter: TokenMinter;
  /** Verifies a subject token against auth's own keys, accepting the given audiences. */
  verifySubjectToken: (token: string, audiences: readonly string[]) => Promise<VerifiedToken>;
  now?: () => number;
}

export class AuthService {
  readonly #d: AuthServiceDeps;
  readonly #now: () => number;

  constructor(deps: AuthServiceDeps) {
    this.#d = deps;
    this.#now = deps.now ?? Date.now;
  }

  /**
   * Username and password -> user token. `source` identifies where the attempt came from (the
   * calling workload and the end-user address it reports) for per-source limiting.
   */
  async login(caller: CallerWorkload, source: string, req: { username: string; password: string }) {
    const { policy, users, throttle, minter } = this.#d;
    // Usernames that cannot exist are throttled under one key, so junk cannot grow the table.
    const key = isUsername(req.username) ? req.username : '(invalid)';
    const ticket = await throttle.begin(key, source);
    let user: User | undefined;
    try {
      // Over-long passwords are refused by verifyPassword before any hashing.
      user = isUsername(req.username) ? await users.authenticate(req.username, req.password) : undefined;
      if (user === undefined) {
        await throttle.recordFailure(key, source);
        throw new TwokeyError('ERR_LOGIN_FAILED', 'login failed: unknown user, wrong password or disabled account');
      }
      await throttle.recordSuccess(key);
    } finally {
      throttle.end(key, source, ticket);
    }
    const minted = await minter.mint({
      kind: 'user',
      subject: user.username,
      scopes: userScopesFor(policy, await users.roles(user.username)),
      audience: policy.trustDomainId,
      clientId: caller.spiffeId,
      ttlMs: policy.userTokenTtlMs,
    });
    return { access_token: minted.token, token_type: 'Bearer', expires_in: String(minted.expiresInSeconds), scope: minted.scope, jti: minted.jti };
  }

  async getJwks() {
    return { jwks_json: JSON.stringify(await this.#d.keys.jwks()) };
  }

  /** RFC 8693 token exchange; the actor is the caller's certificate. */
  async exchangeToken(caller: CallerWorkload, req: { subject_token: string; subject_user: string; scope: string; audience: string }) {
    const { policy, users, minter } = this.#d;
    if ((req.subject_token === '') === (req.subject_user === '')) {
      throw new TwokeyError('ERR_REQUEST_INVALID', 'token exchange needs exactly one of subject_token or subject_user');
    }
    let subject: ExchangeSubject;
    if (req.subject_token !== '') {
      try {
        subject = { via: 'token', token: await this.#d.verifySubjectToken(req.subject_token, [policy.trustDomainId, caller.spiffeId]) };
      } catch (err) {
        const why = isTwokeyError(err) ? err.message : 'it does not verify';
        throw new TwokeyError('ERR_DELEGATION_DENIED', `token exchange refused: subject_token is not valid: ${why}`);
      }
    } else {
      if (!isUsername(req.subject_user)) throw new TwokeyError('ERR_REQUEST_INVALID', 'subject_user is not a username');
      subject = { via: 'username', username: req.subject_user };
    }
    // The policy asks about exactly one user, the subject; looked up before the (pure) decision.
    const subjectName = subject.via === 'username' ? subject.username : subject.token.subject;
    const subjectActive = (await users.active(subjectName)) !== undefined;
    const grant = decideExchange({
      actor: caller,
      rules: policy.workloads.get(caller.spiffeId)?.delegation,
      subject,
      userActive: (name) => name === subjectName && subjectActive,
      requestedScopes: splitScopes(req.scope),
      audience: req.audience,
      maxDepth: policy.maxDelegationDepth,
      ttlMs: policy.delegatedTokenTtlMs,
      now: this.#now(),
    });
    const minted = await minter.mint({
      kind: 'delegated',
      subject: grant.subject,
      scopes: grant.scopes,
      audience: grant.audience,
      clientId: caller.spiffeId,
      ttlMs: grant.ttlMs,
      act: grant.act,
      thumbprint: caller.thumbprint,
    });
    return {
      access_token: minted.token,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: String(minted.expiresInSeconds),
      scope: minted.scope,
      jti: minted.jti,
    };
  }

  /** The caller's own pseudo-user token, bound to its certificate. */
  async getServiceToken(caller: CallerWorkload, req: { audience: string }) {
    const { policy, minter } = this.#d;
    const decided = decideServiceToken({
      workload: caller.spiffeId,
      scopes: policy.workloads.get(caller.spiffeId)?.serviceScopes,
      requestedAudience: req.audience,
      trustDomainId: policy.trustDomainId,
      knownWorkloads: [...policy.workloads.keys()],
    });
    const minted = await minter.mint({
      kind: 'service',
      subject: caller.spiffeId,
      scopes: decided.scopes,
      audience: decided.audience,
      clientId: caller.spiffeId,
      ttlMs: policy.serviceTokenTtlMs,
      thumbprint: caller.thumbprint,
    });
    return { access_token: minted.token, token_type: 'Bearer', expires_in: String(minted.expiresInSeconds), scope: minted.scope, jti: minted.jti };
  }
}
