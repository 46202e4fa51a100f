// One root vouches for one trust domain: a partner bundle holding our root (or a copy of its key), or another partner's, is refused and the last good one kept.
import { X509Certificate, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import * as builder from '../../certs-ca/certificate-builder.ts';
import { caSubject } from '../../certs-ca/svid-profile.ts';
import { Ceiling, FederationPolicy, PartnerPolicy, SpiffeIdPattern } from '../../services/authz/federation.ts';
import { GrantSet } from '../../services/authz/grant.ts';
import { PartnerBundles } from '../../services/authz/partner-bundles.ts';
import { SpiffeBundle } from '../../services/authz/spiffe-bundle.ts';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { TrustBundleSet } from '../../services/authz/trust-bundle-set.ts';
import { TD, TestPki } from '../authz/mesh-fixtures.ts';
import { bundleRefusal as refusal } from './partner-domain.ts';

const PARTNER_TD = 'partner.example';
const OTHER_TD = 'other.example';
const PARTNER_ID = `spiffe://${PARTNER_TD}/ns/reports/sa/reader`;

/**
 * What a partner can publish without our CA's key: a "root" carrying our CA's name and public key,
 * signed by a key of its own. Trust anchors' own signatures are not checked, so it vouches for
 * everything our CA signed.
 */
function rewrapped(ours: X509Certificate, trustDomain: string): X509Certificate {
  const now = Date.now();
  const cert = builder.buildCertificate(
    {
      serial: builder.randomSerial(randomBytes),
      issuer: caSubject(trustDomain),
      subject: caSubject(trustDomain),
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3600_000),
      publicKey: ours.publicKey,
      extensions: [builder.basicConstraints({ ca: true }), builder.keyUsage(['keyCertSign', 'cRLSign'])],
    },
    generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey,
  );
  return new X509Certificate(cert.pem);
}

describe('federation: one root vouches for one trust domain', () => {
  let ours: TestPki;
  let partner: TestPki;
  let other: TestPki;
  let dir: string;
  before(() => {
    ours = TestPki.create(TD);
    partner = TestPki.create(PARTNER_TD);
    other = TestPki.create(OTHER_TD);
    dir = mkdtempSync(join(tmpdir(), 'twokey-shared-roots-'));
  });
  after(() => {
    for (const pki of [ours, partner, other]) pki.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the attack: a partner bundle holding our root would pass a certificate signed with our CA\'s key under the partner\'s name off as the partner\'s', () => {
    // Our CA refuses to issue another trust domain's ID, but its key (or any path that signs with
    // it) then decides who the partner's workloads are, in place of the partner's own CA.
    const forged = new X509Certificate(readFileSync(join(ours.forged('as-partner', { uris: [PARTNER_ID] }), 'svid.pem')));
    const set = TrustBundleSet.of(TD, [ours.ca.certificate]);
    // Without the partner bundle, the chain is told apart: it leads to our roots, not the partner's.
    const partnerOnly = set.withBundle(PARTNER_TD, [partner.ca.certificate]);
    expect(partnerOnly.verify([forged], SpiffeId.parse(PARTNER_ID))?.code).to.equal('ERR_PEER_TRUST_DOMAIN');
    // The re-wrapped copy really would vouch for it, which is why it must never be taken in.
    const copy = rewrapped(ours.ca.certificate, TD);
    expect(copy.fingerprint256).to.not.equal(ours.ca.certificate.fingerprint256);
    expect(forged.checkIssued(copy) && forged.verify(copy.publicKey)).to.equal(true);
  });

  it('TrustBundleSet refuses a partner bundle holding our root, a copy of its key, or another partner\'s root', () => {
    const set = TrustBundleSet.of(TD, [ours.ca.certificate]).withBundle(OTHER_TD, [other.ca.certificate]);
    const own = refusal(() => set.withBundle(PARTNER_TD, [partner.ca.certificate, ours.ca.certificate]));
    expect(own.message).to.match(/^trust bundle of "partner\.example" refused: it holds the root .*twokey CA twokey\.local.* \(key sha256 [0-9a-f]{16}\), which is already a root of our own trust domain "twokey\.local"; one root may vouch for one trust domain only$/);
    expect(refusal(() => set.withBundle(PARTNER_TD, [rewrapped(ours.ca.certificate, TD)])).message).to.match(/already a root of our own trust domain "twokey\.local"/);
    expect(refusal(() => set.withBundle(PARTNER_TD, [other.ca.certificate])).message).to.match(/already a root of trust domain "other\.example"; one root/);
    // Replacing a trust domain's own roots is not a clash with itself.
    expect(set.withBundle(OTHER_TD, [other.ca.certificate, partner.ca.certificate]).bundleOf(OTHER_TD)).to.have.length(2);
    expect(set.withBundle(PARTNER_TD, [partner.ca.certificate]).trustDomains).to.deep.equal([TD, OTHER_TD, PARTNER_TD]);
  });

  it('PartnerBundles refuses such an update with a clear error and keeps the last good bundle', async () => {
    const files: Record<string, string> = { [PARTNER_TD]: join(dir, 'partner.json'), [OTHER_TD]: join(dir, 'other.json') };
    const write = (td: string, roots: X509Certificate[], sequence: number): void => writeFileSync(files[td]!, SpiffeBundle.fromCertificates(td, roots, { sequence, refreshHintSeconds: 3600 }).toString());
    const ceiling = (td: string) => [new Ceiling({ workloads: SpiffeIdPattern.parse(`spiffe://${td}/ns/reports/sa/*`), methods: GrantSet.parse(['/twokey.images.v1.ImageStore/ListImages']) })];
    const policy = new FederationPolicy(TD, [
      new PartnerPolicy(PARTNER_TD, { kind: 'file', path: files[PARTNER_TD]! }, ceiling(PARTNER_TD)),
      new PartnerPolicy(OTHER_TD, { kind: 'file', path: files[OTHER_TD]! }, ceiling(OTHER_TD)),
    ]);
    const refused: string[] = [];
    write(PARTNER_TD, [partner.ca.certificate], 1);
    write(OTHER_TD, [other.ca.certificate], 1);
    const bundles = new PartnerBundles({
      policy,
      own: () => ({ trustDomain: TD, roots: [ours.ca.certificate] }),
      onRefused: (td, err) => refused.push(`${td}: ${err.code} ${err.message}`),
    });
    try {
      await bundles.start();
      expect(refused).to.deep.equal([]);
      const fingerprints = (td: string) => (bundles.bundles().get(td) ?? []).map((c) => c.fingerprint256);
      expect(fingerprints(PARTNER_TD)).to.deep.equal([partner.ca.certificate.fingerprint256]);

      // The partner adds our root, then a copy of its key; the other partner adds the partner's root.
      write(PARTNER_TD, [partner.ca.certificate, ours.ca.certificate], 2);
      write(OTHER_TD, [other.ca.certificate, partner.ca.certificate], 2);
      await bundles.refreshNow();
      write(PARTNER_TD, [partner.ca.certificate, rewrapped(ours.ca.certificate, TD)], 3);
      await bundles.refreshNow();
      expect(refused).to.have.length(4);
      expect(refused.filter((r) => r.startsWith(`${PARTNER_TD}: ERR_BUNDLE_INVALID trust bundle of "partner.example" refused`) && r.includes('already a root of our own trust domain "twokey.local"'))).to.have.length(2);
      expect(refused.filter((r) => r.startsWith(`${OTHER_TD}: ERR_BUNDLE_INVALID trust bundle of "other.example" refused`) && r.includes('already a root of trust domain "partner.example"'))).to.have.length(2);
      // The last good bundles stay in force, and their status names the refusal.
      expect(fingerprints(PARTNER_TD)).to.deep.equal([partner.ca.certificate.fingerprint256]);
      expect(fingerprints(OTHER_TD)).to.deep.equal([other.ca.certificate.fingerprint256]);
      const status = bundles.status().find((s) => s.trustDomain === PARTNER_TD)!;
      expect(status.sequence).to.equal(1);
      expect(status.lastError).to.match(/already a root of our own trust domain/);

      // A clean update is taken again.
      write(PARTNER_TD, [partner.ca.certificate], 4);
      await bundles.refreshNow();
      expect(bundles.status().find((s) => s.trustDomain === PARTNER_TD)!.sequence).to.equal(4);
    } finally {
      bundles.close();
    }
  });
});
