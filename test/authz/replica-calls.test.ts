// Mesh clients against two replicas over real mutual TLS: calls spread round-robin, an impostor
// address gets none, and a call is repeated on the other replica only when the protos say it is
// safe (a read, or a write with a request id), only on UNAVAILABLE, never once the answer began,
// and within the retry budget.
import { randomUUID } from 'node:crypto';
import { Metadata, experimental, makeClientConstructor, status, type ChannelOptions, type sendUnaryData, type ServerUnaryCall, type ServiceDefinition } from '@grpc/grpc-js';
import { expect } from 'chai';
import { createMeshClient } from '../../services/authz/client.ts';
import { createMeshServer, type MeshServer } from '../../services/authz/server.ts';
import { DEFAULT_PROTO_ROOT, MethodCatalog } from '../../services/authz/method-catalog.ts';
import { carriesRequestId, meshServiceConfig, rawFieldLength } from '../../services/authz/retry-policy.ts';
import { TestMesh, type TestClient, type TestServer } from '../../services/authz/testing/index.ts';

const SERVICE = 'twokey.images.v1.ImageStore';
const CALLER = { as: 'gateway', grants: [`/${SERVICE}/*`] };
type Behaviour = 'ok' | 'unavailable' | 'headers-then-unavailable' | 'permission-denied';

interface Replica {
  server: TestServer;
  /** Calls its handlers ran, by method. */
  calls: Record<string, number>;
  behaviour: Behaviour;
}

const image = { id: 'img_0', owner: 'alice', name: 'a', content_type: 'image/png', content: Buffer.alloc(0), tags: [], created_at_ms: '0', updated_at_ms: '0', size_bytes: '0' };

describe('mesh clients over two replicas', function () {
  this.timeout(30_000);
  let mesh: TestMesh;
  let replicas: Replica[];
  let impostor: Replica;
  let token: string;

  async function replica(name: string): Promise<Replica> {
    const r: Replica = { server: undefined as unknown as TestServer, calls: {}, behaviour: 'ok' };
    const handler =
      (method: string) =>
      (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>): void => {
        r.calls[method] = (r.calls[method] ?? 0) + 1;
        if (r.behaviour === 'unavailable') return callback({ code: status.UNAVAILABLE, details: `${name} is going away` });
        if (r.behaviour === 'permission-denied') return callback({ code: status.PERMISSION_DENIED, details: 'no' });
        if (r.behaviour === 'headers-then-unavailable') {
          call.sendMetadata(new Metadata());
          setTimeout(() => callback({ code: status.UNAVAILABLE, details: `${name} failed after answering` }), 10);
          return;
        }
        callback(null, image);
      };
    r.server = await mesh.serve(name, { [SERVICE]: { GetImage: handler('GetImage'), CreateImage: handler('CreateImage'), DeleteImage: handler('DeleteImage') } });
    return r;
  }

  const target = (...rs: Replica[]): string => `ipv4:${rs.map((r) => r.server.address).join(',')}`;
  const client = (rs: Replica[], opts: { maxTokens?: number } = {}): TestClient => {
    const ctor = makeClientConstructor(mesh.catalog.definition[SERVICE] as ServiceDefinition, SERVICE);
    return createMeshClient(ctor, target(...rs), {
      svid: mesh.identity(CALLER.as, CALLER.grants),
      serverId: mesh.spiffeId('image-store'),
      retry: { catalog: mesh.catalog, ...(opts.maxTokens === undefined ? {} : { budget: { maxTokens: opts.maxTokens, tokenRatio: 0.1 } }) },
    }) as TestClient;
  };
  const call = (c: TestClient, method: string, request: object): Promise<{ ok: boolean; code?: number }> => {
    const md = new Metadata();
    md.set('authorization', `Bearer ${token}`);
    return new Promise((resolve) =>
      c[method]!(request, md, { deadline: Date.now() + 5000 }, (err: { code: number } | null) => resolve(err === null ? { ok: true } : { ok: false, code: err.code })),
    );
  };
  /** Calls until both replicas have served one, so both connections are up (bounded). */
  const warm = async (c: TestClient): Promise<void> => {
    for (let i = 0; i < 50 && !replicas.every((r) => (r.calls['GetImage'] ?? 0) > 0); i++) await call(c, 'GetImage', { id: 'img_0' });
    expect(replicas.every((r) => (r.calls['GetImage'] ?? 0) > 0), 'both replicas reached').to.equal(true);
    for (const r of replicas) r.calls = {};
  };
  const total = (method: string): number => replicas.reduce((n, r) => n + (r.calls[method] ?? 0), 0);

  beforeEach(async () => {
    mesh = await TestMesh.create({ protoRoots: [DEFAULT_PROTO_ROOT] });
    replicas = [await replica('image-store'), await replica('image-store')];
    impostor = await replica('tagging');
    token = await mesh.tokens.userToken('alice', ['images:read', 'images:write', 'images:delete']);
  });
  afterEach(() => mesh.close());

  it('spreads calls from one client over both replicas (round_robin)', async () => {
    const c = client(replicas);
    for (let i = 0; i < 20; i++) expect(await call(c, 'GetImage', { id: 'img_0' })).to.deep.equal({ ok: true });
    const counts = replicas.map((r) => r.calls['GetImage'] ?? 0);
    console.log(`      20 reads from one client: ${counts.join(' and ')} per replica`);
    expect(counts.every((n) => n > 0), 'every replica served some').to.equal(true);
    c.close();
  });

  it('checks the SPIFFE ID on every address: a valid certificate of another workload among the replicas gets no call', async () => {
    const c = client([replicas[0]!, impostor]);
    for (let i = 0; i < 10; i++) expect(await call(c, 'GetImage', { id: 'img_0' })).to.deep.equal({ ok: true });
    expect(impostor.calls).to.deep.equal({});
    expect(replicas[0]!.calls['GetImage']).to.equal(10);
    c.close();
  });

  it('repeats a read refused UNAVAILABLE on the other replica: every call succeeds', async () => {
    const c = client(replicas);
    await warm(c);
    replicas[0]!.behaviour = 'unavailable';
    const results = [];
    for (let i = 0; i < 10; i++) results.push(await call(c, 'GetImage', { id: 'img_0' }));
    expect(results.filter((r) => !r.ok)).to.deep.equal([]);
    expect(replicas[1]!.calls['GetImage']).to.equal(10);
    c.close();
  });

  it('repeats a write only when it carries a request id; a write without one fails once, never runs twice', async () => {
    const c = client(replicas);
    await warm(c);
    replicas[0]!.behaviour = 'unavailable';
    const keyed = [];
    for (let i = 0; i < 10; i++) keyed.push(await call(c, 'CreateImage', { name: 'a', content_type: 'image/png', content: Buffer.from('x'), request_id: randomUUID() }));
    expect(keyed.filter((r) => !r.ok)).to.deep.equal([]);
    expect(replicas[1]!.calls['CreateImage']).to.equal(10);

    const before = total('CreateImage');
    const unkeyed = [];
    for (let i = 0; i < 10; i++) unkeyed.push(await call(c, 'CreateImage', { name: 'a', content_type: 'image/png', content: Buffer.from('x') }));
    const failed = unkeyed.filter((r) => !r.ok);
    expect(failed.length, 'unkeyed writes that hit the failing replica').to.be.above(0);
    expect(failed.every((r) => r.code === status.UNAVAILABLE)).to.equal(true);
    expect(total('CreateImage') - before, 'handler runs for 10 unkeyed writes').to.equal(10);

    // DeleteImage declares neither: never repeated either.
    const deletes = [];
    for (let i = 0; i < 6; i++) deletes.push(await call(c, 'DeleteImage', { id: 'img_0' }));
    expect(total('DeleteImage')).to.equal(6);
    expect(deletes.some((r) => !r.ok)).to.equal(true);
    c.close();
  });

  it('never repeats a call once the replica began to answer, nor one refused with another code', async () => {
    const c = client(replicas);
    await warm(c);
    replicas[0]!.behaviour = 'headers-then-unavailable';
    const results = [];
    for (let i = 0; i < 6; i++) results.push(await call(c, 'GetImage', { id: 'img_0' }));
    expect(results.filter((r) => !r.ok).map((r) => r.code)).to.deep.equal(Array(replicas[0]!.calls['GetImage']).fill(status.UNAVAILABLE));
    expect(total('GetImage')).to.equal(6);

    replicas[0]!.behaviour = 'permission-denied';
    const denied = [];
    for (let i = 0; i < 6; i++) denied.push(await call(c, 'GetImage', { id: 'img_0' }));
    expect(denied.filter((r) => !r.ok).every((r) => r.code === status.PERMISSION_DENIED)).to.equal(true);
    expect(total('GetImage')).to.equal(12);
    c.close();
  });

  it('stops repeating when the retry budget is spent: a service down everywhere gets at most half the budget in extra calls', async () => {
    const c = client(replicas, { maxTokens: 10 });
    await warm(c);
    for (const r of replicas) r.behaviour = 'unavailable';
    let failed = 0;
    for (let i = 0; i < 20; i++) if (!(await call(c, 'GetImage', { id: 'img_0' })).ok) failed++;
    const attempts = total('GetImage');
    console.log(`      20 reads, both replicas refusing UNAVAILABLE, budget 10 tokens: ${attempts} attempts`);
    expect(failed).to.equal(20);
    // Each failed attempt takes a token and a retry needs more than half (5) left: the first two calls are retried, no later one.
    expect(attempts).to.be.within(21, 25);
    c.close();
  });
});

/**
 * A name whose addresses the test sets, standing in for DNS: a headless Service's name gains and
 * loses pod addresses, and a client learns of them only when it asks again.
 */
const records = { ports: [] as number[], asked: 0 };
class TestRecords implements experimental.Resolver {
  readonly #listener: experimental.ResolverListener;
  constructor(_target: unknown, listener: experimental.ResolverListener, _options: ChannelOptions) {
    this.#listener = listener;
  }
  updateResolution(): void {
    records.asked++;
    const endpoints = records.ports.map((port) => ({ addresses: [{ host: '127.0.0.1', port }] }));
    process.nextTick(() => this.#listener(experimental.statusOrFromValue(endpoints), {}, null, ''));
  }
  destroy(): void {}
  static getDefaultAuthority(): string {
    return 'image-store';
  }
}
experimental.registerResolver('twokey-test-records', TestRecords);

describe('mesh clients as pods come and go behind one name', function () {
  this.timeout(30_000);
  let mesh: TestMesh;
  const servers: MeshServer[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close(100);
    await mesh.close();
  });

  it('a pod added to the name gets calls once its servers make clients reconnect (max connection age), and one removed gets none; no call fails', async () => {
    mesh = await TestMesh.create({ protoRoots: [DEFAULT_PROTO_ROOT] });
    const token = await mesh.tokens.userToken('alice', ['images:read']);
    const served = [0, 0];
    const start = async (i: number): Promise<number> => {
      const server = createMeshServer({
        svid: mesh.identity('image-store'),
        keys: mesh.tokens.keys,
        issuer: mesh.issuer,
        rules: mesh.catalog,
        // What every example service's server does (every 5 minutes there), here every 300 ms.
        serverOptions: { 'grpc.max_connection_age_ms': 300 },
      });
      server.server.addService(mesh.catalog.definition[SERVICE] as ServiceDefinition, {
        GetImage: (_call: unknown, callback: sendUnaryData<unknown>) => {
          served[i]!++;
          callback(null, image);
        },
      });
      servers.push(server);
      return server.listen('127.0.0.1:0');
    };
    const [a, b] = [await start(0), await start(1)];
    records.ports = [a];
    const ctor = makeClientConstructor(mesh.catalog.definition[SERVICE] as ServiceDefinition, SERVICE);
    const c = createMeshClient(ctor, 'twokey-test-records:///image-store', {
      svid: mesh.identity(CALLER.as, CALLER.grants),
      serverId: mesh.spiffeId('image-store'),
      retry: { catalog: mesh.catalog },
    }) as TestClient;
    let failed = 0;
    const read = (): Promise<void> =>
      new Promise((resolve) => {
        const md = new Metadata();
        md.set('authorization', `Bearer ${token}`);
        c['GetImage']!({ id: 'img_0' }, md, { deadline: Date.now() + 5000 }, (err: unknown) => {
          if (err !== null) failed++;
          resolve();
        });
      });
    try {
      for (let i = 0; i < 10; i++) await read();
      expect(served).to.deep.equal([10, 0]);

      // The second pod joins the name: no connection fails, so only the max connection age makes the client ask again.
      records.ports = [a, b];
      const joined = Date.now();
      for (let i = 0; i < 400 && served[1] === 0; i++) {
        await read();
        await new Promise((r) => setTimeout(r, 10));
      }
      console.log(`      a pod added behind the name got its first call ${Date.now() - joined} ms later (max connection age 300 ms); the name was resolved ${records.asked} times`);
      expect(served[1], 'calls at the added pod').to.be.above(0);

      // The first pod leaves the name and stops: calls go on at the other.
      records.ports = [b];
      await servers[0]!.close(100);
      const before = served[1]!;
      for (let i = 0; i < 20; i++) await read();
      expect(served[1]! - before).to.equal(20);
      expect(failed, 'failed calls').to.equal(0);
    } finally {
      c.close();
    }
  });
});

describe('retry policy from the protos', () => {
  it('retries reads, token calls and keyed writes on UNAVAILABLE only, round_robin, with the budget', () => {
    const config = JSON.parse(meshServiceConfig(catalogOfTwokey())) as {
      loadBalancingConfig: unknown[];
      methodConfig: { name: { service: string; method: string }[]; retryPolicy: { maxAttempts: number; retryableStatusCodes: string[] } }[];
      retryThrottling: { maxTokens: number; tokenRatio: number };
    };
    expect(config.loadBalancingConfig).to.deep.equal([{ round_robin: {} }]);
    const retried = config.methodConfig[0]!.name.map((n) => `${n.service.split('.')[1]}.${n.method}`).sort();
    expect(retried).to.deep.equal([
      'auth.ExchangeToken', 'auth.GetJwks', 'auth.GetRevocations', 'auth.GetServiceToken', 'auth.ListRevocations', 'auth.Login', 'auth.WatchRevocations',
      'images.CreateImage', 'images.GetImage', 'images.ListImages', 'images.SetTags', 'images.WatchImages', 'tagging.SuggestTags',
    ]);
    expect(config.methodConfig[0]!.retryPolicy).to.include({ maxAttempts: 2 });
    expect(config.methodConfig[0]!.retryPolicy.retryableStatusCodes).to.deep.equal(['UNAVAILABLE']);
    const unkeyed = JSON.parse(meshServiceConfig(catalogOfTwokey(), undefined, false)) as typeof config;
    expect(unkeyed.methodConfig[0]!.name.map((n) => n.method)).to.not.include.members(['CreateImage', 'SetTags']);
    expect(() => meshServiceConfig(catalogOfTwokey(), { maxTokens: 0, tokenRatio: 0.1 })).to.throw(/maxTokens must be in \(0, 1000\], not 0/);
    expect(() => meshServiceConfig(catalogOfTwokey(), { maxTokens: 10, tokenRatio: -1 })).to.throw(/tokenRatio must be above 0, not -1/);
  });

  it('finds a request id in decoded requests and in the raw bytes a proxy relays, and none in bytes that do not parse', () => {
    const create = catalogOfTwokey().definition['twokey.images.v1.ImageStore'] as unknown as Record<string, { requestSerialize: (v: object) => Buffer }>;
    const bytes = (req: object): Buffer => create['CreateImage']!.requestSerialize(req);
    const id = randomUUID();
    const body = { name: 'a', content_type: 'image/png', content: Buffer.alloc(1000, 7), tags: ['x', 'y'] };
    expect(rawFieldLength(bytes({ ...body, request_id: id }), 5)).to.equal(36);
    expect(carriesRequestId(bytes({ ...body, request_id: id }), 5)).to.equal(true);
    expect(carriesRequestId(bytes(body), 5)).to.equal(false);
    expect(carriesRequestId(Buffer.concat([bytes(body), bytes({ request_id: id })]), 5), 'the last occurrence counts').to.equal(true);
    expect(rawFieldLength(Buffer.from([0x2a, 0x05, 0x61]), 5), 'a length past the end').to.equal(-1);
    expect(rawFieldLength(Buffer.from([0x2f]), 5), 'wire type 7').to.equal(-1);
    expect(carriesRequestId(Buffer.from([0x2a, 0x05, 0x61]), 5)).to.equal(false);
    expect(carriesRequestId({ ...body, request_id: id }, 5)).to.equal(true);
    expect(carriesRequestId({ ...body, request_id: '' }, 5)).to.equal(false);
  });
});

const catalogOfTwokey = (): MethodCatalog => MethodCatalog.default();
