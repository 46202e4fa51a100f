// A hostile server impersonating a mesh service: the twokey client must refuse it before any token leaves.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import * as builder from '../../certs-ca/certificate-builder.ts';
import { makeHostileFixtures, type FixtureSet } from '../../certs-ca/hostile-fixtures.ts';
import { connect } from 'node:tls';
import { createMeshClient, spiffeServerCheck } from '../../services/authz/client.ts';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { bearer, unary } from './harness.ts';
import { HostileMint, replaceExtension, withSan } from './hostile-certificates.ts';

const TD = 'twokey.local';
const EXPECTED = `spiffe://${TD}/ns/twokey/sa/image-store`;
const { status } = grpc;

interface ServerCase {
  name: string;
  /** Directory with the server's svid.pem and svid.key. */
  dir(ctx: { fixtures: FixtureSet; mint: HostileMint }): string;
  accepted: boolean;
  /**
   * Why the client refuses: grpc-js reports only UNAVAILABLE, so the reason is read from a plain
   * TLS connection with the client's own trust bundle and server check (spiffeServerCheck), the
   * two things the mesh client's credentials consist of.
   */
  reason?: RegExp;
}

const CASES: ServerCase[] = [
  { name: 'control: the expected SPIFFE ID from the trusted CA', dir: (c) => c.mint.mint('srv-ok', withSan({ uris: [EXPECTED], dns: ['localhost'] })).dir, accepted: true },
  { name: 'another workload of the mesh (valid SVID, other SPIFFE ID)', dir: (c) => c.mint.mint('srv-other', withSan({ uris: [`spiffe://${TD}/ns/twokey/sa/tagging`] })).dir, accepted: false, reason: /^twokey: server is spiffe:\/\/twokey\.local\/ns\/twokey\/sa\/tagging, expected spiffe:\/\/twokey\.local\/ns\/twokey\/sa\/image-store$/ },
  { name: 'the expected path in another trust domain', dir: (c) => c.mint.mint('srv-other-td', withSan({ uris: [`spiffe://evil.example/ns/twokey/sa/image-store`] })).dir, accepted: false, reason: /^twokey: server is spiffe:\/\/evil\.example\/ns\/twokey\/sa\/image-store, expected / },
  { name: 'the expected ID plus a second URI SAN', dir: (c) => c.mint.mint('srv-two', withSan({ uris: [EXPECTED, `spiffe://${TD}/ns/twokey/sa/tagging`] })).dir, accepted: false, reason: /^twokey: server certificate is not a valid SVID: invalid certificate: has 2 URI SANs/ },
  { name: 'the expected ID only in a DNS SAN', dir: (c) => c.mint.mint('srv-dns', withSan({ dns: [EXPECTED, 'localhost'] })).dir, accepted: false, reason: /^twokey: server certificate is not a valid SVID: invalid certificate: has 0 URI SANs/ },
  { name: 'the expected ID with a trailing slash', dir: (c) => c.mint.mint('srv-slash', withSan({ uris: [`${EXPECTED}/`] })).dir, accepted: false, reason: /^twokey: server certificate is not a valid SVID: invalid SPIFFE ID .*trailing slash/ },
  { name: 'the expected ID in upper case', dir: (c) => c.mint.mint('srv-upper', withSan({ uris: [EXPECTED.toUpperCase()] })).dir, accepted: false, reason: /^twokey: server certificate is not a valid SVID: invalid SPIFFE ID .*scheme must be \"spiffe:\/\/\" \(lowercase\)/ },
  { name: 'a CA=true certificate with the expected ID', dir: (c) => c.mint.mint('srv-ca', (s) => replaceExtension(builder.OID.basicConstraints, [builder.basicConstraints({ ca: true })])(withSan({ uris: [EXPECTED] })(s, ''), '')).dir, accepted: false, reason: /^twokey: server certificate is not a valid SVID: invalid certificate: CA=true/ },
  { name: 'the expected ID from another CA with the same name', dir: (c) => join(c.fixtures.dir, 'wrong-ca'), accepted: false, reason: /^UNABLE_TO_VERIFY_LEAF_SIGNATURE: / },
  { name: 'an expired certificate', dir: (c) => join(c.fixtures.dir, 'expired'), accepted: false, reason: /^CERT_HAS_EXPIRED: / },
];

describe('adversarial: a hostile server impersonating a mesh service', function () {
  this.timeout(30_000);
  let root: string;
  let ctx: { fixtures: FixtureSet; mint: HostileMint };
  let client: SvidSource;
  const ImageStore = (grpc.loadPackageDefinition(MethodCatalog.default().definition) as any).twokey.images.v1.ImageStore as grpc.ServiceClientConstructor;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'twokey-adv-impersonation-'));
    const fixtures = makeHostileFixtures(join(root, 'fixtures'));
    ctx = { fixtures, mint: new HostileMint(fixtures.caDir, join(root, 'minted')) };
    client = await SvidSource.open(join(fixtures.dir, 'valid'), { trustDomain: TD, pollIntervalMs: 0 });
  });
  after(() => {
    client?.close();
    rmSync(root, { recursive: true, force: true });
  });

  /** The error a TLS client with the mesh client's bundle and server check gets from this server, or ACCEPTED. */
  function whyRefused(port: number): Promise<string> {
    return new Promise((resolve) => {
      const socket = connect({
        host: '127.0.0.1',
        port,
        ca: readFileSync(join(ctx.fixtures.dir, 'valid', 'bundle.pem')),
        key: readFileSync(join(ctx.fixtures.dir, 'valid', 'svid.key')),
        cert: readFileSync(join(ctx.fixtures.dir, 'valid', 'svid.pem')),
        ALPNProtocols: ['h2'],
        checkServerIdentity: spiffeServerCheck(SpiffeId.parse(EXPECTED)),
      });
      socket.once('secureConnect', () => {
        socket.destroy();
        resolve('ACCEPTED');
      });
      socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code !== undefined && err.code !== 'ERR_TLS_CERT_ALTNAME_INVALID' ? `${err.code}: ${err.message}` : err.message));
    });
  }

  for (const c of CASES) {
    it(`${c.name}: ${c.accepted ? 'the call goes through' : 'refused before the token is sent (UNAVAILABLE)'}`, async () => {
      const dir = c.dir(ctx);
      // A plain gRPC server: it records every authorization value it receives.
      const seen: string[] = [];
      const server = new grpc.Server();
      server.addService(ImageStore.service, {
        GetImage: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
          seen.push(...call.metadata.get('authorization').map(String));
          cb(null, { id: 'harvested' });
        },
      });
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync(
          '127.0.0.1:0',
          grpc.ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(join(dir, 'svid.pem')), private_key: readFileSync(join(dir, 'svid.key')) }], false),
          (err, p) => (err ? reject(err) : resolve(p)),
        ),
      );
      const stub = createMeshClient(ImageStore, `127.0.0.1:${port}`, { svid: client, serverId: EXPECTED, propagate: false });
      try {
        const out = await unary(stub, 'GetImage', { id: 'x' }, bearer('eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2VjcmV0'));
        if (c.accepted) {
          expect(out.code, out.details).to.equal(status.OK);
          expect(seen).to.have.length(1);
        } else {
          expect(out.code, out.details).to.equal(status.UNAVAILABLE);
          expect(seen, 'the token reached the impostor').to.deep.equal([]);
          expect(await whyRefused(port), 'why the client refuses').to.match(c.reason!);
        }
      } finally {
        stub.close();
        server.forceShutdown();
      }
    });
  }
});
