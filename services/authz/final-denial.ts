// Peer denials no later call on the same connection can pass, and closing that connection after one.
import type { ServerInterceptingCallInterface } from '@grpc/grpc-js';
import type { Decision } from './types.ts';
import type { ErrorCode } from './errors.ts';

/**
 * The certificate the connection was opened with is revoked, expired, or no longer chains to the
 * trust bundle: every later call on that connection would be refused the same way.
 */
const CONNECTION_ENDING: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['ERR_PEER_CERT_REVOKED', 'ERR_PEER_CERT_EXPIRED', 'ERR_PEER_CERT_INVALID']);

/**
 * After such a denial, closes the connection gracefully (GOAWAY: other calls on it finish first),
 * so that a client which has since received a new certificate reconnects with it instead of being
 * refused on the old connection for as long as it stays open. `call` is grpc-js's own call, whose
 * HTTP/2 stream is not public API: every step is checked, and anything unexpected leaves the
 * connection as it is (the denial stands either way).
 */
export function endConnectionAfter(decision: Decision, call: ServerInterceptingCallInterface | undefined): void {
  if (decision.failedCheck !== 'peer' || decision.errorCode === null || !CONNECTION_ENDING.has(decision.errorCode)) return;
  const session = (call as unknown as { stream?: { session?: { closed?: boolean; close?: () => void } } } | undefined)?.stream?.session;
  if (session !== undefined && session.closed === false && typeof session.close === 'function') session.close();
}
