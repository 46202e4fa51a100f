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
import { eventually, expectStatus, logLines, startTestMesh, withToken, type TestMesh } from '../e2e/mesh-harness.ts';
import { PostgresServer, skipWithoutPostgres } from './postgres-server.ts';

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
    database = await server.createDatabase('mesh');
    t = await startTestMesh({ env: { TWOKEY_DATABASE_URL: server.urlWithoutPassword(database), TWOKEY_DATABASE_PASSWORD_FILE: server.passwordFile } });
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
        { component: 'auth', version: 1 },
        { component: 'image-store', version: 1 },
        { component: 'tagging', version: 1 },
      ]);
      expect((await c.query('SELECT username FROM users ORDER BY username')).rows.map((r) => r.username)).to.include.members(['alice', 'bob']);
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

  it('SIGKILL of the image store during uploads, restarted: 0 acknowledged uploads lost, every upload tagged once', async () => {
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
    const processed = logLines(t!.mesh, 'tagging').filter((l) => l['event'] === 'tagging.processed' && l['outcome'] === 'tagged');
    const perImage = new Map<string, number>();
    for (const l of processed) perImage.set(String(l['image_id']), (perImage.get(String(l['image_id'])) ?? 0) + 1);
    const twice = acknowledged.filter((id) => (perImage.get(id) ?? 0) !== 1);
    console.log(`      image-store SIGKILL on PostgreSQL: attempted ${attempted}, failed ${failed}, acknowledged ${acknowledged.length}, lost ${lost.length}, tagged other than once ${twice.length}`);
    expect(lost).to.deep.equal([]);
    expect(twice).to.deep.equal([]);
    expect(acknowledged.length).to.be.at.least(25);
  });
});
