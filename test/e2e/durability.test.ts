// End to end: what survives a crash and a restart. Acknowledged uploads survive kill -9 of the
// image store; the tagging worker resumes from its cursor and tags each upload exactly once; a
// second start of the mesh reuses its state (CA, users, images).
import { readFileSync } from 'node:fs';
import type { Client } from '@grpc/grpc-js';
import { expect } from 'chai';
import { unary } from '../../services/mesh-runtime/protos.ts';
import { jpegWithGps, jpegWithoutExif } from '../../scripts/fixtures/gps-jpeg.ts';
import { startLocalMesh } from '../../scripts/local-mesh/local-mesh.ts';
import { eventually, expectStatus, logLines, removeState, startTestMesh, withToken, type TestMesh } from './mesh-harness.ts';

interface Image {
  id: string;
  owner: string;
  tags: string[];
  content: Buffer;
}

describe('example mesh durability, end to end', function () {
  this.timeout(90_000);
  let t: TestMesh | undefined;
  let stateDir: string;

  after(async function () {
    this.timeout(30_000);
    if (t !== undefined) await t.close();
    if (stateDir !== undefined) removeState(stateDir);
  });

  it('keeps every acknowledged upload across kill -9 of the image store', async () => {
    t = await startTestMesh({ cleanerInterval: '1h' });
    stateDir = t.stateDir;
    const alice = await t.login('alice');
    const images = t.gateway('image-store');
    const acknowledged: string[] = [];
    for (let i = 0; i < 10; i++) {
      const content = Buffer.concat([jpegWithoutExif(), Buffer.from([i])]);
      const image = await unary<Image>(images, 'CreateImage', { name: `n${i}.jpg`, content_type: 'image/jpeg', content, tags: [] }, withToken(alice));
      acknowledged.push(image.id);
    }
    const oldPid = t.mesh.pid('image-store');
    await t.mesh.kill('image-store');
    await expectStatus(unary(images, 'ListImages', { owner: '', tag: '', page_size: 0, page_token: '' }, withToken(alice)), 'UNAVAILABLE');
    await t.mesh.start('image-store');
    expect(t.mesh.pid('image-store')).to.not.equal(oldPid);
    const listed = await eventually('the restarted image store', 10_000, async () =>
      unary<{ images: Image[] }>(images, 'ListImages', { owner: '', tag: '', page_size: 200, page_token: '' }, withToken(alice)),
    );
    expect(listed.images.map((i) => i.id)).to.include.members(acknowledged);
    const last = await unary<Image>(images, 'GetImage', { id: acknowledged[9], without_content: false }, withToken(alice));
    expect(last.content.at(-1)).to.equal(9);
  });

  it('tags an upload made while tagging was down exactly once, after it comes back', async () => {
    const mesh = t!;
    const alice = await mesh.login('alice');
    const images: Client = mesh.gateway('image-store');
    await mesh.mesh.stopService('tagging');
    const photo = await unary<Image>(
      images,
      'CreateImage',
      { name: 'while-down.jpg', content_type: 'image/jpeg', content: jpegWithGps({ latitude: 51.5007, longitude: -0.1246 }), tags: [] },
      withToken(alice),
    );
    await mesh.mesh.start('tagging');
    const tagged = await eventually('the location tags', 20_000, async () => {
      const image = await unary<Image>(images, 'GetImage', { id: photo.id, without_content: true }, withToken(alice));
      return image.tags.includes('gps') ? image : undefined;
    });
    expect(tagged.tags).to.deep.equal(['geo:51.5007,-0.1246', 'gps']);
    // Restart again: the cursor is past this upload, so it is not processed a second time.
    await mesh.mesh.stopService('tagging');
    await mesh.mesh.start('tagging');
    // The barrier is an event, not a sleep: the worker handles the feed in sequence order from its
    // cursor, so once it has processed an upload made after the restart, any replay of the earlier
    // one would already be in its log.
    const fresh = await unary<Image>(
      images,
      'CreateImage',
      { name: 'after-restart.jpg', content_type: 'image/jpeg', content: jpegWithGps({ latitude: 48.8584, longitude: 2.2945 }), tags: [] },
      withToken(alice),
    );
    const processedLines = (imageId: string) => logLines(mesh.mesh, 'tagging').filter((l) => l['event'] === 'tagging.processed' && l['image_id'] === imageId);
    await eventually('the upload after the restart processed', 20_000, () => (processedLines(fresh.id).length > 0 ? true : undefined));
    expect(processedLines(fresh.id).map((l) => l['outcome'])).to.deep.equal(['tagged']);
    expect(processedLines(photo.id).map((l) => l['outcome'])).to.deep.equal(['tagged']);
  });

  it('refuses a second mesh on a state directory in use', async () => {
    let error: unknown;
    await startLocalMesh({ stateDir }).catch((err) => (error = err));
    expect(error).to.have.property('message').that.includes(`a mesh is already running from ${t!.mesh.layout.root} (pid ${process.pid})`);
    // The running mesh is untouched.
    await t!.login('bob');
  });

  it('reuses the state on a second start: same CA, same users, same images', async () => {
    const first = t!;
    const caBefore = readFileSync(first.mesh.endpoints.trustBundle, 'utf8');
    const usersBefore = readFileSync(first.mesh.layout.usersFile, 'utf8');
    const alice = await first.login('alice');
    const before = await unary<{ images: Image[] }>(first.gateway('image-store'), 'ListImages', { owner: '', tag: '', page_size: 200, page_token: '' }, withToken(alice));
    await first.close();
    t = undefined;

    t = await startTestMesh({ stateDir, cleanerInterval: '1h' });
    expect(readFileSync(t.mesh.endpoints.trustBundle, 'utf8')).to.equal(caBefore);
    expect(readFileSync(t.mesh.layout.usersFile, 'utf8')).to.equal(usersBefore);
    // alice's token from before the restart still verifies: the signing keys persisted.
    const after = await unary<{ images: Image[] }>(t.gateway('image-store'), 'ListImages', { owner: '', tag: '', page_size: 200, page_token: '' }, withToken(alice));
    expect(after.images.map((i) => i.id)).to.deep.equal(before.images.map((i) => i.id));
    await t.login('alice');
  });
});
