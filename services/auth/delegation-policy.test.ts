// Token-exchange rules: down-scoping, audiences, subject users and delegation depth.
import { expect } from 'chai';
import type { VerifiedToken } from '../authz/types.ts';
import { decideExchange, decideServiceToken, type ExchangeInput } from './delegation-policy.ts';

const TAGGING = 'spiffe://twokey.local/ns/twokey/sa/tagging';
const GATEWAY = 'spiffe://twokey.local/ns/twokey/sa/gateway';
const STORE = 'spiffe://twokey.local/ns/twokey/sa/image-store';
const NOW = 1_000_000;

function userToken(overrides: Partial<VerifiedToken> = {}): VerifiedToken {
  return {
    kind: 'user', subject: 'alice', issuer: 'i', audience: 'spiffe://twokey.local', jti: 'j'.repeat(22),
    scopes: new Set(['images:read', 'images:tag']), actorChain: [], boundThumbprint: undefined, clientId: undefined,
    validFromMs: 0, validUntilMs: NOW + 60_000, ...overrides,
  };
}

function input(overrides: Partial<ExchangeInput> = {}): ExchangeInput {
  return {
    actor: { spiffeId: TAGGING, thumbprint: 'T'.repeat(43) },
    rules: { scopes: ['images:tag'], audiences: [STORE], withoutSubjectToken: true },
    subject: { via: 'username', username: 'alice' },
    userActive: (u) => u === 'alice',
    requestedScopes: ['images:tag'],
    audience: STORE,
    maxDepth: 2,
    ttlMs: 300_000,
    now: NOW,
    ...overrides,
  };
}

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).to.have.property('code', 'ERR_DELEGATION_DENIED');
    return (err as Error).message;
  }
  throw new Error('expected a refusal');
}

describe('token exchange policy', () => {
  it('grants the registry scope for a named active user, acting as the peer', () => {
    const grant = decideExchange(input());
    expect(grant).to.deep.equal({ subject: 'alice', scopes: ['images:tag'], audience: STORE, act: { sub: TAGGING }, ttlMs: 300_000 });
  });

  it('refuses scopes beyond the registry delegation', () => {
    expect(refusal(() => decideExchange(input({ requestedScopes: ['images:tag', 'images:delete'] })))).to.include('"images:delete" is beyond');
  });

  it('refuses an audience the registry does not list', () => {
    expect(refusal(() => decideExchange(input({ audience: GATEWAY })))).to.include(`audience ${GATEWAY}`);
  });

  it('refuses unknown or disabled users', () => {
    expect(refusal(() => decideExchange(input({ subject: { via: 'username', username: 'mallory' } })))).to.include('no enabled user "mallory"');
  });

  it('refuses a workload the registry gives no delegation', () => {
    expect(refusal(() => decideExchange(input({ rules: undefined })))).to.include('no delegation');
  });

  it('requires the subject token when the registry does not allow acting for absent users', () => {
    const rules = { scopes: ['images:tag'], audiences: [STORE], withoutSubjectToken: false };
    expect(refusal(() => decideExchange(input({ rules })))).to.include('subject_token');
    const grant = decideExchange(input({ rules, subject: { via: 'token', token: userToken() } }));
    expect(grant.subject).to.equal('alice');
  });

  it('down-scopes to what the subject token itself carries', () => {
    const token = userToken({ scopes: new Set(['images:read']) });
    expect(refusal(() => decideExchange(input({ subject: { via: 'token', token } })))).to.include('"images:tag" is beyond');
  });

  it('never outlives the subject token', () => {
    const grant = decideExchange(input({ subject: { via: 'token', token: userToken({ validUntilMs: NOW + 10_000 }) } }));
    expect(grant.ttlMs).to.equal(10_000);
  });

  it('chains actors and refuses a delegation deeper than the maximum', () => {
    const once = userToken({ kind: 'delegated', audience: TAGGING, actorChain: [GATEWAY] });
    const grant = decideExchange(input({ subject: { via: 'token', token: once } }));
    expect(grant.act).to.deep.equal({ sub: TAGGING, act: { sub: GATEWAY } });
    const twice = userToken({ kind: 'delegated', audience: TAGGING, actorChain: [STORE, GATEWAY] });
    expect(refusal(() => decideExchange(input({ subject: { via: 'token', token: twice } })))).to.include('depth 3 exceeds the maximum of 2');
  });

  it('refuses a delegated subject token issued for another service', () => {
    const other = userToken({ kind: 'delegated', audience: STORE, actorChain: [GATEWAY] });
    expect(refusal(() => decideExchange(input({ subject: { via: 'token', token: other } })))).to.include(`issued for ${STORE}`);
  });

  it('refuses to exchange a service token', () => {
    const service = userToken({ kind: 'service', subject: GATEWAY });
    expect(refusal(() => decideExchange(input({ subject: { via: 'token', token: service } })))).to.include('service token');
  });

  it('gives service tokens only to workloads with service scopes', () => {
    const base = { workload: TAGGING, requestedAudience: '', trustDomainId: 'spiffe://twokey.local', knownWorkloads: [STORE] };
    expect(decideServiceToken({ ...base, scopes: ['images:read:any'] })).to.deep.equal({ scopes: ['images:read:any'], audience: 'spiffe://twokey.local' });
    expect(refusal(() => decideServiceToken({ ...base, scopes: undefined }))).to.include('no service scopes');
    expect(refusal(() => decideServiceToken({ ...base, scopes: ['x'], requestedAudience: 'spiffe://twokey.local/ns/x/sa/y' }))).to.include('neither');
  });
});
