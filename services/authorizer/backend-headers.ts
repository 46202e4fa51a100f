// The identity headers the authorizer hands a backend on allow, and the one it returns a denial's reason in.
import type { PeerIdentity, VerifiedToken } from '../authz/types.ts';
import { TwokeyError } from '../authz/errors.ts';

/**
 * What a backend behind the proxy may trust, and only because the proxy sets each of them from
 * the authorizer's answer, replacing whatever the client sent (nginx: grpc_set_header from
 * auth_request_set; Envoy: ok_response headers, or headers_to_remove when empty).
 */
export const IDENTITY_HEADERS = {
  /** The verified token's subject: a username, or a workload's SPIFFE ID for its service token. */
  subject: 'x-twokey-subject',
  /** user | delegated | service. */
  tokenKind: 'x-twokey-token-kind',
  /** Delegated tokens: the actors' SPIFFE IDs, presenting actor first, comma-separated. */
  actorChain: 'x-twokey-actor-chain',
  /** The token's scopes, space-separated (the resource check reads `<permission>:any` here). */
  scopes: 'x-twokey-scopes',
  /** The calling workload's SPIFFE ID (from the certificate the proxy forwarded). */
  peer: 'x-twokey-peer',
  /** The decision id of the authorizer's log line for this call. */
  decisionId: 'x-twokey-decision-id',
} as const;

export type IdentityHeader = (typeof IDENTITY_HEADERS)[keyof typeof IDENTITY_HEADERS];
export const IDENTITY_HEADER_NAMES: readonly IdentityHeader[] = Object.values(IDENTITY_HEADERS);

/** A denial's reason, as the library words it (nginx maps it to grpc-message). */
export const REASON_HEADER = 'x-twokey-reason';

// Header values reach other servers: visible ASCII and spaces only, so nothing can split a header.
const HEADER_VALUE = /^[\x20-\x7e]*$/;

/**
 * The headers for an allowed call; a header the call has no value for is empty (the proxy then
 * clears any copy the client sent). Throws when a value could not travel as a header: the caller
 * turns that into a denial, never an allow without identity.
 */
export function backendHeaders(decisionId: string, peer: PeerIdentity | undefined, token: VerifiedToken | undefined): Record<IdentityHeader, string> {
  const headers: Record<IdentityHeader, string> = {
    [IDENTITY_HEADERS.subject]: token?.subject ?? '',
    [IDENTITY_HEADERS.tokenKind]: token?.kind ?? '',
    [IDENTITY_HEADERS.actorChain]: token?.actorChain.join(',') ?? '',
    [IDENTITY_HEADERS.scopes]: token === undefined ? '' : [...token.scopes].join(' '),
    [IDENTITY_HEADERS.peer]: peer?.spiffeId.toString() ?? '',
    [IDENTITY_HEADERS.decisionId]: decisionId,
  } as Record<IdentityHeader, string>;
  for (const [name, value] of Object.entries(headers)) {
    if (!HEADER_VALUE.test(value)) throw new TwokeyError('ERR_TOKEN_INVALID', `the verified ${name} cannot be passed on as a header (it holds control characters)`);
  }
  return headers;
}
