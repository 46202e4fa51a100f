// Istio mode: a principal forwarded without a certificate takes its grants from the registry; tokens bind to it by SPIFFE ID.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { loadRegistry } from '../../certs-ca/registry.ts';
import { StaticKeys } from '../../services/authz/jwks.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { createAuthorizer, type Authorizer } from '../../services/authorizer/authorizer.ts';
import { CALLER_ID, P, SERVER_ID, TD, TestPki, capturingLogger, probeCatalog } from '../authz/mesh-fixtures.ts';
import { ISSUER, TestIssuer } from '../authz/token-fixtures.ts';
import { check, checkClientCtor, envoyCheckRequest, type CheckClient, type EnvoyCheckResponse } from './envoy-side.ts';

const OTHER_ID = `spiffe://${TD}/ns/test/sa/other`;
const STRANGER_ID = `spiffe://${TD}/ns/test/sa/stranger`;

describe('the authorizer in Istio mode (principal only, grants from the registry)', function () {
  this.timeout(30_000);
  let pki: TestPki;
  let issuer: TestIssuer;
  let authorizer: Authorizer;
  let client: CheckClient;
  let svid: SvidSource;
  const log = capturingLogger();

  before(async () => {
    pki = TestPki.create();
    issuer = await TestIssuer.create('k1');
    const registryFile = join(pki.root, 'registry.yaml');
    writeFileSync(
      registryFile,
      `trustDomain: ${TD}\nworkloads:\n  - {name: caller, namespace: test, serviceAccount: caller, grants: ['${P}/Unary']}\n  - {name: other, namespace: test, serviceAccount: other, grants: ['${P}/Unary']}\n`,
    );
    svid = await SvidSource.open(pki.workload('authorizer', `spiffe://${TD}/ns/test/sa/authorizer`, []), { trustDomain: TD, pollIntervalMs: 0 });
    pki.workload('caller', CALLER_ID, [`${P}/Unary`, `${P}/CertOnly`]);
    authorizer = createAuthorizer({
      svid,
      keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)),
      issuer: ISSUER,
      service: SpiffeId.parse(SERVER_ID),
      rules: probeCatalog(),
      logger: log.logger,
      istioWorkloads: loadRegistry(registryFile).workloads,
    });
    // Istio's sidecar beside the authorizer calls it in plaintext on loopback.
    const port = await authorizer.listenLocalGrpc('127.0.0.1:0');
    client = new (checkClientCtor())(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as CheckClient;
  });

  after(async () => {
    client?.close();
    await authorizer?.close();
    svid?.close();
    pki?.cleanup();
  });

  async function ask(principal: string, token: string | undefined, opts: { path?: string; certificatePem?: string } = {}): Promise<EnvoyCheckResponse> {
    const { res, err } = await check(client, envoyCheckRequest({ principal, certificatePem: opts.certificatePem, path: opts.path ?? `${P}/Unary`, headers: token === undefined ? {} : { authorization: `Bearer ${token}` }, destination: SERVER_ID }));
    expect(err, err?.details).to.equal(undefined);
    return res!;
  }
  const lineOf = (res: EnvoyCheckResponse): Record<string, any> => {
    const id = res.status!.code === 0 ? res.ok_response!.headers.find((h) => h.header.key === 'x-twokey-decision-id')!.header.value : /\(decision ([0-9a-f-]{36})\)$/.exec(res.status!.message)![1];
    return log.lines.find((l) => l['decision_id'] === id)!;
  };

  it("allows a principal the registry grants the method, and the decision line names the registry as the grants' source", async () => {
    const res = await ask(CALLER_ID, await issuer.sign({ scope: 'probe:call' }));
    expect(res.status!.code, res.status!.message).to.equal(0);
    expect(lineOf(res)).to.include({ allow: true, peer_spiffe_id: CALLER_ID, grants_from: 'registry', subject: 'alice' });
  });

  it('refuses a method the registry entry does not grant (grant check, naming the registry)', async () => {
    const res = await ask(OTHER_ID, undefined, { path: `${P}/CertOnly` });
    expect(res.status!.code).to.equal(grpc.status.PERMISSION_DENIED);
    expect(res.status!.message).to.match(new RegExp(`^twokey: grant check failed: the registry entry of ${OTHER_ID} does not grant ${P}/CertOnly \\(decision [0-9a-f-]{36}\\)$`));
    expect(lineOf(res)).to.include({ failed_check: 'grant', grants_from: 'registry' });
  });

  it('refuses a principal that is no registry workload, and one that is no SPIFFE ID (peer check)', async () => {
    const stranger = await ask(STRANGER_ID, await issuer.sign({ scope: 'probe:call' }));
    expect(stranger.status!.code).to.equal(grpc.status.UNAUTHENTICATED);
    expect(stranger.status!.message).to.match(new RegExp(`^twokey: peer check failed: principal ${STRANGER_ID} is not a workload of the registry, which Istio mode takes grants from`));
    const junk = await ask('CN=caller', await issuer.sign({ scope: 'probe:call' }));
    expect(junk.status!.code).to.equal(grpc.status.UNAUTHENTICATED);
    expect(junk.status!.message).to.match(/^twokey: peer check failed: /);
  });

  it('binds a delegated token by SPIFFE ID: its actor passes without a thumbprint to compare, another workload is refused', async () => {
    const delegated = await issuer.sign({ token_kind: 'delegated', aud: SERVER_ID, act: { sub: CALLER_ID }, cnf: { 'x5t#S256': 'A'.repeat(43) }, scope: 'probe:call' });
    const own = await ask(CALLER_ID, delegated);
    expect(own.status!.code, own.status!.message).to.equal(0);
    expect(lineOf(own)['checks']).to.include({ binding: 'pass' });
    const foreign = await ask(OTHER_ID, delegated);
    expect(foreign.status!.code).to.equal(grpc.status.UNAUTHENTICATED);
    expect(foreign.status!.message).to.match(new RegExp(`^twokey: binding check failed: delegated token actor \\(act\\.sub\\) ${CALLER_ID} is not the peer ${OTHER_ID} `));
  });

  it('prefers a forwarded certificate when there is one: grants from the certificate, thumbprint binding', async () => {
    const pem = readFileSync(join(pki.root, 'caller', 'svid.pem'), 'utf8');
    const delegated = await issuer.sign({ token_kind: 'delegated', aud: SERVER_ID, act: { sub: CALLER_ID }, cnf: { 'x5t#S256': 'A'.repeat(43) }, scope: 'probe:call' });
    const res = await ask(CALLER_ID, delegated, { certificatePem: pem });
    expect(res.status!.code).to.equal(grpc.status.UNAUTHENTICATED);
    expect(res.status!.message).to.match(/^twokey: binding check failed: delegated token is bound \(cnf\.x5t#S256\) to another certificate/);
    expect(lineOf(res)['grants_from']).to.equal(undefined);
  });

  it('will not listen in plaintext beyond loopback', async () => {
    let error: Error | undefined;
    await authorizer.listenLocalGrpc('0.0.0.0:0').catch((err: Error) => (error = err));
    expect(error?.message).to.match(/0\.0\.0\.0:0 is not loopback or a unix socket/);
  });
});
