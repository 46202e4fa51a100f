// The same cases against `twokey authz serve`'s Envoy ext_authz v3 Check, playing Envoy's side with Envoy's own protos.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { CertificateAuthority } from '../../certs-ca/index.ts';
import { TestIssuer } from '../authz/token-fixtures.ts';
import { requireSystem } from '../support/requires.ts';
import { check, checkClientCtor, envoyCheckRequest, HTTP_STATUS_NAMES, type CheckClient, type EnvoyCheckResponse } from './envoy-side.ts';
import { CALLER_ID, DELETE, GET, NOTES_ID, NOTES_ROOT, OTHER_ID, TD, nginxMissing, pythonGrpcMissing, startFront, type Front } from './front-harness.ts';

const IDENTITY = ['x-twokey-subject', 'x-twokey-token-kind', 'x-twokey-actor-chain', 'x-twokey-scopes', 'x-twokey-peer', 'x-twokey-decision-id'];

function denied(res: EnvoyCheckResponse | undefined, code: keyof typeof grpc.status, http: number, message: RegExp): void {
  expect(res, 'a CheckResponse').to.not.equal(undefined);
  expect(grpc.status[res!.status!.code], res!.status!.message).to.equal(code);
  expect(res!.status!.message).to.match(message);
  expect(res!.http_response).to.equal('denied_response');
  expect(HTTP_STATUS_NAMES[res!.denied_response!.status.code]).to.equal(http);
  expect(res!.denied_response!.body).to.equal(res!.status!.message);
  expect(res!.denied_response!.headers.map((h) => [h.header.key, h.header.value])).to.deep.equal([['x-twokey-reason', res!.status!.message]]);
}

function allowed(res: EnvoyCheckResponse | undefined): Record<string, string> {
  expect(res!.status!.code, res!.status!.message).to.equal(grpc.status.OK);
  expect(res!.http_response).to.equal('ok_response');
  const set: Record<string, string> = {};
  for (const h of res!.ok_response!.headers) {
    expect(h.append_action, 'identity headers replace client copies').to.equal('OVERWRITE_IF_EXISTS_OR_ADD');
    set[h.header.key] = h.header.value;
  }
  // A name is never both set and removed, and every identity header is one or the other.
  const removed = res!.ok_response!.headers_to_remove;
  for (const name of IDENTITY) expect(Object.hasOwn(set, name) !== removed.includes(name), name).to.equal(true);
  return set;
}

describe("twokey authz serve answers Envoy's Check (real process, Envoy's protos)", function () {
  this.timeout(120_000);
  let front: Front;
  let envoy: CheckClient;
  let alice: string;
  const pem = (name: string): string => readFileSync(join(front.svidDir(name), 'svid.pem'), 'utf8');

  /** A Check client holding a workload's credentials, as the Envoy sidecar's cluster does. */
  function checkClientAs(name: string): CheckClient {
    const dir = front.svidDir(name);
    const creds = grpc.credentials.createSsl(readFileSync(join(dir, 'bundle.pem')), readFileSync(join(dir, 'svid.key')), readFileSync(join(dir, 'svid.pem')));
    return new (checkClientCtor())(`127.0.0.1:${front.ports.authzGrpc}`, creds, { 'grpc.ssl_target_name_override': 'localhost' }) as unknown as CheckClient;
  }
  const ask = (caller: string | undefined, path: string, headers: Record<string, string>, certificatePem?: string) =>
    check(envoy, envoyCheckRequest({ certificatePem: certificatePem ?? (caller === undefined ? undefined : pem(caller)), principal: caller === undefined ? '' : CALLER_ID, path, headers, destination: NOTES_ID }));

  before(async function () {
    requireSystem(this, 'nginx', nginxMissing());
    requireSystem(this, 'python3-grpcio', pythonGrpcMissing());
    front = await startFront();
    envoy = checkClientAs('notes');
    alice = await front.login('alice');
  });

  after(async () => {
    envoy?.close();
    await front?.close();
  });

  it('allows: the verified identity overwrites the headers, empty ones and client identity claims are removed', async () => {
    const { res } = await ask('caller', GET, { authorization: `Bearer ${alice}`, 'x-twokey-subject': 'bob', 'x-forwarded-user': 'root' });
    const set = allowed(res);
    expect(set).to.include({ 'x-twokey-subject': 'alice', 'x-twokey-token-kind': 'user', 'x-twokey-peer': CALLER_ID, 'x-twokey-scopes': 'notes:read' });
    expect(set['x-twokey-decision-id']).to.match(/^[0-9a-f-]{36}$/);
    expect(res!.ok_response!.headers_to_remove).to.have.members(['x-twokey-actor-chain', 'x-forwarded-user']);
  });

  it('no client certificate: 401, peer check', async () => {
    const { res } = await ask(undefined, GET, { authorization: `Bearer ${alice}` });
    denied(res, 'UNAUTHENTICATED', 401, /^twokey: peer check failed: the proxy forwarded no verified client certificate \(decision [0-9a-f-]{36}\)$/);
  });

  it('certificate from another CA: 401, peer check', async () => {
    const foreign = CertificateAuthority.init({ dir: join(front.root, 'foreign-ca-envoy'), trustDomain: TD });
    const { res } = await ask('caller', GET, { authorization: `Bearer ${alice}` }, foreign.issue({ spiffeId: CALLER_ID, grants: [GET], ttl: '1h', extraProtoRoots: [NOTES_ROOT] }).certPem);
    denied(res, 'UNAUTHENTICATED', 401, /^twokey: peer check failed: peer certificate does not chain to the trust bundle \(decision [0-9a-f-]{36}\)$/);
  });

  it('method not granted: 403, grant check', async () => {
    const { res } = await ask('caller', DELETE, { authorization: `Bearer ${alice}` });
    denied(res, 'PERMISSION_DENIED', 403, new RegExp(`^twokey: grant check failed: certificate of ${CALLER_ID} does not grant ${DELETE} \\(decision [0-9a-f-]{36}\\)$`));
  });

  it('no token: 401, token check', async () => {
    const { res } = await ask('caller', GET, {});
    denied(res, 'UNAUTHENTICATED', 401, /^twokey: token check failed: no "authorization: Bearer <token>" metadata \(decision [0-9a-f-]{36}\)$/);
  });

  it('forged token: 401, token check', async () => {
    const forger = await TestIssuer.create(JSON.parse(Buffer.from(alice.split('.')[0]!, 'base64url').toString()).kid);
    const { res } = await ask('caller', GET, { authorization: `Bearer ${await forger.sign({ aud: `spiffe://${TD}`, scope: 'notes:read' })}` });
    denied(res, 'UNAUTHENTICATED', 401, /^twokey: token check failed: /);
  });

  it('two bearer tokens (Envoy joins them with a comma): 401, token check', async () => {
    const { res } = await ask('caller', GET, { authorization: `Bearer ${alice},Bearer ${alice}` });
    denied(res, 'UNAUTHENTICATED', 401, /^twokey: token check failed: malformed token/);
  });

  it('delegated token: allowed from its actor, 401 binding check from another workload', async () => {
    const delegated = await front.delegatedFor('alice');
    const own = allowed((await ask('caller', GET, { authorization: `Bearer ${delegated}` })).res);
    expect(own).to.include({ 'x-twokey-subject': 'alice', 'x-twokey-token-kind': 'delegated', 'x-twokey-actor-chain': CALLER_ID });
    const { res } = await check(envoy, envoyCheckRequest({ certificatePem: pem('other'), principal: OTHER_ID, path: GET, headers: { authorization: `Bearer ${delegated}` }, destination: NOTES_ID }));
    denied(res, 'UNAUTHENTICATED', 401, /^twokey: binding check failed: delegated token actor \(act\.sub\) .* is not the peer .*other/);
  });

  it('a principal without a certificate is not a peer outside Istio mode', async () => {
    const { res } = await check(envoy, envoyCheckRequest({ principal: CALLER_ID, path: GET, headers: { authorization: `Bearer ${alice}` }, destination: NOTES_ID }));
    denied(res, 'UNAUTHENTICATED', 401, /^twokey: peer check failed: the proxy forwarded no verified client certificate/);
  });

  it("a disabled user's token: 401, revocation check", async () => {
    const bob = await front.login('bob');
    allowed((await ask('caller', GET, { authorization: `Bearer ${bob}` })).res);
    front.disableUser('bob');
    const since = Date.now();
    let res: EnvoyCheckResponse | undefined;
    do {
      ({ res } = await ask('caller', GET, { authorization: `Bearer ${bob}` }));
      if (res?.status?.code !== grpc.status.OK) break;
      await new Promise((r) => setTimeout(r, 50));
    } while (Date.now() - since < 10_000);
    console.log(`      bob disabled: Check denies ${Date.now() - since} ms later`);
    denied(res, 'UNAUTHENTICATED', 401, /^twokey: revocation check failed: the user token's subject bob is disabled/);
  });

  it('refuses a caller that is not an admitted proxy: its certificate must grant Check', async () => {
    const impostor = checkClientAs('caller');
    try {
      const { err } = await check(impostor, envoyCheckRequest({ certificatePem: pem('caller'), principal: CALLER_ID, path: GET, headers: { authorization: `Bearer ${alice}` }, destination: NOTES_ID }));
      expect(grpc.status[err!.code]).to.equal('PERMISSION_DENIED');
      expect(err!.details).to.match(new RegExp(`^twokey: grant check failed: certificate of ${CALLER_ID} does not grant /envoy\\.service\\.auth\\.v3\\.Authorization/Check \\(decision [0-9a-f-]{36}\\)$`));
    } finally {
      impostor.close();
    }
  });

  it('refuses a connection without a proxy certificate at the handshake', async () => {
    const creds = grpc.credentials.createSsl(readFileSync(join(front.svidDir('notes'), 'bundle.pem')));
    const anonymous = new (checkClientCtor())(`127.0.0.1:${front.ports.authzGrpc}`, creds, { 'grpc.ssl_target_name_override': 'localhost' }) as unknown as CheckClient;
    try {
      const { err } = await check(anonymous, envoyCheckRequest({ certificatePem: pem('caller'), path: GET, headers: { authorization: `Bearer ${alice}` }, destination: NOTES_ID }), 3000);
      expect(grpc.status[err!.code]).to.equal('UNAVAILABLE');
    } finally {
      anonymous.close();
    }
  });

  it('authorizer stopped: the Check fails UNAVAILABLE (Envoy then answers its status_on_error, 503)', async () => {
    await front.stopAuthorizer();
    try {
      const { err } = await ask('caller', GET, { authorization: `Bearer ${alice}` });
      expect(grpc.status[err!.code]).to.equal('UNAVAILABLE');
    } finally {
      await front.startAuthorizer();
    }
  });
});
