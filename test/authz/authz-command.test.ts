// `twokey authz check`: offline decisions from files, with every check printed and the exit code of the outcome.
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { CertificateAuthority } from '../../certs-ca/index.ts';
import { authDatabasePath, openAuthDatabase } from '../../services/auth/database.ts';
import { SigningKeys } from '../../services/auth/signing-keys.ts';
import { SqliteKeyRecords } from '../../services/auth/sqlite-auth-records.ts';
import { TokenMinter } from '../../services/auth/token-minter.ts';
import { TWOKEY_BIN } from '../../scripts/local-mesh/supervisor.ts';
import { authzCheck } from './authz-check-cli.ts';
import { ISSUER, TestIssuer } from './token-fixtures.ts';
import { TD, TestPki } from './mesh-fixtures.ts';

const GET = '/twokey.images.v1.ImageStore/GetImage';
const DELETE = '/twokey.images.v1.ImageStore/DeleteImage';
const GATEWAY = `spiffe://${TD}/ns/twokey/sa/gateway`;
const TAGGING = `spiffe://${TD}/ns/twokey/sa/tagging`;

describe('twokey authz check', function () {
  this.timeout(30000);
  let pki: TestPki;
  let issuer: TestIssuer;
  let gatewayCert: string;
  let jwksFile: string;
  let token: string;

  before(async () => {
    pki = TestPki.create();
    issuer = await TestIssuer.create('k1');
    gatewayCert = join(pki.workload('gateway', GATEWAY, [GET]), 'svid.pem');
    jwksFile = join(pki.root, 'jwks.json');
    writeFileSync(jwksFile, JSON.stringify(TestIssuer.jwks(issuer)));
    token = await issuer.sign({ scope: 'images:read' });
  });
  after(() => pki.cleanup());

  const base = () => ['--cert', gatewayCert, '--jwks', jwksFile, '--trust-domain', TD, '--issuer', ISSUER];

  it('allows a granted method with a token carrying the scope, and shows every check', async () => {
    const r = await authzCheck([...base(), '--token', token, '--method', GET, '--owner', 'alice']);
    expect(r.code, r.err).to.equal(0);
    expect(r.out).to.match(new RegExp(`^${GET}: ALLOW \\(OK\\)\\n`));
    for (const c of ['peer', 'rule', 'grant', 'token', 'revocation', 'binding', 'scope', 'resource']) expect(r.out).to.match(new RegExp(`\\n  ${c} +pass `));
    expect(r.out).not.to.contain(token.split('.')[2]!);
  });

  it('denies another owner\'s resource at the resource check (exit 1)', async () => {
    const r = await authzCheck([...base(), '--token', token, '--method', GET, '--owner', 'bob']);
    expect(r.code).to.equal(1);
    expect(r.out).to.contain('DENY (PERMISSION_DENIED)');
    expect(r.out).to.match(/\n {2}resource +fail /);
  });

  it('denies a method the certificate does not grant, and says so', async () => {
    const r = await authzCheck([...base(), '--token', await issuer.sign({ scope: 'images:delete' }), '--method', DELETE]);
    expect(r.code).to.equal(1);
    expect(r.out).to.contain(`${DELETE}: DENY (PERMISSION_DENIED)`);
    expect(r.out).to.match(/\n {2}grant +fail +certificate of spiffe:\/\/twokey.local\/ns\/twokey\/sa\/gateway does not grant/);
    expect(r.out).to.match(/\n {2}token +skip /);
  });

  it('denies a call without a token as UNAUTHENTICATED', async () => {
    const r = await authzCheck([...base(), '--method', GET]);
    expect(r.code).to.equal(1);
    expect(r.out).to.contain('DENY (UNAUTHENTICATED)');
    expect(r.out).to.match(/\n {2}token +fail /);
  });

  it('evaluates a claims file through the same claim checks (a delegated token bound elsewhere)', async () => {
    const claimsFile = join(pki.root, 'claims.json');
    const iat = Math.floor(Date.now() / 1000);
    writeFileSync(claimsFile, JSON.stringify({
      iss: ISSUER, sub: 'alice', aud: `spiffe://${TD}`, iat, exp: iat + 300, jti: 'abcdefghijklmnopqrstuv', scope: 'images:read',
      token_kind: 'delegated', act: { sub: TAGGING }, cnf: { 'x5t#S256': 'A'.repeat(43) },
    }));
    const r = await authzCheck(['--cert', gatewayCert, '--trust-domain', TD, '--issuer', ISSUER, '--claims', claimsFile, '--method', GET, '--json']);
    expect(r.code).to.equal(1);
    const json = JSON.parse(r.out);
    expect(json).to.include({ allow: false, code: 'UNAUTHENTICATED', claimsMode: true });
    // Addressed mesh-wide: refused as every server refuses it, before the binding is looked at.
    expect(json.reason).to.match(/^token check failed: invalid token: a delegated token must be addressed to one service, not the whole trust domain "spiffe:\/\/twokey.local"$/);
  });

  it('evaluates a delegated claims file addressed to one service up to its binding', async () => {
    const claimsFile = join(pki.root, 'claims-store.json');
    const iat = Math.floor(Date.now() / 1000);
    writeFileSync(claimsFile, JSON.stringify({
      iss: ISSUER, sub: 'alice', aud: `spiffe://${TD}/ns/twokey/sa/image-store`, iat, exp: iat + 300, jti: 'abcdefghijklmnopqrstuv', scope: 'images:read',
      token_kind: 'delegated', act: { sub: TAGGING }, cnf: { 'x5t#S256': 'A'.repeat(43) },
    }));
    const r = await authzCheck(['--cert', gatewayCert, '--trust-domain', TD, '--issuer', ISSUER, '--claims', claimsFile, '--method', GET, '--server', `spiffe://${TD}/ns/twokey/sa/image-store`, '--json']);
    expect(r.code).to.equal(1);
    const json = JSON.parse(r.out);
    expect(json).to.include({ allow: false, code: 'UNAUTHENTICATED', claimsMode: true });
    expect(json.reason).to.match(/^binding check failed: delegated token actor \(act.sub\) spiffe:\/\/twokey.local\/ns\/twokey\/sa\/tagging is not the peer/);
  });

  it('checks the chain against a bundle: a certificate from another CA is refused at the peer check', async () => {
    const other = TestPki.create(TD, `${pki.root}-other`);
    try {
      const cert = join(other.workload('gw', GATEWAY, [GET]), 'svid.pem');
      const r = await authzCheck(['--cert', cert, '--bundle', join(pki.ca.dir, 'ca.pem'), '--jwks', jwksFile, '--trust-domain', TD, '--issuer', ISSUER, '--token', token, '--method', GET]);
      expect(r.code).to.equal(1);
      expect(r.out).to.match(/\n {2}peer +fail +certificate does not chain to the trust bundle/);
    } finally {
      other.cleanup();
    }
  });

  it('evaluates at a given time: the same token later is expired', async () => {
    const r = await authzCheck([...base(), '--token', token, '--method', GET, '--at', new Date(Date.now() + 20 * 60_000).toISOString()]);
    expect(r.code).to.equal(1);
    expect(r.out).to.match(/\n {2}token +fail +token expired/);
  });

  it('reads keys, bundle and trust domain from a local state directory', async () => {
    const state = join(pki.root, 'state');
    mkdirSync(state);
    const ca = CertificateAuthority.init({ dir: join(state, 'ca'), trustDomain: TD });
    const dir = join(state, 'svid', 'gateway');
    ca.writeWorkload(dir, ca.issue({ spiffeId: GATEWAY, grants: [GET], ttl: '1h' }));
    const db = openAuthDatabase(authDatabasePath(join(state, 'data', 'auth')));
    const keys = new SigningKeys(new SqliteKeyRecords(db), { rotationMs: 3600_000 });
    const minted = await new TokenMinter({ keys, issuer: ISSUER }).mint({ kind: 'user', subject: 'alice', scopes: ['images:read'], audience: `spiffe://${TD}`, clientId: GATEWAY, ttlMs: 900_000 });
    db.close();
    const r = await authzCheck(['--cert', join(dir, 'svid.pem'), '--state', state, '--token', minted.token, '--method', GET]);
    expect(r.code, r.out + r.err).to.equal(0);
    expect(r.out).to.contain('chain: verified against the bundle');
  });

  it('runs as the twokey command with exit codes 0 / 1 / 2', async () => {
    const exec = (args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
        execFile(process.execPath, [TWOKEY_BIN, 'authz', 'check', ...args], { timeout: 20000 }, (err, stdout, stderr) =>
          resolve({ code: err ? (err as { code?: number }).code ?? -1 : 0, stdout, stderr })));
    const [allowed, denied, usage] = await Promise.all([
      exec([...base(), '--token', token, '--method', GET]),
      exec([...base(), '--token', token, '--method', DELETE]),
      exec([...base(), '--token', token]),
    ]);
    expect(allowed.code, allowed.stderr).to.equal(0);
    expect(allowed.stdout).to.contain('ALLOW');
    expect(denied.code).to.equal(1);
    expect(usage.code).to.equal(2);
    expect(usage.stderr).to.contain('--method is required');
  });
});
