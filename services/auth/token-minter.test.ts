// Minted tokens verify with the mesh's verifier against the published JWKS, across a rotation.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { StaticKeys } from '../authz/jwks.ts';
import { TokenVerifier } from '../authz/token-verifier.ts';
import { authDatabasePath, openAuthDatabase, type AuthDatabase } from './database.ts';
import { SigningKeys } from './signing-keys.ts';
import { SqliteKeyRecords } from './sqlite-auth-records.ts';
import { TokenMinter } from './token-minter.ts';

const ISSUER = 'https://auth.twokey.local';
const MESH = 'spiffe://twokey.local';
const TAGGING = 'spiffe://twokey.local/ns/twokey/sa/tagging';
const STORE = 'spiffe://twokey.local/ns/twokey/sa/image-store';
const THUMB = 'A'.repeat(43);

describe('auth token minting and signing keys', () => {
  let dir: string;
  let db: AuthDatabase;
  let now: number;
  let keys: SigningKeys;
  let minter: TokenMinter;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'twokey-auth-'));
    db = openAuthDatabase(authDatabasePath(dir));
    now = Date.UTC(2026, 0, 1);
    keys = new SigningKeys(new SqliteKeyRecords(db), { rotationMs: 3_600_000, now: () => now });
    minter = new TokenMinter({ keys, issuer: ISSUER, now: () => now });
  });
  afterEach(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const verifier = async (audiences: string[]): Promise<TokenVerifier> =>
    new TokenVerifier({ keys: await StaticKeys.fromJwks((await keys.jwks())), issuer: ISSUER, audiences, clock: () => now });

  it('creates the database owner-only', () => {
    expect(statSync(authDatabasePath(dir)).mode & 0o777).to.equal(0o600);
  });

  it('mints a user token with the contract claims that the mesh verifier accepts', async () => {
    const minted = await minter.mint({ kind: 'user', subject: 'alice', scopes: ['images:read'], audience: MESH, clientId: MESH + '/ns/twokey/sa/gateway', ttlMs: 900_000 });
    const token = await (await verifier([MESH])).verify(minted.token);
    expect(token.kind).to.equal('user');
    expect(token.subject).to.equal('alice');
    expect([...token.scopes]).to.deep.equal(['images:read']);
    expect(token.boundThumbprint).to.equal(undefined);
    expect(minted.expiresInSeconds).to.equal(900);
  });

  it('mints a delegated token naming the actor chain and bound to the actor certificate', async () => {
    const minted = await minter.mint({
      kind: 'delegated', subject: 'alice', scopes: ['images:tag'], audience: STORE, clientId: TAGGING, ttlMs: 300_000,
      act: { sub: TAGGING }, thumbprint: THUMB,
    });
    const token = await (await verifier([MESH, STORE])).verify(minted.token);
    expect(token.kind).to.equal('delegated');
    expect(token.actorChain).to.deep.equal([TAGGING]);
    expect(token.boundThumbprint).to.equal(THUMB);
    expect(token.audience).to.equal(STORE);
  });

  it('publishes current, next and previous keys so a token signed before a rotation still verifies', async () => {
    const before = await minter.mint({ kind: 'user', subject: 'bob', scopes: [], audience: MESH, clientId: MESH, ttlMs: 60_000 });
    const firstKid = (await keys.jwks()).keys[0]!.kid;
    expect((await keys.jwks()).keys).to.have.length(2);
    await keys.rotate();
    expect((await keys.jwks()).keys.map((k) => k.kid)).to.have.length(3).and.include(firstKid);
    await (await verifier([MESH])).verify(before.token);
    await keys.rotate();
    expect((await keys.jwks()).keys.map((k) => k.kid)).to.not.include(firstKid);
    let error: unknown;
    await (await verifier([MESH])).verify(before.token).catch((err) => (error = err));
    expect(error).to.have.property('code', 'ERR_TOKEN_INVALID');
  });

  it('publishes each key before it signs anything, so verifiers already hold it at rotation', async () => {
    await keys.current();
    const published = (await keys.jwks()).keys.map((k) => k.kid);
    const promoted = await keys.rotate();
    expect(published).to.include(promoted);
    const token = await minter.mint({ kind: 'user', subject: 'bob', scopes: [], audience: MESH, clientId: MESH, ttlMs: 60_000 });
    const after = await keys.jwks();
    const verifyWithOldSet = new TokenVerifier({
      keys: await StaticKeys.fromJwks({ keys: published.map((kid) => after.keys.find((k) => k.kid === kid)).filter((k) => k !== undefined) }),
      issuer: ISSUER,
      audiences: [MESH],
      clock: () => now,
    });
    expect((await verifyWithOldSet.verify(token.token)).subject).to.equal('bob');
  });

  it('rotates on schedule when the current key has signed for the rotation period', async () => {
    const first = (await keys.current()).kid;
    now += 3_599_000;
    expect((await keys.current()).kid).to.equal(first);
    now += 1_000;
    const second = (await keys.current()).kid;
    expect(second).to.not.equal(first);
    expect((await keys.jwks()).keys.map((k) => k.kid)).to.include(first);
    // The promoted key was created an hour ago, but its period starts when it begins to sign.
    now += 1_000;
    expect((await keys.current()).kid).to.equal(second);
  });

  it('never publishes private key material', async () => {
    await keys.current();
    for (const jwk of (await keys.jwks()).keys) expect(jwk).to.not.have.property('d');
  });
});
