// Typed authorization errors with stable codes, and the one place they become gRPC statuses.
import { status } from '@grpc/grpc-js';

/**
 * Stable error codes. Callers, logs and tests match on these, never on message text.
 * The gRPC status each maps to is fixed in STATUS_BY_CODE below.
 */
export const ERROR_CODES = [
  // Malformed values handed to validating constructors.
  'ERR_SPIFFE_ID_INVALID',
  'ERR_GRANT_INVALID',
  // Workload identity (the certificate key).
  'ERR_PEER_CERT_MISSING',
  'ERR_PEER_CERT_INVALID',
  'ERR_PEER_CERT_EXPIRED',
  'ERR_PEER_TRUST_DOMAIN',
  'ERR_GRANT_EXTENSION_INVALID',
  'ERR_METHOD_NOT_GRANTED',
  'ERR_PEER_CERT_REVOKED',
  // User identity (the token key).
  'ERR_TOKEN_MISSING',
  'ERR_TOKEN_MALFORMED',
  'ERR_TOKEN_INVALID',
  'ERR_TOKEN_EXPIRED',
  'ERR_TOKEN_NOT_BOUND',
  'ERR_JWKS_UNAVAILABLE',
  'ERR_SCOPE_MISSING',
  'ERR_TOKEN_REVOKED',
  // Revocation: a set that does not verify, or none fresh enough to decide with.
  'ERR_REVOCATION_SET_INVALID',
  'ERR_REVOCATION_STALE',
  'ERR_REVOCATION_LIMIT',
  // Load: a call shed by a concurrency, byte or rate limit, or whose request never arrived in time.
  'ERR_OVERLOADED',
  'ERR_REQUEST_TIMEOUT',
  // Policy and resources.
  'ERR_METHOD_UNDECLARED',
  'ERR_RESOURCE_FORBIDDEN',
  // Configuration and input outside a call (CA, registry, CLI).
  'ERR_CONFIG_INVALID',
  'ERR_REGISTRY_INVALID',
  'ERR_CSR_INVALID',
  'ERR_CA_POLICY',
  // The auth service, and requests any service refuses as malformed. (The example services'
  // own codes are in services/mesh-runtime/example-errors.ts, outside the package's API.)
  'ERR_LOGIN_FAILED',
  'ERR_LOGIN_THROTTLED',
  'ERR_DELEGATION_DENIED',
  'ERR_REQUEST_INVALID',
  // A service's database (PostgreSQL when replicated) did not answer.
  'ERR_STORAGE_UNAVAILABLE',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class TwokeyError extends Error {
  override readonly name = 'TwokeyError';
  readonly code: ErrorCode;
  /**
   * Values the caller chose that explain the error (an unverified token's kid, a header member's
   * name), made short and printable: for logs only. The message, which callers receive in the
   * status, never contains them, so a denial cannot reflect what an attacker wrote.
   */
  readonly untrusted: Readonly<Record<string, string>> | undefined;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; untrusted?: Record<string, string> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options?.untrusted !== undefined) {
      const shown: Record<string, string> = {};
      for (const [key, value] of Object.entries(options.untrusted)) shown[key] = printable(value);
      this.untrusted = shown;
    } else {
      this.untrusted = undefined;
    }
  }
}

// Logs are read in terminals and parsed by pipelines: printable ASCII, bounded length.
function printable(value: string): string {
  const shown = value.replace(/[^\x20-\x7e]/g, '?');
  return shown.length > 64 ? `${shown.slice(0, 64)}...` : shown;
}

/** An error's message with the caller-chosen values behind it, for a log line (never for a status). */
export function logDetail(err: TwokeyError): string {
  if (err.untrusted === undefined) return err.message;
  return `${err.message} (${Object.entries(err.untrusted).map(([k, v]) => `${k} ${JSON.stringify(v)}`).join(', ')})`;
}

export function isTwokeyError(err: unknown): err is TwokeyError {
  return err instanceof TwokeyError;
}

// Missing or invalid identity is UNAUTHENTICATED; identified but not allowed is PERMISSION_DENIED.
const STATUS_BY_CODE: Record<ErrorCode, status> = {
  ERR_SPIFFE_ID_INVALID: status.UNAUTHENTICATED,
  ERR_GRANT_INVALID: status.PERMISSION_DENIED,
  ERR_PEER_CERT_MISSING: status.UNAUTHENTICATED,
  ERR_PEER_CERT_INVALID: status.UNAUTHENTICATED,
  ERR_PEER_CERT_EXPIRED: status.UNAUTHENTICATED,
  ERR_PEER_TRUST_DOMAIN: status.UNAUTHENTICATED,
  ERR_GRANT_EXTENSION_INVALID: status.UNAUTHENTICATED,
  ERR_METHOD_NOT_GRANTED: status.PERMISSION_DENIED,
  // A revoked certificate no longer proves who the peer is: the same answer as an expired one.
  ERR_PEER_CERT_REVOKED: status.UNAUTHENTICATED,
  ERR_TOKEN_MISSING: status.UNAUTHENTICATED,
  ERR_TOKEN_MALFORMED: status.UNAUTHENTICATED,
  ERR_TOKEN_INVALID: status.UNAUTHENTICATED,
  ERR_TOKEN_EXPIRED: status.UNAUTHENTICATED,
  ERR_TOKEN_NOT_BOUND: status.UNAUTHENTICATED,
  // The server holds no keys at all: its own fault, not the caller's token, and retryable.
  ERR_JWKS_UNAVAILABLE: status.UNAVAILABLE,
  ERR_SCOPE_MISSING: status.PERMISSION_DENIED,
  ERR_TOKEN_REVOKED: status.UNAUTHENTICATED,
  ERR_REVOCATION_SET_INVALID: status.UNAVAILABLE,
  // Retryable: the server cannot know whether the caller was revoked until auth is reachable again.
  ERR_REVOCATION_STALE: status.UNAVAILABLE,
  // The set is at its bound: the revocation was not recorded, and the administrator must know.
  ERR_REVOCATION_LIMIT: status.RESOURCE_EXHAUSTED,
  // Retryable later: the server refused the call at once rather than queue it.
  ERR_OVERLOADED: status.RESOURCE_EXHAUSTED,
  ERR_REQUEST_TIMEOUT: status.DEADLINE_EXCEEDED,
  ERR_METHOD_UNDECLARED: status.PERMISSION_DENIED,
  ERR_RESOURCE_FORBIDDEN: status.PERMISSION_DENIED,
  ERR_CONFIG_INVALID: status.INTERNAL,
  ERR_REGISTRY_INVALID: status.INTERNAL,
  ERR_CSR_INVALID: status.INVALID_ARGUMENT,
  ERR_CA_POLICY: status.FAILED_PRECONDITION,
  ERR_LOGIN_FAILED: status.UNAUTHENTICATED,
  ERR_LOGIN_THROTTLED: status.RESOURCE_EXHAUSTED,
  ERR_DELEGATION_DENIED: status.PERMISSION_DENIED,
  ERR_REQUEST_INVALID: status.INVALID_ARGUMENT,
  // Retryable: another replica, or this one once the database is back, can serve the call.
  ERR_STORAGE_UNAVAILABLE: status.UNAVAILABLE,
};

/** The gRPC status for any error; anything not a TwokeyError fails closed as INTERNAL. */
export function grpcStatusOf(err: unknown): status {
  return isTwokeyError(err) ? STATUS_BY_CODE[err.code] : status.INTERNAL;
}
