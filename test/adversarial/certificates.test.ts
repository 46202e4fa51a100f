// Hostile client certificates over real mTLS: each refused at the handshake or as UNAUTHENTICATED / PERMISSION_DENIED, with no handler run.
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import * as builder from '../../certs-ca/certificate-builder.ts';
import { CertificateAuthority } from '../../certs-ca/index.ts';
import { FIXTURE_SPIFFE_ID, makeHostileFixtures, type FixtureSet } from '../../certs-ca/hostile-fixtures.ts';
import { StaticKeys } from '../../services/authz/jwks.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { createMeshServer, type MeshServer } from '../../services/authz/server.ts';
import { ISSUER } from '../authz/token-fixtures.ts';
import { unary, type Outcome } from './harness.ts';
import { HostileMint, replaceExtension, withGrants, withSan, type SpecEdit } from './hostile-certificates.ts';
import { userClaims } from './hostile-tokens.ts';
import { RawSigner } from './jws.ts';

const { status } = grpc;
const TD = 'twokey.local';
const SERVER_ID = `spiffe://${TD}/ns/test/sa/image-store`;
const GET = '/twokey.images.v1.ImageStore/GetImage';

type CertExpect =
  | { status: grpc.status.OK }
  | { status: grpc.status.UNAVAILABLE; reason: string; alert: string }
  | { status: grpc.status.UNAUTHENTICATED | grpc.status.PERMISSION_DENIED; message: RegExp };

interface CertCase {
  name: string;
  /** A directory of client credentials, or null for a client without a certificate. */
  dir(ctx: Ctx): string | null;
  expect: CertExpect;
}

interface Ctx {
  fixtures: FixtureSet;
  mint: HostileMint;
}

const PEER = (message: RegExp) => ({ status: status.UNAUTHENTICATED, message }) as const;
const GRANT = { status: status.PERMISSION_DENIED, message: /grant check failed: certificate of .* does not grant \/twokey\.images\.v1\.ImageStore\/GetImage/ } as const;
/**
 * Refused by TLS. grpc-js reports every failed connect as the same UNAVAILABLE "Failed to connect",
 * and Node's TLS server, which verifies the client's chain once the handshake is done, closes such
 * a socket without an alert and without an event naming the reason (only a missing certificate
 * gets an alert). So each case states both: `alert`, how the mesh server itself ended a plain TLS
 * handshake presenting the same files (the alert's error code, or CLOSED WITHOUT AN ALERT, never
 * ACCEPTED); and `reason`, the verification error Node reports for the same files against the same
 * trust bundle (socket.authorizationError of a TLS server with the mesh server's certificate and
 * bundle that records instead of refusing): the reason the mesh server's rejectUnauthorized acted on.
 */
/**
 * Node has no name for OpenSSL's X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION and reports UNSPECIFIED;
 * that case also asks `openssl verify` for the reason by name.
 */
const UNHANDLED_CRITICAL_EXTENSION = 'UNSPECIFIED';
const HANDSHAKE = (reason: string, alert = 'CLOSED WITHOUT AN ALERT') => ({ status: status.UNAVAILABLE, reason, alert }) as const;
const fixture = (name: string) => (c: Ctx) => join(c.fixtures.dir, name);
const minted = (name: string, edit: SpecEdit) => (c: Ctx) => c.mint.mint(name, edit).dir;
const grants = (name: string, list: string[]) => minted(name, withGrants(list));

const CASES: CertCase[] = [
  { name: 'control: the valid fixture', dir: fixture('valid'), expect: { status: status.OK } },
  { name: 'control: a minted certificate granting GetImage exactly', dir: grants('exact-grant', [GET]), expect: { status: status.OK } },
  { name: 'control: a minted certificate granting the whole ImageStore', dir: grants('service-grant', ['/twokey.images.v1.ImageStore/*']), expect: { status: status.OK } },

  // Refused by TLS before twokey sees anything.
  // The server's alert names it (certificate_required); Node's verification reports a missing peer certificate this way.
  { name: 'no client certificate', dir: () => null, expect: HANDSHAKE('UNABLE_TO_GET_ISSUER_CERT', 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED') },
  { name: 'certificate from another CA with the same name', dir: fixture('wrong-ca'), expect: HANDSHAKE('UNABLE_TO_VERIFY_LEAF_SIGNATURE') },
  { name: 'expired certificate', dir: fixture('expired'), expect: HANDSHAKE('CERT_HAS_EXPIRED') },
  { name: 'certificate not yet valid', dir: fixture('not-yet-valid'), expect: HANDSHAKE('CERT_NOT_YET_VALID') },
  { name: 'critical grants extension (unknown critical extension to TLS)', dir: fixture('critical-grant-extension'), expect: HANDSHAKE(UNHANDLED_CRITICAL_EXTENSION) },
  {
    name: 'self-signed leaf in the SVID profile',
    dir: (c) => {
      const own = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
      return c.mint.mint('self-signed', (s) => s, { signer: own.privateKey, issuerKey: own.publicKey }).dir;
    },
    // Its issuer name is the trusted CA's, so OpenSSL finds that CA and the signature does not match it.
    expect: HANDSHAKE('UNABLE_TO_VERIFY_LEAF_SIGNATURE'),
  },
  {
    name: 'a workload uses its own SVID key to sign another identity (leaf as issuer)',
    dir: (c) => {
      const parent = c.mint.mint('parent-leaf', (s) => s);
      const parentKey = createPrivateKey(parent.keyPem);
      return c.mint.mint('child-of-leaf', withSan({ uris: [`spiffe://${TD}/ns/twokey/sa/admin`] }), { signer: parentKey, extraChainPem: parent.certPem }).dir;
    },
    expect: HANDSHAKE('CERT_SIGNATURE_FAILURE'),
  },

  { name: 'leaf whose extended key usage is serverAuth only, used as a client', dir: minted('eku-server-only', replaceExtension(builder.OID.extKeyUsage, [builder.extKeyUsage([builder.OID.serverAuth])])), expect: HANDSHAKE('INVALID_PURPOSE') },
  { name: 'leaf whose extended key usage is codeSigning', dir: minted('eku-code-signing', replaceExtension(builder.OID.extKeyUsage, [builder.extKeyUsage(['1.3.6.1.5.5.7.3.3'])])), expect: HANDSHAKE('INVALID_PURPOSE') },

  // Chain trusted, identity refused by twokey's strict parse (UNAUTHENTICATED at the peer check).
  { name: 'CA=true leaf', dir: fixture('ca-true-leaf'), expect: PEER(/peer check failed: .*CA=true/) },
  { name: 'two URI SANs', dir: fixture('two-uri-sans'), expect: PEER(/peer check failed: .*2 URI SANs/) },
  { name: 'no URI SAN', dir: fixture('no-uri-san'), expect: PEER(/peer check failed: .*0 URI SANs/) },
  { name: 'another trust domain signed by the trusted CA', dir: fixture('other-trust-domain'), expect: PEER(/peer check failed: peer spiffe:\/\/evil\.example\/.* is not in trust domain "twokey\.local"/) },
  { name: 'percent-encoded SPIFFE ID', dir: fixture('invalid-spiffe-id'), expect: PEER(/peer check failed: invalid SPIFFE ID/) },
  { name: 'malformed grants extension (SEQUENCE OF INTEGER)', dir: fixture('malformed-grant-extension'), expect: PEER(/peer check failed: .*grants extension/) },
  { name: 'two grants extensions', dir: fixture('duplicate-grant-extension'), expect: PEER(/peer check failed: .*grants extension appears more than once/) },
  { name: 'grant with a prefix wildcard (Get*)', dir: fixture('bad-grant-syntax'), expect: PEER(/peer check failed: .*grants extension/) },
  { name: 'grant with a trailing space', dir: grants('grant-trailing-space', [`${GET} `]), expect: PEER(/peer check failed: .*grants extension: invalid grant/) },
  { name: 'grant with a leading space', dir: grants('grant-leading-space', [` ${GET}`]), expect: PEER(/grants extension: invalid grant/) },
  { name: 'grant with a dot-dot path trick', dir: grants('grant-dotdot', ['/twokey.images.v1.Auth/../ImageStore/GetImage']), expect: PEER(/grants extension: invalid grant/) },
  { name: 'grant with a doubled slash', dir: grants('grant-double-slash', ['//twokey.images.v1.ImageStore/GetImage']), expect: PEER(/grants extension: invalid grant/) },
  { name: 'grant with a trailing slash', dir: grants('grant-trailing-slash', [`${GET}/`]), expect: PEER(/grants extension: invalid grant/) },
  { name: 'grant /* (everything)', dir: grants('grant-star', ['/*']), expect: PEER(/grants extension: invalid grant/) },
  { name: 'grant * (everything, no slash)', dir: grants('grant-bare-star', ['*']), expect: PEER(/grants extension: invalid grant/) },
  { name: 'grant with a package wildcard (twokey.*)', dir: grants('grant-package-star', ['/twokey.*/*']), expect: PEER(/grants extension: invalid grant/) },
  { name: 'grant without the leading slash', dir: grants('grant-no-slash', [GET.slice(1)]), expect: PEER(/grants extension: invalid grant/) },
  { name: 'grant with a NUL byte', dir: grants('grant-nul', [`${GET}\u0000`]), expect: PEER(/grants extension: invalid grant/) },
  { name: 'grant with a homoglyph (Cyrillic e)', dir: grants('grant-homoglyph', ['/twokey.images.v1.ImageStore/G\u0435tImage']), expect: PEER(/grants extension: invalid grant/) },
  { name: 'grant with a query string', dir: grants('grant-query', [`${GET}?admin=1`]), expect: PEER(/grants extension: invalid grant/) },
  { name: 'grant listed twice', dir: grants('grant-twice', [GET, GET]), expect: PEER(/grants extension: duplicate grant/) },
  { name: 'SPIFFE ID smuggled into a DNS SAN, no URI SAN', dir: minted('uri-in-dns', withSan({ dns: [`spiffe://${TD}/ns/twokey/sa/cleaner`, 'localhost'] })), expect: PEER(/0 URI SANs/) },
  {
    name: 'SPIFFE ID smuggled into the subject CN, no URI SAN',
    dir: minted('uri-in-subject', (s) => ({ ...withSan({ dns: ['localhost'] })(s, ''), subject: [['CN', `spiffe://${TD}/ns/twokey/sa/cleaner`]] })),
    expect: PEER(/0 URI SANs/),
  },
  { name: 'URI SAN with an uppercase scheme', dir: minted('uri-upper-scheme', withSan({ uris: [`SPIFFE://${TD}/ns/fixtures/sa/client`] })), expect: PEER(/invalid SPIFFE ID/) },
  { name: 'URI SAN with userinfo', dir: minted('uri-userinfo', withSan({ uris: [`spiffe://admin@${TD}/ns/fixtures/sa/client`] })), expect: PEER(/invalid SPIFFE ID/) },
  { name: 'URI SAN with a port', dir: minted('uri-port', withSan({ uris: [`spiffe://${TD}:443/ns/fixtures/sa/client`] })), expect: PEER(/invalid SPIFFE ID/) },
  { name: 'URI SAN with a dot-dot segment', dir: minted('uri-dotdot', withSan({ uris: [`spiffe://${TD}/ns/fixtures/../twokey/sa/cleaner`] })), expect: PEER(/invalid SPIFFE ID/) },
  { name: 'URI SAN of an https URL', dir: minted('uri-https', withSan({ uris: [`https://${TD}/ns/fixtures/sa/client`] })), expect: PEER(/invalid SPIFFE ID/) },
  { name: 'URI SAN naming the trust domain itself (no path)', dir: minted('uri-trust-domain', withSan({ uris: [`spiffe://${TD}`] })), expect: PEER(/peer check failed: .*non-root path/) },
  { name: 'leaf without a keyUsage extension', dir: minted('no-key-usage', replaceExtension(builder.OID.keyUsage, [])), expect: PEER(/peer check failed: .*keyUsage/) },
  { name: 'leaf with keyCertSign', dir: minted('key-cert-sign', replaceExtension(builder.OID.keyUsage, [builder.keyUsage(['digitalSignature', 'keyCertSign'])])), expect: PEER(/keyCertSign/) },

  // Identity fine, grant does not match (PERMISSION_DENIED at the grant check).
  { name: 'grant for the service in another case', dir: grants('grant-service-case', ['/twokey.images.v1.imagestore/GetImage']), expect: GRANT },
  { name: 'grant for the method in another case', dir: grants('grant-method-case', ['/twokey.images.v1.ImageStore/getimage']), expect: GRANT },
  { name: 'grant for a prefix of the method', dir: grants('grant-prefix', ['/twokey.images.v1.ImageStore/GetImag']), expect: GRANT },
  { name: 'grant for a longer method name', dir: grants('grant-longer', ['/twokey.images.v1.ImageStore/GetImages']), expect: GRANT },
  { name: 'grant for the same service in another package', dir: grants('grant-other-package', ['/twokey.images.v2.ImageStore/*']), expect: GRANT },
  { name: 'grant for a service whose name extends it', dir: grants('grant-service-prefix', ['/twokey.images.v1.ImageStoreAdmin/*']), expect: GRANT },
  { name: 'no grants at all (empty extension)', dir: grants('grant-empty', []), expect: GRANT },
  { name: 'no grants extension', dir: minted('grant-absent', (s, oid) => replaceExtension(oid, [])(s, oid)), expect: GRANT },
  { name: 'grants under another OID', dir: minted('grant-other-oid', (s, oid) => replaceExtension(oid, [builder.grantsExtension('1.3.6.1.4.1.32473.7.99', ['/twokey.images.v1.ImageStore/*'])])(s, oid)), expect: GRANT },
];

describe('adversarial: hostile client certificates over real mTLS', function () {
  this.timeout(30_000);
  const signer = RawSigner.create('k1');
  let root: string;
  let ctx: Ctx;
  let mesh: MeshServer;
  let svid: SvidSource;
  let port: number;
  let bundle: Buffer;
  let ran = 0;
  let reference: TlsServer;
  const ImageStore = (grpc.loadPackageDefinition(MethodCatalog.default().definition) as any).twokey.images.v1.ImageStore as grpc.ServiceClientConstructor;
  const clients: grpc.Client[] = [];

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'twokey-adv-certs-'));
    const fixtures = makeHostileFixtures(join(root, 'fixtures'));
    ctx = { fixtures, mint: new HostileMint(fixtures.caDir, join(root, 'minted')) };
    const ca = CertificateAuthority.open(fixtures.caDir);
    const serverDir = join(root, 'server');
    ca.writeWorkload(serverDir, ca.issue({ spiffeId: SERVER_ID, grants: [], dns: ['localhost'], ip: ['127.0.0.1'] }));
    bundle = readFileSync(join(serverDir, 'bundle.pem'));
    svid = await SvidSource.open(serverDir, { trustDomain: TD, pollIntervalMs: 0 });
    mesh = createMeshServer({ svid, keys: await StaticKeys.fromJwks({ keys: [signer.publicJwk] }), issuer: ISSUER, rules: MethodCatalog.default() });
    mesh.server.addService(ImageStore.service, {
      GetImage: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => {
        ran += 1;
        cb(null, { id: 'img' });
      },
    });
    port = await mesh.listen('127.0.0.1:0');
    reference = createTlsServer({
      key: readFileSync(join(serverDir, 'svid.key')),
      cert: readFileSync(join(serverDir, 'svid.pem')),
      ca: bundle,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3',
      ALPNProtocols: ['h2'],
    });
    await new Promise<void>((resolve) => reference.listen(0, '127.0.0.1', resolve));
  });
  after(async () => {
    for (const c of clients) c.close();
    await mesh?.close(500);
    reference?.close();
    svid?.close();
    rmSync(root, { recursive: true, force: true });
  });

  /**
   * A plain TLS handshake presenting the files in `dir` (ALPN h2, as grpc-js): the code of the alert
   * the server ended it with, or ACCEPTED once the server's first HTTP/2 bytes arrive (it sends
   * them only after it verified the client certificate).
   */
  function handshake(dir: string | null): Promise<string> {
    return new Promise((resolve) => {
      const files = dir === null ? {} : { key: readFileSync(join(dir, 'svid.key')), cert: readFileSync(join(dir, 'svid.pem')) };
      const socket = connect({ host: '127.0.0.1', port, ca: bundle, ...files, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined });
      const done = (outcome: string): void => {
        clearTimeout(timer);
        socket.destroy();
        resolve(outcome);
      };
      const timer = setTimeout(() => done('NO ANSWER in 5 s'), 5000);
      socket.on('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
      socket.on('data', () => done('ACCEPTED'));
      socket.on('close', () => done('CLOSED WITHOUT AN ALERT'));
    });
  }

  /** The verification error of `dir`'s certificate against the mesh server's bundle, or AUTHORIZED (see HANDSHAKE). */
  function verificationOf(dir: string | null): Promise<string> {
    return new Promise((resolve, reject) => {
      reference.once('secureConnection', (socket: TLSSocket) => {
        resolve(socket.authorized ? 'AUTHORIZED' : String(socket.authorizationError));
        socket.destroy();
      });
      const files = dir === null ? {} : { key: readFileSync(join(dir, 'svid.key')), cert: readFileSync(join(dir, 'svid.pem')) };
      const client = connect({ host: '127.0.0.1', port: (reference.address() as AddressInfo).port, ca: bundle, ...files, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined });
      client.on('error', () => undefined);
      client.on('secureConnect', () => client.end());
      setTimeout(() => reject(new Error('the reference TLS server saw no connection in 5 s')), 5000).unref();
    });
  }

  /** A plain grpc-js TLS client presenting exactly the files in `dir` (no twokey-side checks of its own). */
  function call(dir: string | null): Promise<Outcome> {
    const creds =
      dir === null
        ? grpc.credentials.createSsl(bundle, null, null, { checkServerIdentity: () => undefined })
        : grpc.credentials.createSsl(bundle, readFileSync(join(dir, 'svid.key')), readFileSync(join(dir, 'svid.pem')), { checkServerIdentity: () => undefined });
    const client = new ImageStore(`127.0.0.1:${port}`, creds, { 'grpc.ssl_target_name_override': TD });
    clients.push(client);
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${signer.sign(signer.header(), userClaims({ scope: 'images:read' }))}`);
    return unary(client, 'GetImage', { id: 'img' }, md);
  }

  it(`the generated fixtures (client ${FIXTURE_SPIFFE_ID}) hold the named defects`, () => {
    expect(ctx.fixtures.fixtures.map((f) => f.name)).to.include.members(['valid', 'expired', 'wrong-ca', 'ca-true-leaf', 'two-uri-sans', 'no-uri-san']);
  });

  for (const c of CASES) {
    it(`${c.name} -> ${grpc.status[c.expect.status]}`, async () => {
      const dir = c.dir(ctx);
      const before = ran;
      const out = await call(dir);
      expect(out.code, out.details).to.equal(c.expect.status);
      if (c.expect.status === status.OK) {
        expect(ran).to.equal(before + 1);
        // The probe tells an accepted handshake from a refused one.
        expect(await handshake(dir), 'the TLS handshake').to.equal('ACCEPTED');
        expect(await verificationOf(dir), 'the chain verification').to.equal('AUTHORIZED');
        return;
      }
      expect(ran, 'a handler ran for a refused certificate').to.equal(before);
      if ('message' in c.expect) expect(out.details).to.match(c.expect.message);
      if ('alert' in c.expect) {
        expect(await handshake(dir), 'how the mesh server ended the TLS handshake').to.equal(c.expect.alert);
        expect(await verificationOf(dir), 'why the chain does not verify').to.equal(c.expect.reason);
        if (c.expect.reason === UNHANDLED_CRITICAL_EXTENSION) {
          const verify = spawnSync('openssl', ['verify', '-CAfile', join(root, 'server', 'bundle.pem'), '-purpose', 'sslclient', join(dir!, 'svid.pem')], { encoding: 'utf8' });
          expect(`${verify.stdout}${verify.stderr}`).to.match(/unhandled critical extension/);
        }
      } else {
        // Refused by twokey, not by TLS: the chain verifies.
        expect(await verificationOf(dir), 'the chain verification').to.equal('AUTHORIZED');
      }
    });
  }
});
