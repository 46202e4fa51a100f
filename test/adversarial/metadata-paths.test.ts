// Metadata and method-path attacks, over hand-written HTTP/2 where grpc-js would refuse to send them.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadSync } from '@grpc/proto-loader';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { HealthServer } from '../../services/authz/health-server.ts';
import { P, SERVER_ID, TD, bearer, handlerRuns, startAttackMesh, unary, type AttackMesh } from './harness.ts';
import { userClaims } from './hostile-tokens.ts';
import { RawSigner } from './jws.ts';
import { RawGrpcClient, grpcFrame, pingMessage, rawFramesCall } from './raw-http2.ts';

const { status } = grpc;

interface PathCase {
  name: string;
  path: string;
  /** The exact grpc-status the server answers with, or 'reset' when HTTP/2 itself refuses the stream. */
  expect: grpc.status | 'reset';
}

// Every one is a spelling of an existing, granted method (or of nothing), sent with a valid token.
const PATH_CASES: PathCase[] = [
  { name: 'dot-dot segment', path: '/twokey.testing.v1.Probe/../Probe/Unary', expect: status.UNIMPLEMENTED },
  { name: 'dot segment', path: '/twokey.testing.v1.Probe/./Unary', expect: status.UNIMPLEMENTED },
  { name: 'leading double slash', path: '//twokey.testing.v1.Probe/Unary', expect: status.UNIMPLEMENTED },
  { name: 'inner double slash', path: '/twokey.testing.v1.Probe//Unary', expect: status.UNIMPLEMENTED },
  { name: 'trailing slash', path: `${P}/Unary/`, expect: status.UNIMPLEMENTED },
  { name: 'service in lower case', path: '/twokey.testing.v1.probe/Unary', expect: status.UNIMPLEMENTED },
  { name: 'method in lower case', path: `${P}/unary`, expect: status.UNIMPLEMENTED },
  { name: 'query string', path: `${P}/Unary?admin=1`, expect: status.UNIMPLEMENTED },
  { name: 'fragment', path: `${P}/Unary#x`, expect: status.UNIMPLEMENTED },
  { name: 'percent-encoded method letter', path: `${P}/%55nary`, expect: status.UNIMPLEMENTED },
  { name: 'percent-encoded slash', path: '/twokey.testing.v1.Probe%2FUnary', expect: status.UNIMPLEMENTED },
  { name: 'encoded NUL after the method', path: `${P}/Unary%00`, expect: status.UNIMPLEMENTED },
  { name: 'a literal * method', path: `${P}/*`, expect: status.UNIMPLEMENTED },
  { name: 'no leading slash', path: 'twokey.testing.v1.Probe/Unary', expect: 'reset' },
  { name: 'a 4 KB path', path: `${P}/${'A'.repeat(4096)}`, expect: status.UNIMPLEMENTED },
  { name: 'server reflection v1alpha', path: '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo', expect: status.UNIMPLEMENTED },
  { name: 'server reflection v1', path: '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo', expect: status.UNIMPLEMENTED },
  { name: 'health on the mesh listener', path: '/grpc.health.v1.Health/Check', expect: status.UNIMPLEMENTED },
  { name: 'channelz', path: '/grpc.channelz.v1.Channelz/GetServers', expect: status.UNIMPLEMENTED },
  { name: 'a granted method that declares no rule', path: `${P}/Undeclared`, expect: status.PERMISSION_DENIED },
];

describe('adversarial: metadata and method paths', function () {
  this.timeout(30_000);
  const signer = RawSigner.create('k1');
  let mesh: AttackMesh;
  let raw: RawGrpcClient;
  let callerDir: string;
  const token = (claims: Record<string, unknown> = {}) => signer.sign(signer.header(), userClaims(claims));

  before(async () => {
    mesh = await startAttackMesh(() => ({ keys: [signer.publicJwk] }));
    callerDir = join(mesh.pki.root, 'caller');
    raw = await RawGrpcClient.connect(mesh.probe.port, callerDir, TD);
  });
  after(async () => {
    raw?.close();
    await mesh?.close();
  });

  it('control: the hand-written request reaches the handler with a valid token on the exact path', async () => {
    const before = handlerRuns(mesh.probe);
    const out = await raw.call(`${P}/Unary`, { authorization: `Bearer ${token()}` });
    expect(out.grpcStatus, out.grpcMessage).to.equal(status.OK);
    expect(handlerRuns(mesh.probe)).to.equal(before + 1);
  });

  describe('method paths other than the exact one (valid token, granted caller)', () => {
    for (const c of PATH_CASES) {
      it(`${c.name}: ${JSON.stringify(c.path.length > 60 ? `${c.path.slice(0, 60)}...` : c.path)} -> ${c.expect === 'reset' ? 'stream reset' : status[c.expect]}`, async () => {
        const before = handlerRuns(mesh.probe);
        const out = await raw.call(c.path, { authorization: `Bearer ${token()}` });
        if (c.expect === 'reset') {
          expect(out.grpcStatus).to.equal(undefined);
          expect(out.error).to.match(/NGHTTP2_PROTOCOL_ERROR/);
        } else {
          expect(out.grpcStatus, `${out.grpcMessage} ${out.error ?? ''}`).to.equal(c.expect);
          // UNIMPLEMENTED is grpc-js's own answer for a path no service registered (no decision is
          // made for it); the one PERMISSION_DENIED is the decision's, for a method without a rule.
          // (grpc-js sends the path unescaped in grpc-message, which the reader percent-decodes.)
          const decoded = c.path.replace(/%([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
          if (c.expect === status.UNIMPLEMENTED) expect(out.grpcMessage).to.equal(`The server does not implement the method ${decoded}`);
          else expect(out.grpcMessage).to.match(/^twokey: rule check failed: /);
        }
        expect(handlerRuns(mesh.probe), 'a handler ran').to.equal(before);
      });
    }
  });

  describe('authorization values grpc-js would not send', () => {
    // grpc-js logs each value it drops; the assertions below say what happened.
    before(() => grpc.setLogVerbosity(grpc.logVerbosity.NONE));
    after(() => grpc.setLogVerbosity(grpc.logVerbosity.ERROR));
    const cases: Array<{ name: string; headers: () => Record<string, string>; message: RegExp }> = [
      // grpc-js drops a metadata value with bytes outside printable ASCII, so the token is missing.
      { name: 'non-ASCII bytes in the token', headers: () => ({ authorization: `Bearer ${token()}\u00e9` }), message: /no "authorization: Bearer <token>" metadata/ },
      { name: 'non-ASCII bytes in the scheme', headers: () => ({ authorization: `B\u00e9arer ${token()}` }), message: /no "authorization: Bearer <token>" metadata/ },
      { name: 'a tab between scheme and token', headers: () => ({ authorization: `Bearer\t${token()}` }), message: /no "authorization: Bearer <token>" metadata/ },
      { name: 'two tokens folded into one value', headers: () => ({ authorization: `Bearer ${token()}, Bearer ${token()}` }), message: /not "Bearer <compact JWS>"/ },
      { name: 'authorization-bin alone', headers: () => ({ 'authorization-bin': Buffer.from(`Bearer ${token()}`).toString('base64') }), message: /no "authorization: Bearer <token>" metadata/ },
    ];
    for (const c of cases) {
      it(`${c.name} -> UNAUTHENTICATED`, async () => {
        const before = handlerRuns(mesh.probe);
        const out = await raw.call(`${P}/Unary`, c.headers());
        expect(out.grpcStatus, out.grpcMessage).to.equal(status.UNAUTHENTICATED);
        expect(out.grpcMessage).to.match(c.message);
        expect(handlerRuns(mesh.probe)).to.equal(before);
      });
    }

    it('authorization-bin beside a token without the scope does not add the scope -> PERMISSION_DENIED', async () => {
      const before = handlerRuns(mesh.probe);
      const out = await raw.call(`${P}/Unary`, {
        authorization: `Bearer ${token({ scope: 'images:read' })}`,
        'authorization-bin': Buffer.from(`Bearer ${token()}`).toString('base64'),
      });
      expect(out.grpcStatus, out.grpcMessage).to.equal(status.PERMISSION_DENIED);
      expect(out.grpcMessage).to.match(/^twokey: scope check failed: /);
      expect(handlerRuns(mesh.probe)).to.equal(before);
    });

    describe('separate authorization header fields, which Node would reduce to the first', () => {
      const forged = () => RawSigner.create('k1').sign(signer.header(), userClaims());
      const cases: Array<{ name: string; values: () => string[] }> = [
        { name: 'the same valid token twice', values: () => { const t = token(); return [`Bearer ${t}`, `Bearer ${t}`]; } },
        { name: 'a valid token, then a forged one', values: () => [`Bearer ${token()}`, `Bearer ${forged()}`] },
        { name: 'a forged token, then a valid one', values: () => [`Bearer ${forged()}`, `Bearer ${token()}`] },
        { name: 'a token without the scope, then one with it', values: () => [`Bearer ${token({ scope: 'images:read' })}`, `Bearer ${token()}`] },
        { name: 'a valid token, then an empty field', values: () => [`Bearer ${token()}`, ''] },
        { name: 'three fields', values: () => [`Bearer ${token()}`, `Bearer ${token()}`, `Bearer ${token()}`] },
      ];
      for (const c of cases) {
        it(`${c.name} -> UNAUTHENTICATED, no handler runs`, async () => {
          const before = handlerRuns(mesh.probe);
          const out = await raw.call(`${P}/Unary`, { authorization: c.values() });
          expect(out.grpcStatus, `${out.grpcMessage} ${out.error ?? ''}`).to.equal(status.UNAUTHENTICATED);
          expect(out.grpcMessage).to.match(/token check failed: malformed token: more than one authorization value/);
          expect(handlerRuns(mesh.probe)).to.equal(before);
        });
      }

      it('control: one field sent the same way (as a one-element list) reaches the handler', async () => {
        const before = handlerRuns(mesh.probe);
        const out = await raw.call(`${P}/Unary`, { authorization: [`Bearer ${token()}`] });
        expect(out.grpcStatus, out.grpcMessage).to.equal(status.OK);
        expect(handlerRuns(mesh.probe)).to.equal(before + 1);
      });

      it('a second field spelled "Authorization" is a malformed HTTP/2 request: refused, no handler runs', async () => {
        // HTTP/2 field names are lower case; nghttp2 resets the stream of a request with an upper-case one.
        const before = handlerRuns(mesh.probe);
        const out = await rawFramesCall(mesh.probe.port, callerDir, TD, [
          [':method', 'POST'], [':scheme', 'https'], [':path', `${P}/Unary`], [':authority', TD],
          ['content-type', 'application/grpc'], ['te', 'trailers'],
          ['authorization', `Bearer ${token()}`], ['Authorization', `Bearer ${token()}`],
        ], grpcFrame(pingMessage('case')));
        // The stream is reset as malformed (RFC 9113 section 8.2.1), not answered with a gRPC status.
        expect(out.refusal).to.equal('RST_STREAM PROTOCOL_ERROR');
        expect(handlerRuns(mesh.probe)).to.equal(before);
      });
    });

    it('oversized metadata (a 100 KB header block) is refused by HTTP/2 before any handler, and the server keeps serving', async () => {
      const before = handlerRuns(mesh.probe);
      const out = await rawFramesCall(mesh.probe.port, callerDir, TD, [
        [':method', 'POST'], [':scheme', 'https'], [':path', `${P}/Unary`], [':authority', TD],
        ['content-type', 'application/grpc'], ['te', 'trailers'],
        ['authorization', `Bearer ${token()}`], ['x-padding', 'p'.repeat(100_000)],
      ], grpcFrame(pingMessage('big')));
      // nghttp2 refuses a header block over its limit as a connection error: GOAWAY, not a gRPC status.
      expect(out.refusal).to.equal('GOAWAY COMPRESSION_ERROR');
      expect(handlerRuns(mesh.probe)).to.equal(before);
      const next = await unary(mesh.client, 'Unary', { text: 'after' }, bearer(token()));
      expect(next.code, next.details).to.equal(status.OK);
    });

    it('40 KB of padding metadata changes no decision -> PERMISSION_DENIED without the scope', async () => {
      const before = handlerRuns(mesh.probe);
      const out = await raw.call(`${P}/Unary`, { authorization: `Bearer ${token({ scope: 'images:read' })}`, 'x-padding': 'p'.repeat(40_000) });
      expect(out.grpcStatus, out.grpcMessage).to.equal(status.PERMISSION_DENIED);
      expect(out.grpcMessage).to.match(/^twokey: scope check failed: /);
      expect(handlerRuns(mesh.probe)).to.equal(before);
    });

    it('an oversized token (40 KB, under the HTTP/2 limit) is refused before crypto -> UNAUTHENTICATED', async () => {
      const before = handlerRuns(mesh.probe);
      const out = await raw.call(`${P}/Unary`, { authorization: `Bearer ${token({ pad: 'x'.repeat(40_000) })}` });
      expect(out.grpcStatus, out.grpcMessage).to.equal(status.UNAUTHENTICATED);
      expect(out.grpcMessage).to.match(/longer than 8192 bytes/);
      expect(handlerRuns(mesh.probe)).to.equal(before);
    });
  });

  describe('spoofed identity headers', () => {
    const SPOOFS: Record<string, string> = {
      'x-forwarded-client-cert': `By=${SERVER_ID};URI=spiffe://${TD}/ns/twokey/sa/cleaner`,
      'x-spiffe-id': `spiffe://${TD}/ns/twokey/sa/cleaner`,
      'x-user': 'admin',
      'x-forwarded-user': 'admin',
      'x-remote-user': 'admin',
      'x-authenticated-userid': 'admin',
      'x-twokey-subject': 'admin',
      'x-twokey-scope': 'probe:call:any',
      'x-jwt-payload': Buffer.from(JSON.stringify({ sub: 'admin', scope: 'probe:call:any' })).toString('base64url'),
      'x-client-cert-subject': 'CN=admin',
      'x-ssl-client-verify': 'SUCCESS',
      'x-principal': 'admin',
      // Identity headers of cloud load balancers and gateways, and second credentials.
      'x-amzn-oidc-data': 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.',
      'x-amzn-oidc-identity': 'admin',
      'x-goog-iap-jwt-assertion': 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.',
      'x-goog-authenticated-user-email': 'accounts.google.com:admin@example.com',
      'x-ms-client-principal-name': 'admin',
      'x-consumer-username': 'admin',
      'x-credential-identifier': 'admin',
      'x-client-dn': 'CN=admin',
      'ssl-client-cert': '-----BEGIN CERTIFICATE-----',
      'x-ssl-cert': '-----BEGIN CERTIFICATE-----',
      'x-arr-clientcert': 'MIIB',
      'l5d-client-id': 'cleaner.twokey.serviceaccount.identity.linkerd.cluster.local',
      'x-envoy-peer-metadata': 'admin',
      'x-access-token': 'admin',
      'x-id-token': 'admin',
      'x-auth-token': 'admin',
      'proxy-authorization': 'Basic YWRtaW46YWRtaW4=',
    };
    const spoofed = (extra: Record<string, string> = {}) => {
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries({ ...SPOOFS, ...extra })) md.set(k, v);
      return md;
    };

    it('with no token they authenticate nothing -> UNAUTHENTICATED', async () => {
      const before = handlerRuns(mesh.probe);
      const out = await unary(mesh.client, 'Unary', { text: 'x' }, spoofed());
      expect(out.code).to.equal(status.UNAUTHENTICATED);
      expect(out.details).to.match(/no "authorization: Bearer <token>" metadata/);
      expect(handlerRuns(mesh.probe)).to.equal(before);
    });

    it('beside a token without the scope they grant nothing -> PERMISSION_DENIED', async () => {
      const before = handlerRuns(mesh.probe);
      const out = await unary(mesh.client, 'Unary', { text: 'x' }, spoofed({ authorization: `Bearer ${token({ scope: 'images:read' })}` }));
      expect(out.code).to.equal(status.PERMISSION_DENIED);
      expect(out.details).to.match(/^twokey: scope check failed: /);
      expect(handlerRuns(mesh.probe)).to.equal(before);
    });

    it('on an allowed call none of them (nor the token) reaches the handler, which sees the verified identities', async () => {
      const md = spoofed({ authorization: `Bearer ${token()}` });
      md.set('authorization-bin', Buffer.from(`Bearer ${token({ sub: 'admin' })}`));
      const out = await unary(mesh.client, 'Unary', { text: 'x' }, md);
      expect(out.code, out.details).to.equal(status.OK);
      for (const key of [...Object.keys(SPOOFS), 'authorization', 'authorization-bin']) expect(out.res.metadata_keys).not.to.include(key);
      expect(out.res.subject).to.equal('alice');
      expect(out.res.peer).to.equal(mesh.callerSvid.spiffeId.toString());
    });
  });

  describe('the plaintext health listener reveals nothing', () => {
    let health: HealthServer;
    let port: number;
    let client: grpc.Client;
    // The same health.proto the runtime serves, loaded here only to call it.
    const Health = () =>
      (grpc.loadPackageDefinition(
        loadSync('grpc/health/v1/health.proto', { includeDirs: [fileURLToPath(new URL('../../services/mesh-runtime/proto/', import.meta.url))], keepCase: true, enums: String, defaults: true }),
      ) as any).grpc.health.v1.Health as grpc.ServiceClientConstructor;

    before(async () => {
      health = new HealthServer(['twokey.testing.v1.Probe']);
      health.setAll('SERVING');
      port = await health.listen('127.0.0.1:0');
      const Ctor = Health();
      client = new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    });
    after(async () => {
      client?.close();
      await health?.close();
    });

    it('Check answers only a serving status, with no version, host, peer or identity', async () => {
      const out = await unary(client, 'Check', { service: '' });
      expect(out.code).to.equal(status.OK);
      expect(Object.keys(out.res)).to.deep.equal(['status']);
      expect(out.res.status).to.equal('SERVING');
    });

    it('an unknown service name is NOT_FOUND and the answer names only what was asked', async () => {
      const out = await unary(client, 'Check', { service: 'twokey.images.v1.ImageStore' });
      expect(out.code).to.equal(status.NOT_FOUND);
      expect(out.details).to.equal('unknown service "twokey.images.v1.ImageStore"');
    });

    it('the plaintext listener serves no mesh method and no reflection', async () => {
      const raw2 = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      const call = (path: string) =>
        new Promise<grpc.status>((resolve) => {
          raw2.makeUnaryRequest(path, (x: Buffer) => x, (x: Buffer) => x, pingMessage('x'), new grpc.Metadata(), { deadline: Date.now() + 3000 }, (err) => resolve(err ? err.code : status.OK));
        });
      try {
        expect(await call(`${P}/Unary`)).to.equal(status.UNIMPLEMENTED);
        expect(await call('/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo')).to.equal(status.UNIMPLEMENTED);
        expect(await call('/grpc.reflection.v1.ServerReflection/ServerReflectionInfo')).to.equal(status.UNIMPLEMENTED);
      } finally {
        raw2.close();
      }
    });
  });
});
