// The unary handler wrapper as an adapter: the handler runs only after an allow, in the call context, and every error denies.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EventEmitter } from 'node:events';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { callContext } from '../../services/authz/call-context.ts';
import { DecisionLog } from '../../services/authz/decision-log.ts';
import { createAuthzInterceptor } from '../../services/authz/interceptor.ts';
import { StaticKeys } from '../../services/authz/jwks.ts';
import { PeerIdentityCache } from '../../services/authz/peer-identity.ts';
import { TokenAuthenticator } from '../../services/authz/token-authenticator.ts';
import { TokenVerifier } from '../../services/authz/token-verifier.ts';
import { UnaryAuthorizer } from '../../services/authz/unary-authz.ts';
import { ISSUER, MESH_AUDIENCE, TestIssuer } from './token-fixtures.ts';
import { CALLER_ID, P, TD, TestPki, capturingLogger, probeCatalog } from './mesh-fixtures.ts';

/** A handler call as grpc-js builds it: metadata, the request, and its own call (read for the peer) as `call`. */
function unaryCall(der: Buffer | undefined, metadata: grpc.Metadata) {
  const inner = { getAuthContext: () => ({ transportSecurityType: 'ssl', sslPeerCertificate: der === undefined ? undefined : { raw: der } }) };
  return Object.assign(new EventEmitter(), { metadata, request: {}, cancelled: false, call: inner }) as unknown as grpc.ServerUnaryCall<unknown, unknown>;
}

describe('UnaryAuthorizer', () => {
  let pki: TestPki;
  let der: Buffer;
  let issuer: TestIssuer;
  let tokens: TokenAuthenticator;

  before(async () => {
    pki = TestPki.create();
    der = Buffer.from(new X509Certificate(readFileSync(join(pki.workload('caller', CALLER_ID, [`${P}/Unary`]), 'svid.pem'))).raw);
    issuer = await TestIssuer.create('k1');
    tokens = new TokenAuthenticator({ verifier: new TokenVerifier({ keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)), issuer: ISSUER, audiences: [MESH_AUDIENCE] }) });
  });
  after(() => pki.cleanup());

  const bearer = async (scope = 'probe:call') => {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${await issuer.sign({ scope })}`);
    md.set('x-user-id', 'mallory');
    return md;
  };

  /** Runs one call through the wrapped handler; resolves with what the handler saw and what was answered. */
  async function drive(authorizer: UnaryAuthorizer, md: grpc.Metadata, peerDer: Buffer | null = der) {
    const seen: { subject: string | undefined; metadata: string[] }[] = [];
    const handler: grpc.handleUnaryCall<unknown, unknown> = (call, callback) => {
      seen.push({ subject: callContext().token?.subject, metadata: Object.keys(call.metadata.getMap()) });
      callback(null, { ok: true });
    };
    const answered = await new Promise<{ err: grpc.ServiceError | null; value: unknown }>((resolve) =>
      authorizer.wrap(`${P}/Unary`, handler)(unaryCall(peerDer ?? undefined, md), ((err: grpc.ServiceError | null, value: unknown) => resolve({ err, value })) as grpc.sendUnaryData<unknown>),
    );
    return { seen, ...answered };
  }

  const authorizer = (extra: Partial<ConstructorParameters<typeof UnaryAuthorizer>[0]> = {}) =>
    new UnaryAuthorizer({ trustDomain: TD, rules: probeCatalog(), tokens, peers: new PeerIdentityCache(), ...extra });

  it('runs the handler after an allow, in the call context, with identity metadata stripped', async () => {
    const out = await drive(authorizer(), await bearer());
    expect(out.err).to.equal(null);
    expect(out.seen).to.deep.equal([{ subject: 'alice', metadata: [] }]);
  });

  it('answers a denial with its status and never runs the handler', async () => {
    const noScope = await drive(authorizer(), await bearer('other:scope'));
    expect(noScope.seen).to.deep.equal([]);
    expect(noScope.err?.code).to.equal(grpc.status.PERMISSION_DENIED);
    expect(noScope.err?.details).to.match(/^twokey: scope check failed: .* \(decision [0-9a-f-]{36}\)$/);
    const noToken = await drive(authorizer(), new grpc.Metadata());
    expect([noToken.seen.length, noToken.err?.code]).to.deep.equal([0, grpc.status.UNAUTHENTICATED]);
    const noPeer = await drive(authorizer(), await bearer(), null);
    expect([noPeer.seen.length, noPeer.err?.code]).to.deep.equal([0, grpc.status.UNAUTHENTICATED]);
  });

  it('dry run logs the denial and runs the handler as if the call carried no token', async () => {
    const captured = capturingLogger();
    const out = await drive(authorizer({ dryRun: true, log: new DecisionLog(captured.logger) }), await bearer('other:scope'));
    expect(out.err).to.equal(null);
    expect(out.seen).to.deep.equal([{ subject: undefined, metadata: [] }]);
    expect(captured.lines.at(-1)).to.include({ allow: false, would_deny: true, dry_run: true, failed_check: 'scope' });
  });

  for (const cached of [false, true]) {
    it(`ends the call with INTERNAL, never running the handler, when the decision log throws (${cached ? 'cached' : 'new'} token)`, async () => {
      const throwing = { write: () => { throw new Error('log destination gone'); } } as unknown as DecisionLog;
      const fresh = new TokenAuthenticator({ verifier: new TokenVerifier({ keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)), issuer: ISSUER, audiences: [MESH_AUDIENCE] }) });
      const md = await bearer();
      if (cached) await fresh.fromMetadata(md);
      const out = await drive(authorizer({ tokens: fresh, log: throwing }), md);
      expect(out.seen).to.deep.equal([]);
      expect(out.err?.code).to.equal(grpc.status.INTERNAL);
      expect(out.err?.details).to.match(/^twokey: the decision could not be logged \(decision [0-9a-f-]{36}\)$/);
    });
  }

  it('fails closed when verifying the token throws or rejects', async () => {
    for (const broken of [
      { fromMetadata: () => Promise.reject(new Error('key store exploded')) },
      { fromMetadata: () => { throw new Error('key store exploded'); } },
    ]) {
      const out = await drive(authorizer({ tokens: broken as unknown as TokenAuthenticator }), await bearer());
      expect(out.seen).to.deep.equal([]);
      expect(out.err?.code).to.equal(grpc.status.INTERNAL);
    }
  });

  it('a handler that throws is answered INTERNAL, after a cached and after a newly verified token alike', async () => {
    for (const cached of [true, false]) {
      const fresh = new TokenAuthenticator({ verifier: new TokenVerifier({ keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)), issuer: ISSUER, audiences: [MESH_AUDIENCE] }) });
      const md = await bearer();
      if (cached) await fresh.fromMetadata(md);
      const throwing: grpc.handleUnaryCall<unknown, unknown> = () => {
        throw new Error('handler bug');
      };
      const err = await new Promise<grpc.ServiceError | null>((resolve) =>
        authorizer({ tokens: fresh }).wrap(`${P}/Unary`, throwing)(unaryCall(der, md), ((e: grpc.ServiceError | null) => resolve(e)) as grpc.sendUnaryData<unknown>),
      );
      expect([err?.code, err?.details]).to.deep.equal([grpc.status.INTERNAL, 'twokey: the handler failed: handler bug']);
    }
  });

  it('the interceptor lets pass only unary methods the mesh server wrapped; streaming ones it always authorizes', () => {
    const interceptor = createAuthzInterceptor({ trustDomain: TD, rules: probeCatalog(), tokens, authorizedByHandler: (path) => path === `${P}/Unary` });
    const base = { getAuthContext: () => ({}) } as unknown as grpc.ServerInterceptingCallInterface;
    const method = (path: string, stream: boolean) => ({ path, requestStream: stream, responseStream: false }) as unknown as grpc.ServerMethodDefinition<unknown, unknown>;
    expect(interceptor(method(`${P}/Unary`, false), base)).to.equal(base);
    expect(interceptor(method(`${P}/Other`, false), base)).to.not.equal(base);
    expect(interceptor(method(`${P}/Unary`, true), base)).to.not.equal(base);
  });
});
