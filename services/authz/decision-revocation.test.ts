// decide() with a revocation set: every reason a held set refuses a call, and the stale-set rule.
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { decide, decidePeer } from './decision.ts';
import type { DecisionInput, PeerIdentity, VerifiedToken } from './types.ts';
import type { RevocationView } from './types.ts';
import { GrantSet } from './grant.ts';
import { buildRevocationSet } from './revocation-set.ts';
import type { RevocationEntries } from './types.ts';
import { SpiffeId } from './spiffe-id.ts';

const TD = 'twokey.local';
const NOW = Date.parse('2026-01-01T12:00:00Z');
const NOW_S = NOW / 1000;
const METHOD = '/twokey.images.v1.ImageStore/SetTags';
const PERMISSION = 'images:tag';
const PEER_ID = 'spiffe://twokey.local/ns/twokey/sa/tagging';
const THUMB = 'A'.repeat(43);
const JTI = 'jti-0123456789abcdef';

const PEER: PeerIdentity = {
  spiffeId: SpiffeId.parse(PEER_ID),
  serialHex: '0a1b',
  grants: GrantSet.parse([METHOD]),
  notBefore: new Date(NOW - 3600_000),
  notAfter: new Date(NOW + 3600_000),
  thumbprint: THUMB,
};

function token(over: Partial<VerifiedToken> = {}): VerifiedToken {
  return {
    kind: 'user',
    subject: 'alice',
    issuer: 'https://auth.twokey.local',
    audience: 'spiffe://twokey.local',
    jti: JTI,
    scopes: new Set([PERMISSION]),
    actorChain: [],
    boundThumbprint: undefined,
    clientId: undefined,
    validFromMs: NOW - 60_000,
    validUntilMs: NOW + 60_000,
    kid: 'k1',
    issuedAtSeconds: NOW_S - 60,
    ...over,
  };
}

function view(entries: Partial<RevocationEntries>, over: Partial<RevocationView> & { issuedAtMs?: number } = {}): RevocationView {
  const set = buildRevocationSet(3, over.issuedAtMs ?? NOW - 1_000, {
    disabledSubjects: new Map(),
    jtis: new Map(),
    serials: new Map(),
    kids: new Set(),
    ...entries,
  });
  return { set, maxStalenessMs: 30_000, sinceMs: NOW - 120_000, ...over };
}

function input(revocation: RevocationView | undefined, t: VerifiedToken = token(), over: Partial<DecisionInput> = {}): DecisionInput {
  return { peer: { ok: true, identity: PEER }, token: { ok: true, token: t, raw: 'x' }, method: METHOD, rule: { permission: PERMISSION }, now: NOW, trustDomain: TD, revocation, ...over };
}

describe('decide(): revocation', () => {
  it('allows when nothing held applies, and says so in the log detail', () => {
    const d = decide(input(view({ disabledSubjects: new Map([['bob', NOW_S]]), jtis: new Map([['other-0123456789abc', NOW_S]]) })));
    expect(d.allow).to.equal(true);
    expect(d.checks.find((c) => c.check === 'revocation')!.detail).to.equal('not revoked (set 3)');
  });

  const rows: Array<[string, RevocationView, VerifiedToken, string, RegExp]> = [
    ['a disabled user, token issued before the disabling', view({ disabledSubjects: new Map([['alice', NOW_S - 10]]) }), token(), 'revocation', /subject alice is disabled/],
    ['a disabled user, token issued in the same second', view({ disabledSubjects: new Map([['alice', NOW_S - 60]]) }), token(), 'revocation', /disabled/],
    ['a disabled user, token without iat', view({ disabledSubjects: new Map([['alice', NOW_S - 600]]) }), token({ issuedAtSeconds: undefined }), 'revocation', /disabled/],
    ['a revoked jti', view({ jtis: new Map([[JTI, NOW_S + 60]]) }), token(), 'revocation', /token jti-0123456789abcdef is revoked/],
    ['a withdrawn signing key', view({ kids: new Set(['k1']) }), token(), 'revocation', /withdrawn signing key/],
    [
      'a delegated token whose user is disabled',
      view({ disabledSubjects: new Map([['alice', NOW_S]]) }),
      token({ kind: 'delegated', actorChain: [PEER_ID], boundThumbprint: THUMB }),
      'revocation',
      /subject alice is disabled/,
    ],
    [
      'a delegated token whose earlier actor is disabled',
      view({ disabledSubjects: new Map([['spiffe://twokey.local/ns/twokey/sa/gateway', NOW_S]]) }),
      token({ kind: 'delegated', subject: 'bob', actorChain: [PEER_ID, 'spiffe://twokey.local/ns/twokey/sa/gateway'], boundThumbprint: THUMB }),
      'revocation',
      /actor spiffe:\/\/twokey.local\/ns\/twokey\/sa\/gateway is disabled/,
    ],
    ['a revoked peer certificate serial', view({ serials: new Map([['A1B', NOW_S + 3600]]) }), token(), 'peer', /peer certificate 0a1b is revoked/],
  ];
  for (const [name, v, t, check, message] of rows) {
    it(`refuses ${name}: UNAUTHENTICATED at ${check}`, () => {
      const d = decide(input(v, t));
      expect(d.allow).to.equal(false);
      expect(status[d.code]).to.equal('UNAUTHENTICATED');
      expect(d.failedCheck).to.equal(check);
      expect(d.errorCode).to.equal(check === 'peer' ? 'ERR_PEER_CERT_REVOKED' : 'ERR_TOKEN_REVOKED');
      expect(d.reason).to.match(message);
    });
  }

  it('lets a user disabled and later issued a token through (iat after the disabling)', () => {
    expect(decide(input(view({ disabledSubjects: new Map([['alice', NOW_S - 120]]) }))).allow).to.equal(true);
  });

  it('refuses a revoked serial on a certificate-only method too', () => {
    const d = decidePeer(input(view({ serials: new Map([['A1B', NOW_S + 3600]]) }), token(), { token: undefined, rule: { certificateOnly: true } }))!;
    expect(status[d.code]).to.equal('UNAUTHENTICATED');
    expect(d.errorCode).to.equal('ERR_PEER_CERT_REVOKED');
  });

  it('refuses with UNAVAILABLE when no set has arrived yet, naming since when', () => {
    const d = decide(input({ set: null, maxStalenessMs: 30_000, sinceMs: NOW - 5_000 }));
    expect(status[d.code]).to.equal('UNAVAILABLE');
    expect(d.errorCode).to.equal('ERR_REVOCATION_STALE');
    expect(d.failedCheck).to.equal('peer');
    expect(d.reason).to.contain('no revocation list received from auth since 2026-01-01T11:59:55.000Z');
  });

  it('serves on a set up to the bound old, and refuses with UNAVAILABLE beyond it (certificate-only too)', () => {
    expect(decide(input(view({}, { issuedAtMs: NOW - 30_000 }))).allow).to.equal(true);
    const stale = view({}, { issuedAtMs: NOW - 30_001 });
    const d = decide(input(stale));
    expect(status[d.code]).to.equal('UNAVAILABLE');
    expect(d.reason).to.contain('the revocation list is stale: last refreshed at 2026-01-01T11:59:29.999Z');
    const certOnly = decidePeer(input(stale, token(), { token: undefined, rule: { certificateOnly: true } }))!;
    expect(status[certOnly.code]).to.equal('UNAVAILABLE');
  });

  it('never echoes a caller-chosen kid in the denial', () => {
    const d = decide(input(view({ kids: new Set(['<script>']) }), token({ kid: '<script>' })));
    expect(status[d.code]).to.equal('UNAUTHENTICATED');
    expect(d.reason).not.to.contain('<script>');
  });
});
