// SPIFFE bundles parsed strictly, and a partner's bundle endpoint watched over real HTTPS: every bad answer refused, the last good kept.
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { Registry } from 'prom-client';
import { FederationPolicy, PartnerPolicy, Ceiling, SpiffeIdPattern, type BundleSource } from '../../services/authz/federation.ts';
import { GrantSet } from '../../services/authz/grant.ts';
import { PartnerBundles } from '../../services/authz/partner-bundles.ts';
import { MAX_BUNDLE_BYTES, SpiffeBundle } from '../../services/authz/spiffe-bundle.ts';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { registerPartnerBundleMetrics } from '../../services/authz/workload-metrics.ts';
import { ENDPOINT_ID, PARTNER_TD, PartnerDomain, bundleRefusal as refusal } from './partner-domain.ts';

describe('federation: SPIFFE bundles', () => {
  let partner: PartnerDomain;
  before(() => {
    partner = new PartnerDomain();
    partner.addCa();
  });
  after(() => partner.cleanup());

  it('round-trips the bundle format: a JWK Set with spiffe_sequence, spiffe_refresh_hint and x509-svid keys carrying one x5c each', () => {
    const json = JSON.parse(partner.bundleJson([0, 1], 7, 60));
    expect(json.spiffe_sequence).to.equal(7);
    expect(json.spiffe_refresh_hint).to.equal(60);
    expect(json.keys).to.have.length(2);
    for (const key of json.keys) {
      expect(key.use).to.equal('x509-svid');
      expect(key.x5c).to.have.length(1);
      expect(key).to.not.have.any.keys('d', 'p', 'q');
    }
    const parsed = SpiffeBundle.parse(JSON.stringify(json), PARTNER_TD);
    expect(parsed.sequence).to.equal(7);
    expect(parsed.refreshHintSeconds).to.equal(60);
    expect(parsed.x509Authorities.map((c) => c.fingerprint256)).to.deep.equal([partner.root(0).fingerprint256, partner.root(1).fingerprint256]);
  });

  it('ignores keys of other uses (jwt-svid) and unknown uses, as the spec says', () => {
    const json = JSON.parse(partner.bundleJson([0], 1, 60));
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    json.keys.push({ ...publicKey.export({ format: 'jwk' }), use: 'jwt-svid', kid: 'k1' }, { kty: 'EC', use: 'something-else' });
    expect(SpiffeBundle.parse(JSON.stringify(json), PARTNER_TD).x509Authorities).to.have.length(1);
  });

  it('refuses garbage, an oversized body, private key material, an x5c that is no CA or not the key stated, and a bundle trusting nothing', () => {
    expect(refusal(() => SpiffeBundle.parse('<html>hello</html>', PARTNER_TD)).message).to.match(/not JSON/);
    expect(refusal(() => SpiffeBundle.parse('[]', PARTNER_TD)).message).to.match(/not a JSON object/);
    expect(refusal(() => SpiffeBundle.parse('{"keys":{}}', PARTNER_TD)).message).to.match(/"keys" must be an array/);
    expect(refusal(() => SpiffeBundle.parse(Buffer.alloc(MAX_BUNDLE_BYTES + 1, 0x20), PARTNER_TD)).message).to.match(/more than the \d+ allowed/);
    const json = JSON.parse(partner.bundleJson([0], 1, 60));
    // A private key anywhere, even on a key of another use, refuses the whole bundle.
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const leaked = { ...json, keys: [...json.keys, { ...privateKey.export({ format: 'jwk' }), use: 'jwt-svid' }] };
    expect(refusal(() => SpiffeBundle.parse(JSON.stringify(leaked), PARTNER_TD)).message).to.match(/private key material \(d\)/);
    const withD = { ...json, keys: [{ ...json.keys[0], d: 'AAAA' }] };
    expect(refusal(() => SpiffeBundle.parse(JSON.stringify(withD), PARTNER_TD)).message).to.match(/private key material/);
    const leaf = partner.issue(`spiffe://${PARTNER_TD}/ns/a/sa/b`, []);
    const leafDer = Buffer.from(leaf.svid.der).toString('base64');
    expect(refusal(() => SpiffeBundle.parse(JSON.stringify({ keys: [{ kty: 'EC', use: 'x509-svid', x5c: [leafDer] }] }), PARTNER_TD)).message).to.match(/not a CA/);
    const twoCerts = { keys: [{ kty: 'EC', use: 'x509-svid', x5c: [json.keys[0].x5c[0], json.keys[0].x5c[0]] }] };
    expect(refusal(() => SpiffeBundle.parse(JSON.stringify(twoCerts), PARTNER_TD)).message).to.match(/exactly one certificate/);
    const otherKey = JSON.parse(partner.bundleJson([1], 1, 60)).keys[0];
    const mismatched = { keys: [{ ...otherKey, x5c: json.keys[0].x5c }] };
    expect(refusal(() => SpiffeBundle.parse(JSON.stringify(mismatched), PARTNER_TD)).message).to.match(/not the key of its x5c/);
    expect(refusal(() => SpiffeBundle.parse('{"keys":[]}', PARTNER_TD)).message).to.match(/no x509-svid key/);
    expect(refusal(() => SpiffeBundle.parse(JSON.stringify({ ...json, spiffe_sequence: 2 ** 60 }), PARTNER_TD)).message).to.match(/spiffe_sequence/);
    expect(refusal(() => SpiffeBundle.parse(JSON.stringify({ ...json, spiffe_refresh_hint: -1 }), PARTNER_TD)).message).to.match(/spiffe_refresh_hint/);
  });
});

describe('federation: a partner bundle endpoint watched (https_spiffe, real HTTPS on loopback)', function () {
  this.timeout(30_000);
  let partner: PartnerDomain;
  let dir: string;
  let bundles: PartnerBundles;
  const refused: string[] = [];
  const metrics = new Registry();

  function policy(source: BundleSource): FederationPolicy {
    const ceiling = new Ceiling({ workloads: SpiffeIdPattern.parse(`spiffe://${PARTNER_TD}/ns/reports/sa/*`), methods: GrantSet.parse(['/twokey.images.v1.ImageStore/ListImages']) });
    return new FederationPolicy('twokey.local', [new PartnerPolicy(PARTNER_TD, source, [ceiling])]);
  }
  const roots = (): string[] => (bundles.bundles().get(PARTNER_TD) ?? []).map((c) => c.fingerprint256);
  const status = () => bundles.status()[0]!;
  async function metric(name: string): Promise<number> {
    const text = await metrics.metrics();
    const line = text.split('\n').find((l) => l.startsWith(`${name}{trust_domain="${PARTNER_TD}"}`));
    return Number(line?.split(' ')[1]);
  }

  before(async () => {
    partner = new PartnerDomain();
    dir = mkdtempSync(join(tmpdir(), 'twokey-partner-'));
    const initial = join(dir, 'initial.json');
    writeFileSync(initial, partner.bundleJson([0], 1, 1));
    partner.answer = () => ({ status: 200, body: partner.bundleJson([0], 1, 1) });
    const url = await partner.start(0);
    // Long intervals: the test drives each refresh with refreshNow(), so nothing depends on timing.
    bundles = new PartnerBundles({
      policy: policy({ kind: 'https_spiffe', url, endpointSpiffeId: SpiffeId.parse(ENDPOINT_ID), initialFile: initial }),
      minRefreshMs: 3_600_000,
      retryMs: 3_600_000,
      onRefused: (_td, err) => refused.push(err.message),
    });
    registerPartnerBundleMetrics(metrics, bundles);
    await bundles.start();
  });
  after(async () => {
    bundles.close();
    await partner.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('loads the initial bundle, then the endpoint authenticated by it; the metrics show the sequence', async () => {
    expect(refused).to.deep.equal([]);
    expect(roots()).to.deep.equal([partner.root(0).fingerprint256]);
    expect(status().sequence).to.equal(1);
    expect(await metric('twokey_partner_bundle_sequence')).to.equal(1);
    expect(await metric('twokey_partner_bundle_refresh_failures_total')).to.equal(0);
  });

  it('follows a CA rotation: the new root published beside the old, then the old removed (and the endpoint re-keyed)', async () => {
    partner.addCa();
    partner.answer = () => ({ status: 200, body: partner.bundleJson([0, 1], 2, 1) });
    let changes = 0;
    const stop = bundles.onChange(() => (changes += 1));
    await bundles.refreshNow();
    expect(roots()).to.deep.equal([partner.root(0).fingerprint256, partner.root(1).fingerprint256]);
    partner.reissueEndpoint(1);
    partner.answer = () => ({ status: 200, body: partner.bundleJson([1], 3, 1) });
    await bundles.refreshNow();
    stop();
    expect(roots()).to.deep.equal([partner.root(1).fingerprint256]);
    expect(status().sequence).to.equal(3);
    expect(changes).to.equal(2);
    expect(refused).to.deep.equal([]);
  });

  for (const [what, answer, message] of [
    ['garbage', () => ({ status: 200, body: 'garbage, not a bundle' }), /not JSON/],
    ['an oversized body', () => ({ status: 200, body: Buffer.alloc(MAX_BUNDLE_BYTES + 10, 0x20) }), /body larger than \d+ bytes/],
    ['a bundle with private keys', () => {
      const json = JSON.parse(partner.bundleJson([1], 4, 1));
      json.keys[0].d = 'c2VjcmV0';
      return { status: 200, body: JSON.stringify(json) };
    }, /private key material/],
    ['a sequence number going backwards', () => ({ status: 200, body: partner.bundleJson([0], 2, 1) }), /spiffe_sequence 2 goes back from 3/],
    ['other roots under the same sequence', () => ({ status: 200, body: partner.bundleJson([0, 1], 3, 1) }), /other roots under the same spiffe_sequence 3/],
    ['an HTTP error', () => ({ status: 500, body: 'oops' }), /answered HTTP 500/],
    ['a redirect', () => ({ status: 302, body: '' }), /redirects are not followed/],
  ] as const) {
    it(`refuses ${what} and keeps the last good bundle`, async () => {
      const failures = status().failures;
      partner.answer = answer;
      refused.length = 0;
      await bundles.refreshNow();
      expect(refused).to.have.length(1);
      expect(refused[0]).to.match(message);
      expect(roots()).to.deep.equal([partner.root(1).fingerprint256]);
      expect(status().sequence).to.equal(3);
      expect(status().failures).to.equal(failures + 1);
      expect(await metric('twokey_partner_bundle_refresh_failures_total')).to.equal(failures + 1);
    });
  }

  it('refuses an endpoint presenting another SPIFFE ID, or a certificate our copy of the partner bundle does not vouch for', async () => {
    partner.answer = () => ({ status: 200, body: partner.bundleJson([1], 9, 1) });
    refused.length = 0;
    partner.reissueEndpoint(1, `spiffe://${PARTNER_TD}/ns/infra/sa/impostor`);
    await bundles.refreshNow();
    // CA 0 was removed from the partner's bundle: an endpoint certificate it issued proves nothing now.
    partner.reissueEndpoint(0);
    await bundles.refreshNow();
    expect(refused).to.have.length(2);
    expect(refused[0]).to.match(/presented spiffe:\/\/partner\.example\/ns\/infra\/sa\/impostor, not spiffe:\/\/partner\.example\/ns\/infra\/sa\/bundle-endpoint/);
    expect(refused[1]).to.match(/unreachable: .*certificate/i);
    expect(status().sequence).to.equal(3);
    partner.reissueEndpoint(1);
  });

  it('while the endpoint is down: the last good bundle stays, failures are counted and the age grows', async () => {
    partner.answer = () => ({ status: 200, body: partner.bundleJson([1], 3, 1) });
    await bundles.refreshNow();
    const before = status().failures;
    const lastRefresh = status().lastRefreshMs;
    await partner.stop();
    refused.length = 0;
    await new Promise((r) => setTimeout(r, 1100));
    await bundles.refreshNow();
    expect(refused[0]).to.match(/unreachable/);
    expect(roots()).to.deep.equal([partner.root(1).fingerprint256]);
    expect(status().failures).to.equal(before + 1);
    expect(status().lastRefreshMs).to.equal(lastRefresh);
    expect(await metric('twokey_partner_bundle_age_seconds')).to.be.greaterThan(1);
  });
});
