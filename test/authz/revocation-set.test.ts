// The signed revocation set: what a verifier accepts, and every forged, replayed, older or oversized set it refuses.
import { expect } from 'chai';
import { generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { StaticKeys } from '../../services/authz/jwks.ts';
import { TokenVerifier } from '../../services/authz/token-verifier.ts';
import {
  MAX_REVOCATION_ENTRIES,
  RevocationHolder,
  buildRevocationSet,
  normalizeSerial,
  signRevocationSet,
  verifyRevocationSet,
} from '../../services/authz/revocation-set.ts';
import type { RevocationEntries } from '../../services/authz/types.ts';
import { TwokeyError } from '../../services/authz/errors.ts';
import { ISSUER, MESH_AUDIENCE, TestIssuer } from './token-fixtures.ts';

const NOW = Date.parse('2026-01-01T12:00:00Z');

function keyPair(kid: string): { kid: string; privateKey: KeyObject; jwk: Record<string, unknown> } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { kid, privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' } };
}

const EMPTY: RevocationEntries = { disabledSubjects: new Map(), jtis: new Map(), serials: new Map(), kids: new Set() };
const ENTRIES: RevocationEntries = {
  disabledSubjects: new Map([['alice', NOW / 1000 - 5]]),
  jtis: new Map([['jti-0123456789abcdef', NOW / 1000 + 900]]),
  serials: new Map([['1A2B', NOW / 1000 + 3600]]),
  kids: new Set(['k-old']),
};

async function refused(promise: Promise<unknown> | (() => unknown), fragment: string): Promise<void> {
  try {
    await (typeof promise === 'function' ? promise() : promise);
  } catch (err) {
    expect(err).to.be.instanceOf(TwokeyError);
    expect((err as TwokeyError).code).to.equal('ERR_REVOCATION_SET_INVALID');
    expect((err as TwokeyError).message).to.contain(fragment);
    return;
  }
  expect.fail(`expected a refusal containing "${fragment}"`);
}

function forge(header: Record<string, unknown>, payload: Record<string, unknown>, key: KeyObject): string {
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  return `${input}.${cryptoSign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}

describe('revocation set', () => {
  const auth = keyPair('k1');
  const attacker = keyPair('k1'); // same kid, another key
  let keys: StaticKeys;
  let issuer: TestIssuer;

  before(async () => {
    issuer = await TestIssuer.create('k-tokens');
    keys = await StaticKeys.fromJwks({ keys: [auth.jwk, issuer.publicJwk] });
  });

  const signed = (seq: number, iat: number, entries: RevocationEntries = ENTRIES): string => signRevocationSet(buildRevocationSet(seq, iat, entries), auth);
  const holder = (): RevocationHolder => new RevocationHolder({ keys, clock: () => NOW });

  it('verifies a set signed by a mesh key, entries intact', async () => {
    const set = await verifyRevocationSet(signed(7, NOW), keys);
    expect(set.seq).to.equal(7);
    expect(set.issuedAtMs).to.equal(NOW);
    expect(set.disabledSubjects.get('alice')).to.equal(NOW / 1000 - 5);
    expect(set.jtis.has('jti-0123456789abcdef')).to.equal(true);
    expect(set.serials.has('1A2B')).to.equal(true);
    expect(set.kids.has('k-old')).to.equal(true);
  });

  it("carries the kids auth publishes, signed but outside the entries' digest; a set without them is accepted", async () => {
    const base = buildRevocationSet(7, NOW, ENTRIES);
    const named = await verifyRevocationSet(signRevocationSet({ ...base, publishedKids: ['k1', 'k-next'] }, auth), keys);
    expect(named.publishedKids).to.deep.equal(['k1', 'k-next']);
    expect(named.digest).to.equal(base.digest);
    expect((await verifyRevocationSet(signRevocationSet(base, auth), keys)).publishedKids).to.equal(undefined);
    // A heartbeat after a rotation names other keys under the same seq: still the same entries.
    const h = holder();
    h.acceptVerified(named);
    const rotated = await verifyRevocationSet(signRevocationSet({ ...buildRevocationSet(7, NOW + 1, ENTRIES), publishedKids: ['k-next', 'k3'] }, auth), keys);
    expect(h.acceptVerified(rotated).publishedKids).to.deep.equal(['k-next', 'k3']);
  });

  it('refuses published kids that are not a short array of well-formed kids', async () => {
    const payload = (keysClaim: unknown) => ({ seq: 1, iat: NOW, keys: keysClaim, users: [], jtis: [], serials: [], kids: [] });
    const header = { alg: 'ES256', typ: 'twokey-revocation+jwt', kid: 'k1' };
    for (const bad of ['k1', [1], ['has space'], Array.from({ length: 17 }, (_, i) => `k${i}`)]) {
      await refused(verifyRevocationSet(forge(header, payload(bad), auth.privateKey), keys), '"keys" must be an array');
    }
  });

  it('refuses a set signed by another key under a mesh kid (forged signature)', async () => {
    await refused(verifyRevocationSet(signRevocationSet(buildRevocationSet(9, NOW, EMPTY), attacker), keys), 'signature does not verify');
  });

  it('refuses a set whose payload was altered after signing', async () => {
    const [h, , s] = signed(3, NOW).split('.');
    const payload = Buffer.from(JSON.stringify({ seq: 3, iat: NOW, users: [], jtis: [], serials: [], kids: [] })).toString('base64url');
    await refused(verifyRevocationSet(`${h}.${payload}.${s}`, keys), 'signature does not verify');
  });

  it('refuses a set signed by a key the mesh does not know', async () => {
    await refused(verifyRevocationSet(signRevocationSet(buildRevocationSet(1, NOW, EMPTY), keyPair('k-unknown')), keys), 'not one of the mesh keys');
  });

  it('refuses an unsigned set (alg none, empty signature)', async () => {
    const h = Buffer.from(JSON.stringify({ alg: 'none', typ: 'twokey-revocation+jwt', kid: 'k1' })).toString('base64url');
    const p = Buffer.from(JSON.stringify({ seq: 99, iat: NOW, users: [], jtis: [], serials: [], kids: [] })).toString('base64url');
    await refused(verifyRevocationSet(`${h}.${p}.`, keys), 'not a compact JWS');
    await refused(verifyRevocationSet(`${h}.${p}.AAAA`, keys), '"alg" must be ES256 or EdDSA');
  });

  it('refuses an access token passed as a set, and the access-token verifier refuses a set', async () => {
    const token = await issuer.sign({}, { nowMs: NOW });
    await refused(verifyRevocationSet(token, keys), '"typ" must be "twokey-revocation+jwt"');
    const tokenVerifier = new TokenVerifier({ keys, issuer: ISSUER, audiences: [MESH_AUDIENCE], clock: () => NOW });
    expect((await tokenVerifier.verify(token)).subject).to.equal('alice');
    try {
      await tokenVerifier.verify(signed(1, NOW));
      expect.fail('a revocation set verified as an access token');
    } catch (err) {
      expect((err as TwokeyError).code).to.equal('ERR_TOKEN_INVALID');
    }
  });

  it('refuses malformed entries even under a valid signature', async () => {
    const header = { alg: 'ES256', typ: 'twokey-revocation+jwt', kid: 'k1' };
    const base = { seq: 1, iat: NOW, users: [], jtis: [], serials: [], kids: [] };
    await refused(verifyRevocationSet(forge(header, { ...base, users: [['alice']] }, auth.privateKey), keys), 'not a [string, number] pair');
    await refused(verifyRevocationSet(forge(header, { ...base, serials: [['zz', 1]] }, auth.privateKey), keys), 'serial entry is not well-formed');
    await refused(verifyRevocationSet(forge(header, { ...base, jtis: [['short', 1]] }, auth.privateKey), keys), 'jti entry is not well-formed');
    await refused(verifyRevocationSet(forge(header, { ...base, kids: 'k1' }, auth.privateKey), keys), '"kids" must be an array');
    await refused(verifyRevocationSet(forge(header, { ...base, seq: -1 }, auth.privateKey), keys), '"seq" must be');
    await refused(verifyRevocationSet(forge(header, { ...base, users: [['a', 1], ['a', 2]] }, auth.privateKey), keys), 'appears twice');
    await refused(verifyRevocationSet(forge({ ...header, jku: 'https://evil' }, base, auth.privateKey), keys), 'not accepted');
    await refused(verifyRevocationSet('not.a.jws!', keys), 'not a compact JWS');
  });

  it(`refuses more than ${MAX_REVOCATION_ENTRIES} entries, building or verifying`, async () => {
    const jtis = new Map<string, number>();
    for (let i = 0; i <= MAX_REVOCATION_ENTRIES; i += 1) jtis.set(`jti-${String(i).padStart(16, '0')}`, 1);
    await refused(() => buildRevocationSet(1, NOW, { ...EMPTY, jtis }), `more than ${MAX_REVOCATION_ENTRIES} entries`);
    const header = { alg: 'ES256', typ: 'twokey-revocation+jwt', kid: 'k1' };
    const payload = { seq: 1, iat: NOW, users: [], jtis: [...jtis], serials: [], kids: [] };
    await refused(verifyRevocationSet(forge(header, payload, auth.privateKey), keys), `more than ${MAX_REVOCATION_ENTRIES} entries`);
  });

  it('holds only forward: older seq, equal seq with other entries, and replays are refused', async () => {
    const h = holder();
    await h.accept(signed(5, NOW - 10_000));
    await refused(h.accept(signed(4, NOW)), 'older than the set already held');
    await refused(h.accept(signed(5, NOW, EMPTY)), 'same seq as the set held but different entries');
    await refused(h.accept(signed(5, NOW - 10_000)), 'a replay');
    expect(h.current!.issuedAtMs).to.equal(NOW - 10_000);
    // A heartbeat: same seq and entries, later iat, refreshes freshness.
    const updates: boolean[] = [];
    h.onUpdate((_set, changed) => updates.push(changed));
    await h.accept(signed(5, NOW));
    expect(h.current!.issuedAtMs).to.equal(NOW);
    await h.accept(signed(6, NOW, EMPTY));
    expect(updates).to.deep.equal([false, true]);
    expect(h.current!.seq).to.equal(6);
  });

  it('refuses a set dated in the future beyond the leeway', async () => {
    await refused(holder().accept(signed(1, NOW + 60_000)), '"iat" lies in the future');
  });

  it('normalizes serials to upper-case hex without leading zeros', () => {
    expect(normalizeSerial('00:0a:1B')).to.equal('A1B');
    expect(normalizeSerial('0x00ff')).to.equal('FF');
    expect(() => normalizeSerial('xyz')).to.throw(TwokeyError);
  });
});

describe('revocation holder and a withdrawn key', () => {
  it('refuses a later set signed by a key the held set withdraws', async () => {
    const stolen = keyPair('k-stolen');
    const good = keyPair('k-good');
    const keys = await StaticKeys.fromJwks({ keys: [stolen.jwk, good.jwk] });
    const h = new RevocationHolder({ keys, clock: () => NOW });
    await h.accept(signRevocationSet(buildRevocationSet(2, NOW - 1000, { ...EMPTY, kids: new Set(['k-stolen']) }), good));
    await refused(h.accept(signRevocationSet(buildRevocationSet(3, NOW, EMPTY), stolen)), 'signed with a key the held set withdraws');
    expect(h.current!.seq).to.equal(2);
  });
});
