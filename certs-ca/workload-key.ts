// Which workload keys the CA certifies, and how fresh ones are made.
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { TwokeyError, type ErrorCode } from '../services/authz/errors.ts';

export interface KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

/** ECDSA P-256: SPIRE's default, a fraction of a millisecond to generate, small handshakes. */
export function generateP256(): KeyPair {
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
}

/** Accepts ECDSA P-256/P-384, Ed25519 and RSA of at least 2048 bits; throws `code` otherwise. */
export function checkWorkloadKey(key: KeyObject, code: ErrorCode): void {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails;
  if (type === 'ec' && (details?.namedCurve === 'prime256v1' || details?.namedCurve === 'secp384r1')) return;
  if (type === 'ed25519') return;
  if (type === 'rsa' && (details?.modulusLength ?? 0) >= 2048) return;
  const shown = type === 'ec' ? `EC ${details?.namedCurve}` : type === 'rsa' ? `RSA-${details?.modulusLength}` : String(type);
  throw new TwokeyError(code, `unsupported workload key ${shown}: use ECDSA P-256/P-384, Ed25519 or RSA >= 2048`);
}
