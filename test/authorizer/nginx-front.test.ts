// End to end with real processes: a Python grpcio server behind nginx and `twokey authz serve`, called by twokey workloads.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { CertificateAuthority } from '../../certs-ca/index.ts';
import { TestIssuer } from '../authz/token-fixtures.ts';
import { requireSystem } from '../support/requires.ts';
import { CALLER_ID, DELETE, TD, callGet, nginxMissing, pythonGrpcMissing, startFront, type Front, type Outcome } from './front-harness.ts';

const DECISION = /\(decision ([0-9a-f-]{36})\)$/;

function bearer(token: string | undefined, extra: Record<string, string> = {}): grpc.Metadata {
  const md = new grpc.Metadata();
  if (token !== undefined) md.set('authorization', `Bearer ${token}`);
  for (const [k, v] of Object.entries(extra)) md.add(k, v);
  return md;
}

function expectDenied(out: Outcome, code: keyof typeof grpc.status, details: RegExp): void {
  expect(grpc.status[out.code], out.details).to.equal(code);
  expect(out.details).to.match(details);
}

describe('a Python server behind nginx and twokey authz serve (real processes)', function () {
  this.timeout(120_000);
  let front: Front;
  let caller: grpc.Client;
  let other: grpc.Client;
  let alice: string;

  before(async function () {
    requireSystem(this, 'nginx', nginxMissing());
    requireSystem(this, 'python3-grpcio', pythonGrpcMissing());
    front = await startFront();
    caller = await front.client('caller');
    other = await front.client('other');
    alice = await front.login('alice');
  });

  after(async () => {
    await front?.close();
  });

  it('allows a granted method with a user token; the backend sees the verified identity and the decision is logged', async () => {
    const before = front.backendRuns();
    const out = await callGet(caller, 'n1', bearer(alice));
    expect(out.code, out.details).to.equal(grpc.status.OK);
    expect(out.res!.owner).to.equal('alice');
    const seen = JSON.parse(out.res!.seen_headers) as Record<string, string[]>;
    expect(seen['x-twokey-subject']).to.deep.equal(['alice']);
    expect(seen['x-twokey-token-kind']).to.deep.equal(['user']);
    expect(seen['x-twokey-peer']).to.deep.equal([CALLER_ID]);
    expect(seen['x-twokey-scopes']).to.deep.equal(['notes:read']);
    expect(seen['x-twokey-actor-chain'], 'an empty header is not sent').to.equal(undefined);
    const decisionId = seen['x-twokey-decision-id']![0]!;
    expect(front.backendRuns()).to.equal(before + 1);
    const line = front.authorizerLog().find((l) => l['decision_id'] === decisionId);
    expect(line, 'the decision line').to.include({ event: 'authz.decision', allow: true, method: '/demo.notes.v1.Notes/Get', peer_spiffe_id: CALLER_ID, subject: 'alice', token_kind: 'user' });
    // The same decision counted as a mesh server counts it, on the health port's /metrics.
    const metrics = await (await fetch(`http://127.0.0.1:${front.ports.authzHealth}/metrics`)).text();
    expect(metrics).to.match(new RegExp(`twokey_authz_decisions_total\\{method="/demo\\.notes\\.v1\\.Notes/Get",caller="${CALLER_ID.replace(/\./g, '\\.')}",outcome="allow",failed_check="none"\\} [1-9]`));
  });

  it("leaves the resource check to the backend: another user's note and a missing one get the same refusal", async () => {
    const foreign = await callGet(caller, 'n2', bearer(alice));
    const missing = await callGet(caller, 'n9', bearer(alice));
    expectDenied(foreign, 'PERMISSION_DENIED', /^note n2: not found or not yours$/);
    expectDenied(missing, 'PERMISSION_DENIED', /^note n9: not found or not yours$/);
  });

  it('refuses a client without a certificate UNAUTHENTICATED, before the authorizer and the backend', async () => {
    const before = front.backendRuns();
    expectDenied(await callGet(front.anonymousClient(), 'n1', bearer(alice)), 'UNAUTHENTICATED', /^twokey: a client certificate from the trust bundle is required: NONE$/);
    expect(front.backendRuns()).to.equal(before);
  });

  it('refuses a certificate from another CA UNAUTHENTICATED', async () => {
    const foreign = CertificateAuthority.init({ dir: join(front.root, 'foreign-ca'), trustDomain: TD });
    const issued = foreign.issue({ spiffeId: CALLER_ID, grants: [], ttl: '1h' });
    // It trusts nginx's certificate (our bundle) but presents one the other CA signed.
    const client = front.clientWith(issued.chainPem, issued.keyPem);
    const before = front.backendRuns();
    expectDenied(await callGet(client, 'n1', bearer(alice)), 'UNAUTHENTICATED', /^twokey: a client certificate from the trust bundle is required: FAILED:/);
    expect(front.backendRuns()).to.equal(before);
  });

  it('refuses a method the certificate does not grant PERMISSION_DENIED (grant check)', async () => {
    const out = await new Promise<Outcome>((resolve) =>
      (caller as any).Delete({ id: 'n1' }, bearer(alice), { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null) =>
        resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '' })),
    );
    expectDenied(out, 'PERMISSION_DENIED', new RegExp(`^twokey: grant check failed: certificate of ${CALLER_ID} does not grant ${DELETE} \\(decision [0-9a-f-]{36}\\)$`));
  });

  it('refuses a call without a token UNAUTHENTICATED (token check)', async () => {
    const before = front.backendRuns();
    expectDenied(await callGet(caller, 'n1', bearer(undefined)), 'UNAUTHENTICATED', /^twokey: token check failed: no "authorization: Bearer <token>" metadata \(decision [0-9a-f-]{36}\)$/);
    expect(front.backendRuns()).to.equal(before);
  });

  it('refuses a forged token UNAUTHENTICATED (token check)', async () => {
    const forger = await TestIssuer.create(JSON.parse(Buffer.from(alice.split('.')[0]!, 'base64url').toString()).kid);
    const forged = await forger.sign({ iss: 'https://auth.twokey.local', aud: `spiffe://${TD}`, scope: 'notes:read' });
    expectDenied(await callGet(caller, 'n1', bearer(forged)), 'UNAUTHENTICATED', /^twokey: token check failed: .* \(decision [0-9a-f-]{36}\)$/);
  });

  it('accepts a delegated token from its actor, and refuses it from a workload it is not bound to (binding check)', async () => {
    const delegated = await front.delegatedFor('alice');
    const own = await callGet(caller, 'n1', bearer(delegated));
    expect(own.code, own.details).to.equal(grpc.status.OK);
    const seen = JSON.parse(own.res!.seen_headers) as Record<string, string[]>;
    expect(seen['x-twokey-token-kind']).to.deep.equal(['delegated']);
    expect(seen['x-twokey-actor-chain']).to.deep.equal([CALLER_ID]);
    const before = front.backendRuns();
    expectDenied(
      await callGet(other, 'n1', bearer(delegated)),
      'UNAUTHENTICATED',
      new RegExp(`^twokey: binding check failed: delegated token actor \\(act\\.sub\\) ${CALLER_ID} is not the peer spiffe://${TD}/ns/apps/sa/other \\(decision [0-9a-f-]{36}\\)$`),
    );
    expect(front.backendRuns()).to.equal(before);
  });

  it('never lets spoofed identity headers from the client reach the backend', async () => {
    const out = await callGet(
      caller,
      'n1',
      bearer(alice, {
        'x-twokey-subject': 'bob',
        'x-twokey-peer': 'spiffe://twokey.local/ns/twokey/sa/admin',
        'x-twokey-actor-chain': 'spiffe://twokey.local/ns/x/sa/y',
        'x-twokey-scopes': 'notes:read:any',
        'x-twokey-decision-id': 'made-up',
        'x-client-cert': 'forged',
        'x-client-verify': 'SUCCESS',
        'x-original-uri': '/demo.notes.v1.Notes/Other',
      }),
    );
    expect(out.code, out.details).to.equal(grpc.status.OK);
    const seen = JSON.parse(out.res!.seen_headers) as Record<string, string[]>;
    expect(seen['x-twokey-subject']).to.deep.equal(['alice']);
    expect(seen['x-twokey-peer']).to.deep.equal([CALLER_ID]);
    expect(seen['x-twokey-scopes']).to.deep.equal(['notes:read']);
    expect(seen['x-twokey-decision-id']![0]).to.match(/^[0-9a-f-]{36}$/);
    for (const h of ['x-twokey-actor-chain', 'x-client-cert', 'x-client-verify', 'x-original-uri']) expect(seen[h], h).to.equal(undefined);
  });

  it("refuses a disabled user's token within 2 s (the revocation set reaches the authorizer)", async () => {
    const bob = await front.login('bob');
    expect((await callGet(caller, 'n2', bearer(bob))).code).to.equal(grpc.status.OK);
    // From the moment the command has committed the change (its own start-up is not propagation).
    front.disableUser('bob');
    const since = Date.now();
    let last: Outcome | undefined;
    while (Date.now() - since < 2000) {
      last = await callGet(caller, 'n2', bearer(bob));
      if (last.code !== grpc.status.OK) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    console.log(`      bob disabled: refused ${Date.now() - since} ms after \`twokey users disable\``);
    expectDenied(last!, 'UNAUTHENTICATED', /^twokey: revocation check failed: the user token's subject bob is disabled \(decision [0-9a-f-]{36}\)$/);
  });

  it('answers UNAVAILABLE while the authorizer is stopped, and the backend is never reached', async () => {
    await front.stopAuthorizer();
    try {
      const before = front.backendRuns();
      for (let i = 0; i < 3; i++) expectDenied(await callGet(caller, 'n1', bearer(alice)), 'UNAVAILABLE', /^twokey: the authorizer is unavailable$/);
      expect(front.backendRuns()).to.equal(before);
    } finally {
      await front.startAuthorizer();
    }
    const again = await callGet(caller, 'n1', bearer(alice));
    expect(again.code, again.details).to.equal(grpc.status.OK);
  });

  it('names the decision in every denial, matching the line in the decision log', async () => {
    const out = await callGet(caller, 'n1', bearer(undefined));
    const id = DECISION.exec(out.details)![1];
    const line = front.authorizerLog().find((l) => l['decision_id'] === id);
    expect(line).to.include({ allow: false, failed_check: 'token', error_code: 'ERR_TOKEN_MISSING', grpc_code: grpc.status.UNAUTHENTICATED, peer_spiffe_id: CALLER_ID });
  });
});
