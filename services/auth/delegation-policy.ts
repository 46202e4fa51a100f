// Pure rules for token exchange (RFC 8693) and service tokens: who may get which token, with
// which scopes, for which audience. Every path that is not explicitly allowed is refused.
import type { VerifiedToken } from '../authz/types.ts';
import { TwokeyError } from '../authz/errors.ts';
import type { Actor } from './token-minter.ts';

/** What the registry lets one workload obtain on a user's behalf. */
export interface DelegationRules {
  scopes: readonly string[];
  audiences: readonly string[];
  withoutSubjectToken: boolean;
}

export type ExchangeSubject = { via: 'token'; token: VerifiedToken } | { via: 'username'; username: string };

export interface ExchangeInput {
  /** The mTLS peer asking: it becomes the actor. */
  actor: { spiffeId: string; thumbprint: string };
  rules: DelegationRules | undefined;
  subject: ExchangeSubject;
  /** Whether the subject user exists and is enabled. */
  userActive: (username: string) => boolean;
  requestedScopes: readonly string[];
  audience: string;
  maxDepth: number;
  ttlMs: number;
  now: number;
}

export interface ExchangeGrant {
  subject: string;
  scopes: string[];
  audience: string;
  act: Actor;
  ttlMs: number;
}

function refuse(why: string): TwokeyError {
  return new TwokeyError('ERR_DELEGATION_DENIED', `token exchange refused: ${why}`);
}

function nest(chain: readonly string[]): Actor | undefined {
  let act: Actor | undefined;
  for (let i = chain.length - 1; i >= 0; i--) act = act === undefined ? { sub: chain[i]! } : { sub: chain[i]!, act };
  return act;
}

/** Decides a token exchange; returns what to mint or throws ERR_DELEGATION_DENIED naming the rule. */
export function decideExchange(input: ExchangeInput): ExchangeGrant {
  const { actor, rules, subject } = input;
  if (rules === undefined || rules.scopes.length === 0) {
    throw refuse(`the registry gives ${actor.spiffeId} no delegation`);
  }
  if (input.audience === '') throw refuse('an audience (the target service SPIFFE ID) is required');
  if (!rules.audiences.includes(input.audience)) {
    throw refuse(`${actor.spiffeId} may not obtain tokens for audience ${input.audience}`);
  }

  let username: string;
  let available: readonly string[] = rules.scopes;
  let previousChain: readonly string[] = [];
  let ttlMs = input.ttlMs;
  if (subject.via === 'token') {
    const token = subject.token;
    if (token.kind === 'service') throw refuse('a service token cannot be exchanged: it has no user to act for');
    // A delegated token may be exchanged onward only by the service it was issued to.
    if (token.kind === 'delegated' && token.audience !== actor.spiffeId) {
      throw refuse(`the subject token was issued for ${token.audience}, not for ${actor.spiffeId}`);
    }
    username = token.subject;
    available = rules.scopes.filter((s) => token.scopes.has(s));
    previousChain = token.actorChain;
    ttlMs = Math.min(ttlMs, token.validUntilMs - input.now);
    if (ttlMs <= 0) throw refuse('the subject token has expired');
  } else {
    if (!rules.withoutSubjectToken) {
      throw refuse(`the registry requires ${actor.spiffeId} to present the user's token (subject_token)`);
    }
    username = subject.username;
  }
  if (!input.userActive(username)) throw refuse(`no enabled user ${JSON.stringify(username)}`);

  const depth = previousChain.length + 1;
  if (depth > input.maxDepth) throw refuse(`delegation depth ${depth} exceeds the maximum of ${input.maxDepth}`);

  const requested = input.requestedScopes.length === 0 ? available : input.requestedScopes;
  const beyond = requested.filter((s) => !available.includes(s));
  if (beyond.length > 0) throw refuse(`scope ${beyond.map((s) => JSON.stringify(s)).join(', ')} is beyond what ${actor.spiffeId} may obtain for this user`);
  if (requested.length === 0) throw refuse('no scope left to delegate');

  return {
    subject: username,
    scopes: [...new Set(requested)],
    audience: input.audience,
    act: nest([actor.spiffeId, ...previousChain])!,
    ttlMs,
  };
}

export interface ServiceTokenInput {
  workload: string;
  scopes: readonly string[] | undefined;
  requestedAudience: string;
  trustDomainId: string;
  knownWorkloads: readonly string[];
}

/** The scopes and audience of a workload's own token, or ERR_DELEGATION_DENIED. */
export function decideServiceToken(input: ServiceTokenInput): { scopes: string[]; audience: string } {
  if (input.scopes === undefined || input.scopes.length === 0) {
    throw new TwokeyError('ERR_DELEGATION_DENIED', `service token refused: the registry gives ${input.workload} no service scopes`);
  }
  const audience = input.requestedAudience === '' ? input.trustDomainId : input.requestedAudience;
  if (audience !== input.trustDomainId && !input.knownWorkloads.includes(audience)) {
    throw new TwokeyError('ERR_DELEGATION_DENIED', `service token refused: audience ${audience} is neither the trust domain nor a registered workload`);
  }
  return { scopes: [...input.scopes], audience };
}

/** Space-separated scope string -> list; empty string -> empty list. */
export function splitScopes(scope: string): string[] {
  return scope.split(' ').filter((s) => s !== '');
}
