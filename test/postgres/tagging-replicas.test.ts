// Several tagging processes on one PostgreSQL cursor: only the lease holder follows the upload log,
// a clean stop hands it over at once, a SIGKILL after the lease lapses; every upload is tagged
// exactly once (counted in the image store's event log) and none is missed.
import type { Client } from '@grpc/grpc-js';
import { expect } from 'chai';
import { jpegWithGps } from '../../scripts/fixtures/gps-jpeg.ts';
import { unary } from '../../services/mesh-runtime/protos.ts';
import { eventually, logLines, withToken, type TestMesh } from '../e2e/mesh-harness.ts';
import { PostgresServer, skipWithoutPostgres, startMeshOnPostgres } from './postgres-server.ts';
import { tagWrites } from './tag-writes.ts';

interface Image {
  id: string;
  tags: string[];
}

interface Processed {
  process: string;
  outcome: string;
}

describe('two tagging processes on one PostgreSQL cursor', function () {
  this.timeout(240_000);
  let server: PostgresServer | undefined;
  let t: TestMesh | undefined;
  let database = '';
  before(async function () {
    this.timeout(120_000);
    skipWithoutPostgres(this);
    server = await PostgresServer.start();
    ({ database, mesh: t } = await startMeshOnPostgres(server, 'tagging'));
  });
  after(async () => {
    await t?.close();
    await server?.stop();
  });

  it('uploads while two run, through a clean stop and a SIGKILL of the lease holder: every upload tagged exactly once, none missed', async () => {
    const mesh = t!.mesh;
    const processes = ['tagging', (await mesh.startReplica('tagging')).id];
    const images: Client = t!.gateway('image-store');
    const alice = await t!.login('alice');
    const acknowledged: string[] = [];
    let attempted = 0;
    let failed = 0;
    const upload = async (i: number): Promise<string | undefined> => {
      attempted++;
      try {
        const content = jpegWithGps({ latitude: 20 + i / 100, longitude: 30 });
        const image = await unary<Image>(images, 'CreateImage', { name: `t${i}.jpg`, content_type: 'image/jpeg', content, tags: [] }, withToken(alice));
        acknowledged.push(image.id);
        return image.id;
      } catch {
        failed++;
        return undefined;
      }
    };
    const uploads = async (from: number, to: number): Promise<string[]> => {
      const ids: string[] = [];
      for (let i = from; i < to; i++) {
        const id = await upload(i);
        if (id !== undefined) ids.push(id);
      }
      return ids;
    };
    /** Every tagging.processed line of every tagging process so far, by image. */
    const processed = (): Map<string, Processed[]> => {
      const byImage = new Map<string, Processed[]>();
      for (const process of processes) {
        for (const l of logLines(mesh, process)) {
          if (l['event'] !== 'tagging.processed') continue;
          const id = String(l['image_id']);
          byImage.set(id, [...(byImage.get(id) ?? []), { process, outcome: String(l['outcome']) }]);
        }
      }
      return byImage;
    };
    const allTagged = (ids: readonly string[], timeoutMs: number): Promise<true> =>
      eventually(`${ids.length} uploads tagged`, timeoutMs, async () => {
        const page = await unary<{ images: Image[] }>(images, 'ListImages', { owner: '', tag: 'gps', page_size: 200, page_token: '' }, withToken(alice));
        const tagged = new Set(page.images.map((i) => i.id));
        return ids.every((id) => tagged.has(id)) ? true : undefined;
      });
    const processesOf = (ids: readonly string[]): Set<string> => {
      const lines = processed();
      return new Set(ids.flatMap((id) => (lines.get(id) ?? []).map((p) => p.process)));
    };

    // Both run: one holds the lease and follows the log, the other waits.
    const first = await uploads(0, 10);
    await allTagged(first, 30_000);
    const firstHolders = processesOf(first);
    expect([...firstHolders], 'processes that tagged while both ran').to.have.length(1);
    const holder = [...firstHolders][0]!;
    const other = processes.find((p) => p !== holder)!;

    // A clean stop of the holder during uploads releases the lease: the other takes over at once.
    const second = await uploads(10, 13);
    const stopping = mesh.stopService(holder);
    second.push(...(await uploads(13, 18)));
    await stopping;
    const stoppedAt = Date.now();
    second.push(...(await uploads(18, 20)));
    await allTagged(second, 30_000);
    const handoverMs = Date.now() - stoppedAt;
    expect(processesOf(second), 'the other process tagged after the stop').to.include(other);

    // SIGKILL of the new holder during uploads: nothing is released, so a process started now takes
    // over once the lease term (15 s) lapses, from the cursor the dead one advanced.
    const third = await uploads(20, 25);
    await mesh.killReplica(other);
    const killedAt = Date.now();
    third.push(...(await uploads(25, 30)));
    processes.push((await mesh.startReplica('tagging')).id);
    await allTagged(third, 60_000);
    const takeoverMs = Date.now() - killedAt;
    expect(processesOf(third), 'the process started after the kill tagged').to.include(processes[2]);

    // Exactly once: one committed tag write per upload in the store's event log, and at most one
    // 'tagged' line per upload. A holder killed between the store's commit and its own log line
    // leaves the upload to its successor, which finds the tags there ('already-tagged') and writes nothing.
    const listed = await unary<{ images: Image[] }>(images, 'ListImages', { owner: '', tag: '', page_size: 200, page_token: '' }, withToken(alice));
    const present = new Set(listed.images.map((i) => i.id));
    const lost = acknowledged.filter((id) => !present.has(id));
    const writes = await tagWrites(server!.url(database), acknowledged);
    const lines = processed();
    const taggedTwice = acknowledged.filter((id) => (lines.get(id) ?? []).filter((p) => p.outcome === 'tagged').length > 1);
    const unseen = acknowledged.filter((id) => (lines.get(id) ?? []).length === 0);
    const replays = acknowledged.filter((id) => (lines.get(id) ?? []).length > 1);
    const by = processes.map((p) => `${p} ${acknowledged.filter((id) => (lines.get(id) ?? []).some((l) => l.process === p)).length}`).join(', ');
    console.log(
      `      tagging replicas on PostgreSQL: attempted ${attempted}, failed ${failed}, lost ${lost.length}; tag writes: never ${writes.never.length}, more than once ${Object.keys(writes.more).length}; ` +
        `handled by ${by}; replayed after a kill ${replays.length}; tagged ${handoverMs} ms after the clean stop, ${takeoverMs} ms after the SIGKILL (lease 15 s)`,
    );
    expect(failed).to.equal(0);
    expect(lost).to.deep.equal([]);
    expect(writes.never).to.deep.equal([]);
    expect(writes.more).to.deep.equal({});
    expect(taggedTwice).to.deep.equal([]);
    expect(unseen).to.deep.equal([]);
    expect(replays.length, 'uploads handled twice (only the one in flight at the kill may be)').to.be.at.most(1);
  });
});
