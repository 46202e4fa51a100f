// The benchmark's workload certificates, issued by twokey's own CA into a temporary directory:
// one server identity and client identities holding 1, 100 and 10,000 grants, plus one that is
// not granted the benchmark method.
import { createPrivateKey, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CA_FILES, CertificateAuthority, MAX_CERTIFICATE_DER_BYTES } from '../certs-ca/certificate-authority.ts';
import { buildCertificate, keyIdentifier, randomSerial } from '../certs-ca/certificate-builder.ts';
import { caSubject, svidSpec } from '../certs-ca/svid-profile.ts';
import { generateP256 } from '../certs-ca/workload-key.ts';
import { MethodCatalog } from '../services/authz/method-catalog.ts';
import { SpiffeId } from '../services/authz/spiffe-id.ts';
import { parseSvid } from '../services/authz/svid.ts';
import { BENCH_PROTO_ROOT, ECHO_METHOD, OTHER_METHOD } from './echo-service.ts';

import { AUTHORIZER_PROTO_ROOT, CHECK_METHOD } from '../services/authorizer/proxy-admission.ts';

export const TRUST_DOMAIN = 'twokey.local';

export interface BenchPki {
  /** Workload directories (svid.pem, svid.key, bundle.pem) by role. */
  server: string;
  clientOneGrant: string;
  clientNotGranted: string;
  clientGrants100: string;
  clientGrantsLarge: string;
  largeGrantCount: number;
  /**
   * 10,000 grants: parsed in-process only, since no TLS connection can carry it; the CA refuses to
   * issue it (over MAX_CERTIFICATE_DER_BYTES), so it is signed beneath the CA's policy.
   */
  clientGrants10000: string;
  grantsOid: string;
  /**
   * Scenario G's nginx: the echo server's identity (what callers see in front of the backend),
   * granted Envoy's Check so the authorizer accepts the certificates it forwards.
   */
  proxy: string;
  /** Proto roots whose declared rules servers apply: the bench proto (the filler methods declare none). */
  ruleRoots: string[];
}

// Identifier characters protobuf allows: the shortest distinct method names keep the certificates
// small (about 10 bytes per grant), so 6,000 grants stay under the CA's size limit.
const FIRST = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_';
const REST = `${FIRST}0123456789`;

function shortNames(count: number): string[] {
  const names: string[] = [];
  for (const a of FIRST) names.push(a);
  for (const a of FIRST) for (const b of REST) names.push(a + b);
  outer: for (const a of FIRST) {
    for (const b of REST) {
      for (const c of REST) {
        if (names.length >= count) break outer;
        names.push(a + b + c);
      }
    }
  }
  return names.slice(0, count);
}

/**
 * Writes a proto package `b` whose service S has `count` methods, so that large grant lists name
 * real methods (the CA refuses grants naming none).
 */
function writeFillerProto(root: string, count: number): string[] {
  const names = shortNames(count);
  fs.mkdirSync(path.join(root, 'b'), { recursive: true });
  const rpcs = names.map((n) => `  rpc ${n}(E) returns (E);`).join('\n');
  fs.writeFileSync(path.join(root, 'b', 'filler.proto'), `syntax = "proto3";\npackage b;\nmessage E {}\nservice S {\n${rpcs}\n}\n`);
  return names.map((n) => `/b.S/${n}`);
}

export function buildPki(workDir: string, largeGrantCount: number): BenchPki {
  const fillerRoot = path.join(workDir, 'filler-proto');
  const filler = writeFillerProto(fillerRoot, Math.max(largeGrantCount, 10_000) - 1);
  const catalog = MethodCatalog.load({ extraRoots: [BENCH_PROTO_ROOT, fillerRoot] });
  const ca = CertificateAuthority.init({ dir: path.join(workDir, 'ca'), trustDomain: TRUST_DOMAIN, catalog });
  const issue = (name: string, grants: string[]): string => {
    const dir = path.join(workDir, 'workloads', name);
    const issued = ca.issue({
      spiffeId: `spiffe://${TRUST_DOMAIN}/ns/bench/sa/${name}`,
      grants,
      ip: ['127.0.0.1'],
      dns: ['localhost'],
      ttl: '1h',
    });
    ca.writeWorkload(dir, issued);
    return dir;
  };
  // The same profile, names and CA key as issue(), without the CA's size limit: the decision-cost
  // measurement parses it in-process, which is all a certificate too big for TLS can be used for.
  const signOversized = (name: string, grants: string[]): string => {
    const dir = path.join(workDir, 'workloads', name);
    const keys = generateP256();
    const now = Date.now();
    const cert = buildCertificate(
      svidSpec({
        spiffeId: SpiffeId.parse(`spiffe://${TRUST_DOMAIN}/ns/bench/sa/${name}`),
        grants,
        grantsOid: ca.grantsOid,
        dns: ['localhost'],
        ip: ['127.0.0.1'],
        publicKey: keys.publicKey,
        issuer: caSubject(TRUST_DOMAIN),
        issuerKeyId: keyIdentifier(ca.certificate.publicKey),
        serial: randomSerial(randomBytes),
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + 3_600_000),
      }),
      createPrivateKey(fs.readFileSync(path.join(ca.dir, CA_FILES.key))),
    );
    if (cert.der.length <= MAX_CERTIFICATE_DER_BYTES) throw new Error(`${name} is ${cert.der.length} bytes: ca.issue() would sign it`);
    const svid = parseSvid(cert.der, { grantsOid: ca.grantsOid });
    ca.writeWorkload(dir, { certPem: cert.pem, chainPem: cert.pem, bundlePem: ca.bundlePem(), svid, keyPem: keys.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string });
    return dir;
  };
  // The granted method comes last: a grant lookup that scanned the list would pay for every entry.
  return {
    server: issue('echo-server', []),
    clientOneGrant: issue('client-1', [ECHO_METHOD]),
    clientNotGranted: issue('client-not-granted', [OTHER_METHOD]),
    clientGrants100: issue('client-100', [...filler.slice(0, 99), ECHO_METHOD]),
    clientGrantsLarge: issue(`client-${largeGrantCount}`, [...filler.slice(0, largeGrantCount - 1), ECHO_METHOD]),
    largeGrantCount,
    clientGrants10000: signOversized('client-10000', [...filler.slice(0, 9_999), ECHO_METHOD]),
    grantsOid: ca.grantsOid,
    proxy: (() => {
      const dir = path.join(workDir, 'workloads', 'echo-proxy');
      ca.writeWorkload(
        dir,
        ca.issue({ spiffeId: `spiffe://${TRUST_DOMAIN}/ns/bench/sa/echo-server`, grants: [CHECK_METHOD], ip: ['127.0.0.1'], dns: ['localhost'], ttl: '1h', extraProtoRoots: [AUTHORIZER_PROTO_ROOT] }),
      );
      return dir;
    })(),
    ruleRoots: [BENCH_PROTO_ROOT],
  };
}
