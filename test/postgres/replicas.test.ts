// The replicated example mesh as real processes on one PostgreSQL server: two auth and two
// image-store processes, every caller dialling both. Calls from one client reach both replicas
// (counted in each one's decision log); a replica SIGKILLed under load fails no read, keyed write
// or login at the end user; an upload repeated with its request id is stored once (rows counted).
import { randomUUID } from 'node:crypto';
import type { Client } from '@grpc/grpc-js';
import { expect } from 'chai';
import pg from 'pg';
import { jpegWithGps, jpegWithoutExif } from '../../scripts/fixtures/gps-jpeg.ts';
import { workloadClient } from '../../scripts/local-mesh/clients.ts';
import { unary } from '../../services/mesh-runtime/protos.ts';
import { eventually, expectStatus, logLines, withToken, type TestMesh } from '../e2e/mesh-harness.ts';
import { PostgresServer, skipWithoutPostgres, startMeshOnPostgres } from './postgres-server.ts';

interface Image {
  id: string;
  owner: string;
  name: string;
}

describe('replicated mesh on PostgreSQL: two auth and two image-store processes', function () {
  this.timeout(180_000);
  let server: PostgresServer | undefined;
  let t: TestMesh | undefined;
  let database = '';
  before(async function () {
    this.timeout(180_000);
    skipWithoutPostgres(this);
    server = await PostgresServer.start();
    // Every end user here logs in from 127.0.0.1, more than the gateway's 30 a minute per address
    // allow; that limit is test/adversarial/gateway-limits.test.ts's subject, not this file's.
    ({ database, mesh: t } = await startMeshOnPostgres(server, 'replicas', { replicas: 2, env: { TWOKEY_GATEWAY_LOGINS_PER_MINUTE_PER_SOURCE: '1000' } }));
  });
  after(async () => {
    await t?.close();
    await server?.stop();
  });

  /** Decision lines per process for calls whose x-request-id starts with `prefix`. */
  const served = (processes: readonly string[], prefix: string): number[] =>
    processes.map((p) => logLines(t!.mesh, p).filter((l) => l['event'] === 'authz.decision' && String(l['request_id'] ?? '').startsWith(prefix)).length);
  const query = async <R>(sql: string, values: unknown[] = []): Promise<R[]> => {
    const c = new pg.Client({ connectionString: server!.url(database) });
    await c.connect();
    try {
      return (await c.query(sql, values)).rows as R[];
    } finally {
      await c.end();
    }
  };
  const upload = (name: string, requestId?: string) => ({ name, content_type: 'image/jpeg', content: jpegWithoutExif(), tags: [], ...(requestId === undefined ? {} : { request_id: requestId }) });

  it('names both replicas to every caller, and calls from one client reach both (counted per replica)', async () => {
    const { mesh } = t!;
    expect(mesh.processesOf('image-store')).to.deep.equal(['image-store', 'image-store-2']);
    expect(mesh.endpoints.services['image-store']!.address).to.match(/^ipv4:127\.0\.0\.1:\d+,127\.0\.0\.1:\d+$/);
    const images: Client = t!.gateway('image-store');
    const auth: Client = t!.gateway('auth');
    const run = `spread-${randomUUID()}`;
    let token = '';
    for (let i = 0; i < 8; i++) {
      token = (await unary<{ access_token: string }>(auth, 'Login', { username: 'alice', password: mesh.users['alice'] }, withToken(undefined, `${run}-login-${i}`))).access_token;
    }
    for (let i = 0; i < 20; i++) await unary(images, 'ListImages', { owner: '', tag: '', page_size: 1, page_token: '' }, withToken(token, `${run}-list-${i}`));
    const stores = served(mesh.processesOf('image-store'), `${run}-list`);
    const auths = served(mesh.processesOf('auth'), `${run}-login`);
    console.log(`      20 ListImages through the gateway: image-store ${stores.join(', image-store-2 ')}; 8 logins: auth ${auths.join(', auth-2 ')}`);
    expect(stores.reduce((a, b) => a + b)).to.equal(20);
    expect(auths.reduce((a, b) => a + b)).to.equal(8);
    expect(stores.every((n) => n > 0), 'both image-store replicas served').to.equal(true);
    expect(auths.every((n) => n > 0), 'both auth replicas served').to.equal(true);
  });

  it('SIGKILL of an image-store replica, then of an auth replica, under load: 0 reads, keyed writes or logins failed at the end user; every upload stored once', async () => {
    const { mesh } = t!;
    const images: Client = t!.gateway('image-store');
    const auth: Client = t!.gateway('auth');
    const alice = await t!.login('alice');
    const run = `load-${randomUUID().slice(0, 8)}`;
    const failures: string[] = [];
    const acknowledged = new Map<string, string>();
    let done = 0;
    const TOTAL = 240;
    let killedStore: Promise<void> | undefined;
    let killedAuth: Promise<void> | undefined;
    const at = (n: number, what: () => Promise<void>): Promise<void> | undefined => (done === n ? what() : undefined);
    const worker = async (w: number): Promise<void> => {
      for (let i = 0; done < TOTAL; i++) {
        const requestId = randomUUID();
        const kind = i % 4;
        try {
          if (kind === 0) {
            const image = await unary<Image>(images, 'CreateImage', upload(`${run}-${w}-${i}.jpg`, requestId), withToken(alice));
            acknowledged.set(requestId, image.id);
          } else if (kind === 1) {
            await unary(images, 'ListImages', { owner: '', tag: '', page_size: 5, page_token: '' }, withToken(alice));
          } else if (kind === 2) {
            const any = [...acknowledged.values()].at(-1);
            if (any !== undefined) await unary(images, 'GetImage', { id: any, without_content: true }, withToken(alice));
          } else {
            await unary(auth, 'Login', { username: 'alice', password: mesh.users['alice'] });
          }
        } catch (err) {
          failures.push(`${['CreateImage', 'ListImages', 'GetImage', 'Login'][kind]}: ${(err as Error).message}`);
        }
        done++;
        killedStore ??= at(60, () => mesh.kill('image-store-2'));
        killedAuth ??= at(140, () => mesh.kill('auth-2'));
      }
    };
    await Promise.all([0, 1, 2, 3].map(worker));
    await Promise.all([killedStore, killedAuth]);
    const names = (await query<{ name: string }>('SELECT name FROM images WHERE name LIKE $1', [`${run}-%`])).map((r) => r.name);
    console.log(
      `      ${TOTAL} calls from 4 clients, image-store-2 SIGKILLed at 60, auth-2 at 140: failed ${failures.length}, uploads acknowledged ${acknowledged.size}, rows ${names.length}`,
    );
    expect(failures).to.deep.equal([]);
    expect(killedStore, 'the image-store replica was killed').to.not.equal(undefined);
    expect(killedAuth, 'the auth replica was killed').to.not.equal(undefined);
    expect(names.length, 'rows for the uploads').to.equal(acknowledged.size);
    expect(new Set(names).size).to.equal(names.length);
    expect(new Set(acknowledged.values()).size).to.equal(acknowledged.size);

    // Restarted on the same address, each replica is dialled again: the clients reconnect to it.
    await mesh.start('image-store-2');
    await mesh.start('auth-2');
    const again = `again-${randomUUID()}`;
    await eventually('calls reaching the restarted image-store-2', 20_000, async () => {
      await unary(images, 'ListImages', { owner: '', tag: '', page_size: 1, page_token: '' }, withToken(alice, `${again}-${randomUUID()}`));
      return served(['image-store-2'], again)[0]! > 0 ? true : undefined;
    });
  });

  it('the same upload repeated after its answer was lost is stored once, whichever replica serves the repeat; another subject or another request under the id is not a repeat', async () => {
    const { mesh } = t!;
    const images: Client = t!.gateway('image-store');
    const [alice, bob] = [await t!.login('alice'), await t!.login('bob')];
    const requestId = randomUUID();
    const name = `once-${requestId}.jpg`;
    // The first attempt reaches image-store-2 and is stored; its answer is treated as lost.
    const replica = mesh.endpoints.services['image-store']!.replicas![1]!;
    const direct = await workloadClient({ ...mesh.endpoints, services: { ...mesh.endpoints.services, 'image-store': { ...mesh.endpoints.services['image-store']!, address: replica.address } } }, 'gateway', 'image-store');
    let firstId: string;
    try {
      firstId = (await unary<Image>(direct.client, 'CreateImage', upload(name, requestId), withToken(alice))).id;
    } finally {
      direct.close();
    }
    // That replica dies; the user's repeat goes through the gateway to the other one.
    await mesh.kill('image-store-2');
    try {
      const repeat = await unary<Image>(images, 'CreateImage', upload(name, requestId), withToken(alice));
      expect(repeat.id).to.equal(firstId);
      const again = await unary<Image>(images, 'CreateImage', upload(name, requestId.toUpperCase()), withToken(alice));
      expect(again.id).to.equal(firstId);
      expect(await query('SELECT id FROM images WHERE name = $1', [name])).to.deep.equal([{ id: firstId }]);

      // Bob's upload under alice's id is his own request: a new image of his, never alice's.
      const bobs = await unary<Image>(images, 'CreateImage', upload(name, requestId), withToken(bob));
      expect(bobs.id).to.not.equal(firstId);
      expect(bobs.owner).to.equal('bob');
      // Another request under a used id is refused, naming the problem.
      const details = await expectStatus(unary(images, 'CreateImage', upload(`other-${name}`, requestId), withToken(alice)), 'ALREADY_EXISTS');
      expect(details).to.match(/request_id .* was already used for a different CreateImage request/);
      const rows = await query<{ owner: string }>('SELECT owner FROM images WHERE name IN ($1, $2) ORDER BY owner', [name, `other-${name}`]);
      expect(rows.map((r) => r.owner)).to.deep.equal(['alice', 'bob']);
      expect(await query('SELECT subject FROM request_keys WHERE request_id = $1 ORDER BY subject', [requestId])).to.deep.equal([{ subject: 'alice' }, { subject: 'bob' }]);
    } finally {
      await mesh.start('image-store-2');
    }
  });

  it("tagging's tag writes carry a request id, remembered under the image's owner", async () => {
    const images: Client = t!.gateway('image-store');
    const alice = await t!.login('alice');
    const photo = await unary<Image>(
      images,
      'CreateImage',
      { name: 'tagged.jpg', content_type: 'image/jpeg', content: jpegWithGps({ latitude: 48.8584, longitude: 2.2945 }), tags: [], request_id: randomUUID() },
      withToken(alice),
    );
    const keys = await eventually('the tag write', 30_000, async () => {
      const rows = await query<{ subject: string; method: string }>('SELECT subject, method FROM request_keys WHERE resource_id = $1 ORDER BY method', [photo.id]);
      return rows.length === 2 ? rows : undefined;
    });
    expect(keys).to.deep.equal([
      { subject: 'alice', method: 'CreateImage' },
      { subject: 'alice', method: 'SetTags' },
    ]);
  });
});
