// Defective workload certificates, each named for its one defect, for tests that must see them
// refused. Built beside a real CA from the same profile the CA issues, then broken on purpose.
import { createPrivateKey, randomBytes, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ErrorCode } from '../services/authz/errors.ts';
import { SpiffeId } from '../services/authz/spiffe-id.ts';
import { CertificateAuthority, CA_FILES, WORKLOAD_FILES } from './certificate-authority.ts';
import {
  OID,
  basicConstraints,
  buildCertificate,
  grantsExtension,
  keyIdentifier,
  randomSerial,
  subjectAltName,
  toDer,
  type CertificateSpec,
  type Extension,
} from './certificate-builder.ts';
import forge from 'node-forge';
import { caSubject, rootSpec, svidSpec } from './svid-profile.ts';
import { generateP256 } from './workload-key.ts';

export interface Fixture {
  /** Directory name, the defect in kebab case. */
  name: string;
  description: string;
  /** What parseSvid must do: accept, or throw this code. */
  parse: 'ok' | ErrorCode;
  /** Whether a TLS handshake verifying against the fixtures' bundle.pem accepts the chain. */
  chainTrusted: boolean;
}

export interface FixtureSet {
  dir: string;
  trustDomain: string;
  /** The CA every trusted fixture chains to; its bundle is in every fixture folder. */
  caDir: string;
  fixtures: Fixture[];
}

const HOUR = 3600_000;
export const FIXTURE_TRUST_DOMAIN = 'twokey.local';
export const FIXTURE_SPIFFE_ID = `spiffe://${FIXTURE_TRUST_DOMAIN}/ns/fixtures/sa/client`;
export const FIXTURE_GRANTS = ['/twokey.images.v1.ImageStore/GetImage', '/twokey.auth.v1.Auth/GetJwks'];

type Mutation = (spec: CertificateSpec, grantsOid: string) => CertificateSpec;

const replaceExtension = (spec: CertificateSpec, oid: string, ext: Extension | Extension[]): CertificateSpec => ({
  ...spec,
  extensions: spec.extensions.flatMap((e) => (e.oid === oid ? ext : [e])),
});

const DEFINITIONS: ReadonlyArray<Omit<Fixture, 'chainTrusted'> & { mutate: Mutation; wrongCa?: boolean }> = [
  { name: 'valid', description: 'a correct X.509-SVID (the baseline)', parse: 'ok', mutate: (s) => s },
  {
    name: 'expired',
    description: 'validity ended an hour ago',
    parse: 'ok',
    mutate: (s) => ({ ...s, notBefore: new Date(s.notBefore.getTime() - 3 * HOUR), notAfter: new Date(s.notBefore.getTime() - HOUR) }),
  },
  {
    name: 'not-yet-valid',
    description: 'validity starts in an hour',
    parse: 'ok',
    mutate: (s) => ({ ...s, notBefore: new Date(s.notBefore.getTime() + 2 * HOUR), notAfter: new Date(s.notAfter.getTime() + 2 * HOUR) }),
  },
  { name: 'wrong-ca', description: 'signed by another CA with the same name', parse: 'ok', mutate: (s) => s, wrongCa: true },
  {
    name: 'ca-true-leaf',
    description: 'the leaf claims CA=true',
    parse: 'ERR_PEER_CERT_INVALID',
    mutate: (s) => replaceExtension(s, OID.basicConstraints, basicConstraints({ ca: true })),
  },
  {
    name: 'two-uri-sans',
    description: 'two SPIFFE ID URI SANs',
    parse: 'ERR_PEER_CERT_INVALID',
    mutate: (s) =>
      replaceExtension(s, OID.subjectAltName, subjectAltName({ uris: [FIXTURE_SPIFFE_ID, `spiffe://${FIXTURE_TRUST_DOMAIN}/ns/fixtures/sa/admin`], dns: ['localhost'] })),
  },
  {
    name: 'no-uri-san',
    description: 'DNS SAN only, no SPIFFE ID',
    parse: 'ERR_PEER_CERT_INVALID',
    mutate: (s) => replaceExtension(s, OID.subjectAltName, subjectAltName({ dns: ['localhost'] })),
  },
  {
    name: 'other-trust-domain',
    description: 'a SPIFFE ID in trust domain evil.example',
    parse: 'ok',
    mutate: (s) => replaceExtension(s, OID.subjectAltName, subjectAltName({ uris: ['spiffe://evil.example/ns/fixtures/sa/client'], dns: ['localhost'] })),
  },
  {
    name: 'invalid-spiffe-id',
    description: 'URI SAN with a percent-encoded path',
    parse: 'ERR_SPIFFE_ID_INVALID',
    mutate: (s) => replaceExtension(s, OID.subjectAltName, subjectAltName({ uris: [`spiffe://${FIXTURE_TRUST_DOMAIN}/ns/fixtures/sa/cl%69ent`] })),
  },
  {
    name: 'critical-grant-extension',
    description: 'the grants extension marked critical',
    parse: 'ERR_GRANT_EXTENSION_INVALID',
    mutate: (s, oid) => replaceExtension(s, oid, grantsExtension(oid, FIXTURE_GRANTS, true)),
  },
  {
    name: 'malformed-grant-extension',
    description: 'grants encoded as a SEQUENCE OF INTEGER',
    parse: 'ERR_GRANT_EXTENSION_INVALID',
    mutate: (s, oid) =>
      replaceExtension(s, oid, {
        oid,
        critical: false,
        value: toDer(forge.asn1.create(forge.asn1.Class.UNIVERSAL, forge.asn1.Type.SEQUENCE, true, [forge.asn1.create(forge.asn1.Class.UNIVERSAL, forge.asn1.Type.INTEGER, false, '\x07')])),
      }),
  },
  {
    name: 'duplicate-grant-extension',
    description: 'two grants extensions (the second granting everything in Auth)',
    parse: 'ERR_GRANT_EXTENSION_INVALID',
    mutate: (s, oid) => replaceExtension(s, oid, [grantsExtension(oid, FIXTURE_GRANTS), grantsExtension(oid, ['/twokey.auth.v1.Auth/*'])]),
  },
  {
    name: 'bad-grant-syntax',
    description: 'a grant with a prefix wildcard',
    parse: 'ERR_GRANT_EXTENSION_INVALID',
    mutate: (s, oid) => replaceExtension(s, oid, grantsExtension(oid, ['/twokey.images.v1.ImageStore/Get*'])),
  },
];

// What OpenSSL's chain verification (and so Node's TLS) refuses before any twokey code runs: the
// impostor's signature, the validity period, and an unrecognized critical extension.
const CHAIN_REJECTED: ReadonlySet<string> = new Set(['wrong-ca', 'expired', 'not-yet-valid', 'critical-grant-extension']);

/**
 * Creates a fresh CA under `dir`/ca and one folder per fixture (svid.pem, svid.key, bundle.pem),
 * plus manifest.json describing what each must cause. Overwrites earlier fixtures in `dir`.
 */
export function makeHostileFixtures(dir: string, clock: () => Date = () => new Date()): FixtureSet {
  const caDir = join(dir, 'ca');
  // A new CA each run: fixtures never chain to a CA anything else trusts.
  rmSync(caDir, { recursive: true, force: true });
  const ca = CertificateAuthority.init({ dir: caDir, trustDomain: FIXTURE_TRUST_DOMAIN, clock });
  const caKey = createPrivateKey(readFileSync(join(ca.dir, CA_FILES.key), 'utf8'));
  const wrongCa = makeImpostorCa(clock);
  const now = new Date(Math.floor(clock().getTime() / 1000) * 1000);

  const fixtures: Fixture[] = DEFINITIONS.map((def) => {
    const keys = generateP256();
    const signer: { key: KeyObject; publicKey: KeyObject } = def.wrongCa ? wrongCa : { key: caKey, publicKey: ca.certificate.publicKey };
    const base = svidSpec({
      spiffeId: SpiffeId.parse(FIXTURE_SPIFFE_ID),
      grants: FIXTURE_GRANTS,
      grantsOid: ca.grantsOid,
      dns: ['localhost'],
      ip: ['127.0.0.1'],
      publicKey: keys.publicKey,
      issuer: caSubject(FIXTURE_TRUST_DOMAIN),
      issuerKeyId: keyIdentifier(signer.publicKey),
      serial: randomSerial(randomBytes),
      notBefore: new Date(now.getTime() - 60_000),
      notAfter: new Date(now.getTime() + 24 * HOUR),
    });
    const cert = buildCertificate(def.mutate(base, ca.grantsOid), signer.key);
    const out = join(dir, def.name);
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, WORKLOAD_FILES.chain), cert.pem);
    writeFileSync(join(out, WORKLOAD_FILES.key), keys.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
    writeFileSync(join(out, WORKLOAD_FILES.bundle), ca.bundlePem());
    const chainTrusted = !CHAIN_REJECTED.has(def.name);
    return { name: def.name, description: def.description, parse: def.parse, chainTrusted };
  });
  const set: FixtureSet = { dir, trustDomain: FIXTURE_TRUST_DOMAIN, caDir: ca.dir, fixtures };
  writeFileSync(join(dir, 'manifest.json'), `${JSON.stringify(set, null, 2)}\n`);
  return set;
}

/** A CA with the real CA's exact name and a different key: only the signature tells them apart. */
function makeImpostorCa(clock: () => Date): { key: KeyObject; publicKey: KeyObject } {
  const keys = generateP256();
  const now = clock();
  // Built only so the impostor is a complete CA; the fixtures need just its key.
  buildCertificate(
    rootSpec({
      trustDomain: FIXTURE_TRUST_DOMAIN,
      publicKey: keys.publicKey,
      serial: Buffer.from([0x01]),
      notBefore: new Date(now.getTime() - HOUR),
      notAfter: new Date(now.getTime() + 48 * HOUR),
    }),
    keys.privateKey,
  );
  return { key: keys.privateKey, publicKey: keys.publicKey };
}
