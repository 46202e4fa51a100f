// PKCS#10 certificate requests: the CA takes only the public key from one, after checking the
// request's signature proves possession of the matching private key.
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { DerReader, TAG, contextTag, decodeOid, readBitStringBytes, readSmallInteger } from '../services/authz/der.ts';
import { TwokeyError } from '../services/authz/errors.ts';
import { checkWorkloadKey } from './workload-key.ts';

// Signature algorithm OID -> hash passed to crypto.verify (null: the algorithm hashes itself) and
// the key type it belongs to, so a signature is verified only as the algorithm it claims to be.
const SIGNATURE_ALGORITHMS = new Map<string, { hash: string | null; keyType: string }>([
  ['1.2.840.10045.4.3.2', { hash: 'sha256', keyType: 'ec' }],
  ['1.2.840.10045.4.3.3', { hash: 'sha384', keyType: 'ec' }],
  ['1.2.840.10045.4.3.4', { hash: 'sha512', keyType: 'ec' }],
  ['1.2.840.113549.1.1.11', { hash: 'sha256', keyType: 'rsa' }],
  ['1.2.840.113549.1.1.12', { hash: 'sha384', keyType: 'rsa' }],
  ['1.2.840.113549.1.1.13', { hash: 'sha512', keyType: 'rsa' }],
  ['1.3.101.112', { hash: null, keyType: 'ed25519' }],
]);

const PEM = /^-----BEGIN (NEW )?CERTIFICATE REQUEST-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END (NEW )?CERTIFICATE REQUEST-----\s*$/;

function bad(why: string): TwokeyError {
  return new TwokeyError('ERR_CSR_INVALID', `invalid CSR: ${why}`);
}

/** The DER of a PEM CSR (or the input itself when it is already DER). */
export function csrDer(input: string | Buffer): Buffer {
  const text = typeof input === 'string' ? input : input.subarray(0, 64).toString('latin1').startsWith('-----BEGIN') ? input.toString('latin1') : undefined;
  if (text === undefined) return input as Buffer;
  const m = PEM.exec(text.trim() + '\n');
  if (m === null) throw bad('expected one PEM "CERTIFICATE REQUEST" block');
  return Buffer.from(m[2]!.replace(/\s+/g, ''), 'base64');
}

/**
 * Parses a CSR strictly and verifies its self-signature. Returns only the public key: names and
 * extensions the requester asked for are deliberately ignored.
 */
export function verifiedCsrPublicKey(input: string | Buffer): KeyObject {
  const der = csrDer(input);
  const top = new DerReader(der, 'ERR_CSR_INVALID', 'invalid CSR');
  const reqEl = top.expect(TAG.SEQUENCE, 'CertificationRequest');
  top.end('CertificationRequest');
  const req = top.child(reqEl, 'CertificationRequest');
  const infoEl = req.expect(TAG.SEQUENCE, 'certificationRequestInfo');
  const algEl = req.expect(TAG.SEQUENCE, 'signatureAlgorithm');
  const sigEl = req.expect(TAG.BIT_STRING, 'signature');
  req.end('CertificationRequest');

  const info = req.child(infoEl, 'certificationRequestInfo');
  const version = readSmallInteger(info, info.expect(TAG.INTEGER, 'version'), 'version');
  if (version !== 0) info.fail('version must be 0 (v1)');
  info.expect(TAG.SEQUENCE, 'subject');
  const spkiEl = info.expect(TAG.SEQUENCE, 'subjectPKInfo');
  info.expect(contextTag(0, true), 'attributes');
  info.end('certificationRequestInfo');

  const alg = req.child(algEl, 'signatureAlgorithm');
  const algOid = decodeOid(alg, alg.expect(TAG.OID, 'algorithm').value, 'algorithm');
  const algorithm = SIGNATURE_ALGORITHMS.get(algOid);
  if (algorithm === undefined) throw bad(`unsupported signature algorithm ${algOid}`);

  let key: KeyObject;
  try {
    key = createPublicKey({ key: spkiEl.raw, format: 'der', type: 'spki' });
  } catch (err) {
    throw bad(`unreadable public key: ${(err as Error).message}`);
  }
  checkWorkloadKey(key, 'ERR_CSR_INVALID');
  if (key.asymmetricKeyType !== algorithm.keyType) {
    throw bad(`signature algorithm ${algOid} does not belong to the request's ${key.asymmetricKeyType} key`);
  }
  const signature = readBitStringBytes(req, sigEl, 'signature');
  let ok = false;
  try {
    ok = verify(algorithm.hash, infoEl.raw, key, signature);
  } catch {
    ok = false;
  }
  if (!ok) throw bad('signature does not verify with the request\'s public key (bad signature)');
  return key;
}
