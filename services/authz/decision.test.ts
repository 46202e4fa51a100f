// The decision table: every combination of the two keys, the owner check and token binding, with exact codes.
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { decide, decidePeer } from './decision.ts';
import type { DecisionInput, PeerIdentity, TokenKind, VerifiedToken } from './types.ts';
import { TwokeyError } from './errors.ts';
import { GrantSet } from './grant.ts';
import { authorizeOwner } from './resource.ts';
import { SpiffeId } from './spiffe-id.ts';

const TD = 'twokey.local';
const NOW = Date.parse('2026-01-01T12:00:00Z');
const METHOD = '/twokey.images.v1.ImageStore/SetTags';
const PERMISSION = 'images:tag';
const PEER_ID = 'spiffe://twokey.local/ns/twokey/sa/tagging';
const OTHER_ID = 'spiffe://twokey.local/ns/twokey/sa/cleaner';
const PEER_THUMB = 'A'.repeat(43);
const OTHER_THUMB = 'B'.repeat(43);

function peer(over: Partial<PeerIdentity> & { grants?: GrantSet } = {}): PeerIdentity {
  return {
    spiffeId: SpiffeId.parse(PEER_ID),
    serialHex: '0a1b',
    grants: GrantSet.parse([METHOD]),
    notBefore: new Date(NOW - 3600_000),
    notAfter: new Date(NOW + 3600_000),
    thumbprint: PEER_THUMB,
    ...over,
  };
}

function token(kind: TokenKind, scopes: string[], bound: boolean, over: Partial<VerifiedToken> = {}): VerifiedToken {
  const presenter = bound ? PEER_ID : OTHER_ID;
  return {
    kind,
    subject: kind === 'service' ? presenter : 'alice',
    issuer: 'https://auth.twokey.local',
    audience: 'spiffe://twokey.local',
    jti: 'jti-0123456789abcdef',
    scopes: new Set(scopes),
    actorChain: kind === 'delegated' ? [presenter] : [],
    boundThumbprint: kind === 'user' ? undefined : bound ? PEER_THUMB : OTHER_THUMB,
    clientId: undefined,
    validFromMs: NOW - 60_000,
    validUntilMs: NOW + 60_000,
    ...over,
  };
}

function input(over: Partial<DecisionInput>): DecisionInput {
  return {
    peer: { ok: true, identity: peer() },
    token: { ok: true, token: token('user', [PERMISSION], true), raw: 'x' },
    method: METHOD,
    rule: { permission: PERMISSION },
    now: NOW,
    trustDomain: TD,
    ...over,
  };
}

type TokenState = 'valid' | 'invalid' | 'missing';
type ScopeState = 'none' | 'exact' | 'any';

// The specification, written as the order DESIGN.md gives it; the table below checks decide()
// plus the handler's owner check against it for every combination.
function expected(c: { grant: boolean; tokenState: TokenState; scope: ScopeState; owner: boolean; kind: TokenKind; bound: boolean }): {
  code: status;
  check: string | null;
} {
  if (!c.grant) return { code: status.PERMISSION_DENIED, check: 'grant' };
  if (c.tokenState !== 'valid') return { code: status.UNAUTHENTICATED, check: 'token' };
  if (c.kind !== 'user' && !c.bound) return { code: status.UNAUTHENTICATED, check: 'binding' };
  if (c.scope === 'none') return { code: status.PERMISSION_DENIED, check: 'scope' };
  if (!c.owner && c.scope !== 'any') return { code: status.PERMISSION_DENIED, check: 'resource' };
  return { code: status.OK, check: null };
}

describe('decide(): the decision table', () => {
  const combos: Array<Parameters<typeof expected>[0]> = [];
  for (const grant of [true, false])
    for (const tokenState of ['valid', 'invalid', 'missing'] as const)
      for (const scope of ['none', 'exact', 'any'] as const)
        for (const owner of [true, false])
          for (const kind of ['user', 'delegated', 'service'] as const)
            for (const bound of [true, false]) combos.push({ grant, tokenState, scope, owner, kind, bound });

  for (const c of combos) {
    const want = expected(c);
    const name =
      `grant=${c.grant ? 'yes' : 'no'} token=${c.tokenState} scope=${c.scope} owner=${c.owner ? 'yes' : 'no'} ` +
      `kind=${c.kind} bound=${c.bound ? 'this-peer' : 'other'} -> ${status[want.code]}${want.check ? ` (${want.check})` : ''}`;
    it(name, () => {
      const scopes = c.scope === 'none' ? ['images:read'] : c.scope === 'exact' ? [PERMISSION] : [`${PERMISSION}:any`];
      const t = token(c.kind, scopes, c.bound);
      const d = decide(
        input({
          peer: { ok: true, identity: peer({ grants: GrantSet.parse(c.grant ? [METHOD] : ['/twokey.images.v1.ImageStore/GetImage']) }) },
          token:
            c.tokenState === 'valid'
              ? { ok: true, token: t, raw: 'x' }
              : c.tokenState === 'invalid'
                ? { ok: false, error: new TwokeyError('ERR_TOKEN_INVALID', 'invalid token: signature does not verify') }
                : { ok: false, error: new TwokeyError('ERR_TOKEN_MISSING', 'no bearer token') },
        }),
      );
      let code = d.code;
      let check: string | null = d.failedCheck;
      if (d.allow) {
        // Step 5 runs in the handler with the resource's owner.
        try {
          authorizeOwner(d.token, PERMISSION, c.owner ? t.subject : 'mallory');
        } catch (err) {
          expect((err as TwokeyError).code).to.equal('ERR_RESOURCE_FORBIDDEN');
          code = status.PERMISSION_DENIED;
          check = 'resource';
        }
      }
      expect({ code: status[code], check }).to.deep.equal({ code: status[want.code], check: want.check });
      expect(d.checks.map((x) => x.check)).to.deep.equal(['peer', 'rule', 'grant', 'token', 'revocation', 'binding', 'scope']);
      if (!d.allow) expect(d.reason).to.match(new RegExp(`^${d.failedCheck} check failed: `));
    });
  }
});

describe('decide(): the peer, the rule and the clock', () => {
  it('no peer certificate is UNAUTHENTICATED at the peer check', () => {
    const d = decide(input({ peer: { ok: false, error: new TwokeyError('ERR_PEER_CERT_MISSING', 'no client certificate') } }));
    expect(d).to.include({ allow: false, failedCheck: 'peer', code: status.UNAUTHENTICATED, errorCode: 'ERR_PEER_CERT_MISSING' });
    expect(d.checks.filter((c) => c.outcome === 'skip').map((c) => c.check)).to.deep.equal(['rule', 'grant', 'token', 'revocation', 'binding', 'scope']);
  });

  it('a peer of another trust domain is UNAUTHENTICATED', () => {
    const d = decide(input({ peer: { ok: true, identity: peer({ spiffeId: SpiffeId.parse('spiffe://evil.example/ns/twokey/sa/tagging') }) } }));
    expect(d).to.include({ failedCheck: 'peer', code: status.UNAUTHENTICATED, errorCode: 'ERR_PEER_TRUST_DOMAIN' });
    expect(d.reason).to.contain('evil.example');
  });

  it('a certificate that expired during a long-lived connection is UNAUTHENTICATED on the next call', () => {
    const identity = peer({ notAfter: new Date(NOW + 1000) });
    expect(decide(input({ peer: { ok: true, identity } })).allow).to.equal(true);
    const later = decide(input({ peer: { ok: true, identity }, now: NOW + 1000 }));
    expect(later).to.include({ failedCheck: 'peer', code: status.UNAUTHENTICATED, errorCode: 'ERR_PEER_CERT_EXPIRED' });
  });

  it('a certificate not yet valid is UNAUTHENTICATED', () => {
    const d = decide(input({ peer: { ok: true, identity: peer({ notBefore: new Date(NOW + 1) }) } }));
    expect(d).to.include({ failedCheck: 'peer', code: status.UNAUTHENTICATED, errorCode: 'ERR_PEER_CERT_INVALID' });
  });

  it('a method without a declared rule is PERMISSION_DENIED even when granted and the token is fine', () => {
    const d = decide(input({ rule: undefined }));
    expect(d).to.include({ failedCheck: 'rule', code: status.PERMISSION_DENIED, errorCode: 'ERR_METHOD_UNDECLARED' });
    expect(d.reason).to.match(/declares no authorization rule$/);
  });

  it("a method absent from the server's catalog is denied alike, and the reason says the catalog lacks it", () => {
    const d = decide(input({ rule: undefined, methodKnown: false }));
    expect(d).to.include({ failedCheck: 'rule', code: status.PERMISSION_DENIED, errorCode: 'ERR_METHOD_UNDECLARED' });
    expect(d.reason).to.match(/^rule check failed: method \/\S+ is not in this server's method catalog: pass its proto's rules/);
    expect(decide(input({ rule: undefined, methodKnown: true })).reason).to.match(/declares no authorization rule$/);
  });

  it('a certificate-only method is allowed on the grant alone and reads no token', () => {
    const d = decide(input({ method: '/twokey.auth.v1.Auth/GetJwks', rule: { certificateOnly: true }, token: undefined,
      peer: { ok: true, identity: peer({ grants: GrantSet.parse(['/twokey.auth.v1.Auth/GetJwks']) }) } }));
    expect(d).to.include({ allow: true, code: status.OK, failedCheck: null });
    expect(d.checks.filter((c) => c.outcome === 'skip').map((c) => c.check)).to.deep.equal(['token', 'revocation', 'binding', 'scope']);
  });

  it('a certificate-only method still needs the grant', () => {
    const d = decide(input({ method: '/twokey.auth.v1.Auth/GetJwks', rule: { certificateOnly: true }, token: undefined }));
    expect(d).to.include({ failedCheck: 'grant', code: status.PERMISSION_DENIED, errorCode: 'ERR_METHOD_NOT_GRANTED' });
  });

  it('a wildcard grant covers the service, but a grant for another service does not', () => {
    expect(decide(input({ peer: { ok: true, identity: peer({ grants: GrantSet.parse(['/twokey.images.v1.ImageStore/*']) }) } })).allow).to.equal(true);
    const d = decide(input({ peer: { ok: true, identity: peer({ grants: GrantSet.parse(['/twokey.tagging.v1.Tagging/*']) }) } }));
    expect(d.failedCheck).to.equal('grant');
  });

  it('a cached token past its exp (with leeway) is UNAUTHENTICATED on use', () => {
    const t = token('user', [PERMISSION], true, { validUntilMs: NOW });
    const d = decide(input({ token: { ok: true, token: t, raw: 'x' } }));
    expect(d).to.include({ failedCheck: 'token', code: status.UNAUTHENTICATED, errorCode: 'ERR_TOKEN_EXPIRED' });
  });

  it('a token before its nbf is UNAUTHENTICATED', () => {
    const t = token('user', [PERMISSION], true, { validFromMs: NOW + 1 });
    expect(decide(input({ token: { ok: true, token: t, raw: 'x' } })).errorCode).to.equal('ERR_TOKEN_INVALID');
  });

  it('no token read at all is UNAUTHENTICATED (token missing)', () => {
    const d = decide(input({ token: undefined }));
    expect(d).to.include({ failedCheck: 'token', code: status.UNAUTHENTICATED, errorCode: 'ERR_TOKEN_MISSING' });
  });

  it('a delegated token naming this peer as actor but bound to another certificate is UNAUTHENTICATED', () => {
    const t = token('delegated', [PERMISSION], true, { boundThumbprint: OTHER_THUMB });
    const d = decide(input({ token: { ok: true, token: t, raw: 'x' } }));
    expect(d).to.include({ failedCheck: 'binding', code: status.UNAUTHENTICATED, errorCode: 'ERR_TOKEN_NOT_BOUND' });
  });

  it('a service token with the right thumbprint but another subject is UNAUTHENTICATED', () => {
    const t = token('service', [PERMISSION], true, { subject: OTHER_ID });
    expect(decide(input({ token: { ok: true, token: t, raw: 'x' } })).failedCheck).to.equal('binding');
  });

  it('a delegated token whose first actor is the peer is bound even with a longer chain', () => {
    const t = token('delegated', [PERMISSION], true, { actorChain: [PEER_ID, OTHER_ID] });
    expect(decide(input({ token: { ok: true, token: t, raw: 'x' } })).allow).to.equal(true);
  });

  it('scope matching is exact: a prefix or another permission is not enough', () => {
    for (const scopes of [['images'], ['images:ta'], ['images:tag:'], ['Images:tag'], ['images:tag:anything']]) {
      const d = decide(input({ token: { ok: true, token: token('user', scopes, true), raw: 'x' } }));
      expect(d.failedCheck, scopes.join(' ')).to.equal('scope');
    }
  });

  it('decidePeer settles peer and grant failures without a token and leaves token methods to decide()', () => {
    expect(decidePeer(input({ token: undefined }))).to.equal(null);
    expect(decidePeer(input({ rule: undefined }))?.failedCheck).to.equal('rule');
  });
});

describe('authorizeOwner()', () => {
  const t = token('user', ['images:read'], true);
  it('denies a missing resource exactly like someone else\'s', () => {
    const missing = (() => { try { authorizeOwner(t, 'images:read', undefined); } catch (e) { return e as TwokeyError; } return null; })();
    const other = (() => { try { authorizeOwner(t, 'images:read', 'bob'); } catch (e) { return e as TwokeyError; } return null; })();
    expect(missing?.code).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect(missing?.message).to.equal(other?.message);
  });
  it('allows the owner with the scope, and any owner with the :any scope', () => {
    authorizeOwner(t, 'images:read', 'alice');
    authorizeOwner(token('service', ['images:read:any'], true), 'images:read', 'bob');
    expect(() => authorizeOwner(t, 'images:delete', 'alice')).to.throw(TwokeyError, /images:delete/);
    expect(() => authorizeOwner(undefined, 'images:read', 'alice')).to.throw(TwokeyError);
  });
});

describe('decide(): what each check says', () => {
  it('an allowed call: every detail and the reason, also as JSON', () => {
    const d = decide(input({}));
    const expected = [
      { check: 'peer', outcome: 'pass', detail: `${PEER_ID} (serial 0a1b)` },
      { check: 'rule', outcome: 'pass', detail: `requires "${PERMISSION}"` },
      { check: 'grant', outcome: 'pass', detail: `granted ${METHOD}` },
      { check: 'token', outcome: 'pass', detail: 'user token jti-0123456789abcdef for alice' },
      { check: 'revocation', outcome: 'pass', detail: 'not enforced here' },
      { check: 'binding', outcome: 'pass', detail: 'user token: any granted workload may present it' },
      { check: 'scope', outcome: 'pass', detail: `has "${PERMISSION}"` },
    ];
    expect(d.checks.map((c) => ({ check: c.check, outcome: c.outcome, detail: c.detail }))).to.deep.equal(expected);
    const reason = `allowed: ${PEER_ID} holds the grant and the token carries "${PERMISSION}"`;
    expect(d.reason).to.equal(reason);
    expect(JSON.parse(JSON.stringify(d))).to.deep.include({ allow: true, failedCheck: null, reason, checks: expected });
  });

  it('a denial before the token is read: the passed checks say what passed, the rest why they were not evaluated', () => {
    const d = decidePeer(input({ token: undefined, peer: { ok: true, identity: peer({ grants: GrantSet.parse(['/twokey.images.v1.ImageStore/GetImage']) }) } }))!;
    expect(d.checks.map((c) => `${c.check} ${c.outcome}: ${c.detail}`)).to.deep.equal([
      `peer pass: ${PEER_ID} (serial 0a1b)`,
      `rule pass: requires "${PERMISSION}"`,
      `grant fail: certificate of ${PEER_ID} does not grant ${METHOD}`,
      'token skip: not evaluated: grant failed',
      'revocation skip: not evaluated: grant failed',
      'binding skip: not evaluated: grant failed',
      'scope skip: not evaluated: grant failed',
    ]);
  });

  it('a certificate-only method and a delegated token with the ":any" scope', () => {
    const certOnly = decidePeer(input({ token: undefined, rule: { certificateOnly: true } }))!;
    expect(certOnly.reason).to.equal(`allowed: certificate-only method granted to ${PEER_ID}`);
    expect(certOnly.checks.map((c) => c.detail)).to.deep.equal([
      `${PEER_ID} (serial 0a1b)`, 'certificate only', `granted ${METHOD}`,
      'certificate-only method: no token is read', 'certificate-only method: the peer serial was checked at peer',
      'certificate-only method', 'certificate-only method',
    ]);
    const delegated = decide(input({ token: { ok: true, token: token('delegated', [`${PERMISSION}:any`], true), raw: 'x' } }));
    expect(delegated.checks.slice(3).map((c) => c.detail)).to.deep.equal([
      'delegated token jti-0123456789abcdef for alice', 'not enforced here', `bound to ${PEER_ID}`, `has "${PERMISSION}:any"`,
    ]);
  });
});
