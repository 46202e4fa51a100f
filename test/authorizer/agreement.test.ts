// One case table through a real mesh server (the library) and the authorizer (Envoy's Check and nginx's GET /check): same outcome, same reason.
import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { StaticKeys } from '../../services/authz/jwks.ts';
import { buildRevocationSet, normalizeSerial, RevocationHolder } from '../../services/authz/revocation-set.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { createAuthorizer, type Authorizer } from '../../services/authorizer/authorizer.ts';
import { AUTHORIZER_PROTO_ROOT, CHECK_METHOD } from '../../services/authorizer/proxy-admission.ts';
import { CALLER_ID, P, PROBE_ROOT, SERVER_ID, TD, TestPki, capturingLogger, probeCatalog, probeClientCtor, startProbe, type ProbeClient, type ProbeServer } from '../authz/mesh-fixtures.ts';
import { ISSUER, TestIssuer } from '../authz/token-fixtures.ts';
import { check, checkClientCtor, envoyCheckRequest, HTTP_STATUS_NAMES, type CheckClient } from './envoy-side.ts';

const OTHER_ID = `spiffe://${TD}/ns/test/sa/other`;
const PROXY_DIR = 'proxy';
const DECISION = / \(decision [0-9a-f-]{36}\)$/;

interface Outcome {
  code: grpc.status;
  /** The status message without its decision id. */
  reason: string;
  subject?: string;
}

interface Case {
  name: string;
  /** A workload directory name under the PKI root. */
  caller: string;
  method: string;
  token?: () => Promise<string | undefined>;
  expect: keyof typeof grpc.status;
  reason: RegExp;
}

describe('the library and the authorizer agree', function () {
  this.timeout(60_000);
  let pki: TestPki;
  let issuer: TestIssuer;
  let forger: TestIssuer;
  let probe: ProbeServer;
  let authorizer: Authorizer;
  let grpcPort: number;
  let httpPort: number;
  let checkClient: CheckClient;
  const clients = new Map<string, ProbeClient>();
  const svids: SvidSource[] = [];
  const pem = (dir: string): string => readFileSync(join(pki.root, dir, 'svid.pem'), 'utf8');
  const thumbprint = (dir: string): string => certificateFacts(pem(dir)).thumbprint;
  let revokedJti = '';

  before(async () => {
    pki = TestPki.create();
    issuer = await TestIssuer.create('k1');
    forger = await TestIssuer.create('k1');
    const keys = await StaticKeys.fromJwks(TestIssuer.jwks(issuer));
    const roots = [PROBE_ROOT, AUTHORIZER_PROTO_ROOT];
    const write = (name: string, id: string, grants: string[]): void => {
      pki.ca.writeWorkload(join(pki.root, name), pki.ca.issue({ spiffeId: id, grants, ttl: '1h', dns: ['localhost'], ip: ['127.0.0.1'], extraProtoRoots: roots }));
    };
    write('server', SERVER_ID, []);
    write(PROXY_DIR, SERVER_ID, [CHECK_METHOD]);
    write('authorizer', `spiffe://${TD}/ns/test/sa/authorizer`, []);
    write('caller', CALLER_ID, [`${P}/Unary`, `${P}/CertOnly`, `${P}/Undeclared`]);
    write('caller-2', CALLER_ID, [`${P}/Unary`]);
    write('other', OTHER_ID, [`${P}/Unary`]);
    write('cert-only', OTHER_ID, [`${P}/CertOnly`]);
    write('revoked', CALLER_ID, [`${P}/Unary`]);
    pki.forged('forged-ca', { uris: [CALLER_ID], ca: true, grants: [`${P}/Unary`] });
    pki.forged('forged-td', { uris: ['spiffe://partner.example/ns/x/sa/caller'], grants: [`${P}/Unary`] });
    pki.forged('forged-two-uris', { uris: [CALLER_ID, OTHER_ID], grants: [`${P}/Unary`] });

    revokedJti = randomBytes(16).toString('base64url');
    const holder = new RevocationHolder({ keys });
    holder.acceptVerified(
      buildRevocationSet(1, Date.now(), {
        disabledSubjects: new Map([['mallory', Math.floor(Date.now() / 1000) + 60]]),
        jtis: new Map([[revokedJti, Math.floor(Date.now() / 1000) + 3600]]),
        serials: new Map([[normalizeSerial(certificateFacts(pem('revoked')).serial), Math.floor(Date.now() / 1000) + 3600]]),
        kids: new Set(),
      }),
    );

    probe = await startProbe({ svidDir: join(pki.root, 'server'), keys, revocation: holder });
    const authzSvid = await SvidSource.open(join(pki.root, 'authorizer'), { trustDomain: TD, pollIntervalMs: 0 });
    svids.push(authzSvid);
    authorizer = createAuthorizer({
      svid: authzSvid,
      keys,
      issuer: ISSUER,
      service: SpiffeId.parse(SERVER_ID),
      rules: probeCatalog(),
      logger: capturingLogger().logger,
      revocation: holder,
    });
    grpcPort = await authorizer.listenGrpc('127.0.0.1:0');
    httpPort = await authorizer.listenHttp('127.0.0.1:0');
    const proxySvid = await SvidSource.open(join(pki.root, PROXY_DIR), { trustDomain: TD, pollIntervalMs: 0 });
    svids.push(proxySvid);
    const creds = grpc.credentials.createSsl(proxySvid.material.bundlePem, proxySvid.material.keyPem, proxySvid.material.chainPem);
    checkClient = new (checkClientCtor())(`127.0.0.1:${grpcPort}`, creds, { 'grpc.ssl_target_name_override': 'localhost' }) as unknown as CheckClient;
  });

  after(async () => {
    checkClient?.close();
    for (const c of clients.values()) c.close();
    await authorizer?.close();
    await probe?.close();
    for (const s of svids) s.close();
    pki?.cleanup();
  });

  function libraryClient(dir: string): ProbeClient {
    let client = clients.get(dir);
    if (client === undefined) {
      const root = join(pki.root, dir);
      const creds = grpc.credentials.createSsl(readFileSync(join(root, 'bundle.pem')), readFileSync(join(root, 'svid.key')), readFileSync(join(root, 'svid.pem')));
      client = new (probeClientCtor())(`127.0.0.1:${probe.port}`, creds, { 'grpc.ssl_target_name_override': 'localhost' }) as ProbeClient;
      clients.set(dir, client);
    }
    return client;
  }

  function viaLibrary(c: Case, token: string | undefined): Promise<Outcome> {
    const md = new grpc.Metadata();
    if (token !== undefined) md.add('authorization', `Bearer ${token}`);
    const name = c.method.slice(c.method.lastIndexOf('/') + 1);
    return new Promise((resolve) => {
      libraryClient(c.caller)[name]!({ text: 'x' }, md, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, res: any) =>
        resolve(err ? { code: err.code, reason: err.details.replace(DECISION, '') } : { code: grpc.status.OK, reason: '', subject: res.subject }),
      );
    });
  }

  const headersFor = (token: string | undefined): Record<string, string> => (token === undefined ? {} : { authorization: `Bearer ${token}` });

  async function viaEnvoyCheck(c: Case, token: string | undefined): Promise<Outcome & { http?: number }> {
    const { res, err } = await check(checkClient, envoyCheckRequest({ certificatePem: pem(c.caller), principal: CALLER_ID, path: c.method, headers: headersFor(token), destination: SERVER_ID }));
    expect(err, err?.details).to.equal(undefined);
    const status = res!.status!;
    if (status.code === grpc.status.OK) {
      const subject = res!.ok_response!.headers.find((h) => h.header.key === 'x-twokey-subject')?.header.value ?? '';
      return { code: status.code, reason: '', subject };
    }
    expect(res!.denied_response!.body).to.equal(status.message);
    return { code: status.code, reason: status.message.replace(DECISION, ''), http: HTTP_STATUS_NAMES[res!.denied_response!.status.code] ?? -1 };
  }

  function viaNginxEndpoint(c: Case, token: string | undefined, proxyDir = PROXY_DIR): Promise<Outcome & { http: number }> {
    const proxy = join(pki.root, proxyDir);
    const headers: Record<string, string> = {
      'x-original-uri': c.method,
      'x-client-cert': encodeURIComponent(pem(c.caller)),
      'x-client-verify': 'SUCCESS',
    };
    if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port: httpPort,
          path: '/check',
          method: 'GET',
          headers,
          ca: readFileSync(join(proxy, 'bundle.pem')),
          cert: readFileSync(join(proxy, 'svid.pem')),
          key: readFileSync(join(proxy, 'svid.key')),
          servername: 'localhost',
        },
        (res) => {
          res.resume();
          const http = res.statusCode!;
          const code = http === 200 ? grpc.status.OK : http === 401 ? grpc.status.UNAUTHENTICATED : http === 403 ? grpc.status.PERMISSION_DENIED : grpc.status.UNAVAILABLE;
          resolve({ code, http, reason: String(res.headers['x-twokey-reason'] ?? '').replace(DECISION, ''), ...(http === 200 ? { subject: String(res.headers['x-twokey-subject']) } : {}) });
        },
      );
      req.on('error', reject);
      req.end();
    });
  }

  const user = (claims: Record<string, unknown> = {}) => () => issuer.sign({ scope: 'probe:call', ...claims });
  const CASES: Case[] = [
    { name: 'allowed: granted method, user token with the scope', caller: 'caller', method: `${P}/Unary`, token: user(), expect: 'OK', reason: /^$/ },
    { name: 'certificate-only method without a token', caller: 'caller', method: `${P}/CertOnly`, expect: 'OK', reason: /^$/ },
    { name: 'a method declaring no rule', caller: 'caller', method: `${P}/Undeclared`, token: user(), expect: 'PERMISSION_DENIED', reason: /^twokey: rule check failed: method \/twokey\.testing\.v1\.Probe\/Undeclared declares no authorization rule$/ },
    { name: 'method not granted', caller: 'cert-only', method: `${P}/Unary`, token: user(), expect: 'PERMISSION_DENIED', reason: /^twokey: grant check failed: certificate of spiffe:\/\/twokey\.local\/ns\/test\/sa\/other does not grant/ },
    { name: 'no token', caller: 'caller', method: `${P}/Unary`, expect: 'UNAUTHENTICATED', reason: /^twokey: token check failed: no "authorization: Bearer <token>" metadata$/ },
    { name: 'forged token (same kid, another key)', caller: 'caller', method: `${P}/Unary`, token: () => forger.sign({ scope: 'probe:call' }), expect: 'UNAUTHENTICATED', reason: /^twokey: token check failed: / },
    { name: 'expired token', caller: 'caller', method: `${P}/Unary`, token: user({ iat: Math.floor(Date.now() / 1000) - 4000, nbf: Math.floor(Date.now() / 1000) - 4000, exp: Math.floor(Date.now() / 1000) - 3000 }), expect: 'UNAUTHENTICATED', reason: /^twokey: token check failed: / },
    { name: 'token for another audience', caller: 'caller', method: `${P}/Unary`, token: user({ aud: 'spiffe://partner.example' }), expect: 'UNAUTHENTICATED', reason: /^twokey: token check failed: / },
    { name: 'scope missing', caller: 'caller', method: `${P}/Unary`, token: user({ scope: 'images:read' }), expect: 'PERMISSION_DENIED', reason: /^twokey: scope check failed: token scopes do not include "probe:call"/ },
    { name: 'delegated token presented by its actor', caller: 'caller', method: `${P}/Unary`, token: () => delegated('caller'), expect: 'OK', reason: /^$/ },
    { name: 'delegated token presented by another workload', caller: 'other', method: `${P}/Unary`, token: () => delegated('caller'), expect: 'UNAUTHENTICATED', reason: /^twokey: binding check failed: delegated token actor \(act\.sub\) spiffe:\/\/twokey\.local\/ns\/test\/sa\/caller is not the peer/ },
    { name: "delegated token presented by its actor's other certificate", caller: 'caller-2', method: `${P}/Unary`, token: () => delegated('caller'), expect: 'UNAUTHENTICATED', reason: /^twokey: binding check failed: delegated token is bound \(cnf\.x5t#S256\) to another certificate/ },
    { name: 'service token of the caller', caller: 'caller', method: `${P}/Unary`, token: () => service('caller', CALLER_ID), expect: 'OK', reason: /^$/ },
    { name: "another workload's service token", caller: 'other', method: `${P}/Unary`, token: () => service('caller', CALLER_ID), expect: 'UNAUTHENTICATED', reason: /^twokey: binding check failed: service token subject/ },
    { name: 'revoked token id', caller: 'caller', method: `${P}/Unary`, token: () => issuer.sign({ scope: 'probe:call', jti: revokedJti }), expect: 'UNAUTHENTICATED', reason: /^twokey: revocation check failed: token [A-Za-z0-9_-]{22} is revoked$/ },
    { name: 'disabled user', caller: 'caller', method: `${P}/Unary`, token: user({ sub: 'mallory' }), expect: 'UNAUTHENTICATED', reason: /^twokey: revocation check failed: the user token's subject mallory is disabled$/ },
    { name: 'revoked certificate', caller: 'revoked', method: `${P}/Unary`, token: user(), expect: 'UNAUTHENTICATED', reason: /^twokey: peer check failed: peer certificate [0-9a-f]+ is revoked$/ },
    { name: 'certificate with CA=true from the trusted CA', caller: 'forged-ca', method: `${P}/Unary`, token: user(), expect: 'UNAUTHENTICATED', reason: /^twokey: peer check failed: / },
    { name: 'certificate of another trust domain from the trusted CA', caller: 'forged-td', method: `${P}/Unary`, token: user(), expect: 'UNAUTHENTICATED', reason: /^twokey: peer check failed: peer spiffe:\/\/partner\.example\/ns\/x\/sa\/caller is not in trust domain "twokey\.local"$/ },
    { name: 'certificate with two URI SANs', caller: 'forged-two-uris', method: `${P}/Unary`, token: user(), expect: 'UNAUTHENTICATED', reason: /^twokey: peer check failed: / },
  ];

  it("refuses, on nginx's endpoint, a client that is not an admitted proxy: its certificate must grant Check", async () => {
    const out = await viaNginxEndpoint(CASES[0]!, await user()(), 'caller');
    expect(out.http).to.equal(403);
    expect(out.reason).to.match(new RegExp(`^twokey: this proxy may not forward calls: grant check failed: certificate of ${CALLER_ID} does not grant /envoy\\.service\\.auth\\.v3\\.Authorization/Check$`));
  });

  async function delegated(actorDir: string): Promise<string> {
    return issuer.sign({ token_kind: 'delegated', sub: 'alice', aud: SERVER_ID, act: { sub: CALLER_ID }, cnf: { 'x5t#S256': thumbprint(actorDir) }, scope: 'probe:call' });
  }
  async function service(dir: string, id: string): Promise<string> {
    return issuer.sign({ token_kind: 'service', sub: id, cnf: { 'x5t#S256': thumbprint(dir) }, scope: 'probe:call' });
  }

  for (const c of CASES) {
    it(c.name, async () => {
      const token = await c.token?.();
      const library = await viaLibrary(c, token);
      const envoy = await viaEnvoyCheck(c, token);
      const nginx = await viaNginxEndpoint(c, token);
      expect(grpc.status[library.code], `library (${library.reason})`).to.equal(c.expect);
      expect(library.reason).to.match(c.reason);
      expect({ code: envoy.code, reason: envoy.reason }, 'Envoy Check').to.deep.equal({ code: library.code, reason: library.reason });
      expect({ code: nginx.code, reason: nginx.reason }, 'nginx /check').to.deep.equal({ code: library.code, reason: library.reason });
      if (library.code === grpc.status.OK) {
        expect(envoy.subject).to.equal(library.subject ?? '');
        expect(nginx.subject).to.equal(library.subject ?? '');
      } else {
        const http = library.code === grpc.status.UNAUTHENTICATED ? 401 : 403;
        expect(envoy.http).to.equal(http);
        expect(nginx.http).to.equal(http);
      }
    });
  }
});

/** The serial and thumbprint (x5t#S256) of a certificate, as the library computes them. */
function certificateFacts(certPem: string): { serial: string; thumbprint: string } {
  const cert = new X509Certificate(certPem);
  return { serial: cert.serialNumber, thumbprint: createHash('sha256').update(cert.raw).digest('base64url') };
}
