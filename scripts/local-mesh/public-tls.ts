// The gateway's public TLS certificate for local runs: its own small CA, separate from the mesh
// CA, so trusting the gateway never means trusting every workload certificate.
import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  OID,
  basicConstraints,
  buildCertificate,
  extKeyUsage,
  keyUsage,
  randomSerial,
  subjectAltName,
  subjectKeyIdentifier,
} from '../../certs-ca/certificate-builder.ts';

export const PUBLIC_TLS_FILES = { caCert: 'ca.pem', caKey: 'ca.key', cert: 'tls.crt', key: 'tls.key' } as const;

const LEAF_DAYS = 30;
const RENEW_BEFORE_MS = 86_400_000;
const DAY_MS = 86_400_000;

function writePrivate(path: string, text: string): void {
  writeFileSync(path, text, { mode: 0o600 });
  chmodSync(path, 0o600);
}

function leafIsFresh(certFile: string, keyFile: string, now: Date): boolean {
  if (!existsSync(certFile) || !existsSync(keyFile)) return false;
  const cert = new X509Certificate(readFileSync(certFile));
  return new Date(cert.validTo).getTime() - now.getTime() > RENEW_BEFORE_MS;
}

/**
 * Ensures `dir` holds ca.pem (what clients trust), tls.crt and tls.key (what the gateway serves)
 * for localhost, 127.0.0.1 and ::1. Reuses what is there until the leaf is a day from expiry.
 * Another `leafName` (`console`: console.crt, console.key) gets its own key from the same CA, so
 * one trusted CA covers every local HTTPS page without two servers sharing a key.
 */
export function ensurePublicTls(dir: string, now: Date = new Date(), leafName = 'tls'): { caFile: string; certFile: string; keyFile: string } {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const files = {
    caFile: join(dir, PUBLIC_TLS_FILES.caCert),
    certFile: join(dir, leafName === 'tls' ? PUBLIC_TLS_FILES.cert : `${leafName}.crt`),
    keyFile: join(dir, leafName === 'tls' ? PUBLIC_TLS_FILES.key : `${leafName}.key`),
  };
  if (leafIsFresh(files.certFile, files.keyFile, now)) return files;

  let caKey;
  let caPem: string;
  const caKeyPath = join(dir, PUBLIC_TLS_FILES.caKey);
  if (existsSync(caKeyPath) && existsSync(files.caFile)) {
    caKey = createPrivateKey(readFileSync(caKeyPath));
    caPem = readFileSync(files.caFile, 'utf8');
  } else {
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    caKey = pair.privateKey;
    const subject = [['O', 'twokey'], ['CN', 'twokey local gateway CA']] as const;
    caPem = buildCertificate(
      {
        serial: randomSerial(randomBytes),
        issuer: subject,
        subject,
        notBefore: new Date(now.getTime() - 60_000),
        notAfter: new Date(now.getTime() + 3650 * DAY_MS),
        publicKey: pair.publicKey,
        extensions: [basicConstraints({ ca: true, pathLen: 0 }), keyUsage(['keyCertSign', 'cRLSign']), subjectKeyIdentifier(pair.publicKey)],
      },
      caKey,
    ).pem;
    writePrivate(caKeyPath, caKey.export({ type: 'pkcs8', format: 'pem' }).toString());
    writeFileSync(files.caFile, caPem, { mode: 0o644 });
  }
  const leaf = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const caCert = new X509Certificate(caPem);
  const cert = buildCertificate(
    {
      serial: randomSerial(randomBytes),
      issuer: [['O', 'twokey'], ['CN', 'twokey local gateway CA']],
      subject: [['O', 'twokey'], ['CN', 'localhost']],
      notBefore: new Date(now.getTime() - 60_000),
      notAfter: new Date(Math.min(now.getTime() + LEAF_DAYS * DAY_MS, new Date(caCert.validTo).getTime())),
      publicKey: leaf.publicKey,
      extensions: [
        basicConstraints({ ca: false }),
        keyUsage(['digitalSignature']),
        extKeyUsage([OID.serverAuth]),
        subjectAltName({ dns: ['localhost'], ips: ['127.0.0.1', '::1'] }),
        subjectKeyIdentifier(leaf.publicKey),
      ],
    },
    caKey,
  );
  writePrivate(files.keyFile, leaf.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  writeFileSync(files.certFile, cert.pem, { mode: 0o644 });
  return files;
}
