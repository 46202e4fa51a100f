// A signing-key rotation with two auth processes on one PostgreSQL, under load: SIGHUP to one
// replica rotates once for both, both publish the same three keys, the other replica signs with
// the new key soon after, and no call fails, whichever key its token was signed with.
import type { Client } from '@grpc/grpc-js';
import { expect } from 'chai';
import { decodeProtectedHeader } from 'jose';
import pg from 'pg';
import { workloadClient } from '../../scripts/local-mesh/clients.ts';
import { unary } from '../../services/mesh-runtime/protos.ts';
import { eventually, logLines, withToken, type TestMesh } from '../e2e/mesh-harness.ts';
import { Load, printReport, sleep } from '../faults/load.ts';
import { PostgresServer, skipWithoutPostgres, startMeshOnPostgres } from './postgres-server.ts';

const EMPTY_LIST = { owner: '', tag: '', page_size: 10, page_token: '' };

function kidOf(token: string): string {
  return decodeProtectedHeader(token).kid!;
}

describe('signing-key rotation with two auth replicas on PostgreSQL, under load', function () {
  this.timeout(180_000);
  let server: PostgresServer | undefined;
  let t: TestMesh | undefined;
  let database = '';
  const closers: (() => void)[] = [];
  before(async function () {
    this.timeout(120_000);
    skipWithoutPostgres(this);
    server = await PostgresServer.start();
    ({ database, mesh: t } = await startMeshOnPostgres(server, 'rotation'));
  });
  after(async () => {
    for (const close of closers) close();
    await t?.close();
    await server?.stop();
  });

  it('SIGHUP to one replica: one new key, the same JWKS on both, the other replica signs with it, 0 failed calls', async () => {
    const mesh = t!.mesh;
    const replica = await mesh.startReplica('auth');
    /** The gateway's certificate calling auth at one replica's address. */
    const authAt = async (address: string): Promise<Client> => {
      const endpoints = { ...mesh.endpoints, services: { ...mesh.endpoints.services, auth: { ...mesh.endpoints.services['auth']!, address } } };
      const { client, close } = await workloadClient(endpoints, 'gateway', 'auth');
      closers.push(close);
      return client;
    };
    // [0]: the process the rest of the mesh uses, which will not be told to rotate; [1]: the replica that will.
    const auths = [await authAt(mesh.endpoints.services['auth']!.address!), await authAt(replica.address)];
    const images = t!.gateway('image-store');
    const login = async (r: number): Promise<string> =>
      (await unary<{ access_token: string }>(auths[r]!, 'Login', { username: 'alice', password: mesh.users['alice'] })).access_token;
    const kids = async (r: number): Promise<string[]> =>
      (JSON.parse((await unary<{ jwks_json: string }>(auths[r]!, 'GetJwks', {})).jwks_json) as { keys: { kid: string }[] }).keys.map((k) => k.kid);

    const before = await kids(0);
    expect(await kids(1), 'both replicas publish the same keys').to.deep.equal(before);
    const [current, next] = before as [string, string];
    const oldTokens = [await login(0), await login(1)];
    expect(oldTokens.map(kidOf)).to.deep.equal([current, current]);

    // Each worker logs in at one replica or the other and calls the image store through the
    // gateway with that token; every fourth call uses a token from before the rotation.
    const mints: { replica: number; kid: string; at: number }[] = [];
    const load = new Load('auth key rotation, two replicas on PostgreSQL', 4, async (i) => {
      if (i % 4 === 3) {
        await unary(images, 'ListImages', EMPTY_LIST, withToken(oldTokens[i % 2]));
        return;
      }
      const r = i % 2;
      const token = await login(r);
      mints.push({ replica: r, kid: kidOf(token), at: Date.now() });
      await unary(images, 'ListImages', EMPTY_LIST, withToken(token));
    });
    await eventually('load under way', 20_000, () => (load.report.succeeded >= 20 ? true : undefined));

    process.kill(mesh.pid(replica.id)!, 'SIGHUP');
    const hupAt = Date.now();
    const after = await eventually('the replica to publish the rotated keys', 10_000, async () => {
      const k = await kids(1);
      return k[0] === next ? k : undefined;
    });
    const rotatedAt = Date.now();
    // The other process learns of the rotation (NOTIFY, or its key re-read every 2 s) and signs with the new key.
    const switched = await eventually('the other replica to sign with the new key', 10_000, () => mints.find((m) => m.replica === 0 && m.kid === next));
    const calls = load.report.attempted;
    await eventually('more load after the switch', 20_000, () => (load.report.attempted >= calls + 40 ? true : undefined));
    await sleep(200);
    const report = await load.stop();

    // Tokens the other replica signed with the old key once the new one was already current: they
    // verify because the old key stays published as previous.
    const oldKeyAfterRotation = mints.filter((m) => m.replica === 0 && m.kid === current && m.at > rotatedAt).length;
    const count = (replica: number, kid: string): number => mints.filter((m) => m.replica === replica && m.kid === kid).length;
    printReport(
      report,
      `replica published the rotation within ${rotatedAt - hupAt} ms of SIGHUP, the other replica's first token with the new key ${switched.at - hupAt} ms after SIGHUP; ` +
        `logins old/new key: rotating replica ${count(1, current)}/${count(1, next)}, other ${count(0, current)}/${count(0, next)} (${oldKeyAfterRotation} old-key tokens after the rotation was published)`,
    );
    expect(report.failures).to.deep.equal({});
    expect(report.failed).to.equal(0);
    expect(report.succeeded).to.be.at.least(60);

    // Exactly one rotation: the old next is current, one fresh next, the old current is previous.
    expect(after).to.have.length(3);
    const fresh = after[1]!;
    expect(after).to.deep.equal([next, fresh, current]);
    expect(before).to.not.include(fresh);
    expect(await kids(0), "the other replica's JWKS").to.deep.equal(after);
    expect(await kids(1), "the rotating replica's JWKS, later").to.deep.equal(after);
    const c = new pg.Client({ connectionString: server!.url(database) });
    await c.connect();
    try {
      const rows = (await c.query('SELECT kid, state FROM signing_keys ORDER BY kid')).rows as { kid: string; state: string }[];
      expect(Object.fromEntries(rows.map((r) => [r.state, r.kid]))).to.deep.equal({ current: next, next: fresh, previous: current });
      expect(rows).to.have.length(3);
    } finally {
      await c.end();
    }
    const rotations = [...logLines(mesh, 'auth'), ...logLines(mesh, replica.id)].filter((l) => l['event'] === 'keys.rotated' && l['why'] === 'SIGHUP');
    expect(rotations.map((l) => l['kid'])).to.deep.equal([next]);
    expect(logLines(mesh, replica.id).filter((l) => l['event'] === 'keys.rotated').map((l) => l['kid'])).to.deep.equal([next]);

    // Both replicas now sign with the new key; tokens from before still verify (the old key is published as previous).
    expect([kidOf(await login(0)), kidOf(await login(1))]).to.deep.equal([next, next]);
    for (const old of oldTokens) await unary(images, 'ListImages', EMPTY_LIST, withToken(old));
  });
});
