// joinMesh against the running example mesh's auth: a member that holds keys and a fresh
// revocation set serves; one that loses auth stops reporting SERVING and refuses UNAVAILABLE.
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { pino } from 'pino';
import { createMeshClient } from '../../services/authz/client.ts';
import { joinMesh, type MeshMember } from '../../services/authz/join-mesh.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { ImageStoreClient } from '../../services/mesh-runtime/protos.ts';
import { DEFAULT_REGISTRY } from '../../scripts/local-mesh/local-mesh.ts';
import { eventually, removeState, startTestMesh, type TestMesh } from './mesh-harness.ts';

describe('joinMesh against a running auth', function () {
  this.timeout(120_000);
  let t: TestMesh;
  let member: MeshMember | undefined;
  const lines: Record<string, unknown>[] = [];

  before(async () => {
    t = await startTestMesh();
  });

  after(async () => {
    await member?.close();
    await t?.close();
    if (t !== undefined) removeState(t.stateDir);
  });

  it('serves once it holds the keys and a revocation set, then reports NOT_SERVING and refuses UNAVAILABLE when the set goes stale, saying why', async () => {
    const svidRoot = t.mesh.endpoints.svidRoot;
    const sink = new Writable({ write: (chunk: Buffer, _enc, done) => (lines.push(JSON.parse(chunk.toString())), done()) });
    // A second image-store (its identity is granted GetJwks and WatchRevocations), serving ImageStore with a stub.
    member = await joinMesh({
      registry: DEFAULT_REGISTRY,
      svidDir: join(svidRoot, 'image-store'),
      authAddress: t.mesh.endpoints.services['auth']!.address!,
      logger: pino({ base: null }, sink),
      // Above auth's 2 s heartbeat with room to spare, so only auth's absence makes the set stale.
      revocationMaxStalenessMs: 5000,
    });
    expect(member.keys.kids.length).to.be.above(0);
    expect(member.revocation.current).to.not.equal(null);
    member.addService('twokey.images.v1.ImageStore', { ListImages: (_call: unknown, cb: (e: null, r: object) => void) => cb(null, { images: [], next_page_token: '' }) });
    const address = `127.0.0.1:${await member.listen('127.0.0.1:0')}`;
    expect(member.health.status('')).to.equal('SERVING');
    expect(member.notReadyReason()).to.equal(null);

    const svid = await SvidSource.open(join(svidRoot, 'gateway'), { trustDomain: 'twokey.local' });
    const client = createMeshClient(ImageStoreClient, address, { svid, serverId: 'spiffe://twokey.local/ns/twokey/sa/image-store' });
    const token = await t.login('alice');
    const list = (): Promise<ServiceError | object> =>
      new Promise((resolve) => {
        const md = new Metadata();
        md.set('authorization', `Bearer ${token}`);
        (client as unknown as { ListImages: Function }).ListImages({ page_size: 1 }, md, (err: ServiceError | null, res: object) => resolve(err ?? res));
      });
    try {
      expect(await list()).to.deep.equal({ images: [], next_page_token: '' });
      await t.mesh.stopService('auth');
      const refused = (await eventually('a call refused UNAVAILABLE', 20_000, async () => {
        const r = await list();
        return 'code' in r && (r as ServiceError).code === status.UNAVAILABLE ? (r as ServiceError) : undefined;
      })) as ServiceError;
      expect(refused.details).to.match(/^twokey: peer check failed: the revocation list is stale: .* \(decision [0-9a-f-]{36}\)$/);
      await eventually('NOT_SERVING', 5000, () => (member!.health.status('') === 'NOT_SERVING' ? true : undefined));
      expect(member.notReadyReason()).to.match(/^the revocation set is \d+ s old \(bound 5 s\): auth unreachable$/);
      const notReady = await eventually('the mesh.not_ready line', 5000, () => lines.find((l) => l['event'] === 'mesh.not_ready'));
      expect(notReady['reason']).to.match(/revocation set is \d+ s old/);
    } finally {
      client.close();
      svid.close();
    }
  });
});
