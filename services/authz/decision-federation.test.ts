// decide() for a partner's peer: its own trust domain's bundle must have vouched, grants and scopes cut to the ceiling, the ceiling named.
import { expect } from 'chai';
import { decide } from './decision.ts';
import type { DecisionInput, PeerIdentity, VerifiedToken } from './types.ts';
import { Ceiling, FederationPolicy, PartnerPolicy, SpiffeIdPattern } from './federation.ts';
import { GrantSet } from './grant.ts';
import { SpiffeId } from './spiffe-id.ts';

const OURS = 'twokey.local';
const PARTNER = 'partner.example';
const LIST = '/twokey.images.v1.ImageStore/ListImages';
const EXPORTER = `spiffe://${PARTNER}/ns/reports/sa/exporter`;
const THUMB = 'T'.repeat(43);

const ceiling = new Ceiling({
  workloads: SpiffeIdPattern.parse(`spiffe://${PARTNER}/ns/reports/sa/*`),
  methods: GrantSet.parse([LIST]),
  serviceScopes: ['images:read'],
});
const federation = new FederationPolicy(OURS, [new PartnerPolicy(PARTNER, { kind: 'file', path: '/dev/null' }, [ceiling])]);

function peer(id: string, verifiedTrustDomain: string | undefined, grants = [LIST]): PeerIdentity {
  return { spiffeId: SpiffeId.parse(id), serialHex: '0a', grants: GrantSet.parse(grants), notBefore: new Date(0), notAfter: new Date(8.64e15), thumbprint: THUMB, verifiedTrustDomain };
}

function token(scopes: string[], subject = EXPORTER): VerifiedToken {
  return { kind: 'service', subject, issuer: 'https://auth.twokey.local', audience: `spiffe://${OURS}`, jti: 'j'.repeat(22), scopes: new Set(scopes), actorChain: [], boundThumbprint: THUMB, clientId: subject, validFromMs: 0, validUntilMs: 8.64e15 };
}

function input(p: PeerIdentity, t: VerifiedToken, over: Partial<DecisionInput> = {}): DecisionInput {
  return { peer: { ok: true, identity: p }, token: { ok: true, token: t, raw: 'x' }, method: LIST, rule: { permission: 'images:read' }, now: 1000, trustDomain: OURS, federation, ...over };
}

describe('decide() with federation', () => {
  it("allows a partner peer inside its ceiling, names the ceiling, and hands on the token with scopes cut to the ceiling's", () => {
    const d = decide(input(peer(EXPORTER, PARTNER), token(['images:read', 'images:delete:any'])));
    expect(d.allow, d.reason).to.equal(true);
    expect(d.ceiling).to.deep.equal({ trustDomain: PARTNER, workloads: `spiffe://${PARTNER}/ns/reports/sa/*` });
    expect([...d.token!.scopes]).to.deep.equal(['images:read']);
    expect(d.reason).to.contain(`within the ceiling spiffe://${PARTNER}/ns/reports/sa/*`);
    expect(d.checks.find((c) => c.check === 'peer')!.detail).to.contain(`of partner trust domain "${PARTNER}", verified against its own bundle`);
  });

  it("refuses a peer whose chain was not verified against its own trust domain's bundle, ours included (UNAUTHENTICATED at peer)", () => {
    for (const [id, verified] of [[EXPORTER, undefined], [EXPORTER, OURS], [`spiffe://${OURS}/ns/twokey/sa/cleaner`, PARTNER], [`spiffe://${OURS}/ns/twokey/sa/cleaner`, undefined]] as const) {
      const d = decide(input(peer(id, verified), token(['images:read'], id)));
      expect(d.failedCheck, `${id} verified by ${verified}`).to.equal('peer');
      expect(d.errorCode).to.equal('ERR_PEER_TRUST_DOMAIN');
      expect(d.reason).to.contain(`was not verified against the own bundle of trust domain`);
    }
  });

  it('refuses a trust domain we do not federate with, and without a federation policy any partner at all', () => {
    const third = decide(input(peer('spiffe://third.example/ns/a/sa/b', 'third.example'), token(['images:read'])));
    expect(third.errorCode).to.equal('ERR_PEER_TRUST_DOMAIN');
    expect(third.reason).to.contain('nor in a federated one');
    const none = decide(input(peer(EXPORTER, PARTNER), token(['images:read']), { federation: undefined }));
    expect(none.errorCode).to.equal('ERR_PEER_TRUST_DOMAIN');
  });

  it('denies a scope outside the ceiling even when the token carries it (ERR_CEILING_EXCEEDED at scope)', () => {
    const d = decide(input(peer(EXPORTER, PARTNER), token(['images:read:any']), {}));
    // images:read:any is not in the ceiling (only images:read): the token carries nothing the ceiling allows.
    expect(d.allow).to.equal(false);
    expect(d.failedCheck).to.equal('scope');
    expect(d.errorCode).to.equal('ERR_CEILING_EXCEEDED');
    expect(d.code).to.equal(7);
    expect(d.reason).to.contain(`the token's "images:read" is outside the ceiling spiffe://${PARTNER}/ns/reports/sa/*`);
  });

  it('a partner certificate without grants gets nothing, and our own peers are decided as before', () => {
    const bare = decide(input(peer(EXPORTER, PARTNER, []), token(['images:read'])));
    expect(bare.errorCode).to.equal('ERR_METHOD_NOT_GRANTED');
    const own = `spiffe://${OURS}/ns/twokey/sa/gateway`;
    const ours = decide(input(peer(own, OURS), { ...token(['images:read'], own), kind: 'user', subject: 'alice', boundThumbprint: undefined }));
    expect(ours.allow, ours.reason).to.equal(true);
    expect(ours.ceiling).to.equal(undefined);
  });
});
