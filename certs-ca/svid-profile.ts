// The certificate profiles twokey issues: the root CA and the X.509-SVID leaf. The CA fills them
// only after its policy checks; fixtures start from them and break one thing at a time.
import type { KeyObject } from 'node:crypto';
import type { SpiffeId } from '../services/authz/spiffe-id.ts';
import {
  OID,
  authorityKeyIdentifier,
  basicConstraints,
  extKeyUsage,
  grantsExtension,
  keyUsage,
  subjectAltName,
  subjectKeyIdentifier,
  type CertificateSpec,
  type Name,
} from './certificate-builder.ts';

export function caSubject(trustDomain: string): Name {
  return [
    ['O', 'twokey'],
    ['CN', `twokey CA ${trustDomain}`.slice(0, 64)],
  ];
}

/** Self-signed root: CA=true with pathLen 0 (it signs leaves only), keyCertSign + cRLSign. */
export function rootSpec(input: { trustDomain: string; publicKey: KeyObject; serial: Buffer; notBefore: Date; notAfter: Date }): CertificateSpec {
  const subject = caSubject(input.trustDomain);
  return {
    serial: input.serial,
    issuer: subject,
    subject,
    notBefore: input.notBefore,
    notAfter: input.notAfter,
    publicKey: input.publicKey,
    extensions: [basicConstraints({ ca: true, pathLen: 0 }), keyUsage(['keyCertSign', 'cRLSign']), subjectKeyIdentifier(input.publicKey)],
  };
}

export interface SvidSpecInput {
  spiffeId: SpiffeId;
  grants: readonly string[];
  grantsOid: string;
  dns: readonly string[];
  ip: readonly string[];
  publicKey: KeyObject;
  issuer: Name;
  issuerKeyId: Buffer;
  serial: Buffer;
  notBefore: Date;
  notAfter: Date;
}

/**
 * X.509-SVID leaf: exactly one URI SAN (plus DNS/IP SANs for hostname-verifying clients), CA=false,
 * digitalSignature (+ keyEncipherment for RSA keys), serverAuth + clientAuth, SKI/AKI, and the
 * grants as a non-critical SEQUENCE OF UTF8String.
 */
export function svidSpec(input: SvidSpecInput): CertificateSpec {
  const path = input.spiffeId.path;
  return {
    serial: input.serial,
    issuer: input.issuer,
    subject: [
      ['O', 'twokey'],
      ['CN', path.slice(path.lastIndexOf('/') + 1).slice(0, 64) || input.spiffeId.trustDomain.slice(0, 64)],
    ],
    notBefore: input.notBefore,
    notAfter: input.notAfter,
    publicKey: input.publicKey,
    extensions: [
      basicConstraints({ ca: false }),
      // keyEncipherment only matters for RSA key exchange.
      keyUsage(input.publicKey.asymmetricKeyType === 'rsa' ? ['digitalSignature', 'keyEncipherment'] : ['digitalSignature']),
      extKeyUsage([OID.serverAuth, OID.clientAuth]),
      subjectAltName({ uris: [input.spiffeId.toString()], dns: input.dns, ips: input.ip }),
      subjectKeyIdentifier(input.publicKey),
      authorityKeyIdentifier(input.issuerKeyId),
      grantsExtension(input.grantsOid, input.grants),
    ],
  };
}
