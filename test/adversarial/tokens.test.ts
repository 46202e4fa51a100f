// The hostile token table, first against the verifier and decision directly, then over real mTLS.
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import * as builder from '../../certs-ca/certificate-builder.ts';
import { rootSpec } from '../../certs-ca/svid-profile.ts';
import { decide } from '../../services/authz/decision.ts';
import { TokenAuthenticator } from '../../services/authz/token-authenticator.ts';
import { TokenVerifier } from '../../services/authz/token-verifier.ts';
import { ISSUER, MESH_AUDIENCE } from '../authz/token-fixtures.ts';
import { FetchTrap, OTHER_ID, P, SERVER_ID, TD, handlerRuns, startAttackMesh, unary, type AttackMesh } from './harness.ts';
import { ECHO_MARKER, TOKEN_CASES, type TokenAttackContext } from './hostile-tokens.ts';
import { RawSigner } from './jws.ts';

const HOSTILE = TOKEN_CASES.filter((c) => c.group !== 'control');

describe('adversarial: hostile tokens', function () {
  this.timeout(30_000);
  const signer = RawSigner.create('k1');
  const impostor = RawSigner.create('attacker');
  let rsa: RawSigner;
  let mesh: AttackMesh;
  let trap: FetchTrap;
  let ctx: TokenAttackContext;

  before(async () => {
    rsa = RawSigner.create('k1', 'RS256');
    trap = await FetchTrap.start();
    mesh = await startAttackMesh(() => ({ keys: [signer.publicJwk] }));
    const now = new Date();
    const attackerCert = builder.buildCertificate(
      rootSpec({ trustDomain: 'evil.example', publicKey: impostor.publicKey, serial: Buffer.from([1]), notBefore: new Date(now.getTime() - 60_000), notAfter: new Date(now.getTime() + 3600_000) }),
      impostor.privateKey,
    );
    ctx = {
      signer,
      impostor,
      rsa,
      callerId: mesh.callerSvid.spiffeId.toString(),
      callerThumbprint: mesh.callerSvid.thumbprint,
      otherId: OTHER_ID,
      otherThumbprint: mesh.otherSvid.thumbprint,
      serverId: SERVER_ID,
      trapUrl: trap.url,
      attackerCertB64: attackerCert.der.toString('base64'),
    };
  });
  after(async () => {
    await mesh?.close();
    await trap?.close();
  });

  it(`the table holds at least 80 distinct hostile cases (${HOSTILE.length}) besides ${TOKEN_CASES.length - HOSTILE.length} controls`, () => {
    expect(HOSTILE.length).to.be.at.least(80);
    expect(new Set(TOKEN_CASES.map((c) => c.name)).size).to.equal(TOKEN_CASES.length);
  });

  describe('against the verifier and decision directly', () => {
    let keyLookups = 0;
    let tokens: TokenAuthenticator;
    before(() => {
      const verifier = new TokenVerifier({
        keys: { keyFor: (kid, alg) => ((keyLookups += 1), mesh.keys.keyFor(kid, alg)) },
        issuer: ISSUER,
        audiences: [MESH_AUDIENCE, SERVER_ID],
      });
      tokens = new TokenAuthenticator({ verifier });
    });

    for (const c of TOKEN_CASES) {
      it(`${c.group}: ${c.name} -> ${c.expect.code ?? 'allowed'}`, async () => {
        const lookupsBefore = keyLookups;
        const token = await tokens.fromMetadata(c.metadata(ctx));
        const decision = decide({
          peer: { ok: true, identity: mesh.callerSvid },
          token,
          method: `${P}/Unary`,
          rule: { permission: 'probe:call' },
          now: Date.now(),
          trustDomain: TD,
        });
        expect(decision.errorCode, decision.reason).to.equal(c.expect.code);
        expect(decision.code, decision.reason).to.equal(c.expect.status);
        expect(decision.allow).to.equal(c.expect.code === null);
        if (c.expect.message) expect(decision.reason).to.match(c.expect.message);
        // The reason is what callers get back; only the log's check detail may name what was sent.
        expect(decision.reason).to.not.include(ECHO_MARKER);
        if (c.expect.logs !== undefined) {
          expect(decision.reason).to.not.include(c.expect.logs);
          expect(decision.checks.find((r) => r.outcome === 'fail')?.detail).to.include(JSON.stringify(c.expect.logs));
        }
        if (c.expect.beforeCrypto) expect(keyLookups, 'a verification key was looked up').to.equal(lookupsBefore);
      });
    }
  });

  describe('over real mTLS against a twokey server (no handler runs for a denial)', () => {
    for (const c of TOKEN_CASES) {
      it(`${c.group}: ${c.name} -> ${grpc.status[c.expect.status]}`, async () => {
        const runsBefore = handlerRuns(mesh.probe);
        const out = await unary(mesh.client, 'Unary', { text: 'attack' }, (c.wire?.metadata ?? c.metadata)(ctx));
        expect(out.code, out.details).to.equal(c.expect.status);
        if (c.expect.code === null) {
          expect(handlerRuns(mesh.probe)).to.equal(runsBefore + 1);
          return;
        }
        expect(handlerRuns(mesh.probe), 'a handler ran for a denied call').to.equal(runsBefore);
        const message = c.wire?.message ?? c.expect.message;
        if (message) expect(out.details).to.match(message);
        expect(out.details).to.match(/\(decision [0-9a-f-]{36}\)$/);
        expect(out.details).to.not.include(ECHO_MARKER);
        if (c.expect.logs !== undefined) expect(out.details).to.not.include(c.expect.logs);
      });
    }
  });

  it('no hostile header (jku, x5u, kid URL) made anything fetch from the attacker, and unknown kids cost at most one JWKS refetch', async () => {
    // Self-contained: it sends every hostile case itself (the cases above may not have run, e.g. under --grep),
    // and counts the ones whose JWS header carries the trap's URL, so it cannot pass without sending any.
    let carryTrapUrl = 0;
    for (const c of HOSTILE) {
      const md = (c.wire?.metadata ?? c.metadata)(ctx);
      const headers = md.get('authorization').map((v) => {
        try {
          return Buffer.from(String(v).replace(/^Bearer /, '').split('.')[0]!, 'base64url').toString('latin1');
        } catch {
          return '';
        }
      });
      if (headers.some((h) => h.includes(trap.url))) carryTrapUrl += 1;
      const out = await unary(mesh.client, 'Unary', { text: 'attack' }, md);
      expect(out.code, `${c.name}: ${out.details}`).to.equal(c.expect.status);
    }
    expect(carryTrapUrl, 'hostile cases whose header names the trap URL').to.be.at.least(3);
    expect(trap.hits).to.equal(0);
    // One fetch at start, at most one more for the unknown kids within the 30 s cooldown.
    expect(mesh.jwksFetches()).to.be.at.most(2);
    // __proto__ claims were data, not a prototype: nothing leaked onto Object.prototype.
    expect(({} as Record<string, unknown>)['token_kind']).to.equal(undefined);
    expect(({} as Record<string, unknown>)['scope']).to.equal(undefined);
  });
});
