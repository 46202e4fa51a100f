// twokey/testing and the in-memory pieces under it: a CA that writes nothing, credentials without
// files, and a test server whose denials are the production ones.
import { X509Certificate } from 'node:crypto';
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { CertificateAuthority } from '../../certs-ca/certificate-authority.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { TestMesh, TestTokens, startTestServer, type TestClient } from '../../services/authz/testing/index.ts';
import { PROBE_ROOT } from './mesh-fixtures.ts';

const PROBE = 'twokey.testing.v1.Probe';
const UNARY = `/${PROBE}/Unary`;

function unary(client: TestClient, token: string | undefined): Promise<{ code: status; details: string; subject?: string }> {
  const metadata = new Metadata();
  if (token !== undefined) metadata.set('authorization', `Bearer ${token}`);
  return new Promise((resolve) =>
    client.Unary({ text: 'hi' }, metadata, (err: ServiceError | null, res: { subject: string }) =>
      resolve(err ? { code: err.code, details: err.details } : { code: status.OK, details: '', subject: res.subject })));
}

describe('twokey/testing', function () {
  this.timeout(30_000);

  it('has an in-memory CA that signs real SVIDs under the CA policy and has no directory', () => {
    const ca = CertificateAuthority.inMemory({ trustDomain: 'acme.test', catalog: MethodCatalog.load({ roots: [PROBE_ROOT] }) });
    const issued = ca.issue({ spiffeId: 'spiffe://acme.test/ns/a/sa/b', grants: [UNARY], ttl: '1h' });
    expect(new X509Certificate(issued.chainPem).verify(ca.certificate.publicKey)).to.equal(true);
    expect(issued.svid.grants.allows(UNARY)).to.equal(true);
    expect(() => ca.dir).to.throw(/in-memory CA has no directory/).with.property('code', 'ERR_CA_POLICY');
    // Its policy is the CA's: a grant must name a method of its catalog.
    expect(() => ca.issue({ spiffeId: 'spiffe://acme.test/ns/a/sa/b', grants: ['/acme.Nope/Get'] })).to.throw().with.property('code', 'ERR_GRANT_INVALID');
  });

  it('validates in-memory credentials like files: a key that is not the certificate\'s is refused', async () => {
    const mesh = await TestMesh.create({ protoRoots: [PROBE_ROOT] });
    const a = mesh.issue('a');
    const b = mesh.issue('b');
    expect(() => SvidSource.fromMaterial({ chainPem: a.chainPem, keyPem: b.keyPem, bundlePem: a.bundlePem }, { trustDomain: mesh.trustDomain }))
      .to.throw(/does not match the certificate/).with.property('code', 'ERR_CONFIG_INVALID');
    const source = SvidSource.fromMaterial({ chainPem: a.chainPem, keyPem: a.keyPem, bundlePem: a.bundlePem }, { trustDomain: mesh.trustDomain });
    expect(source.dir).to.equal(undefined);
    expect(await source.poll()).to.equal(false);
    expect(() => SvidSource.fromMaterial({ chainPem: a.chainPem, keyPem: a.keyPem, bundlePem: a.bundlePem }, { trustDomain: 'other.test' })).to.throw(/not in trust domain/);
  });

  it('serves with the production decision: allowed, no grant, token from another key, missing scope', async () => {
    const server = await startTestServer({ protoRoots: [PROBE_ROOT], services: { [PROBE]: { Unary: (_call: unknown, cb: (e: null, r: object) => void) => cb(null, { text: 'ok', subject: 'seen' }) } } });
    try {
      const granted = server.client(PROBE, { as: 'caller', grants: [UNARY] });
      const ungranted = server.client(PROBE, { as: 'other', grants: [`/${PROBE}/CertOnly`] });
      const stranger = await TestTokens.create({ issuer: server.mesh.issuer, audience: server.mesh.tokens.audience });
      const token = await server.userToken('alice', ['probe:call']);
      expect((await unary(granted, token)).code).to.equal(status.OK);
      const noGrant = await unary(ungranted, token);
      expect(noGrant.code).to.equal(status.PERMISSION_DENIED);
      expect(noGrant.details).to.contain(`certificate of ${server.mesh.spiffeId('other')} does not grant ${UNARY}`);
      expect((await unary(granted, await stranger.userToken('alice', ['probe:call']))).code).to.equal(status.UNAUTHENTICATED);
      expect((await unary(granted, await server.userToken('alice', ['probe:other']))).code).to.equal(status.PERMISSION_DENIED);
      expect((await unary(granted, undefined)).code).to.equal(status.UNAUTHENTICATED);
    } finally {
      await server.close();
    }
  });

  it('names the services it has when asked for one it does not', async () => {
    const mesh = await TestMesh.create({ protoRoots: [PROBE_ROOT] });
    await mesh.serve('x', { 'acme.Missing': {} }).then(
      () => expect.fail('served a service that is not in the protos'),
      (err: { code: string; message: string }) => {
        expect(err.code).to.equal('ERR_CONFIG_INVALID');
        expect(err.message).to.contain(`no service "acme.Missing"`).and.contain(PROBE);
      },
    );
    await mesh.close();
  });
});
