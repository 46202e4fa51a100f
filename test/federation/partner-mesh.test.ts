// A partner company's workloads against the real mesh (two CAs on loopback, real service processes): only what our ceiling allows, and its CA rotation followed without a restart.
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { CertificateAuthority, type IssuedWorkload } from '../../certs-ca/certificate-authority.ts';
import { DEFAULT_REGISTRY } from '../../scripts/local-mesh/local-mesh.ts';
import { spiffeServerCheck } from '../../services/authz/client.ts';
import { Ceiling, FederationPolicy, PartnerPolicy, SpiffeIdPattern } from '../../services/authz/federation.ts';
import { GrantSet } from '../../services/authz/grant.ts';
import { PartnerBundles } from '../../services/authz/partner-bundles.ts';
import { SpiffeBundle } from '../../services/authz/spiffe-bundle.ts';
import { joinMesh } from '../../services/authz/join-mesh.ts';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { AuthClient, ImageStoreClient, unary } from '../../services/mesh-runtime/protos.ts';
import { decisionIdIn, decisionLine, eventually, expectStatus, logLines, startTestMesh, withToken, type TestMesh } from '../e2e/mesh-harness.ts';
import { ENDPOINT_ID, PARTNER_TD, PartnerDomain } from './partner-domain.ts';

const OUR_TD = 'twokey.local';
const IMAGE_STORE = `spiffe://${OUR_TD}/ns/twokey/sa/image-store`;
const AUTH = `spiffe://${OUR_TD}/ns/twokey/sa/auth`;
const EXPORTER = `spiffe://${PARTNER_TD}/ns/reports/sa/exporter`;
const CEILING = `spiffe://${PARTNER_TD}/ns/reports/sa/*`;
const M = {
  list: '/twokey.images.v1.ImageStore/ListImages',
  get: '/twokey.images.v1.ImageStore/GetImage',
  watch: '/twokey.images.v1.ImageStore/WatchImages',
  del: '/twokey.images.v1.ImageStore/DeleteImage',
  serviceToken: '/twokey.auth.v1.Auth/GetServiceToken',
  exchange: '/twokey.auth.v1.Auth/ExchangeToken',
};
// What the partner's own CA signs into its workload's certificate: more than our ceiling allows.
const PARTNER_GRANTS = [M.list, M.get, M.watch, M.del, M.serviceToken, M.exchange];

function federationYaml(initialFile: string, url: string): string {
  return `
federation:
  - trustDomain: ${PARTNER_TD}
    bundle:
      endpoint: ${url}
      profile: https_spiffe
      endpointSpiffeId: ${ENDPOINT_ID}
      file: ${initialFile}
    ceilings:
      - workloads: ${CEILING}
        methods: [${M.serviceToken}, ${M.exchange}, ${M.list}, ${M.get}, ${M.watch}]
        serviceScopes: [images:read:any, images:watch]
        delegation:
          scopes: [images:read]
          audiences: [${IMAGE_STORE}]
          withoutSubjectToken: true
`;
}

describe('federation end to end: a partner trust domain against the real mesh', function () {
  this.timeout(180_000);
  let dir: string;
  let partner: PartnerDomain;
  let mesh: TestMesh;
  let registry: string;
  const closers: (() => void)[] = [];

  /** A client presenting any certificate and key (the partner's, or forged ones); the server is checked by SPIFFE ID. */
  function clientWith(cert: { chainPem: string; keyPem: string }, service: 'auth' | 'image-store', address?: string): grpc.Client {
    const endpoint = { address: address ?? mesh.mesh.endpoints.services[service]!.address };
    const credentials = grpc.credentials.createSsl(readFileSync(mesh.mesh.endpoints.trustBundle), Buffer.from(cert.keyPem), Buffer.from(cert.chainPem), {
      checkServerIdentity: spiffeServerCheck(SpiffeId.parse(service === 'auth' ? AUTH : IMAGE_STORE)),
    });
    const ctor = service === 'auth' ? AuthClient : ImageStoreClient;
    const client = new ctor(endpoint.address!, credentials, { 'grpc.ssl_target_name_override': 'localhost' });
    closers.push(() => client.close());
    return client;
  }
  const fromDir = (d: string): { chainPem: string; keyPem: string } => ({ chainPem: readFileSync(join(d, 'svid.pem'), 'utf8'), keyPem: readFileSync(join(d, 'svid.key'), 'utf8') });

  async function serviceToken(cert: IssuedWorkload): Promise<string> {
    return (await unary<{ access_token: string }>(clientWith(cert, 'auth'), 'GetServiceToken', { audience: '' })).access_token;
  }

  async function imageStoreMetric(name: string, service = 'image-store'): Promise<number> {
    const health = mesh.mesh.endpoints.services[service]!.health;
    const [host, port] = [health.slice(0, health.lastIndexOf(':')), Number(health.slice(health.lastIndexOf(':') + 1))];
    const text = await new Promise<string>((resolve, reject) => {
      const req = request({ host, port, path: '/metrics' }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
      req.end();
    });
    const line = text.split('\n').find((l) => l.startsWith(`${name}{trust_domain="${PARTNER_TD}"}`));
    return Number(line?.split(' ')[1] ?? NaN);
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'twokey-federation-'));
    partner = new PartnerDomain();
    // Sequence 1, refresh hint 1 s: image-store asks again every second.
    partner.answer = () => ({ status: 200, body: partner.bundleJson([0], 1, 1) });
    const url = await partner.start(0);
    const initial = join(dir, 'partner-initial.json');
    writeFileSync(initial, partner.bundleJson([0], 1, 1));
    registry = join(dir, 'registry.yaml');
    writeFileSync(registry, readFileSync(DEFAULT_REGISTRY, 'utf8') + federationYaml(initial, url));
    mesh = await startTestMesh({ registryPath: registry, env: { TWOKEY_PARTNER_BUNDLE_RETRY: '1s' } });
  });

  after(async () => {
    for (const close of closers.splice(0)) close();
    await mesh?.close();
    await partner?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a partner workload calls image-store inside the ceiling with a service token from our auth, bound to its certificate and capped; the log names the trust domain and the ceiling', async () => {
    const exporter = partner.issue(EXPORTER, PARTNER_GRANTS);
    const token = await serviceToken(exporter);
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8'));
    expect(claims.iss).to.equal('https://auth.twokey.local');
    expect(claims.aud).to.equal(`spiffe://${OUR_TD}`);
    expect(claims.sub).to.equal(EXPORTER);
    expect(claims.scope).to.equal('images:read:any images:watch');
    expect(claims.cnf['x5t#S256']).to.equal(exporter.svid.thumbprint);
    const md = withToken(token, 'partner-list');
    await unary(clientWith(exporter, 'image-store'), 'ListImages', {}, md);
    const line = logLines(mesh.mesh, 'image-store').find((l) => l['request_id'] === 'partner-list' && l['event'] === 'authz.decision');
    expect(line?.['allow']).to.equal(true);
    expect(line?.['peer_spiffe_id']).to.equal(EXPORTER);
    expect(line?.['partner_trust_domain']).to.equal(PARTNER_TD);
    expect(line?.['ceiling']).to.equal(CEILING);
  });

  it("auth serves our trust domain's SPIFFE bundle (https_spiffe with auth's SVID) for the partner to watch", async () => {
    const url = new URL('/.well-known/spiffe-bundle', mesh.mesh.endpoints.jwks.url).toString();
    const initial = join(dir, 'ours-initial.json');
    writeFileSync(initial, SpiffeBundle.fromCertificates(OUR_TD, [new X509Certificate(readFileSync(mesh.mesh.endpoints.trustBundle))], { sequence: 1 }).toString());
    const watcher = new PartnerBundles({
      policy: new FederationPolicy(PARTNER_TD, [
        new PartnerPolicy(OUR_TD, { kind: 'https_spiffe', url, endpointSpiffeId: SpiffeId.parse(AUTH), initialFile: initial }, [
          new Ceiling({ workloads: SpiffeIdPattern.parse(`spiffe://${OUR_TD}/ns/twokey/sa/*`), methods: GrantSet.parse([]) }),
        ]),
      ]),
      minRefreshMs: 3_600_000,
    });
    try {
      await watcher.start();
      const s = watcher.status()[0]!;
      expect(s.lastError).to.equal(undefined);
      expect(s.sequence).to.be.greaterThan(1);
      expect(watcher.bundles().get(OUR_TD)!.map((c) => c.fingerprint256)).to.deep.equal([new X509Certificate(readFileSync(mesh.mesh.endpoints.trustBundle)).fingerprint256]);
    } finally {
      watcher.close();
    }
  });

  it("a member built with the library's joinMesh() federates from the same registry: inside the ceiling served, outside PERMISSION_DENIED naming it", async () => {
    const member = await joinMesh({
      registry,
      svidDir: join(mesh.mesh.endpoints.svidRoot, 'image-store'),
      authAddress: mesh.mesh.endpoints.services['auth']!.address!,
      logger: false,
    });
    try {
      member.addService('twokey.images.v1.ImageStore', {
        ListImages: (_call: unknown, cb: (e: null, r: object) => void) => cb(null, { images: [], next_page_token: '' }),
        DeleteImage: (_call: unknown, cb: (e: null, r: object) => void) => cb(null, {}),
      });
      const address = `127.0.0.1:${await member.listen('127.0.0.1:0')}`;
      const exporter = partner.issue(EXPORTER, PARTNER_GRANTS);
      const token = await serviceToken(exporter);
      expect(await unary(clientWith(exporter, 'image-store', address), 'ListImages', {}, withToken(token))).to.deep.equal({ images: [], next_page_token: '' });
      const details = await expectStatus(unary(clientWith(exporter, 'image-store', address), 'DeleteImage', { id: 'x' }, withToken(token)), 'PERMISSION_DENIED');
      expect(details).to.contain(`but the ceiling ${CEILING} of partner trust domain "${PARTNER_TD}" does not`);
    } finally {
      await member.close();
    }
  });

  it('a method its own CA granted but our ceiling does not: PERMISSION_DENIED naming the ceiling', async () => {
    const exporter = partner.issue(EXPORTER, PARTNER_GRANTS);
    const token = await serviceToken(exporter);
    const details = await expectStatus(unary(clientWith(exporter, 'image-store'), 'DeleteImage', { id: 'x' }, withToken(token)), 'PERMISSION_DENIED');
    expect(details).to.contain(`grant check failed: certificate of ${EXPORTER} grants ${M.del}, but the ceiling ${CEILING} of partner trust domain "${PARTNER_TD}" does not`);
    const line = decisionLine(mesh.mesh, decisionIdIn(details));
    expect(line['error_code']).to.equal('ERR_CEILING_EXCEEDED');
    expect(line['ceiling']).to.equal(CEILING);
  });

  it('a partner workload outside every ceiling pattern is granted nothing, and auth issues it no token', async () => {
    const other = partner.issue(`spiffe://${PARTNER_TD}/ns/billing/sa/job`, PARTNER_GRANTS);
    const details = await expectStatus(unary(clientWith(other, 'auth'), 'GetServiceToken', { audience: '' }), 'PERMISSION_DENIED');
    expect(details).to.contain(`grant check failed: no ceiling of partner trust domain "${PARTNER_TD}" covers spiffe://${PARTNER_TD}/ns/billing/sa/job`);
  });

  it("delegated tokens for our users only within the ceiling's delegation: images:read for image-store, nothing more", async () => {
    const exporter = partner.issue(EXPORTER, PARTNER_GRANTS);
    const auth = clientWith(exporter, 'auth');
    const ok = await unary<{ access_token: string; scope: string }>(auth, 'ExchangeToken', { subject_token: '', subject_user: 'alice', scope: 'images:read', audience: IMAGE_STORE });
    expect(ok.scope).to.equal('images:read');
    await unary(clientWith(exporter, 'image-store'), 'ListImages', {}, withToken(ok.access_token));
    const details = await expectStatus(
      unary(auth, 'ExchangeToken', { subject_token: '', subject_user: 'alice', scope: 'images:delete', audience: IMAGE_STORE }),
      'PERMISSION_DENIED',
    );
    expect(details).to.contain('scope "images:delete" is beyond what');
  });

  it('its service token works only over its own certificate', async () => {
    const exporter = partner.issue(EXPORTER, PARTNER_GRANTS);
    const token = await serviceToken(exporter);
    // Same SPIFFE ID, another certificate and key from the same partner CA.
    const twin = partner.issue(EXPORTER, PARTNER_GRANTS);
    const details = await expectStatus(unary(clientWith(twin, 'image-store'), 'ListImages', {}, withToken(token)), 'UNAUTHENTICATED');
    expect(details).to.contain('binding check failed: service token is bound (cnf.x5t#S256) to another certificate');
  });

  it("a certificate from the partner's CA naming our trust domain, or a third one: UNAUTHENTICATED at the peer check", async () => {
    const ours = partner.cas[0]!.forged('claims-ours', { uris: [`spiffe://${OUR_TD}/ns/twokey/sa/cleaner`], grants: [M.list] });
    const a = await expectStatus(unary(clientWith(fromDir(ours), 'image-store'), 'ListImages', {}), 'UNAUTHENTICATED');
    expect(a).to.contain(`peer check failed: peer certificate names spiffe://${OUR_TD}/ns/twokey/sa/cleaner but was issued under trust domain "${PARTNER_TD}"'s bundle`);
    const third = partner.cas[0]!.forged('claims-third', { uris: ['spiffe://third.example/ns/x/sa/y'], grants: [M.list] });
    const b = await expectStatus(unary(clientWith(fromDir(third), 'image-store'), 'ListImages', {}), 'UNAUTHENTICATED');
    expect(b).to.contain('peer check failed: peer spiffe://third.example/ns/x/sa/y names trust domain "third.example", which is neither ours nor a federated partner\'s');
  });

  it("a certificate signed by a CA with our CA's name but another key is refused at the handshake", async () => {
    const impostorCa = CertificateAuthority.inMemory({ trustDomain: OUR_TD });
    expect(impostorCa.certificate.subject).to.equal(new X509Certificate(readFileSync(mesh.mesh.endpoints.trustBundle)).subject);
    const forged = impostorCa.issue({ spiffeId: `spiffe://${OUR_TD}/ns/twokey/sa/cleaner`, grants: [M.list], dns: ['localhost'], ip: ['127.0.0.1'] });
    const details = await expectStatus(unary(clientWith(forged, 'image-store'), 'ListImages', {}), 'UNAVAILABLE');
    expect(details).to.not.contain('decision');
    // Refused by TLS itself: no decision was ever made for that certificate.
    expect(logLines(mesh.mesh, 'image-store').filter((l) => l['peer_serial'] === forged.svid.serialHex)).to.deep.equal([]);
  });

  it('the partner rotates its CA (new root beside the old, then the old removed): calls continue; then old certificates are refused and their open streams end, without a restart', async () => {
    const pid = mesh.mesh.pid('image-store');
    const oldCert = partner.issue(EXPORTER, PARTNER_GRANTS, 0);
    const oldToken = await serviceToken(oldCert);
    // A stream opened under the old root.
    const stream = (clientWith(oldCert, 'image-store') as unknown as { WatchImages(req: object, md: grpc.Metadata): grpc.ClientReadableStream<unknown> }).WatchImages({}, withToken(oldToken));
    const ended = new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    stream.on('data', () => undefined);

    const next = partner.addCa();
    partner.answer = () => ({ status: 200, body: partner.bundleJson([0, next], 2, 1) });
    // Each server watches on its own: auth (which issues the new certificate's token) and image-store.
    for (const service of ['auth', 'image-store']) {
      await eventually(`${service} to hold sequence 2`, 15_000, async () => ((await imageStoreMetric('twokey_partner_bundle_sequence', service)) === 2 ? true : undefined));
    }
    const newCert = partner.issue(EXPORTER, PARTNER_GRANTS, next);
    const newToken = await serviceToken(newCert);
    await unary(clientWith(newCert, 'image-store'), 'ListImages', {}, withToken(newToken));
    await unary(clientWith(oldCert, 'image-store'), 'ListImages', {}, withToken(oldToken));

    // The old root removed; the endpoint now presents an SVID of the new one.
    partner.reissueEndpoint(next);
    partner.answer = () => ({ status: 200, body: partner.bundleJson([next], 3, 1) });
    const err = await ended;
    expect(grpc.status[err.code]).to.equal('UNAUTHENTICATED');
    expect(err.details).to.contain(`does not chain to the bundle of trust domain "${PARTNER_TD}"`);
    expect(await imageStoreMetric('twokey_partner_bundle_sequence')).to.equal(3);
    // A new connection with the old certificate is refused (by TLS, or at the peer check).
    const fresh = clientWith(oldCert, 'image-store');
    try {
      await unary(fresh, 'ListImages', {}, withToken(oldToken));
      expect.fail('a certificate of the removed root was accepted');
    } catch (e) {
      expect(['UNAVAILABLE', 'UNAUTHENTICATED']).to.include(grpc.status[(e as grpc.ServiceError).code]);
    }
    await unary(clientWith(newCert, 'image-store'), 'ListImages', {}, withToken(newToken));
    expect(mesh.mesh.pid('image-store')).to.equal(pid);
  });

  it('the partner endpoint down: the last good bundle stays in use, the staleness metric rises; a sequence going backwards is refused too', async () => {
    const next = partner.cas.length - 1;
    const cert = partner.issue(EXPORTER, PARTNER_GRANTS, next);
    const token = await serviceToken(cert);
    partner.answer = () => ({ status: 200, body: partner.bundleJson([0], 2, 1) });
    const failures = await imageStoreMetric('twokey_partner_bundle_refresh_failures_total');
    await eventually('a backwards bundle refused', 15_000, async () => ((await imageStoreMetric('twokey_partner_bundle_refresh_failures_total')) > failures ? true : undefined));
    expect(await imageStoreMetric('twokey_partner_bundle_sequence')).to.equal(3);
    await partner.stop();
    const age = await imageStoreMetric('twokey_partner_bundle_age_seconds');
    await eventually('the bundle age to rise past 3 s', 20_000, async () => ((await imageStoreMetric('twokey_partner_bundle_age_seconds')) > Math.max(age, 3) ? true : undefined));
    await unary(clientWith(cert, 'image-store'), 'ListImages', {}, withToken(token));
    const log = logLines(mesh.mesh, 'image-store');
    expect(log.some((l) => l['event'] === 'federation.bundle_refused' && /unreachable/.test(String(l['err'])))).to.equal(true);
    expect(log.some((l) => l['event'] === 'federation.bundle_refused' && /goes back from 3/.test(String(l['err'])))).to.equal(true);
  });
});
