// The example mesh as real processes with auth, image-store and tagging on one PostgreSQL server
// (the password from a file, as from a Secret): alice's CRUD, bob's denials, asynchronous tagging,
// and a SIGKILL of the image store during uploads with nothing acknowledged lost.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Client } from '@grpc/grpc-js';
import { expect } from 'chai';
import pg from 'pg';
import { jpegWithGps, jpegWithoutExif } from '../../scripts/fixtures/gps-jpeg.ts';
import { unary } from '../../services/mesh-runtime/protos.ts';
import { workloadClient, type ServiceClientKind } from '../../scripts/local-mesh/clients.ts';
import { eventually, expectStatus, logLines, withToken, type TestMesh } from '../e2e/mesh-harness.ts';
import { PostgresServer, skipWithoutPostgres, startMeshOnPostgres } from './postgres-server.ts';
import { tagWrites } from './tag-writes.ts';

interface Image {
  id: string;
  owner: string;
  tags: string[];
  content: Buffer;
}

describe('example mesh on PostgreSQL, end to end', function () {
  this.timeout(120_000);
  let server: PostgresServer | undefined;
  let t: TestMesh | undefined;
  let database = '';
  before(async function () {
    this.timeout(120_000);
    skipWithoutPostgres(this);
    server = await PostgresServer.start();
    ({ database, mesh: t } = await startMeshOnPostgres(server, 'mesh'));
  });
  after(async () => {
    await t?.close();
    await server?.stop();
  });

  it('keeps users, images and the cursor in PostgreSQL, not in SQLite files, and never logs the password', async () => {
    const alice = await t!.login('alice');
    await unary<Image>(t!.gateway('image-store'), 'CreateImage', { name: 'x.jpg', content_type: 'image/jpeg', content: jpegWithoutExif(), tags: [] }, withToken(alice));
    for (const [service, file] of [['auth', 'auth.db'], ['image-store', 'images.db'], ['tagging', 'tagging.db']] as const) {
      expect(existsSync(join(t!.mesh.layout.dataDir(service), file)), file).to.equal(false);
    }
    const c = new pg.Client({ connectionString: server!.url(database) });
    await c.connect();
    try {
      const versions = (await c.query('SELECT component, version FROM twokey_schema_versions ORDER BY component')).rows;
      expect(versions).to.deep.equal([
        { component: 'auth', version: 2 },
        { component: 'image-store', version: 2 },
        { component: 'tagging', version: 1 },
      ]);
      expect((await c.query('SELECT username FROM users ORDER BY username')).rows.map((r) => r.username)).to.include.members(['alice', 'bob']);
      // The revocation set auth signs for the mesh is the replicas' shared one.
      expect((await c.query('SELECT seq FROM revocation_sequence WHERE id = 1')).rows).to.have.length(1);
    } finally {
      await c.end();
    }
    for (const service of ['auth', 'image-store', 'tagging']) {
      const text = logLines(t!.mesh, service).map((l) => JSON.stringify(l)).join('\n');
      expect(text, `${service} log`).to.not.contain(server!.password);
    }
  });

  it("serves alice's CRUD and async tagging, and refuses bob with PERMISSION_DENIED", async () => {
    const images: Client = t!.gateway('image-store');
    const alice = await t!.login('alice');
    const bob = await t!.login('bob');
    const photo = await unary<Image>(
      images,
      'CreateImage',
      { name: 'pg.jpg', content_type: 'image/jpeg', content: jpegWithGps({ latitude: 48.8584, longitude: 2.2945 }), tags: ['trip'] },
      withToken(alice),
    );
    const tagged = await eventually('the location tags', 20_000, async () => {
      const image = await unary<Image>(images, 'GetImage', { id: photo.id, without_content: true }, withToken(alice));
      return image.tags.includes('gps') ? image : undefined;
    });
    expect(tagged.tags).to.include.members(['trip', 'gps', 'geo:48.8584,2.2945']);
    await expectStatus(unary(images, 'GetImage', { id: photo.id, without_content: true }, withToken(bob)), 'PERMISSION_DENIED');
    await expectStatus(unary(images, 'DeleteImage', { id: photo.id }, withToken(bob)), 'PERMISSION_DENIED');
    const renamed = await unary<{ name: string }>(images, 'UpdateImage', { id: photo.id, name: 'renamed.jpg', content_type: '', content: Buffer.alloc(0) }, withToken(alice));
    expect(renamed.name).to.equal('renamed.jpg');
    await unary(images, 'DeleteImage', { id: photo.id }, withToken(alice));
    // Gone: a caller without images:read:any gets the same answer as for someone else's image.
    await expectStatus(unary(images, 'GetImage', { id: photo.id, without_content: true }, withToken(alice)), 'PERMISSION_DENIED');
  });

  it('SIGKILL of the image store during uploads, restarted: 0 acknowledged uploads lost, every upload tagged exactly once', async () => {
    const images: Client = t!.gateway('image-store');
    const alice = await t!.login('alice');
    const acknowledged: string[] = [];
    let attempted = 0;
    let failed = 0;
    const upload = async (i: number): Promise<void> => {
      attempted++;
      try {
        const content = jpegWithGps({ latitude: 10 + i / 100, longitude: 20 });
        const image = await unary<Image>(images, 'CreateImage', { name: `k${i}.jpg`, content_type: 'image/jpeg', content, tags: [] }, withToken(alice));
        acknowledged.push(image.id);
      } catch {
        failed++;
      }
    };
    for (let i = 0; i < 15; i++) await upload(i);
    const killing = t!.mesh.kill('image-store');
    for (let i = 15; i < 20; i++) await upload(i);
    await killing;
    await t!.mesh.start('image-store');
    for (let i = 20; i < 30; i++) {
      await eventually('the restarted image store', 15_000, async () => {
        const before = failed;
        await upload(i);
        if (failed === before) return true;
        attempted--;
        failed--;
        return undefined;
      });
    }
    const listed = await eventually('the listing', 10_000, async () =>
      unary<{ images: Image[] }>(images, 'ListImages', { owner: '', tag: '', page_size: 200, page_token: '' }, withToken(alice)),
    );
    const present = new Set(listed.images.map((i) => i.id));
    const lost = acknowledged.filter((id) => !present.has(id));
    await eventually('every upload tagged', 30_000, async () => {
      const page = await unary<{ images: Image[] }>(images, 'ListImages', { owner: '', tag: 'gps', page_size: 200, page_token: '' }, withToken(alice));
      const tagged = new Set(page.images.map((i) => i.id));
      return acknowledged.every((id) => tagged.has(id)) ? true : undefined;
    });
    // Exactly once, counted where it happens: one committed tag write per upload in the store's event
    // log. When the store dies after committing an upload's tags but before answering, tagging sees
    // a failure and handles that upload again after the restart: it reads the tags already there
    // ('already-tagged') and writes nothing, so its log may show no 'tagged' line for that upload.
    const writes = await tagWrites(server!.url(database), acknowledged);
    const lines = logLines(t!.mesh, 'tagging').filter((l) => l['event'] === 'tagging.processed');
    const handled = (id: string, outcome?: string) => lines.filter((l) => l['image_id'] === id && (outcome === undefined || l['outcome'] === outcome)).length;
    const taggedTwice = acknowledged.filter((id) => handled(id, 'tagged') > 1);
    const foundTagged = acknowledged.filter((id) => handled(id, 'already-tagged') > 0);
    console.log(
      `      image-store SIGKILL on PostgreSQL: attempted ${attempted}, failed ${failed}, acknowledged ${acknowledged.length}, lost ${lost.length}, ` +
        `tags written never ${writes.never.length}, more than once ${Object.keys(writes.more).length}, found already tagged on a retry ${foundTagged.length}`,
    );
    expect(lost).to.deep.equal([]);
    expect(writes.never).to.deep.equal([]);
    expect(writes.more).to.deep.equal({});
    expect(taggedTwice).to.deep.equal([]);
    expect(acknowledged.filter((id) => handled(id) === 0), 'uploads tagging never handled').to.deep.equal([]);
    expect(acknowledged.length).to.be.at.least(25);
  });

  it('two auth and two image-store replicas: calls alternating between them, a shared throttle, SIGKILL of one auth replica under login load', async () => {
    const mesh = t!.mesh;
    const authReplica = await mesh.startReplica('auth');
    const storeReplica = await mesh.startReplica('image-store');
    const closers: (() => void)[] = [];
    /** The gateway's certificate calling `service` at one replica's address. */
    const at = async (service: ServiceClientKind, address: string, workload = 'gateway'): Promise<Client> => {
      const endpoints = { ...mesh.endpoints, services: { ...mesh.endpoints.services, [service]: { ...mesh.endpoints.services[service]!, address } } };
      const { client, close } = await workloadClient(endpoints, workload, service);
      closers.push(close);
      return client;
    };
    try {
      const auths = [await at('auth', mesh.endpoints.services['auth']!.address!), await at('auth', authReplica.address)];
      const stores = [await at('image-store', mesh.endpoints.services['image-store']!.address!), await at('image-store', storeReplica.address)];
      const login = async (i: number, user: string, password = mesh.users[user]) =>
        (await unary<{ access_token: string }>(auths[i % 2]!, 'Login', { username: user, password })).access_token;

      // Tokens from either auth replica work on either image-store replica; each write is seen by the other.
      const alice = [await login(0, 'alice'), await login(1, 'alice')];
      const bob = await login(1, 'bob');
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) {
        const content = jpegWithGps({ latitude: 30 + i / 10, longitude: 40 });
        const created = await unary<Image>(stores[i % 2]!, 'CreateImage', { name: `r${i}.jpg`, content_type: 'image/jpeg', content, tags: [] }, withToken(alice[i % 2]));
        const read = await unary<Image>(stores[(i + 1) % 2]!, 'GetImage', { id: created.id, without_content: true }, withToken(alice[(i + 1) % 2]));
        expect(read.owner).to.equal('alice');
        await expectStatus(unary(stores[i % 2]!, 'GetImage', { id: created.id, without_content: true }, withToken(bob)), 'PERMISSION_DENIED');
        ids.push(created.id);
      }
      // Tagging watches the first image-store: uploads made through the replica reach it through the shared log.
      await eventually('every replicated upload tagged', 30_000, async () => {
        const page = await unary<{ images: Image[] }>(stores[1]!, 'ListImages', { owner: '', tag: 'gps', page_size: 200, page_token: '' }, withToken(alice[1]));
        const tagged = new Set(page.images.map((i) => i.id));
        return ids.every((id) => tagged.has(id)) ? true : undefined;
      });

      // Five wrong passwords from one caller, spread over the two auth replicas, hold that caller's
      // next attempt at bob back on both (the delay is counted in the shared database).
      for (let i = 0; i < 5; i++) await expectStatus(login(i, 'bob', 'wrong password, long enough'), 'UNAUTHENTICATED');
      await expectStatus(login(0, 'bob'), 'RESOURCE_EXHAUSTED');
      await expectStatus(login(1, 'bob'), 'RESOURCE_EXHAUSTED');

      // SIGKILL the auth replica during logins and exchanges: a client retries a failed call once on the other.
      const taggingAuth = [await at('auth', mesh.endpoints.services['auth']!.address!, 'tagging'), await at('auth', authReplica.address, 'tagging')];
      let attempted = 0;
      let failedFirstTry = 0;
      let lost = 0;
      const withRetry = async <T>(call: (replica: number) => Promise<T>, i: number): Promise<T | undefined> => {
        attempted++;
        try {
          return await call(i % 2);
        } catch {
          failedFirstTry++;
          try {
            return await call(0);
          } catch {
            lost++;
            return undefined;
          }
        }
      };
      const calls: Promise<unknown>[] = [];
      for (let i = 0; i < 40; i++) {
        if (i === 20) await mesh.killReplica(authReplica.id);
        calls.push(withRetry((r) => login(r, 'alice'), i));
        if (i % 4 === 0) {
          calls.push(
            withRetry(
              (r) => unary(taggingAuth[r]!, 'ExchangeToken', { subject_token: '', subject_user: 'alice', scope: 'images:tag', audience: mesh.endpoints.services['image-store']!.spiffeId }),
              i,
            ),
          );
        }
        await calls.at(-1);
      }
      await Promise.all(calls);
      console.log(`      auth replica SIGKILL under login/exchange load: attempted ${attempted}, failed on first try ${failedFirstTry}, lost after retry ${lost}`);
      expect(lost).to.equal(0);
      expect(failedFirstTry).to.be.at.most(attempted / 2);
    } finally {
      for (const close of closers) close();
    }
  });
});
