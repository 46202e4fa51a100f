// PostgreSQL stopped (fast shutdown) and started again under the running mesh: auth, image-store
// and tagging report NOT_SERVING while liveness stays SERVING, every call in between fails with
// UNAVAILABLE, and after the restart the same processes serve again, with nothing lost.
import type { Client, ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { jpegWithGps } from '../../scripts/fixtures/gps-jpeg.ts';
import { checkHealth, LIVENESS_SERVICE } from '../../services/authz/health-server.ts';
import { unary } from '../../services/mesh-runtime/protos.ts';
import { STATUS_NAMES, eventually, withToken, type TestMesh } from '../e2e/mesh-harness.ts';
import { PostgresServer, skipWithoutPostgres, startMeshOnPostgres } from './postgres-server.ts';

interface Image {
  id: string;
  owner: string;
  name: string;
  tags: string[];
}

/** The services whose readiness follows the database, and those with none to follow. */
const ON_POSTGRES = ['auth', 'image-store', 'tagging'] as const;
const WITHOUT_DATABASE = ['gateway', 'cleaner'] as const;
const ALL = [...ON_POSTGRES, ...WITHOUT_DATABASE];

/** Polls until `ok`, for at most `timeoutMs`; resolves to the milliseconds it took. */
async function waitMs(what: string, timeoutMs: number, ok: () => Promise<boolean>): Promise<number> {
  const started = Date.now();
  await eventually(what, timeoutMs, async () => ((await ok()) ? true : undefined));
  return Date.now() - started;
}

describe('PostgreSQL restarted under the running mesh', function () {
  this.timeout(180_000);
  let server: PostgresServer | undefined;
  let t: TestMesh | undefined;
  const exits: string[] = [];
  before(async function () {
    this.timeout(120_000);
    skipWithoutPostgres(this);
    server = await PostgresServer.start();
    ({ mesh: t } = await startMeshOnPostgres(server, 'restart'));
    t.mesh.onUnexpectedExit = (name, code, signal) => exits.push(`${name} exited (code ${code}, signal ${signal})`);
  });
  after(async () => {
    await t?.close();
    await server?.stop();
  });

  it('NOT_SERVING (liveness SERVING) while it is down, every call UNAVAILABLE, then SERVING and serving again without a process restart', async () => {
    const mesh = t!.mesh;
    const images: Client = t!.gateway('image-store');
    const auth: Client = t!.gateway('auth');
    const health = (service: string, name = ''): Promise<string> => checkHealth(mesh.endpoints.services[service]!.health, name).catch(() => 'no answer');
    const login = async (): Promise<string> => (await unary<{ access_token: string }>(auth, 'Login', { username: 'alice', password: mesh.users['alice'] })).access_token;
    const create = (token: string, i: number): Promise<Image> =>
      unary<Image>(images, 'CreateImage', { name: `pg${i}.jpg`, content_type: 'image/jpeg', content: jpegWithGps({ latitude: 45 + i / 100, longitude: 7 }), tags: [] }, withToken(token));
    const list = async (token: string): Promise<Image[]> =>
      (await unary<{ images: Image[] }>(images, 'ListImages', { owner: '', tag: '', page_size: 200, page_token: '' }, withToken(token))).images;

    const alice = await login();
    const before = await create(alice, 0);
    expect((await list(alice)).map((i) => i.id)).to.include(before.id);
    const pids = new Map(ALL.map((s) => [s, mesh.pid(s)]));
    for (const s of ALL) expect(pids.get(s), s).to.be.a('number');

    await server!.pause();
    const downMs: Record<string, number> = {};
    for (const s of ON_POSTGRES) downMs[s] = await waitMs(`${s} NOT_SERVING`, 15_000, async () => (await health(s)) === 'NOT_SERVING');
    for (const s of ON_POSTGRES) {
      expect(await health(s, mesh.endpoints.services[s]!.serves[0]!), `${s}'s gRPC service`).to.equal('NOT_SERVING');
    }
    // The kubelet's liveness probe must keep passing: no restart cures a database outage.
    for (const s of ALL) expect(await health(s, LIVENESS_SERVICE), `${s} liveness`).to.equal('SERVING');
    for (const s of WITHOUT_DATABASE) expect(await health(s), `${s} readiness`).to.equal('SERVING');

    // Calls while it is down: each one must fail with UNAVAILABLE, none may answer.
    let attempted = 0;
    let failed = 0;
    const wrong: string[] = [];
    const whileDown = async (what: string, call: () => Promise<unknown>): Promise<void> => {
      attempted++;
      try {
        await call();
        wrong.push(`${what} succeeded`);
      } catch (err) {
        failed++;
        const code = STATUS_NAMES[(err as ServiceError).code];
        if (code !== 'UNAVAILABLE') wrong.push(`${what}: ${code} ${(err as ServiceError).details}`);
      }
    };
    for (let i = 0; i < 5; i++) {
      await whileDown('Login', login);
      await whileDown('ListImages', () => list(alice));
      await whileDown('CreateImage', () => create(alice, 100 + i));
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const s of ALL) expect(await health(s, LIVENESS_SERVICE), `${s} liveness after the calls`).to.equal('SERVING');

    const restartedAt = Date.now();
    await server!.resume();
    const upMs: Record<string, number> = {};
    for (const s of ON_POSTGRES) upMs[s] = await waitMs(`${s} SERVING again`, 30_000, async () => (await health(s)) === 'SERVING');
    let retried = 0;
    const again = <T>(what: string, call: () => Promise<T>): Promise<T> =>
      eventually(what, 30_000, async () => {
        try {
          return await call();
        } catch (err) {
          retried++;
          throw err;
        }
      });
    const fresh = await again('a login', login);
    const listed = await again('ListImages', () => list(fresh));
    const after = await again('CreateImage', () => create(fresh, 1));
    const servingMs = Date.now() - restartedAt;
    // The store never answered a write while the database was down, and lost none from before.
    expect(listed.map((i) => i.id)).to.include(before.id);
    expect(listed.filter((i) => /^pg1\d\d\.jpg$/.test(i.name)).map((i) => i.name), 'uploads refused while it was down').to.deep.equal([]);
    // tagging follows the log again: the upload made after the restart gets its location tags.
    await eventually('the new upload tagged', 30_000, async () => {
      const page = await unary<{ images: Image[] }>(images, 'ListImages', { owner: '', tag: 'gps', page_size: 200, page_token: '' }, withToken(fresh));
      return page.images.some((i) => i.id === after.id) ? true : undefined;
    });

    const restarted = ALL.filter((s) => mesh.pid(s) !== pids.get(s));
    console.log(
      `      PostgreSQL fast shutdown under the mesh: NOT_SERVING after ${ON_POSTGRES.map((s) => `${s} ${downMs[s]} ms`).join(', ')}; ` +
        `calls while down: attempted ${attempted}, failed ${failed} (UNAVAILABLE), wrong answers ${wrong.length}; ` +
        `after the restart SERVING in ${ON_POSTGRES.map((s) => `${s} ${upMs[s]} ms`).join(', ')}, login/ListImages/CreateImage answered ${servingMs} ms after it (${retried} refused meanwhile); ` +
        `processes restarted ${restarted.length}, lost 0`,
    );
    expect(wrong).to.deep.equal([]);
    expect(failed).to.equal(attempted);
    expect(restarted).to.deep.equal([]);
    expect(exits).to.deep.equal([]);
    for (const s of ALL) expect(await health(s), s).to.equal('SERVING');
  });
});
