// Real mTLS on loopback: who gets refused, with which code, and that no handler runs for a denied call.
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { createMeshClient } from '../../services/authz/client.ts';
import { StaticKeys } from '../../services/authz/jwks.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { MESH_AUDIENCE, TestIssuer } from './token-fixtures.ts';
import {
  CALLER_ID, P, SERVER_ID, TD, TestPki, capturingLogger, probeClientCtor, startProbe, type ProbeClient, type ProbeServer,
} from './mesh-fixtures.ts';

const { status } = grpc;
const NO_IP_SNI = { 'grpc.ssl_target_name_override': TD };

interface Outcome {
  code: grpc.status;
  details: string;
  res?: any;
}

function unary(client: ProbeClient, method: string, req: object, md = new grpc.Metadata()): Promise<Outcome> {
  return new Promise((resolve) => {
    client[method]!(req, md, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, res: any) =>
      resolve(err ? { code: err.code, details: err.details } : { code: status.OK, details: '', res }));
  });
}

function serverStream(client: ProbeClient, md: grpc.Metadata): Promise<Outcome> {
  return new Promise((resolve) => {
    const items: any[] = [];
    const call = client.ServerStream!({ text: 'x' }, md, { deadline: Date.now() + 5000 });
    call.on('data', (d: any) => items.push(d));
    call.on('error', (err: grpc.ServiceError) => resolve({ code: err.code, details: err.details, res: items }));
    call.on('end', () => resolve({ code: status.OK, details: '', res: items }));
  });
}

function clientStream(client: ProbeClient, md: grpc.Metadata): Promise<Outcome> {
  return new Promise((resolve) => {
    const call = client.ClientStream!(md, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, res: any) =>
      resolve(err ? { code: err.code, details: err.details } : { code: status.OK, details: '', res }));
    call.write({ text: 'a' });
    call.write({ text: 'b' });
    call.end();
  });
}

function bidi(client: ProbeClient, md: grpc.Metadata): Promise<Outcome> {
  return new Promise((resolve) => {
    const items: any[] = [];
    const call = client.Bidi!(md, { deadline: Date.now() + 5000 });
    call.on('data', (d: any) => items.push(d));
    call.on('error', (err: grpc.ServiceError) => resolve({ code: err.code, details: err.details, res: items }));
    call.on('end', () => resolve({ code: status.OK, details: '', res: items }));
    call.write({ text: '1' });
    call.write({ text: '2' });
    call.end();
  });
}

function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

describe('mesh server and client over real mTLS', function () {
  this.timeout(20000);
  let pki: TestPki;
  let issuer: TestIssuer;
  let probe: ProbeServer;
  let log: ReturnType<typeof capturingLogger>;
  let callerDir: string;
  let caller: SvidSource;
  const clients: grpc.Client[] = [];
  const sources: SvidSource[] = [];
  let now = Date.now();

  before(async () => {
    pki = TestPki.create();
    issuer = await TestIssuer.create('k1');
    const serverDir = pki.workload('probe', SERVER_ID, [`${P}/Unary`]);
    callerDir = pki.workload('caller', CALLER_ID, [`${P}/Unary`, `${P}/ServerStream`, `${P}/ClientStream`, `${P}/Bidi`, `${P}/CertOnly`, `${P}/Undeclared`]);
    log = capturingLogger();
    probe = await startProbe({ svidDir: serverDir, keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)), logger: log.logger, clock: () => now });
    caller = await open(callerDir);
  });
  after(async () => {
    for (const c of clients) c.close();
    for (const s of sources) s.close();
    await probe.close();
    pki.cleanup();
  });
  beforeEach(() => {
    now = Date.now();
    for (const k of Object.keys(probe.ran)) delete probe.ran[k];
  });

  async function open(dir: string, trustDomain = TD): Promise<SvidSource> {
    const s = await SvidSource.open(dir, { trustDomain, pollIntervalMs: 0 });
    sources.push(s);
    return s;
  }
  function client(svid: SvidSource, serverId = SERVER_ID): ProbeClient {
    const c = createMeshClient(probeClientCtor(), `127.0.0.1:${probe.port}`, { svid, serverId }) as ProbeClient;
    clients.push(c);
    return c;
  }
  const userToken = (scope = 'probe:call', claims: Record<string, unknown> = {}) => issuer.sign({ scope, ...claims });

  it('a granted call with a valid token succeeds, and the handler sees the verified identities', async () => {
    const out = await unary(client(caller), 'Unary', { text: 'hi' }, bearer(await userToken()));
    expect(out.code).to.equal(status.OK);
    expect(out.res).to.include({ text: 'unary hi', subject: 'alice', peer: CALLER_ID, peer_serial: caller.svid.serialHex });
    expect(probe.ran['Unary']).to.equal(1);
  });

  it('parses the peer certificate once per connection, not once per call, and never falls back to getAuthContext()', async () => {
    const c = client(caller);
    const md = bearer(await userToken());
    expect((await unary(c, 'Unary', { text: '0' }, md)).code).to.equal(status.OK);
    const before = probe.mesh.peers.stats;
    for (let i = 0; i < 5; i++) expect((await unary(c, 'Unary', { text: String(i) }, md)).code).to.equal(status.OK);
    expect(probe.mesh.peers.stats).to.deep.equal(before);
    expect(before.socketless).to.equal(0);
  });

  describe('refused at the TLS handshake (UNAVAILABLE, no handler runs)', () => {
    it('a client without a certificate', async () => {
      const Probe = probeClientCtor();
      const c = new Probe(`127.0.0.1:${probe.port}`, grpc.credentials.createSsl(Buffer.from(caller.material.bundlePem), null, null, {
        checkServerIdentity: () => undefined,
      }), NO_IP_SNI) as ProbeClient;
      clients.push(c);
      const out = await unary(c, 'Unary', { text: 'x' }, bearer(await userToken()));
      expect(out.code).to.equal(status.UNAVAILABLE);
      expect(probe.ran['Unary']).to.equal(undefined);
    });

    it('a client whose certificate comes from another CA', async () => {
      const other = TestPki.create(TD, pki.root + '-other');
      try {
        // Same trust domain and SPIFFE ID, but a CA the server's bundle does not hold.
        const dir = other.workload('caller', CALLER_ID, [`${P}/Unary`]);
        const rawOut = await rawTlsClientCall(dir, await userToken());
        expect(rawOut.code).to.equal(status.UNAVAILABLE);
        expect(probe.ran['Unary']).to.equal(undefined);
      } finally {
        other.cleanup();
      }
    });

    it('a client with an expired certificate', async () => {
      const dir = pki.forged('expired', { uris: [CALLER_ID], notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 3600_000) });
      const out = await rawTlsClientCall(dir, await userToken());
      expect(out.code).to.equal(status.UNAVAILABLE);
      expect(probe.ran['Unary']).to.equal(undefined);
    });
  });

  describe('refused by the peer check (UNAUTHENTICATED, no handler runs)', () => {
    it('a certificate with CA=true used as a leaf', async () => {
      const out = await rawTlsClientCall(pki.forged('ca-leaf', { uris: [CALLER_ID], ca: true }), await userToken());
      expect(out.code).to.equal(status.UNAUTHENTICATED);
      expect(out.details).to.match(/^twokey: peer check failed: .*CA/);
      expect(probe.ran['Unary']).to.equal(undefined);
    });

    it('a certificate with two URI SANs', async () => {
      const out = await rawTlsClientCall(pki.forged('two-uris', { uris: [CALLER_ID, `spiffe://${TD}/ns/test/sa/other`] }), await userToken());
      expect(out.code).to.equal(status.UNAUTHENTICATED);
      expect(out.details).to.match(/^twokey: peer check failed: .*URI/);
      expect(probe.ran['Unary']).to.equal(undefined);
    });

    it('a certificate of another trust domain, even signed by our CA', async () => {
      const out = await rawTlsClientCall(pki.forged('other-td', { uris: ['spiffe://evil.example/ns/test/sa/caller'] }), await userToken());
      expect(out.code).to.equal(status.UNAUTHENTICATED);
      expect(out.details).to.match(/^twokey: peer check failed: .*not in trust domain "twokey.local"/);
      expect(probe.ran['Unary']).to.equal(undefined);
    });

    it('a certificate that expires while its connection stays open', async () => {
      const c = client(caller);
      const token = await userToken();
      expect((await unary(c, 'Unary', { text: 'a' }, bearer(token))).code).to.equal(status.OK);
      now = caller.svid.notAfter.getTime() + 1;
      const out = await unary(c, 'Unary', { text: 'b' }, bearer(token));
      expect(out.code).to.equal(status.UNAUTHENTICATED);
      expect(out.details).to.contain('expired');
      expect(probe.ran['Unary']).to.equal(1);
    });
  });

  describe('each denial code, with no handler run', () => {
    const cases: Array<{ name: string; method: string; md: () => Promise<grpc.Metadata>; code: grpc.status; check: string }> = [
      { name: 'no token', method: 'Unary', md: async () => new grpc.Metadata(), code: status.UNAUTHENTICATED, check: 'token' },
      { name: 'a token signed by an unknown key', method: 'Unary', md: async () => bearer(await (await TestIssuer.create('k1')).sign({ scope: 'probe:call' })), code: status.UNAUTHENTICATED, check: 'token' },
      { name: 'an expired token', method: 'Unary', md: async () => bearer(await issuer.sign({ scope: 'probe:call' }, { nowMs: Date.now() - 3600_000 })), code: status.UNAUTHENTICATED, check: 'token' },
      { name: 'two tokens joined in one authorization value', method: 'Unary', md: async () => { const m = new grpc.Metadata(); m.set('authorization', `Bearer ${await userToken()}, Bearer ${await userToken()}`); return m; }, code: status.UNAUTHENTICATED, check: 'token' },
      { name: 'a non-Bearer scheme', method: 'Unary', md: async () => { const m = new grpc.Metadata(); m.set('authorization', `Basic ${Buffer.from('alice:pw').toString('base64')}`); return m; }, code: status.UNAUTHENTICATED, check: 'token' },
      { name: 'a token without the scope', method: 'Unary', md: async () => bearer(await userToken('images:read')), code: status.PERMISSION_DENIED, check: 'scope' },
      { name: 'a delegated token addressed mesh-wide instead of to this service', method: 'Unary', md: async () => bearer(await issuer.sign({ token_kind: 'delegated', aud: MESH_AUDIENCE, scope: 'probe:call', act: { sub: CALLER_ID }, cnf: { 'x5t#S256': 'A'.repeat(43) } })), code: status.UNAUTHENTICATED, check: 'token' },
      { name: 'a delegated token whose actor is another workload', method: 'Unary', md: async () => bearer(await issuer.sign({ token_kind: 'delegated', aud: SERVER_ID, scope: 'probe:call', act: { sub: SERVER_ID }, cnf: { 'x5t#S256': 'A'.repeat(43) } })), code: status.UNAUTHENTICATED, check: 'binding' },
      { name: 'a service token of another workload', method: 'Unary', md: async () => bearer(await issuer.sign({ token_kind: 'service', sub: SERVER_ID, scope: 'probe:call', cnf: { 'x5t#S256': 'A'.repeat(43) } })), code: status.UNAUTHENTICATED, check: 'binding' },
      { name: 'a method without a declared rule', method: 'Undeclared', md: async () => bearer(await userToken()), code: status.PERMISSION_DENIED, check: 'rule' },
    ];
    for (const c of cases) {
      it(`${c.name} -> ${status[c.code]} (${c.check})`, async () => {
        const out = await unary(client(caller), c.method, { text: 'x' }, await c.md());
        expect(out.code, out.details).to.equal(c.code);
        expect(out.details).to.match(new RegExp(`^twokey: ${c.check} check failed: .* \\(decision [0-9a-f-]{36}\\)$`));
        expect(probe.ran[c.method]).to.equal(undefined);
      });
    }

    it('a method the certificate does not grant -> PERMISSION_DENIED (grant)', async () => {
      const dir = pki.workload('ungranted', `spiffe://${TD}/ns/test/sa/ungranted`, [`${P}/CertOnly`]);
      const out = await unary(client(await open(dir)), 'Unary', { text: 'x' }, bearer(await userToken()));
      expect(out.code).to.equal(status.PERMISSION_DENIED);
      expect(out.details).to.match(/^twokey: grant check failed: certificate of spiffe:\/\/twokey.local\/ns\/test\/sa\/ungranted does not grant \/twokey.testing.v1.Probe\/Unary/);
      expect(probe.ran['Unary']).to.equal(undefined);
    });

    it('a bound delegated or service token presented by its own workload is allowed', async () => {
      const thumb = caller.svid.thumbprint;
      const delegated = await issuer.sign({ token_kind: 'delegated', aud: SERVER_ID, scope: 'probe:call', act: { sub: CALLER_ID }, cnf: { 'x5t#S256': thumb } });
      const service = await issuer.sign({ token_kind: 'service', sub: CALLER_ID, scope: 'probe:call:any', cnf: { 'x5t#S256': thumb } });
      expect((await unary(client(caller), 'Unary', { text: 'x' }, bearer(delegated))).res.subject).to.equal('alice');
      expect((await unary(client(caller), 'Unary', { text: 'x' }, bearer(service))).res.subject).to.equal(CALLER_ID);
    });

    it('the denial message never echoes the token', async () => {
      const token = await userToken('images:read');
      const out = await unary(client(caller), 'Unary', { text: 'x' }, bearer(token));
      // The call is denied after the token verified, so both the message and the log line exist.
      expect(out.code).to.equal(status.PERMISSION_DENIED);
      expect(out.details).to.match(/^twokey: scope check failed: /);
      expect(log.lines.at(-1)).to.include({ allow: false, failed_check: 'scope', subject: 'alice' });
      expect(out.details).not.to.contain(token.split('.')[2]!);
      expect(log.text()).not.to.contain(token.split('.')[2]!);
      expect(log.text()).not.to.contain(token.split('.')[1]!);
    });
  });

  describe('streaming methods', () => {
    const shapes = { ServerStream: serverStream, ClientStream: clientStream, Bidi: bidi } as const;
    for (const [name, run] of Object.entries(shapes)) {
      it(`${name}: allowed with grant and scope`, async () => {
        const out = await run(client(caller), bearer(await userToken()));
        expect(out.code, out.details).to.equal(status.OK);
        expect(probe.ran[name]).to.equal(1);
        const items = Array.isArray(out.res) ? out.res : [out.res];
        expect(items.length).to.be.greaterThan(0);
        for (const item of items) expect(item.subject).to.equal('alice');
      });
      it(`${name}: no token -> UNAUTHENTICATED, missing scope -> PERMISSION_DENIED, handler never runs`, async () => {
        const noToken = await run(client(caller), new grpc.Metadata());
        expect(noToken.code).to.equal(status.UNAUTHENTICATED);
        const noScope = await run(client(caller), bearer(await userToken('images:read')));
        expect(noScope.code).to.equal(status.PERMISSION_DENIED);
        expect(probe.ran[name]).to.equal(undefined);
        if (Array.isArray(noToken.res)) expect(noToken.res).to.have.length(0);
      });
    }
  });

  it('a stream that outlives its token is ended with UNAUTHENTICATED', async () => {
    const iat = Math.floor(Date.now() / 1000);
    const token = await issuer.sign({ scope: 'probe:call', iat, nbf: iat, exp: iat + 60 });
    const validUntil = (iat + 60) * 1000 + 30_000;
    now = validUntil - 300; // the server's clock: 300 ms of validity left
    const call = client(caller).Bidi!(bearer(token), { deadline: Date.now() + 10_000 });
    const echoes: string[] = [];
    const ended = new Promise<grpc.ServiceError>((resolve) => {
      call.on('data', (d: any) => echoes.push(d.text));
      call.on('error', resolve);
    });
    call.write({ text: 'before' });
    await new Promise((r) => setTimeout(r, 100));
    now = validUntil + 1;
    const err = await ended;
    expect(err.code).to.equal(status.UNAUTHENTICATED);
    expect(err.details).to.match(/^twokey: token check failed: token .* expired \(decision [0-9a-f-]{36}\); the stream outlived it$/);
    expect(echoes).to.deep.equal(['echo before']);
    expect(probe.ran['Bidi']).to.equal(1);
  });

  it('a certificate-only method needs the grant and no token', async () => {
    const out = await unary(client(caller), 'CertOnly', { text: 'x' });
    expect(out.code).to.equal(status.OK);
    expect(out.res.subject).to.equal('');
  });

  it('identity-claiming metadata never reaches the handler, nor does the authorization value', async () => {
    const md = bearer(await userToken());
    for (const k of ['x-spiffe-id', 'x-forwarded-client-cert', 'x-user-id', 'x-remote-user']) md.set(k, 'admin');
    md.set('x-custom', 'kept');
    const out = await unary(client(caller), 'Unary', { text: 'x' }, md);
    expect(out.res.metadata_keys).to.include('x-custom');
    for (const k of ['x-spiffe-id', 'x-forwarded-client-cert', 'x-user-id', 'x-remote-user', 'authorization']) expect(out.res.metadata_keys).not.to.include(k);
    expect(out.res.subject).to.equal('alice');
  });

  it('the client refuses a server that is not the expected SPIFFE ID', async () => {
    const out = await unary(client(caller, `spiffe://${TD}/ns/test/sa/someone-else`), 'CertOnly', { text: 'x' });
    expect(out.code).to.equal(status.UNAVAILABLE);
    expect(probe.ran['CertOnly']).to.equal(undefined);
  });

  it('writes one decision line per call with the peer, serial, subject, jti and each check', async () => {
    const before = log.lines.length;
    const token = await userToken();
    await unary(client(caller), 'Unary', { text: 'x' }, bearer(token));
    const lines = log.lines.slice(before);
    expect(lines).to.have.length(1);
    const line = lines[0]!;
    expect(line).to.include({ event: 'authz.decision', method: `${P}/Unary`, allow: true, peer_spiffe_id: CALLER_ID, peer_serial: caller.svid.serialHex, subject: 'alice', token_kind: 'user' });
    expect(line.jti).to.be.a('string');
    expect(line.decision_id).to.match(/^[0-9a-f-]{36}$/);
    expect(line.checks).to.deep.equal({ peer: 'pass', rule: 'pass', grant: 'pass', token: 'pass', revocation: 'pass', binding: 'pass', scope: 'pass' });
    expect(line.latency_us).to.be.a('number');
  });

  it('propagates the user token, request id and trace to a downstream call without hand-copying', async () => {
    const md = bearer(await userToken());
    const traceId = randomBytes(16).toString('hex');
    md.set('traceparent', `00-${traceId}-${randomBytes(8).toString('hex')}-01`);
    md.set('x-request-id', 'req-123');
    md.set('x-user-id', 'root');
    // The probe server holds a grant for Probe/Unary, so it may call itself as the next hop.
    const out = await unary(client(caller), 'Unary', { text: 'x', forward_to: `127.0.0.1:${probe.port}` }, md);
    expect(out.code, out.details).to.equal(status.OK);
    expect(out.res).to.include({ text: 'via unary hop', subject: 'alice', peer: SERVER_ID, request_id: 'req-123', trace_id: traceId });
    expect(out.res.traceparent).to.match(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
    expect(out.res.metadata_keys).not.to.include('x-user-id');
  });

  it("interceptors of the server's own run after authorization, for allowed calls only, unary and streaming", async () => {
    const seen: string[] = [];
    // What the interceptor gets to see of a call: its metadata, which authorization passes on only when it allows.
    const recording: grpc.ServerInterceptor = (method, call) =>
      new grpc.ServerInterceptingCall(call, {
        start: (next) =>
          next({
            onReceiveMetadata: (metadata, nextMetadata) => {
              seen.push(`${method.path} ${metadata.get('authorization').length}`);
              nextMetadata(metadata);
            },
          }),
      });
    const serverDir = pki.workload('probe-intercepted', SERVER_ID, [`${P}/Unary`]);
    const intercepted = await startProbe({ svidDir: serverDir, keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)), interceptors: [recording] });
    try {
      const c = createMeshClient(probeClientCtor(), `127.0.0.1:${intercepted.port}`, { svid: caller, serverId: SERVER_ID }) as ProbeClient;
      clients.push(c);
      expect((await unary(c, 'Unary', { text: 'x' })).code).to.equal(status.UNAUTHENTICATED);
      expect((await serverStream(c, new grpc.Metadata())).code).to.equal(status.UNAUTHENTICATED);
      expect(seen).to.deep.equal([]);
      expect((await unary(c, 'Unary', { text: 'x' }, bearer(await userToken()))).code).to.equal(status.OK);
      expect((await serverStream(c, bearer(await userToken()))).code).to.equal(status.OK);
      // The token is stripped before anything after authorization sees the call.
      expect(seen).to.deep.equal([`${P}/Unary 0`, `${P}/ServerStream 0`]);
      expect(intercepted.ran).to.deep.equal({ Unary: 1, ServerStream: 1 });
    } finally {
      await intercepted.close();
    }
  });

  it('work a handler leaves behind after the call ended no longer carries the user token', async () => {
    const out = await unary(client(caller), 'Unary', { text: 'x', forward_to: `127.0.0.1:${probe.port}`, forward_after_response: true }, bearer(await userToken()));
    expect(out.res.text).to.equal('answered first');
    for (let i = 0; i < 100 && probe.late.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(probe.late).to.have.length(1);
    expect(probe.late[0]!.code).to.equal(status.UNAUTHENTICATED);
    expect(probe.late[0]!.details).to.match(/^twokey: token check failed: no "authorization: Bearer <token>" metadata/);
  });

  /** A call from a client using the given certificate dir, made with plain grpc-js credentials. */
  async function rawTlsClientCall(dir: string, token: string): Promise<Outcome> {
    const { readFileSync } = await import('node:fs');
    const Probe = probeClientCtor();
    const creds = grpc.credentials.createSsl(
      Buffer.from(caller.material.bundlePem),
      readFileSync(`${dir}/svid.key`),
      readFileSync(`${dir}/svid.pem`),
      { checkServerIdentity: () => undefined },
    );
    const c = new Probe(`127.0.0.1:${probe.port}`, creds, NO_IP_SNI) as ProbeClient;
    clients.push(c);
    return unary(c, 'Unary', { text: 'x' }, bearer(token));
  }
});
