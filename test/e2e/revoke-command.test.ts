// `twokey revoke` against the running mesh: two-key authorized at auth (admin certificate and its token), logged, effective at once.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Client } from '@grpc/grpc-js';
import { expect } from 'chai';
import { decodeJwt } from 'jose';
import { bearer, unary } from '../../services/mesh-runtime/protos.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { loadRegistry } from '../../certs-ca/registry.ts';
import { DEFAULT_REGISTRY } from '../../scripts/local-mesh/local-mesh.ts';
import { TWOKEY_BIN } from '../../scripts/local-mesh/supervisor.ts';
import { eventually, expectStatus, logLines, removeState, startTestMesh, withToken, type TestMesh } from './mesh-harness.ts';

const execFileAsync = promisify(execFile);
const EMPTY_LIST = { owner: '', tag: '', page_size: 0, page_token: '' };
const ADMIN_METHODS = ['DisableUser', 'RevokeToken', 'RevokeCertificate', 'WithdrawKey', 'ListRevocations'];

/** Runs the real command; resolves with its exit code and output whatever the code. */
async function twokey(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, [TWOKEY_BIN, ...args], { timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe('the registry gives the revocation methods to the admin identity alone', () => {
  it('only admin is granted them, only its service token carries revocations:admin, and no user scope or role does', () => {
    const registry = loadRegistry(DEFAULT_REGISTRY);
    const catalog = MethodCatalog.default();
    for (const method of ADMIN_METHODS) {
      const path = `/twokey.auth.v1.Auth/${method}`;
      expect(catalog.ruleOf(path), path).to.deep.include({ permission: 'revocations:admin' });
      const holders = registry.workloads.filter((w) => w.grants.grants.some((g) => g.text === path || g.text === '/twokey.auth.v1.Auth/*')).map((w) => w.name);
      expect(holders, path).to.deep.equal(['admin']);
    }
    expect(registry.workloads.filter((w) => w.serviceScopes.includes('revocations:admin')).map((w) => w.name)).to.deep.equal(['admin']);
    expect(registry.auth.userScopes).to.not.include('revocations:admin');
    for (const scopes of Object.values(registry.auth.roleScopes)) expect(scopes).to.not.include('revocations:admin');
    expect(registry.workloads.find((w) => w.name === 'admin')!.deployed).to.equal(false);
  });
});

describe('twokey revoke over mTLS on the running mesh', function () {
  this.timeout(60_000);
  let t: TestMesh;
  let images: Client;

  before(async function () {
    this.timeout(120_000);
    t = await startTestMesh({ env: { TWOKEY_REVOCATION_HEARTBEAT: '1s' } });
    images = t.gateway('image-store');
  });
  after(async function () {
    this.timeout(30_000);
    if (t !== undefined) {
      await t.close();
      removeState(t.stateDir);
    }
  });

  const list = (token: string) => unary(images, 'ListImages', EMPTY_LIST, withToken(token));
  const revoke = (...args: string[]) => twokey('revoke', ...args, '--state-dir', t.stateDir);
  const listed = async (): Promise<{ kind: string; value: string }[]> => {
    const res = await revoke('list', '--json');
    expect(res.code, res.stderr).to.equal(0);
    return JSON.parse(res.stdout) as { kind: string; value: string }[];
  };

  it("revokes a token as the admin identity: refused mesh-wide, the user's other token works, auth logs who asked", async () => {
    const stolen = await t.login('alice');
    const other = await t.login('alice');
    await list(stolen);
    const file = join(t.stateDir, 'stolen-token');
    writeFileSync(file, stolen, { mode: 0o600 });
    const started = Date.now();
    const res = await revoke('token', '--token-file', file);
    expect(res.code, res.stderr).to.equal(0);
    expect(res.stdout).to.match(/^revoked token [A-Za-z0-9_-]+; auth pushed revocation set \d+ to the mesh\n$/);
    const refusal = await eventually('the revoked token refused', 10_000, () =>
      list(stolen).then(
        () => undefined,
        (err: { code: number; details: string }) => (err.code === 16 ? err.details : undefined),
      ),
    );
    // The gateway refuses it itself, before forwarding.
    expect(refusal).to.match(/^twokey gateway: revocation check failed: token [A-Za-z0-9_-]+ is revoked/);
    console.log(`      revoked token refused ${Date.now() - started} ms after the command started (process start included)`);
    await list(other);
    const jti = decodeJwt(stolen).jti!;
    expect((await listed()).some((e) => e.kind === 'jti' && e.value === jti)).to.equal(true);
    const audit = logLines(t.mesh, 'auth').find((l) => l['event'] === 'revocation.added' && l['jti'] === jti);
    expect(audit, 'the audit line').to.not.equal(undefined);
    expect(audit!['by']).to.deep.equal({ workload: 'spiffe://twokey.local/ns/twokey/sa/admin', subject: 'spiffe://twokey.local/ns/twokey/sa/admin' });
    // The decision that let it through names both keys.
    const decision = logLines(t.mesh, 'auth').find((l) => l['event'] === 'authz.decision' && l['method'] === '/twokey.auth.v1.Auth/RevokeToken');
    expect(decision).to.deep.include({ allow: true, peer_spiffe_id: 'spiffe://twokey.local/ns/twokey/sa/admin', subject: 'spiffe://twokey.local/ns/twokey/sa/admin', token_kind: 'service' });
  });

  it('disables a user through auth: her issued token is refused and she cannot log in; bob is untouched', async () => {
    const bob = await t.login('bob');
    const res = await revoke('user', '--username', 'bob');
    expect(res.code, res.stderr).to.equal(0);
    await eventually("bob's token refused", 10_000, () => list(bob).then(() => undefined, (err: { code: number }) => (err.code === 16 ? true : undefined)));
    await expectStatus(t.login('bob'), 'UNAUTHENTICATED');
    await list(await t.login('alice'));
  });

  it("another workload's certificate is refused PERMISSION_DENIED by auth, and nothing is recorded", async () => {
    const before = await listed();
    const res = await revoke('cert', '--serial', '0A1B2C', '--svid-dir', join(t.stateDir, 'svid', 'tagging'));
    expect(res.code).to.equal(1);
    expect(res.stderr).to.contain('auth refused: PERMISSION_DENIED');
    expect(res.stderr).to.contain('spiffe://twokey.local/ns/twokey/sa/tagging');
    expect(await listed()).to.deep.equal(before);
  });

  it('the admin certificate alone, or with any token but its own service token, is refused', async () => {
    const admin = await t.workload('admin', 'auth');
    const request = { serial_hex: '0A1B2C', not_after: 0 };
    // No token: the method needs revocations:admin.
    await expectStatus(unary(admin, 'RevokeCertificate', request), 'UNAUTHENTICATED');
    // A user's token (even an admin user's) lacks the scope.
    await expectStatus(unary(admin, 'RevokeCertificate', request, bearer(await t.login('alice'))), 'PERMISSION_DENIED');
    // Another workload's service token is bound to that workload's certificate.
    const tagging = await t.workload('tagging', 'auth');
    const taggingToken = (await unary<{ access_token: string }>(tagging, 'GetServiceToken', { audience: '' })).access_token;
    await expectStatus(unary(admin, 'RevokeCertificate', request, bearer(taggingToken)), 'UNAUTHENTICATED');
    // And admin's own service token from another certificate is refused the same way.
    const adminToken = (await unary<{ access_token: string }>(admin, 'GetServiceToken', { audience: '' })).access_token;
    await expectStatus(unary(tagging, 'RevokeCertificate', request, bearer(adminToken)), 'PERMISSION_DENIED');
    expect((await listed()).some((e) => e.value === 'A1B2C')).to.equal(false);
  });

  it('names the problem when auth cannot be reached, recording nothing', async () => {
    const res = await revoke('cert', '--serial', '0A1B2C', '--auth', '127.0.0.1:1');
    expect(res.code).to.equal(1);
    expect(res.stderr).to.contain('auth could not be reached (UNAVAILABLE)');
    expect((await listed()).some((e) => e.value === 'A1B2C')).to.equal(false);
  });
});
