// Attacks on the running example mesh: another user's images, service and delegated tokens used out of place, token exchange abuse.
// Every refusal asserts its exact status and the failed check in its message. Whether a handler ran
// is read from the target service's /metrics (twokey_handler_entries_total, counted at the entry of
// every handler, by method and caller): 0 for a refusal by the authorization decision, exactly 1 for
// a refusal the handler itself makes (the resource check, a request it refuses), whose evidence that
// nothing happened is then "alice's image unchanged" or "no token issued".
import { createPrivateKey, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { authDatabasePath } from '../../services/auth/database.ts';
import { openReadOnlyDatabase } from '../../services/mesh-runtime/durable-database.ts';
import { ImageStoreClient, unary } from '../../services/mesh-runtime/protos.ts';
import { jpegWithoutExif } from '../../scripts/fixtures/gps-jpeg.ts';
import { STATUS_NAMES, eventually, expectStatus, logLines, removeState, startTestMesh, withToken, type TestMesh } from '../e2e/mesh-harness.ts';
import { userClaims } from './hostile-tokens.ts';
import { RawSigner, jti } from './jws.ts';
import { RawGrpcClient, grpcFrame } from './raw-http2.ts';
import { HANDLER_ENTRIES_METRIC } from '../../services/mesh-runtime/handler-entries.ts';
import { parseExposition, samplesOf } from '../metrics/prometheus-text.ts';

interface Image {
  id: string;
  owner: string;
  name: string;
  tags: string[];
  updated_at_ms: string;
}

const TD_ID = 'spiffe://twokey.local';
const id = (sa: string) => `${TD_ID}/ns/twokey/sa/${sa}`;
const IMAGE_STORE = id('image-store');
const TAGGING = id('tagging');
const EMPTY_LIST = { owner: '', tag: '', page_size: 0, page_token: '' };
const MISSING_ID = `img_${'0'.repeat(32)}`;
const IMAGES = '/twokey.images.v1.ImageStore';
const AUTH = '/twokey.auth.v1.Auth';
const withoutDecisionId = (details: string) => details.replace(/\(decision [0-9a-f-]{36}\)/, '(decision)');

describe('adversarial: attacks on the running example mesh', function () {
  this.timeout(60_000);
  let t: TestMesh;
  let alice: string;
  let bob: string;
  let images: grpc.Client;
  let photo: Image;
  let bobPhoto: Image;
  /** The auth service's current signing key, read from its database: tokens only the real issuer could sign. */
  let issuerKey: RawSigner;

  before(async function () {
    this.timeout(120_000);
    t = await startTestMesh({ cleanerInterval: '1h' });
    images = t.gateway('image-store');
    alice = await t.login('alice');
    bob = await t.login('bob');
    const create = (token: string, name: string, tags: string[]) =>
      unary<Image>(images, 'CreateImage', { name, content_type: 'image/jpeg', content: jpegWithoutExif(), tags }, withToken(token));
    photo = await create(alice, 'alice-private.jpg', ['alice-secret-tag']);
    bobPhoto = await create(bob, 'bob.jpg', []);
    const db = openReadOnlyDatabase(authDatabasePath(t.mesh.layout.dataDir('auth')));
    try {
      const row = db.prepare("SELECT kid, private_pkcs8 FROM signing_keys WHERE state = 'current'").get() as unknown as { kid: string; private_pkcs8: string };
      issuerKey = RawSigner.fromPrivateKey(row.kid, createPrivateKey(row.private_pkcs8));
    } finally {
      db.close();
    }
  });
  after(async function () {
    this.timeout(30_000);
    if (t !== undefined) {
      await t.close();
      removeState(t.stateDir);
    }
  });

  /** A counter's value on a service's /metrics, summed over the samples whose labels include `labels`. */
  async function metric(service: string, name: string, labels: Record<string, string>): Promise<number> {
    const res = await fetch(`http://${t.mesh.endpoints.services[service]!.health}/metrics`);
    const samples = samplesOf(parseExposition(await res.text()), name).filter((x) => Object.entries(labels).every(([k, v]) => x.labels[k] === v));
    return samples.reduce((n, x) => n + x.value, 0);
  }

  /**
   * Runs `attack` and asserts how often it entered the handler of `method` at `service` for calls
   * from `caller` (0: the decision refused it; 1: the handler refused it itself).
   */
  async function handlerEntries<T>(service: string, method: string, caller: string, expected: number, attack: () => Promise<T>): Promise<T> {
    const labels = { method, caller };
    const before = await metric(service, HANDLER_ENTRIES_METRIC, labels);
    const out = await attack();
    expect(await metric(service, HANDLER_ENTRIES_METRIC, labels) - before, `entries into ${service} ${method} from ${caller}`).to.equal(expected);
    return out;
  }
  const noHandlerRan = <T>(service: string, method: string, caller: string, attack: () => Promise<T>) => handlerEntries(service, method, caller, 0, attack);
  const GATEWAY = id('gateway');

  async function aliceImageUnchanged(): Promise<void> {
    const now = await unary<Image>(images, 'GetImage', { id: photo.id, without_content: true }, withToken(alice));
    expect({ name: now.name, tags: now.tags, owner: now.owner, updated: now.updated_at_ms }).to.deep.equal({
      name: photo.name,
      tags: photo.tags,
      owner: 'alice',
      updated: photo.updated_at_ms,
    });
  }

  describe("another user's image: the same PERMISSION_DENIED whether it exists or not, and nothing changes", () => {
    const attempts: Array<{ method: string; request: (imageId: string) => object }> = [
      { method: 'GetImage', request: (imageId) => ({ id: imageId, without_content: false }) },
      { method: 'UpdateImage', request: (imageId) => ({ id: imageId, name: 'pwned.jpg', content_type: '', content: Buffer.alloc(0) }) },
      { method: 'SetTags', request: (imageId) => ({ id: imageId, tags: ['pwned'] }) },
      { method: 'DeleteImage', request: (imageId) => ({ id: imageId }) },
    ];
    for (const a of attempts) {
      it(`bob ${a.method} on alice's image and on a missing image -> PERMISSION_DENIED, identical details`, async () => {
        // The resource check runs in the handler: it is entered once per call, and refuses both.
        const [existing, missing] = await handlerEntries('image-store', `${IMAGES}/${a.method}`, GATEWAY, 2, async () => [
          await expectStatus(unary(images, a.method, a.request(photo.id), withToken(bob)), 'PERMISSION_DENIED'),
          await expectStatus(unary(images, a.method, a.request(MISSING_ID), withToken(bob)), 'PERMISSION_DENIED'),
        ]);
        expect(withoutDecisionId(existing)).to.equal(withoutDecisionId(missing));
        expect(existing).to.match(/^resource check failed: /);
        await aliceImageUnchanged();
      });
    }

    it("bob lists with owner alice -> PERMISSION_DENIED; with alice's tag he sees none of hers", async () => {
      const details = await expectStatus(unary(images, 'ListImages', { ...EMPTY_LIST, owner: 'alice' }, withToken(bob)), 'PERMISSION_DENIED');
      expect(details).to.match(/^resource check failed: /);
      const byTag = await unary<{ images: Image[] }>(images, 'ListImages', { ...EMPTY_LIST, tag: 'alice-secret-tag' }, withToken(bob));
      expect(byTag.images).to.deep.equal([]);
    });

    it("bob replays a page token from alice's listing -> OK with exactly his own images after that position", async () => {
      for (let i = 0; i < 2; i++) {
        await unary(images, 'CreateImage', { name: `a${i}.jpg`, content_type: 'image/jpeg', content: jpegWithoutExif(), tags: [] }, withToken(alice));
      }
      const page = await unary<{ images: Image[]; next_page_token: string }>(images, 'ListImages', { ...EMPTY_LIST, page_size: 1 }, withToken(alice));
      // Alice's first page is her first image, stored before bob's: the token's position is before bob's image.
      expect(page.images.map((i) => i.id)).to.deep.equal([photo.id]);
      expect(page.next_page_token).to.not.equal('');
      const own = await unary<{ images: Image[] }>(images, 'ListImages', { ...EMPTY_LIST, page_size: 50 }, withToken(bob));
      // The replay must succeed (an error would prove nothing) and return bob's images, all of them, and only those.
      const replay = await unary<{ images: Image[]; next_page_token: string }>(images, 'ListImages', { ...EMPTY_LIST, page_size: 50, page_token: page.next_page_token }, withToken(bob));
      expect(replay.images.map((i) => [i.id, i.owner])).to.deep.equal(own.images.map((i) => [i.id, i.owner]));
      expect(replay.images.map((i) => i.id)).to.include(bobPhoto.id);
      expect(replay.images.map((i) => i.owner)).to.deep.equal(replay.images.map(() => 'bob'));
      expect(replay.next_page_token).to.equal('');
    });

    it('bob cannot create an image owned by alice: an unknown owner field in the request is ignored', async () => {
      // CreateImageRequest has no owner; field 9 is unknown to it and must not become one.
      const field = (no: number, value: Buffer) => Buffer.concat([Buffer.from([(no << 3) | 2, value.length]), value]);
      const content = jpegWithoutExif().subarray(0, 100);
      const body = Buffer.concat([field(1, Buffer.from('forged.jpg')), field(2, Buffer.from('image/jpeg')), field(3, content), field(9, Buffer.from('alice'))]);
      const desc = (ImageStoreClient.service as grpc.ServiceDefinition)['CreateImage']!;
      const created = await new Promise<Image>((resolve, reject) =>
        images.makeUnaryRequest('/twokey.images.v1.ImageStore/CreateImage', (b: Buffer) => b, desc.responseDeserialize as (b: Buffer) => Image, body, withToken(bob), (err, res) =>
          err ? reject(err) : resolve(res!),
        ),
      );
      expect(created.owner).to.equal('bob');
    });

    it('bob cannot create for alice through identity-looking metadata', async () => {
      const md = withToken(bob);
      for (const key of ['x-twokey-owner', 'x-user', 'x-forwarded-user', 'x-spiffe-id']) md.set(key, 'alice');
      const created = await unary<Image>(images, 'CreateImage', { name: 'spoof.jpg', content_type: 'image/jpeg', content: jpegWithoutExif(), tags: [] }, md);
      expect(created.owner).to.equal('bob');
    });

    it('an injected image id -> INVALID_ARGUMENT (not an image id), before any lookup; it reveals nothing and changes nothing', async () => {
      for (const hostile of [`${photo.id}' OR '1'='1`, `${photo.id}%`, '%', '*', `${photo.id}\u0000`]) {
        const out = await unary(images, 'GetImage', { id: hostile, without_content: true }, withToken(bob)).then(
          () => ({ code: 'OK', details: '' }),
          (err: grpc.ServiceError) => ({ code: STATUS_NAMES[err.code], details: err.details }),
        );
        expect(out.code, `${JSON.stringify(hostile)}: ${out.details}`).to.equal('INVALID_ARGUMENT');
        expect(out.details).to.match(/^image id ".*" is not an image id \(img_ \+ 32 hex digits\)/);
      }
      await aliceImageUnchanged();
    });
  });

  describe('service and delegated tokens out of place', () => {
    it("tagging's own service token (images:read:any) cannot set tags on alice's image -> PERMISSION_DENIED (scope)", async () => {
      const auth = await t.workload('tagging', 'auth');
      const svc = await unary<{ access_token: string }>(auth, 'GetServiceToken', { audience: '' });
      const store = await t.workload('tagging', 'image-store');
      const details = await noHandlerRan('image-store', `${IMAGES}/SetTags`, TAGGING, () =>
        expectStatus(unary(store, 'SetTags', { id: photo.id, tags: ['x'] }, withToken(svc.access_token)), 'PERMISSION_DENIED'),
      );
      expect(details).to.match(/^twokey: scope check failed: /);
      await aliceImageUnchanged();
    });

    it("the cleaner's service token presented by tagging -> UNAUTHENTICATED (binding)", async () => {
      const cleanerAuth = await t.workload('cleaner', 'auth');
      const svc = await unary<{ access_token: string }>(cleanerAuth, 'GetServiceToken', { audience: '' });
      const store = await t.workload('tagging', 'image-store');
      // SetTags, not GetImage: tagging's own worker reads images in the background, and the entry count must be ours alone.
      const details = await noHandlerRan('image-store', `${IMAGES}/SetTags`, TAGGING, () =>
        expectStatus(unary(store, 'SetTags', { id: photo.id, tags: ['x'] }, withToken(svc.access_token)), 'UNAUTHENTICATED'),
      );
      expect(details).to.match(/^twokey: binding check failed: /);
      await aliceImageUnchanged();
    });

    it("alice's delegated token used by tagging on bob's image -> PERMISSION_DENIED (resource)", async () => {
      const auth = await t.workload('tagging', 'auth');
      const delegated = await unary<{ access_token: string }>(auth, 'ExchangeToken', { subject_token: '', subject_user: 'alice', scope: 'images:tag', audience: IMAGE_STORE });
      const store = await t.workload('tagging', 'image-store');
      const details = await handlerEntries('image-store', `${IMAGES}/SetTags`, TAGGING, 1, () =>
        expectStatus(unary(store, 'SetTags', { id: bobPhoto.id, tags: ['x'] }, withToken(delegated.access_token)), 'PERMISSION_DENIED'),
      );
      expect(details).to.match(/^resource check failed: /);
      const bobs = await unary<Image>(images, 'GetImage', { id: bobPhoto.id, without_content: true }, withToken(bob));
      expect(bobs.tags).to.deep.equal([]);
    });

    it('a delegated token for the image store, presented by the gateway to tagging -> UNAUTHENTICATED', async () => {
      const auth = await t.workload('tagging', 'auth');
      const delegated = await unary<{ access_token: string }>(auth, 'ExchangeToken', { subject_token: '', subject_user: 'alice', scope: 'images:tag', audience: IMAGE_STORE });
      const tagging = await t.workload('gateway', 'tagging');
      const details = await noHandlerRan('tagging', '/twokey.tagging.v1.Tagging/SuggestTags', GATEWAY, () =>
        expectStatus(unary(tagging, 'SuggestTags', { image_id: photo.id }, withToken(delegated.access_token)), 'UNAUTHENTICATED'),
      );
      expect(details).to.match(/^twokey: token check failed: /);
      expect(details).to.include(`audience "${IMAGE_STORE}" is not accepted here`);
    });

    it('a service token at the public gateway -> UNAUTHENTICATED', async () => {
      const auth = await t.workload('tagging', 'auth');
      const svc = await unary<{ access_token: string }>(auth, 'GetServiceToken', { audience: '' });
      const details = await noHandlerRan('image-store', `${IMAGES}/GetImage`, GATEWAY, () =>
        expectStatus(unary(images, 'GetImage', { id: photo.id, without_content: true }, withToken(svc.access_token)), 'UNAUTHENTICATED'),
      );
      expect(details).to.match(/^twokey gateway: the gateway accepts only user tokens, not a service token/);
    });

    it('a token signed by the real issuer key for another trust domain audience -> UNAUTHENTICATED', async () => {
      const forged = issuerKey.sign(issuerKey.header(), userClaims({ aud: 'spiffe://evil.example', scope: 'images:read' }));
      const details = await noHandlerRan('image-store', `${IMAGES}/GetImage`, GATEWAY, () =>
        expectStatus(unary(images, 'GetImage', { id: photo.id, without_content: true }, withToken(forged)), 'UNAUTHENTICATED'),
      );
      expect(details).to.match(/audience "spiffe:\/\/evil\.example" is not accepted here/);
    });
  });

  describe('the event stream (WatchImages): who may watch every owner\'s uploads', () => {
    /** Opens the stream and resolves with the first event, or the status it ended with. */
    const watch = (client: grpc.Client, token: string) =>
      new Promise<{ code: grpc.status; details: string; first?: { owner: string } }>((resolve) => {
        const call = (client as unknown as Record<string, (r: object, m: grpc.Metadata) => grpc.ClientReadableStream<{ owner: string }>>)['WatchImages']!(
          { after_sequence: '0' },
          withToken(token),
        );
        call.on('data', (event) => {
          resolve({ code: grpc.status.OK, details: '', first: event });
          call.cancel();
        });
        call.on('error', (err: grpc.ServiceError) => resolve({ code: err.code, details: err.details }));
      });
    const serviceToken = async (workload: string) =>
      (await unary<{ access_token: string }>(await t.workload(workload, 'auth'), 'GetServiceToken', { audience: '' })).access_token;

    it("control: tagging with its own service token (images:watch) receives events", async () => {
      const out = await watch(await t.workload('tagging', 'image-store'), await serviceToken('tagging'));
      expect(out.code, out.details).to.equal(grpc.status.OK);
      expect(out.first?.owner).to.be.a('string');
    });
    it("the gateway's certificate with alice's token -> PERMISSION_DENIED (grant)", async () => {
      const store = await t.workload('gateway', 'image-store');
      const out = await noHandlerRan('image-store', `${IMAGES}/WatchImages`, GATEWAY, () => watch(store, alice));
      expect(STATUS_NAMES[out.code]).to.equal('PERMISSION_DENIED');
      expect(out.details).to.match(/^twokey: grant check failed: .*does not grant \/twokey\.images\.v1\.ImageStore\/WatchImages/);
    });
    it("tagging's certificate with alice's user token -> PERMISSION_DENIED (scope)", async () => {
      const store = await t.workload('tagging', 'image-store');
      const out = await noHandlerRan('image-store', `${IMAGES}/WatchImages`, TAGGING, () => watch(store, alice));
      expect(STATUS_NAMES[out.code]).to.equal('PERMISSION_DENIED');
      expect(out.details).to.match(/^twokey: scope check failed: .*"images:watch"/);
    });
    it("tagging's certificate with the cleaner's service token -> UNAUTHENTICATED (binding)", async () => {
      const store = await t.workload('tagging', 'image-store');
      const token = await serviceToken('cleaner');
      const out = await noHandlerRan('image-store', `${IMAGES}/WatchImages`, TAGGING, () => watch(store, token));
      expect(STATUS_NAMES[out.code]).to.equal('UNAUTHENTICATED');
      expect(out.details).to.match(/^twokey: binding check failed: /);
    });
    it("the cleaner's certificate with its own service token -> PERMISSION_DENIED (grant)", async () => {
      const store = await t.workload('cleaner', 'image-store');
      const token = await serviceToken('cleaner');
      const out = await noHandlerRan('image-store', `${IMAGES}/WatchImages`, id('cleaner'), () => watch(store, token));
      expect(STATUS_NAMES[out.code]).to.equal('PERMISSION_DENIED');
      expect(out.details).to.match(/^twokey: grant check failed: .*does not grant \/twokey\.images\.v1\.ImageStore\/WatchImages/);
    });
  });

  describe('the public edges: gateway and HTTPS JWKS', () => {
    for (const path of [
      '/twokey.auth.v1.Auth/GetServiceToken',
      '/twokey.auth.v1.Auth/ExchangeToken',
      '/twokey.auth.v1.Auth/GetJwks',
      '/twokey.images.v1.ImageStore/WatchImages',
      '/twokey.images.v1.ImageStore/getimage',
      '/twokey.images.v1.ImageStore/GetImage/',
      '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo',
    ]) {
      it(`the gateway does not relay ${path} -> UNIMPLEMENTED`, async () => {
        const before = await metric('gateway', 'twokey_gateway_requests_total', { outcome: 'forwarded' });
        const out = await new Promise<{ code: grpc.status; details: string }>((resolve) =>
          images.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), withToken(alice), { deadline: Date.now() + 5000 }, (err) =>
            resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '' }),
          ),
        );
        expect(STATUS_NAMES[out.code], out.details).to.equal('UNIMPLEMENTED');
        // grpc-js's own answer for a path the gateway's server does not serve: no route, so nothing forwarded.
        expect(out.details).to.equal(`The server does not implement the method ${path}`);
        expect(await metric('gateway', 'twokey_gateway_requests_total', { outcome: 'forwarded' })).to.equal(before);
      });
    }

    it("a delegated token at the public gateway -> UNAUTHENTICATED (its audience is the image store), even for its own subject's image", async () => {
      const auth = await t.workload('tagging', 'auth');
      const delegated = await unary<{ access_token: string }>(auth, 'ExchangeToken', { subject_token: '', subject_user: 'alice', scope: 'images:tag', audience: IMAGE_STORE });
      const details = await noHandlerRan('image-store', `${IMAGES}/SetTags`, GATEWAY, () =>
        expectStatus(unary(images, 'SetTags', { id: photo.id, tags: ['x'] }, withToken(delegated.access_token)), 'UNAUTHENTICATED'),
      );
      expect(details).to.include(`invalid token: audience "${IMAGE_STORE}" is not accepted here`);
      await aliceImageUnchanged();
    });

    describe('two authorization header fields at the gateway (Node alone would keep the first)', () => {
      let raw: RawGrpcClient;
      before(async () => {
        const port = Number(t.mesh.endpoints.gateway.address.split(':').pop());
        raw = await RawGrpcClient.connectTls(port, { ca: readFileSync(t.mesh.endpoints.gateway.caFile) }, 'localhost');
      });
      after(() => raw?.close());
      const listImages = (authorization: string[], requestId: string) =>
        raw.call('/twokey.images.v1.ImageStore/ListImages', { authorization, 'x-request-id': requestId }, grpcFrame(Buffer.alloc(0)));
      const gatewayLines = (requestId: string) => logLines(t.mesh, 'gateway').filter((l) => l['request_id'] === requestId);

      for (const [name, values] of [
        ["alice's token twice", () => [`Bearer ${alice}`, `Bearer ${alice}`]],
        ["bob's token, then alice's", () => [`Bearer ${bob}`, `Bearer ${alice}`]],
      ] as const) {
        it(`${name} -> UNAUTHENTICATED, nothing forwarded`, async () => {
          const requestId = `dup-${randomUUID()}`;
          const out = await listImages(values(), requestId);
          expect(out.grpcStatus, `${out.grpcMessage} ${out.error ?? ''}`).to.equal(grpc.status.UNAUTHENTICATED);
          expect(out.grpcMessage).to.include('more than one authorization value');
          // The request is named for the log without reflecting the caller's own header value.
          expect(out.grpcMessage).to.match(/\(the x-request-id sent\)$/);
          expect(out.grpcMessage).to.not.include(requestId);
          const lines = await eventually('the gateway deny line', 5000, () => {
            const found = gatewayLines(requestId);
            return found.some((l) => l['event'] === 'gateway.deny') ? found : undefined;
          });
          expect(lines.map((l) => l['event'])).to.deep.equal(['gateway.deny']);
        });
      }

      it('control: one field the same way -> OK, forwarded', async () => {
        const requestId = `one-${randomUUID()}`;
        const out = await listImages([`Bearer ${alice}`], requestId);
        expect(out.grpcStatus, out.grpcMessage).to.equal(grpc.status.OK);
        const lines = await eventually('the gateway forward line', 5000, () => {
          const found = gatewayLines(requestId);
          return found.length > 0 ? found : undefined;
        });
        expect(lines.map((l) => [l['event'], l['subject']])).to.deep.equal([['gateway.forward', 'alice']]);
      });
    });

    const jwksRequest = (method: string, path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const url = new URL(t.mesh.endpoints.jwks.url);
        const req = httpsRequest(
          { host: url.hostname, port: url.port, method, path, ca: readFileSync(t.mesh.endpoints.jwks.caFile), servername: 'localhost', checkServerIdentity: () => undefined },
          (res) => {
            let body = '';
            res.on('data', (c) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          },
        );
        req.on('error', reject);
        req.end(method === 'POST' ? '{"keys":[]}' : undefined);
      });

    it('the HTTPS JWKS publishes public keys only', async () => {
      const res = await jwksRequest('GET', '/.well-known/jwks.json');
      expect(res.status).to.equal(200);
      const keys = (JSON.parse(res.body) as { keys: Record<string, unknown>[] }).keys;
      expect(keys.length).to.be.greaterThan(0);
      for (const k of keys) for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) expect(k).to.not.have.property(member);
    });

    for (const [method, path, status] of [
      ['POST', '/.well-known/jwks.json', 405],
      ['PUT', '/.well-known/jwks.json', 405],
      ['GET', '/.well-known/../../auth.db', 404],
      ['GET', '/.well-known/%2e%2e/auth.db', 404],
      ['GET', '/.well-known/jwks.json/', 404],
      ['GET', '/', 404],
    ] as const) {
      it(`the HTTPS JWKS answers ${method} ${path} with ${status}`, async () => {
        const res = await jwksRequest(method, path);
        expect(res.status).to.equal(status);
        expect(res.body).to.not.match(/"d"|BEGIN|PRIVATE|sqlite/i);
      });
    }
  });

  describe('token exchange abuse at the auth service (tagging presenting its certificate)', () => {
    let auth: grpc.Client;
    before(async () => {
      auth = await t.workload('tagging', 'auth');
    });
    const exchange = (fields: Record<string, string>) =>
      unary<{ access_token: string; scope: string }>(auth, 'ExchangeToken', { subject_token: '', subject_user: 'alice', scope: 'images:tag', audience: IMAGE_STORE, ...fields });

    const refusals: Array<{ name: string; fields: () => Record<string, string>; code: keyof typeof grpc.status; message: RegExp }> = [
      { name: 'broader scope images:tag:any', fields: () => ({ scope: 'images:tag:any' }), code: 'PERMISSION_DENIED', message: /"images:tag:any" is beyond/ },
      { name: 'a scope tagging never gets for users (images:read)', fields: () => ({ scope: 'images:read' }), code: 'PERMISSION_DENIED', message: /"images:read" is beyond/ },
      { name: 'audience: the whole trust domain', fields: () => ({ audience: TD_ID }), code: 'PERMISSION_DENIED', message: /may not obtain tokens for audience spiffe:\/\/twokey\.local( |$)/ },
      { name: 'audience: the auth service', fields: () => ({ audience: id('auth') }), code: 'PERMISSION_DENIED', message: /may not obtain tokens for audience/ },
      { name: 'audience: tagging itself', fields: () => ({ audience: TAGGING }), code: 'PERMISSION_DENIED', message: /may not obtain tokens for audience/ },
      { name: 'no audience', fields: () => ({ audience: '' }), code: 'PERMISSION_DENIED', message: /an audience .* is required/ },
      { name: 'a username that looks like a workload', fields: () => ({ subject_user: id('cleaner') }), code: 'INVALID_ARGUMENT', message: /subject_user is not a username/ },
      { name: 'a username that is a service name', fields: () => ({ subject_user: 'cleaner' }), code: 'PERMISSION_DENIED', message: /no enabled user "cleaner"/ },
      { name: 'a username in another case', fields: () => ({ subject_user: 'Alice' }), code: 'INVALID_ARGUMENT', message: /subject_user is not a username/ },
      { name: 'a username with a trailing space', fields: () => ({ subject_user: 'alice ' }), code: 'INVALID_ARGUMENT', message: /subject_user is not a username/ },
      { name: 'both a subject token and a username', fields: () => ({ subject_token: bob, subject_user: 'alice' }), code: 'INVALID_ARGUMENT', message: /exactly one of subject_token or subject_user/ },
      { name: 'a subject token forged with another key', fields: () => ({ subject_user: '', subject_token: RawSigner.create(issuerKey.kid).sign(issuerKey.header(), userClaims({ scope: 'images:tag' })) }), code: 'PERMISSION_DENIED', message: /subject_token is not valid: .*signature/ },
      {
        name: 'an expired subject token signed by the real issuer',
        fields: () => {
          const s = Math.floor(Date.now() / 1000);
          return { subject_user: '', subject_token: issuerKey.sign(issuerKey.header(), userClaims({ iat: s - 3600, nbf: s - 3600, exp: s - 1800, scope: 'images:tag' })) };
        },
        code: 'PERMISSION_DENIED',
        message: /subject_token is not valid: token expired/,
      },
      { name: "the cleaner's service token as subject", fields: () => ({ subject_user: '', subject_token: cleanerServiceToken }), code: 'PERMISSION_DENIED', message: /a service token cannot be exchanged|not valid/ },
      {
        name: 'a delegated subject token already at the maximum depth (real issuer key)',
        fields: () => ({
          subject_user: '',
          subject_token: issuerKey.sign(issuerKey.header(), {
            ...userClaims({ scope: 'images:tag', aud: TAGGING, token_kind: 'delegated' }),
            act: { sub: id('gateway'), act: { sub: id('cleaner') } },
            cnf: { 'x5t#S256': 'A'.repeat(43) },
            jti: jti(),
          }),
        }),
        code: 'PERMISSION_DENIED',
        message: /delegation depth 3 exceeds the maximum of 2/,
      },
    ];
    let cleanerServiceToken = '';
    before(async () => {
      const cleanerAuth = await t.workload('cleaner', 'auth');
      cleanerServiceToken = (await unary<{ access_token: string }>(cleanerAuth, 'GetServiceToken', { audience: '' })).access_token;
    });

    /** The exchange refusals happen in the handler (entered once); the evidence that nothing was issued is auth's own counter. */
    async function refusedWithoutIssuing(attempt: () => Promise<unknown>, code: keyof typeof grpc.status): Promise<string> {
      const issued = () => metric('auth', 'twokey_auth_token_exchanges_total', { outcome: 'issued' });
      const before = await issued();
      const details = await handlerEntries('auth', `${AUTH}/ExchangeToken`, TAGGING, 1, () => expectStatus(attempt(), code));
      expect(await issued(), 'delegated tokens issued').to.equal(before);
      return details;
    }

    for (const r of refusals) {
      it(`${r.name} -> ${r.code}`, async () => {
        const details = await refusedWithoutIssuing(() => exchange(r.fields()), r.code);
        expect(details).to.match(r.message);
      });
    }

    it("exchanging tagging's own delegated token onward -> PERMISSION_DENIED (issued for the image store, not tagging)", async () => {
      const first = await exchange({});
      const details = await refusedWithoutIssuing(() => exchange({ subject_user: '', subject_token: first.access_token }), 'PERMISSION_DENIED');
      expect(details).to.match(/^token exchange refused: subject_token is not valid: /);
    });

    it('the gateway, which has no ExchangeToken grant, -> PERMISSION_DENIED (grant)', async () => {
      const gatewayAuth = await t.workload('gateway', 'auth');
      const details = await noHandlerRan('auth', `${AUTH}/ExchangeToken`, GATEWAY, () =>
        expectStatus(unary(gatewayAuth, 'ExchangeToken', { subject_token: alice, subject_user: '', scope: 'images:tag', audience: IMAGE_STORE }), 'PERMISSION_DENIED'),
      );
      expect(details).to.match(/^twokey: grant check failed: .*does not grant \/twokey\.auth\.v1\.Auth\/ExchangeToken/);
    });

    it('a service token for an audience outside the trust domain -> PERMISSION_DENIED', async () => {
      const details = await expectStatus(unary(auth, 'GetServiceToken', { audience: 'spiffe://evil.example/ns/x/sa/y' }), 'PERMISSION_DENIED');
      expect(details).to.include('neither the trust domain nor a registered workload');
    });

    it('a login as a username that looks like a workload -> UNAUTHENTICATED, and auth logs the attempt as "(not a username)", not as the name', async () => {
      // No account can have such a name (usernames refuse SPIFFE shapes), so the password cannot make
      // it fail or succeed: the rule shows in auth's log, which names the attempt "(not a username)"
      // (a name that passed the rule would be logged as itself, as with "nosuchuser" below).
      const gatewayAuth = t.gateway('auth');
      const failures = () => logLines(t.mesh, 'auth').filter((l) => l['event'] === 'auth.login_failed');
      const seen = failures().length;
      for (const username of [id('cleaner'), 'nosuchuser']) {
        const details = await expectStatus(unary(gatewayAuth, 'Login', { username, password: 'x' }), 'UNAUTHENTICATED');
        expect(details).to.match(/^login failed: unknown user, wrong password or disabled account/);
      }
      const lines = await eventually('two auth.login_failed lines', 5000, () => {
        const found = failures().slice(seen);
        return found.length >= 2 ? found : undefined;
      });
      expect(lines.map((l) => [l['user'], l['code']])).to.deep.equal([
        ['(not a username)', 'ERR_LOGIN_FAILED'],
        ['nosuchuser', 'ERR_LOGIN_FAILED'],
      ]);
    });
  });
});
