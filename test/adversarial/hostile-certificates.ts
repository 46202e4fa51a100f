// Hostile client certificates beyond the named fixtures, minted with the fixtures' own CA key from the SVID profile.
import { X509Certificate, createPrivateKey, randomBytes, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as builder from '../../certs-ca/certificate-builder.ts';
import { generateP256 } from '../../certs-ca/index.ts';
import type { CertificateSpec, Extension } from '../../certs-ca/certificate-builder.ts';
import { FIXTURE_GRANTS, FIXTURE_SPIFFE_ID, FIXTURE_TRUST_DOMAIN } from '../../certs-ca/hostile-fixtures.ts';
import { caSubject, svidSpec } from '../../certs-ca/svid-profile.ts';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';

export type SpecEdit = (spec: CertificateSpec, grantsOid: string) => CertificateSpec;

/** Replaces the extension with `oid` (or drops it when `ext` is empty). */
export const replaceExtension = (oid: string, ext: Extension[]): SpecEdit => (spec) => ({
  ...spec,
  extensions: spec.extensions.flatMap((e) => (e.oid === oid ? ext : [e])),
});

export const withGrants = (grants: readonly string[]): SpecEdit => (spec, oid) => replaceExtension(oid, [builder.grantsExtension(oid, grants)])(spec, oid);

export const withSan = (names: { uris?: string[]; dns?: string[] }): SpecEdit =>
  replaceExtension(builder.OID.subjectAltName, [builder.subjectAltName(names)]);

/** Mints client certificates into directories (svid.pem, svid.key, bundle.pem) with the fixture CA. */
export class HostileMint {
  readonly #caKey: KeyObject;
  readonly #caPublicKey: KeyObject;
  readonly #bundlePem: string;
  readonly #grantsOid: string;
  readonly #root: string;

  constructor(caDir: string, root: string) {
    this.#caKey = createPrivateKey(readFileSync(join(caDir, 'ca.key')));
    this.#bundlePem = readFileSync(join(caDir, 'ca.pem'), 'utf8');
    this.#caPublicKey = new X509Certificate(this.#bundlePem).publicKey;
    this.#grantsOid = JSON.parse(readFileSync(join(caDir, 'config.json'), 'utf8')).grantsOid;
    this.#root = root;
  }

  /** The CA's leaf profile for the fixture SPIFFE ID and grants, edited, signed by `signer` (default: the CA). */
  mint(name: string, edit: SpecEdit = (s) => s, opts: { signer?: KeyObject; issuerKey?: KeyObject; extraChainPem?: string } = {}): { dir: string; keyPem: string; certPem: string } {
    const keys = generateP256();
    const now = Math.floor(Date.now() / 1000) * 1000;
    const base = svidSpec({
      spiffeId: SpiffeId.parse(FIXTURE_SPIFFE_ID),
      grants: FIXTURE_GRANTS,
      grantsOid: this.#grantsOid,
      dns: ['localhost'],
      ip: ['127.0.0.1'],
      publicKey: keys.publicKey,
      issuer: caSubject(FIXTURE_TRUST_DOMAIN),
      issuerKeyId: builder.keyIdentifier(opts.issuerKey ?? this.#caPublicKey),
      serial: builder.randomSerial(randomBytes),
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3600_000),
    });
    const cert = builder.buildCertificate(edit(base, this.#grantsOid), opts.signer ?? this.#caKey);
    const dir = join(this.#root, name);
    mkdirSync(dir, { recursive: true });
    const keyPem = keys.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    writeFileSync(join(dir, 'svid.pem'), cert.pem + (opts.extraChainPem ?? ''));
    writeFileSync(join(dir, 'svid.key'), keyPem, { mode: 0o600 });
    writeFileSync(join(dir, 'bundle.pem'), this.#bundlePem);
    return { dir, keyPem, certPem: cert.pem };
  }

  get grantsOid(): string {
    return this.#grantsOid;
  }
}

