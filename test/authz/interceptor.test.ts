// The interceptor as an adapter: fail closed on internal errors, and the handler is only reached after an allow.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { createAuthzInterceptor } from '../../services/authz/interceptor.ts';
import { StaticKeys } from '../../services/authz/jwks.ts';
import { PeerIdentityCache } from '../../services/authz/peer-identity.ts';
import { TokenAuthenticator } from '../../services/authz/token-authenticator.ts';
import { TokenVerifier } from '../../services/authz/token-verifier.ts';
import { ISSUER, MESH_AUDIENCE, TestIssuer } from './token-fixtures.ts';
import { CALLER_ID, P, TD, TestPki, capturingLogger, probeCatalog } from './mesh-fixtures.ts';
import { DecisionLog } from '../../services/authz/decision-log.ts';

/** Stands in for grpc-js's own server call, as the first interceptor receives it. */
function fakeCall(der: Buffer) {
  const sent: grpc.StatusObject[] = [];
  let listener: grpc.ServerListener & Record<string, any> = {};
  const base = {
    start: (l: any) => (listener = l),
    sendStatus: (s: grpc.StatusObject) => sent.push(s),
    sendMetadata: () => {}, sendMessage: () => {}, startRead: () => {},
    getPeer: () => 'test', getDeadline: () => Infinity, getHost: () => 'test', getConnectionInfo: () => ({}), getMetricsRecorder: () => undefined,
    getAuthContext: () => ({ transportSecurityType: 'ssl', sslPeerCertificate: { raw: der } }),
  };
  return { base: base as unknown as grpc.ServerInterceptingCallInterface, sent, deliver: () => listener };
}

describe('createAuthzInterceptor', () => {
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

  /**
   * Delivers metadata, waits for the decision itself (a status sent, or the metadata passed on to
   * the handler; a deadline, not a fixed sleep), then a message and the half-close. With `early`,
   * a message and the half-close also arrive before the decision, as a client may send them.
   */
  async function drive(interceptor: grpc.ServerInterceptor, md: grpc.Metadata, opts: { early?: boolean } = {}) {
    const call = fakeCall(der);
    const reached: string[] = [];
    interceptor({ path: `${P}/Unary`, requestStream: false, responseStream: false } as any, call.base).start({
      onReceiveMetadata: () => reached.push('metadata'), onReceiveMessage: () => reached.push('message'),
      onReceiveHalfClose: () => reached.push('halfClose'), onCancel: () => {},
    });
    call.deliver().onReceiveMetadata!(md, () => {});
    const decidedBeforeEarly = reached.length > 0 || call.sent.length > 0;
    if (opts.early === true) {
      call.deliver().onReceiveMessage!({}, () => {});
      call.deliver().onReceiveHalfClose!(() => {});
    }
    const deadline = Date.now() + 5000;
    while (!reached.includes('metadata') && call.sent.length === 0) {
      if (Date.now() > deadline) expect.fail('no decision within 5 s: neither a status nor the metadata passed on');
      await new Promise((r) => setImmediate(r));
    }
    call.deliver().onReceiveMessage!({}, () => {});
    call.deliver().onReceiveHalfClose!(() => {});
    return { reached, sent: call.sent, decidedBeforeEarly };
  }

  const bearer = async (scope = 'probe:call') => {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${await issuer.sign({ scope })}`);
    return md;
  };

  it('admits an allowed call: metadata, message and half-close reach the handler, no status is sent', async () => {
    const out = await drive(createAuthzInterceptor({ trustDomain: TD, rules: probeCatalog(), tokens, peers: new PeerIdentityCache() }), await bearer());
    expect(out.reached).to.deep.equal(['metadata', 'message', 'halfClose']);
    expect(out.sent).to.deep.equal([]);
  });

  it('a denied call reaches nothing in the handler, even messages sent anyway, before and after the decision', async () => {
    // A fresh authenticator: the token is not cached, so its verification is asynchronous and the early messages precede the decision.
    const fresh = new TokenAuthenticator({ verifier: new TokenVerifier({ keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)), issuer: ISSUER, audiences: [MESH_AUDIENCE] }) });
    const out = await drive(createAuthzInterceptor({ trustDomain: TD, rules: probeCatalog(), tokens: fresh, peers: new PeerIdentityCache() }), await bearer('images:read'), { early: true });
    expect(out.decidedBeforeEarly, 'the decision came before the early messages').to.equal(false);
    expect(out.reached).to.deep.equal([]);
    expect(out.sent.map((s) => s.code)).to.deep.equal([grpc.status.PERMISSION_DENIED]);
  });

  it('fails closed with INTERNAL when deciding throws, and logs the failure', async () => {
    const log = capturingLogger();
    const rules = { ruleOf: (): never => { throw new Error('rule store unavailable'); } };
    const out = await drive(createAuthzInterceptor({ trustDomain: TD, rules, tokens, peers: new PeerIdentityCache(), log: new DecisionLog(log.logger) }), await bearer());
    expect(out.reached).to.deep.equal([]);
    expect(out.sent).to.have.length(1);
    expect(out.sent[0]!.code).to.equal(grpc.status.INTERNAL);
    expect(out.sent[0]!.details).to.match(/^twokey: authorization failed internally \(decision [0-9a-f-]{36}\)$/);
    expect(log.lines.at(-1)).to.include({ allow: false, grpc_code: grpc.status.INTERNAL });
    expect(log.lines.at(-1)!.reason).to.contain('rule store unavailable');
  });

  it('without a socket, a peer whose CA left the trust bundle is denied after the change', async () => {
    const peers = new PeerIdentityCache();
    const interceptor = createAuthzInterceptor({ trustDomain: TD, rules: probeCatalog(), tokens, peers });
    expect((await drive(interceptor, await bearer())).sent).to.deep.equal([]);
    const other = TestPki.create();
    try {
      peers.setTrustBundle([new X509Certificate(readFileSync(join(other.ca.dir, 'ca.pem')))]);
      const out = await drive(interceptor, await bearer());
      expect(out.reached).to.deep.equal([]);
      expect(out.sent.map((s) => s.code)).to.deep.equal([grpc.status.UNAUTHENTICATED]);
      expect(out.sent[0]!.details).to.contain('does not chain to the current trust bundle');
      peers.setTrustBundle([new X509Certificate(readFileSync(join(pki.ca.dir, 'ca.pem')))]);
      expect((await drive(interceptor, await bearer())).sent).to.deep.equal([]);
    } finally {
      other.cleanup();
    }
  });

  for (const cached of [false, true]) {
    it(`ends the call with INTERNAL, never admitting or hanging it, when the decision log throws (${cached ? 'cached' : 'new'} token)`, async () => {
      const throwing = { write: () => { throw new Error('log destination gone'); } } as unknown as DecisionLog;
      const fresh = new TokenAuthenticator({ verifier: new TokenVerifier({ keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)), issuer: ISSUER, audiences: [MESH_AUDIENCE] }) });
      const md = await bearer();
      if (cached) await fresh.fromMetadata(md);
      const out = await drive(createAuthzInterceptor({ trustDomain: TD, rules: probeCatalog(), tokens: fresh, peers: new PeerIdentityCache(), log: throwing }), md);
      expect(out.reached).to.deep.equal([]);
      expect(out.sent.map((s) => s.code)).to.deep.equal([grpc.status.INTERNAL]);
      expect(out.sent[0]!.details).to.match(/^twokey: the decision could not be logged \(decision [0-9a-f-]{36}\)$/);
    });
  }

  it('fails closed when verifying the token throws', async () => {
    const broken = { fromMetadata: () => Promise.reject(new Error('key store exploded')) } as unknown as TokenAuthenticator;
    const out = await drive(createAuthzInterceptor({ trustDomain: TD, rules: probeCatalog(), tokens: broken, peers: new PeerIdentityCache() }), await bearer());
    expect(out.reached).to.deep.equal([]);
    expect(out.sent.map((s) => s.code)).to.deep.equal([grpc.status.INTERNAL]);
  });
});
