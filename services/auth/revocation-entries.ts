// The revocation entries an administrator asks for, validated, each with how long it must stay in the set.
import { MAX_CA_TTL_SECONDS } from '../../certs-ca/ca-config.ts';
import { TwokeyError } from '../authz/errors.ts';
import { normalizeSerial } from '../authz/revocation-set.ts';
import type { RevocationEntry } from './revocation-store.ts';

/**
 * The longest any token can live (the verifier refuses exp - iat beyond it) plus clock leeway: a
 * disabled user's or withdrawn key's entry can leave the set after this, because every token issued
 * before it has expired. The user stays disabled in auth's user table until re-enabled.
 */
export const REVOCATION_REACH_SECONDS = 24 * 3600 + 300;
/** A certificate whose notAfter is not known lives at most as long as the CA may issue, plus leeway. */
export const CERTIFICATE_REACH_SECONDS = MAX_CA_TTL_SECONDS + 300;

const JTI = /^[A-Za-z0-9_-]{16,128}$/;
const KID = /^[\x21-\x7e]{1,128}$/;

function epochSeconds(value: number | undefined, what: string): number | undefined {
  if (value === undefined || value === 0) return undefined;
  if (!Number.isSafeInteger(value) || value < 0) throw new TwokeyError('ERR_REQUEST_INVALID', `${what} must be a positive integer (epoch seconds)`);
  return value;
}

/** Tokens of `subject` issued at or before `nowSeconds` are refused. */
export function disabledSubjectEntry(subject: string, nowSeconds: number): RevocationEntry {
  return { kind: 'user', value: subject, atSeconds: nowSeconds, keepUntilSeconds: nowSeconds + REVOCATION_REACH_SECONDS };
}

/** One token, kept until its own exp (when known) plus leeway, never beyond the longest token life. */
export function jtiEntry(jti: string, expSeconds: number | undefined, nowSeconds: number): RevocationEntry {
  if (!JTI.test(jti)) throw new TwokeyError('ERR_REQUEST_INVALID', 'a jti is 16-128 base64url characters');
  const exp = epochSeconds(expSeconds, 'the token exp') ?? nowSeconds + REVOCATION_REACH_SECONDS;
  return { kind: 'jti', value: jti, atSeconds: nowSeconds, keepUntilSeconds: Math.min(exp, nowSeconds + REVOCATION_REACH_SECONDS) + 300 };
}

/** One workload certificate, kept until its notAfter; without it, as long as any certificate can live. */
export function serialEntry(serialHex: string, notAfterSeconds: number | undefined, nowSeconds: number): RevocationEntry {
  const notAfter = epochSeconds(notAfterSeconds, 'the certificate notAfter') ?? nowSeconds + CERTIFICATE_REACH_SECONDS;
  return { kind: 'serial', value: normalizeSerial(serialHex), atSeconds: nowSeconds, keepUntilSeconds: notAfter };
}

/** Every token the key signed is refused. */
export function withdrawnKidEntry(kid: string, nowSeconds: number): RevocationEntry {
  if (!KID.test(kid)) throw new TwokeyError('ERR_REQUEST_INVALID', 'a kid is 1-128 printable characters');
  return { kind: 'kid', value: kid, atSeconds: nowSeconds, keepUntilSeconds: nowSeconds + REVOCATION_REACH_SECONDS };
}
