// Peer denials no later call on the same connection can pass, and closing that connection after one.
import { Metadata, type ServerInterceptingCallInterface } from '@grpc/grpc-js';
import type { Decision } from './types.ts';
import type { ErrorCode } from './errors.ts';

/**
 * The certificate the connection was opened with is revoked, expired, or no longer chains to the
 * trust bundle: every later call on that connection would be refused the same way.
 */
const CONNECTION_ENDING: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['ERR_PEER_CERT_REVOKED', 'ERR_PEER_CERT_EXPIRED', 'ERR_PEER_CERT_INVALID']);

/**
 * The trailer a refusal carries when it is such a denial: the connection is closed after it, and a
 * client should open its next connection only for a call of its own, with the certificate it holds
 * then (see renewable-channel.ts), instead of reconnecting at once with the refused one.
 */
export const CONNECTION_ENDING_TRAILER = 'twokey-connection-ending';

export function endsConnection(decision: Decision): boolean {
  return decision.failedCheck === 'peer' && decision.errorCode !== null && CONNECTION_ENDING.has(decision.errorCode);
}

/** The trailers of a refusal: the connection-ending flag when `decision` is such a denial. */
export function denialTrailers(decision: Decision): Metadata {
  const trailers = new Metadata();
  if (endsConnection(decision)) trailers.set(CONNECTION_ENDING_TRAILER, '1');
  return trailers;
}

/**
 * After such a denial, closes the connection gracefully (GOAWAY: other calls on it finish first),
 * so that a client which has since received a new certificate reconnects with it instead of being
 * refused on the old connection for as long as it stays open. `call` is grpc-js's own call, whose
 * HTTP/2 stream is not public API: every step is checked, and anything unexpected leaves the
 * connection as it is (the denial stands either way).
 */
export function endConnectionAfter(decision: Decision, call: ServerInterceptingCallInterface | undefined): void {
  if (!endsConnection(decision)) return;
  const session = (call as unknown as { stream?: { session?: { closed?: boolean; close?: () => void } } } | undefined)?.stream?.session;
  if (session !== undefined && session.closed === false && typeof session.close === 'function') session.close();
}
