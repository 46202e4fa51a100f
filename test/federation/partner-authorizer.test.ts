// The external authorizer gets federation from the library: a forwarded partner certificate is verified against its own trust domain's bundle and capped by the ceiling.
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Metadata } from '@grpc/grpc-js';
import { expect } from 'chai';
import { createAuthorizer, type Authorizer } from '../../services/authorizer/authorizer.ts';
import type { ForwardedCall } from '../../services/authorizer/forwarded-call.ts';
import { Ceiling, FederationPolicy, PartnerPolicy, SpiffeIdPattern } from '../../services/authz/federation.ts';
import { GrantSet } from '../../services/authz/grant.ts';
import { StaticKeys } from '../../services/authz/jwks.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { PartnerBundles } from '../../services/authz/partner-bundles.ts';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { TestPki } from '../authz/mesh-fixtures.ts';
import { TestIssuer } from '../authz/token-fixtures.ts';
import { PARTNER_TD, PartnerDomain } from './partner-domain.ts';

const OUR_TD = 'twokey.local';
const GET_JWKS = '/twokey.auth.v1.Auth/GetJwks';
const GET_REVOCATIONS = '/twokey.auth.v1.Auth/GetRevocations';
const EXPORTER = `spiffe://${PARTNER_TD}/ns/reports/sa/exporter`;
const CEILING = `spiffe://${PARTNER_TD}/ns/reports/sa/*`;

describe('federation through the external authorizer (forwarded certificates)', function () {
  this.timeout(30_000);
  let ours: TestPki;
  let partner: PartnerDomain;
  let dir: string;
  let bundles: PartnerBundles;
  let authorizer: Authorizer;
  let svid: SvidSource;

  const forwarded = (chainPem: string, method: string): ForwardedCall => ({
    method,
    certificates: chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!.map((b) => new X509Certificate(b)),
    principal: undefined,
    metadata: new Metadata(),
    headerNames: [],
  });

  before(async () => {
    ours = TestPki.create(OUR_TD);
    partner = new PartnerDomain();
    dir = mkdtempSync(join(tmpdir(), 'twokey-partner-authorizer-'));
    const bundleFile = join(dir, 'partner.json');
    writeFileSync(bundleFile, partner.bundleJson([0], 1, 300));
    // Certificate-only methods: the ceiling and the trust domain decide, no token is involved.
    const policy = new FederationPolicy(OUR_TD, [
      new PartnerPolicy(PARTNER_TD, { kind: 'file', path: bundleFile }, [new Ceiling({ workloads: SpiffeIdPattern.parse(CEILING), methods: GrantSet.parse([GET_JWKS]) })]),
    ]);
    bundles = new PartnerBundles({ policy, minRefreshMs: 3_600_000 });
    await bundles.start();
    const own = ours.issue(`spiffe://${OUR_TD}/ns/twokey/sa/authorizer`, []);
    svid = SvidSource.fromMaterial({ chainPem: own.chainPem, keyPem: own.keyPem, bundlePem: own.bundlePem }, { trustDomain: OUR_TD });
    const issuer = await TestIssuer.create('k1');
    authorizer = createAuthorizer({
      svid,
      keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)),
      issuer: 'https://auth.twokey.local',
      service: SpiffeId.parse(`spiffe://${OUR_TD}/ns/notes/sa/notes`),
      rules: MethodCatalog.default(),
      federation: { policy, bundles },
    });
  });

  after(async () => {
    await authorizer?.close();
    bundles?.close();
    svid?.close();
    await partner?.cleanup();
    ours?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("allows a partner's forwarded certificate inside the ceiling, naming the partner and the ceiling", async () => {
    const d = await authorizer.decisions.decide(forwarded(partner.issue(EXPORTER, [GET_JWKS, GET_REVOCATIONS]).chainPem, GET_JWKS));
    expect(d.decision.allow, d.message).to.equal(true);
    expect(d.decision.ceiling).to.deep.equal({ trustDomain: PARTNER_TD, workloads: CEILING });
  });

  it('denies a method its own CA granted but our ceiling does not: PERMISSION_DENIED naming the ceiling', async () => {
    const d = await authorizer.decisions.decide(forwarded(partner.issue(EXPORTER, [GET_JWKS, GET_REVOCATIONS]).chainPem, GET_REVOCATIONS));
    expect(d.decision.allow).to.equal(false);
    expect(d.decision.errorCode).to.equal('ERR_CEILING_EXCEEDED');
    expect(d.message).to.match(new RegExp(`^twokey: grant check failed: certificate of ${EXPORTER} grants ${GET_REVOCATIONS}, but the ceiling ${CEILING.replace(/[.*]/g, '\\$&')} of partner trust domain "${PARTNER_TD}" does not`));
  });

  it("refuses a forwarded certificate from the partner's CA naming our trust domain: UNAUTHENTICATED at the peer check", async () => {
    const forged = partner.cas[0]!.forged('names-us-forwarded', { uris: [`spiffe://${OUR_TD}/ns/twokey/sa/gateway`], grants: [GET_JWKS] });
    const d = await authorizer.decisions.decide(forwarded(readFileSync(join(forged, 'svid.pem'), 'utf8'), GET_JWKS));
    expect(d.decision.allow).to.equal(false);
    expect(d.decision.failedCheck).to.equal('peer');
    expect(d.decision.code).to.equal(16);
    expect(d.message).to.contain(`peer certificate names spiffe://${OUR_TD}/ns/twokey/sa/gateway but was issued under trust domain "${PARTNER_TD}"'s bundle`);
  });

  it('our own workloads are still decided against our bundle', async () => {
    const d = await authorizer.decisions.decide(forwarded(ours.issue(`spiffe://${OUR_TD}/ns/apps/sa/caller`, [GET_JWKS]).chainPem, GET_JWKS));
    expect(d.decision.allow, d.message).to.equal(true);
    expect(d.decision.ceiling).to.equal(undefined);
  });
});
