// End to end: the example mesh as real processes over real TLS, every decision with its exact
// status code and its decision-log line naming both identities.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { get } from 'node:https';
import { readFileSync, statSync } from 'node:fs';
import { promisify } from 'node:util';
import { credentials, type Client } from '@grpc/grpc-js';
import { expect } from 'chai';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { checkHealth } from '../../services/authz/health-server.ts';
import { ImageStoreClient, unary } from '../../services/mesh-runtime/protos.ts';
import { jpegWithGps, jpegWithoutExif } from '../../scripts/fixtures/gps-jpeg.ts';
import { parseExposition, samplesOf } from '../metrics/prometheus-text.ts';
import { TWOKEY_BIN } from '../../scripts/local-mesh/supervisor.ts';
import {
  decisionIdIn,
  decisionLine,
  eventually,
  expectStatus,
  logLines,
  removeState,
  startTestMesh,
  withToken,
  type TestMesh,
} from './mesh-harness.ts';

interface Image {
  id: string;
  owner: string;
  name: string;
  tags: string[];
  content: Buffer;
}

const TAGGING = 'spiffe://twokey.local/ns/twokey/sa/tagging';
const GATEWAY = 'spiffe://twokey.local/ns/twokey/sa/gateway';
const CLEANER = 'spiffe://twokey.local/ns/twokey/sa/cleaner';
const IMAGE_STORE = 'spiffe://twokey.local/ns/twokey/sa/image-store';
const EMPTY_LIST = { owner: '', tag: '', page_size: 0, page_token: '' };
const run = promisify(execFile);

describe('example mesh, end to end', function () {
  this.timeout(60_000);
  let t: TestMesh;
  let alice: string;
  let bob: string;
  let images: Client;

  before(async function () {
    this.timeout(120_000);
    t = await startTestMesh();
    images = t.gateway('image-store');
    alice = await t.login('alice');
    bob = await t.login('bob');
  });

  after(async function () {
    this.timeout(30_000);
    if (t !== undefined) {
      await t.close();
      removeState(t.stateDir);
    }
  });

  const upload = (token: string, name: string, content: Buffer, tags: string[] = [], requestId?: string): Promise<Image> =>
    unary<Image>(images, 'CreateImage', { name, content_type: 'image/jpeg', content, tags }, withToken(token, requestId));

  it('writes users.json owner-only and endpoints.json for clients', () => {
    expect(statSync(t.mesh.layout.usersFile).mode & 0o777).to.equal(0o600);
    const endpoints = JSON.parse(readFileSync(t.mesh.layout.endpointsFile, 'utf8'));
    expect(endpoints.trustDomain).to.equal('twokey.local');
    expect(endpoints.services['image-store'].spiffeId).to.equal(IMAGE_STORE);
    expect(Object.keys(endpoints.services).sort()).to.deep.equal(['auth', 'cleaner', 'gateway', 'image-store', 'tagging']);
  });

  it("gives alice full CRUD on her own images, each call logged with the gateway's and alice's identities", async () => {
    const requestId = randomUUID();
    const created = await upload(alice, 'beach.jpg', jpegWithoutExif(), ['holiday'], requestId);
    expect(created.owner).to.equal('alice');
    const read = await unary<Image>(images, 'GetImage', { id: created.id, without_content: false }, withToken(alice));
    expect(Buffer.compare(read.content, jpegWithoutExif())).to.equal(0);
    const listed = await unary<{ images: Image[] }>(images, 'ListImages', EMPTY_LIST, withToken(alice));
    expect(listed.images.map((i) => i.id)).to.include(created.id);
    expect(listed.images.every((i) => i.owner === 'alice')).to.equal(true);
    const renamed = await unary<Image>(images, 'UpdateImage', { id: created.id, name: 'beach-2.jpg', content_type: '', content: Buffer.alloc(0) }, withToken(alice));
    expect(renamed.name).to.equal('beach-2.jpg');
    const retagged = await unary<Image>(images, 'SetTags', { id: created.id, tags: ['sea', 'holiday'] }, withToken(alice));
    expect(retagged.tags).to.deep.equal(['holiday', 'sea']);
    await unary(images, 'DeleteImage', { id: created.id }, withToken(alice));
    await expectStatus(unary(images, 'GetImage', { id: created.id, without_content: true }, withToken(alice)), 'PERMISSION_DENIED');

    const line = logLines(t.mesh, 'image-store').find((l) => l['request_id'] === requestId && l['event'] === 'authz.decision');
    expect(line).to.include({ allow: true, method: '/twokey.images.v1.ImageStore/CreateImage', peer_spiffe_id: GATEWAY, subject: 'alice', token_kind: 'user' });
  });

  it("denies bob alice's image with PERMISSION_DENIED, the same as for an image that does not exist", async () => {
    const photo = await upload(alice, 'private.jpg', jpegWithoutExif());
    const denied = await expectStatus(unary(images, 'GetImage', { id: photo.id, without_content: true }, withToken(bob)), 'PERMISSION_DENIED');
    const missing = await expectStatus(unary(images, 'GetImage', { id: `img_${'0'.repeat(32)}`, without_content: true }, withToken(bob)), 'PERMISSION_DENIED');
    expect(denied.replace(/\(decision [^)]+\)/, '')).to.equal(missing.replace(/\(decision [^)]+\)/, ''));
    await expectStatus(unary(images, 'DeleteImage', { id: photo.id }, withToken(bob)), 'PERMISSION_DENIED');
    await expectStatus(unary(images, 'UpdateImage', { id: photo.id, name: 'bob.jpg', content_type: '', content: Buffer.alloc(0) }, withToken(bob)), 'PERMISSION_DENIED');
    await expectStatus(unary(images, 'ListImages', { ...EMPTY_LIST, owner: 'alice' }, withToken(bob)), 'PERMISSION_DENIED');
    const bobs = await unary<{ images: Image[] }>(images, 'ListImages', EMPTY_LIST, withToken(bob));
    expect(bobs.images.map((i) => i.id)).to.not.include(photo.id);
    // The resource check runs in the handler, after the interceptor allowed the call: the
    // interceptor's line shows both identities, the status names the failed resource check.
    expect(denied).to.include('resource check failed');
    const id = decisionIdIn(denied);
    expect(decisionLine(t.mesh, id)).to.include({ allow: true, peer_spiffe_id: GATEWAY, subject: 'bob' });
    expect(decisionLine(t.mesh, id, 'authz.resource_denied')).to.include({
      allow: false, error_code: 'ERR_RESOURCE_FORBIDDEN', grpc_code: 7, peer_spiffe_id: GATEWAY, subject: 'bob',
    });
  });

  it('refuses gateway calls without a token, or with a malformed one, with UNAUTHENTICATED', async () => {
    const requestId = randomUUID();
    const details = await expectStatus(unary(images, 'ListImages', EMPTY_LIST, withToken(undefined, requestId)), 'UNAUTHENTICATED');
    expect(details).to.include('no "authorization: Bearer <token>" metadata');
    await expectStatus(unary(images, 'ListImages', EMPTY_LIST, withToken('not.a.token')), 'UNAUTHENTICATED');
    await expectStatus(unary(t.gateway('tagging'), 'SuggestTags', { image_id: 'x' }, withToken(undefined)), 'UNAUTHENTICATED');
    const line = logLines(t.mesh, 'gateway').find((l) => l['request_id'] === requestId);
    expect(line).to.include({ event: 'gateway.deny', error_code: 'ERR_TOKEN_MISSING', grpc_code: 16 });
    // Refused at the door: nothing reached the image store for that request.
    expect(logLines(t.mesh, 'image-store').some((l) => l['request_id'] === requestId)).to.equal(false);
  });

  it('accepts only user tokens at the gateway: a service token is refused', async () => {
    const auth = await t.workload('cleaner', 'auth');
    const service = await unary<{ access_token: string }>(auth, 'GetServiceToken', { audience: '' });
    const details = await expectStatus(unary(images, 'ListImages', EMPTY_LIST, withToken(service.access_token)), 'UNAUTHENTICATED');
    expect(details).to.include('only user tokens');
  });

  it("refuses tagging's certificate with alice's token to update or delete: PERMISSION_DENIED by the grant", async () => {
    const photo = await upload(alice, 'keep.jpg', jpegWithoutExif());
    const asTagging = await t.workload('tagging', 'image-store');
    const del = await expectStatus(unary(asTagging, 'DeleteImage', { id: photo.id }, withToken(alice)), 'PERMISSION_DENIED');
    expect(del).to.include(`certificate of ${TAGGING} does not grant /twokey.images.v1.ImageStore/DeleteImage`);
    const upd = await expectStatus(
      unary(asTagging, 'UpdateImage', { id: photo.id, name: 'x.jpg', content_type: '', content: Buffer.alloc(0) }, withToken(alice)),
      'PERMISSION_DENIED',
    );
    expect(upd).to.include('does not grant /twokey.images.v1.ImageStore/UpdateImage');
    expect(decisionLine(t.mesh, decisionIdIn(del))).to.include({ allow: false, failed_check: 'grant', peer_spiffe_id: TAGGING });
    const still = await unary<Image>(images, 'GetImage', { id: photo.id, without_content: true }, withToken(alice));
    expect(still.name).to.equal('keep.jpg');
  });

  it("refuses tagging's delegated token presented by another workload with UNAUTHENTICATED", async () => {
    const photo = await upload(alice, 'replay.jpg', jpegWithoutExif());
    const taggingAuth = await t.workload('tagging', 'auth');
    const delegated = await unary<{ access_token: string; scope: string }>(taggingAuth, 'ExchangeToken', {
      subject_token: '', subject_user: 'alice', scope: 'images:tag', audience: IMAGE_STORE,
    });
    expect(delegated.scope).to.equal('images:tag');
    // Its rightful holder may use it.
    const asTagging = await t.workload('tagging', 'image-store');
    await unary(asTagging, 'SetTags', { id: photo.id, tags: ['ok'] }, withToken(delegated.access_token));
    // The gateway's certificate does grant SetTags, yet the token is bound to tagging's certificate.
    const asGateway = await t.workload('gateway', 'image-store');
    const details = await expectStatus(unary(asGateway, 'SetTags', { id: photo.id, tags: ['stolen'] }, withToken(delegated.access_token)), 'UNAUTHENTICATED');
    expect(details).to.include('binding check failed');
    expect(decisionLine(t.mesh, decisionIdIn(details))).to.include({ failed_check: 'binding', peer_spiffe_id: GATEWAY, subject: 'alice' });
  });

  it('refuses token exchange beyond the registry: broader scope, other audience, unknown user', async () => {
    const taggingAuth = await t.workload('tagging', 'auth');
    const ask = (fields: Record<string, string>) =>
      unary(taggingAuth, 'ExchangeToken', { subject_token: '', subject_user: 'alice', scope: 'images:tag', audience: IMAGE_STORE, ...fields });
    expect(await expectStatus(ask({ scope: 'images:tag images:delete' }), 'PERMISSION_DENIED')).to.include('"images:delete" is beyond');
    expect(await expectStatus(ask({ audience: GATEWAY }), 'PERMISSION_DENIED')).to.include(`audience ${GATEWAY}`);
    expect(await expectStatus(ask({ subject_user: 'mallory' }), 'PERMISSION_DENIED')).to.include('no enabled user "mallory"');
    // The cleaner has no delegation at all, and no grant for ExchangeToken either.
    const cleanerAuth = await t.workload('cleaner', 'auth');
    const details = await expectStatus(
      unary(cleanerAuth, 'ExchangeToken', { subject_token: '', subject_user: 'alice', scope: 'images:tag', audience: IMAGE_STORE }),
      'PERMISSION_DENIED',
    );
    expect(details).to.include(`certificate of ${CLEANER} does not grant /twokey.auth.v1.Auth/ExchangeToken`);
  });

  it('refuses a workload certificate without the grant with PERMISSION_DENIED', async () => {
    const storeAsClient = await t.workload('image-store', 'auth');
    const details = await expectStatus(unary(storeAsClient, 'GetServiceToken', { audience: '' }), 'PERMISSION_DENIED');
    expect(details).to.include(`certificate of ${IMAGE_STORE} does not grant /twokey.auth.v1.Auth/GetServiceToken`);
    const cleaner = await t.workload('cleaner', 'image-store');
    await expectStatus(unary(cleaner, 'CreateImage', { name: 'x.jpg', content_type: 'image/jpeg', content: jpegWithoutExif(), tags: [] }, withToken(alice)), 'PERMISSION_DENIED');
    expect(decisionLine(t.mesh, decisionIdIn(details))).to.include({ failed_check: 'grant', peer_spiffe_id: IMAGE_STORE });
  });

  it("tags alice's GPS photo asynchronously, with tagging's delegated token for alice", async () => {
    const photo = await upload(alice, 'eiffel.jpg', jpegWithGps({ latitude: 48.8584, longitude: 2.2945 }), ['paris']);
    const tagged = await eventually('the location tags', 20_000, async () => {
      const image = await unary<Image>(images, 'GetImage', { id: photo.id, without_content: true }, withToken(alice));
      return image.tags.includes('gps') ? image : undefined;
    });
    expect(tagged.tags).to.deep.equal(['geo:48.8584,2.2945', 'gps', 'paris']);
    const setTags = logLines(t.mesh, 'image-store').filter(
      (l) => l['event'] === 'authz.decision' && l['method'] === '/twokey.images.v1.ImageStore/SetTags' && l['peer_spiffe_id'] === TAGGING && l['allow'] === true,
    );
    expect(setTags.some((l) => l['subject'] === 'alice' && l['token_kind'] === 'delegated' && JSON.stringify(l['actor_chain']) === JSON.stringify([TAGGING]))).to.equal(true);
  });

  it('suggests tags over two hops with the forwarded user token, and not for bob', async () => {
    const photo = await upload(alice, 'sydney.jpg', jpegWithGps({ latitude: -33.8568, longitude: 151.2153 }));
    const tagging = t.gateway('tagging');
    const requestId = randomUUID();
    const suggestion = await unary<{ tags: string[]; has_location: boolean; latitude: number }>(tagging, 'SuggestTags', { image_id: photo.id }, withToken(alice, requestId));
    expect(suggestion.tags).to.deep.equal(['gps', 'geo:-33.8568,151.2153']);
    expect(suggestion.latitude).to.be.closeTo(-33.8568, 1e-6);
    // Hop 2 (tagging -> image-store) carried alice's own token, under tagging's certificate.
    const hop2 = logLines(t.mesh, 'image-store').find((l) => l['request_id'] === requestId && l['event'] === 'authz.decision');
    expect(hop2).to.include({ peer_spiffe_id: TAGGING, subject: 'alice', token_kind: 'user', allow: true });
    await expectStatus(unary(tagging, 'SuggestTags', { image_id: photo.id }, withToken(bob)), 'PERMISSION_DENIED');
  });

  it('lets the cleaner delete flagged images of any owner, and nothing else', async () => {
    const flaggedAlice = await upload(alice, 'bad-a.jpg', jpegWithoutExif(), ['flagged']);
    const flaggedBob = await upload(bob, 'bad-b.jpg', jpegWithoutExif(), ['flagged']);
    const fine = await upload(alice, 'fine.jpg', jpegWithoutExif(), ['nice']);
    await eventually('the cleaner', 20_000, async () => {
      const a = await unary<{ images: Image[] }>(images, 'ListImages', EMPTY_LIST, withToken(alice));
      const b = await unary<{ images: Image[] }>(images, 'ListImages', EMPTY_LIST, withToken(bob));
      const ids = [...a.images, ...b.images].map((i) => i.id);
      return !ids.includes(flaggedAlice.id) && !ids.includes(flaggedBob.id) ? ids : undefined;
    });
    const kept = await unary<Image>(images, 'GetImage', { id: fine.id, without_content: true }, withToken(alice));
    expect(kept.tags).to.deep.equal(['nice']);
    const deletions = logLines(t.mesh, 'image-store').filter(
      (l) => l['event'] === 'authz.decision' && l['method'] === '/twokey.images.v1.ImageStore/DeleteImage' && l['allow'] === true && l['peer_spiffe_id'] === CLEANER,
    );
    expect(deletions.length).to.be.at.least(2);
    for (const line of deletions) expect(line).to.include({ subject: CLEANER, token_kind: 'service' });
  });

  it('publishes the JWKS over HTTPS for ordinary JOSE tooling', async () => {
    const { jwks } = t.mesh.endpoints;
    const body = await new Promise<string>((resolve, reject) => {
      get(jwks.url, { ca: readFileSync(jwks.caFile) }, (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`HTTP ${res.statusCode}`))));
      }).on('error', reject);
    });
    const set = JSON.parse(body) as { keys: { kid: string; d?: string }[] };
    expect(set.keys.some((k) => 'd' in k)).to.equal(false);
    expect(set.keys.map((k) => k.kid)).to.include(decodeProtectedHeader(alice).kid);
    const { payload } = await jwtVerify(alice, createLocalJWKSet(set as Parameters<typeof createLocalJWKSet>[0]), {
      algorithms: ['ES256'],
      issuer: 'https://auth.twokey.local',
      audience: 'spiffe://twokey.local',
    });
    expect(payload).to.include({ sub: 'alice', token_kind: 'user' });
  });

  it('refuses content over the size limit with RESOURCE_EXHAUSTED naming the limit', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024 + 1, 0xab);
    const details = await expectStatus(upload(alice, 'big.jpg', big), 'RESOURCE_EXHAUSTED');
    expect(details).to.include('image content is 4194305 bytes; the limit is 4194304 bytes');
    expect(await expectStatus(unary(images, 'CreateImage', { name: 'x', content_type: 'text/html', content: Buffer.from('x'), tags: [] }, withToken(alice)), 'INVALID_ARGUMENT')).to.include(
      'is not an image/* media type',
    );
  });

  it('serves only grpc.health.v1 on the plaintext health port', async () => {
    const health = t.mesh.endpoints.services['image-store']!.health;
    expect(await checkHealth(health)).to.equal('SERVING');
    const plaintext = new ImageStoreClient(health, credentials.createInsecure());
    try {
      await expectStatus(unary(plaintext, 'ListImages', EMPTY_LIST, withToken(alice)), 'UNIMPLEMENTED');
    } finally {
      plaintext.close();
    }
  });

  it('counts the calls made in Prometheus metrics on each health port, exactly, without user names or tokens', async () => {
    const scrape = async (service: string): Promise<{ body: string; count: (name: string, labels: Record<string, string>) => number }> => {
      const res = await fetch(`http://${t.mesh.endpoints.services[service]!.health}/metrics`);
      expect(res.status).to.equal(200);
      const body = await res.text();
      const families = parseExposition(body);
      const count = (name: string, labels: Record<string, string>): number =>
        samplesOf(families, name).find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value ?? 0;
      return { body, count };
    };
    const photo = await upload(alice, 'counted.jpg', jpegWithoutExif());
    const GET = '/twokey.images.v1.ImageStore/GetImage';
    const LOGIN = '/twokey.auth.v1.Auth/Login';
    const storeBefore = await scrape('image-store');
    const authBefore = await scrape('auth');
    const gatewayBefore = await scrape('gateway');

    await unary(images, 'GetImage', { id: photo.id, without_content: true }, withToken(alice));
    await unary(images, 'GetImage', { id: photo.id, without_content: true }, withToken(alice));
    await expectStatus(unary(images, 'GetImage', { id: photo.id, without_content: true }, withToken(bob)), 'PERMISSION_DENIED');
    const fresh = await t.login('alice');
    await expectStatus(unary(t.gateway('auth'), 'Login', { username: 'metrics-nobody', password: 'not-the-password' }), 'UNAUTHENTICATED');
    await expectStatus(unary(images, 'GetImage', { id: photo.id, without_content: true }, withToken(undefined)), 'UNAUTHENTICATED');

    const store = await scrape('image-store');
    const auth = await scrape('auth');
    const gateway = await scrape('gateway');
    const delta = (after: typeof store, before: typeof store, name: string, labels: Record<string, string>): number =>
      after.count(name, labels) - before.count(name, labels);
    // The interceptor allowed all three reads (both keys turned); the resource check then refused bob's.
    expect(delta(store, storeBefore, 'twokey_authz_decisions_total', { method: GET, caller: GATEWAY, outcome: 'allow', failed_check: 'none' })).to.equal(3);
    expect(delta(store, storeBefore, 'twokey_authz_refusals_total', { method: GET, caller: GATEWAY, error_code: 'ERR_RESOURCE_FORBIDDEN' })).to.equal(1);
    expect(delta(auth, authBefore, 'twokey_authz_decisions_total', { method: LOGIN, caller: GATEWAY, outcome: 'allow', failed_check: 'none' })).to.equal(2);
    expect(delta(auth, authBefore, 'twokey_auth_logins_total', { outcome: 'issued' })).to.equal(1);
    expect(delta(auth, authBefore, 'twokey_auth_logins_total', { outcome: 'ERR_LOGIN_FAILED' })).to.equal(1);
    // The gateway forwarded the reads and logins, and refused the call without a token itself.
    expect(delta(gateway, gatewayBefore, 'twokey_gateway_requests_total', { method: GET, outcome: 'forwarded' })).to.equal(3);
    expect(delta(gateway, gatewayBefore, 'twokey_gateway_requests_total', { method: LOGIN, outcome: 'forwarded' })).to.equal(2);
    expect(delta(gateway, gatewayBefore, 'twokey_gateway_requests_total', { method: GET, outcome: 'ERR_TOKEN_MISSING' })).to.equal(1);
    expect(store.count('twokey_certificate_expiry_seconds', {})).to.be.greaterThan(0);
    expect(store.count('twokey_jwks_age_seconds', {})).to.be.at.least(0);

    for (const { body } of [store, auth, gateway]) {
      for (const secret of [alice, bob, fresh]) for (const part of secret.split('.')) expect(body).not.to.contain(part);
      for (const name of ['"alice"', '"bob"', 'metrics-nobody', photo.id]) expect(body).not.to.contain(name);
    }
    expect((await fetch(`http://${t.mesh.endpoints.services['image-store']!.health}/anything`)).status).to.equal(404);
  });

  it('rotates the signing key on SIGHUP; tokens from before and after both verify', async () => {
    const oldKid = decodeProtectedHeader(alice).kid;
    process.kill(t.mesh.pid('auth')!, 'SIGHUP');
    const fresh = await eventually('a token signed with the new key', 10_000, async () => {
      const token = await t.login('alice');
      return decodeProtectedHeader(token).kid !== oldKid ? token : undefined;
    });
    // The new key was published as the next key when the mesh started: the gateway and the image
    // store already hold it, so its first token is accepted at once, as is the old one.
    await unary(images, 'ListImages', EMPTY_LIST, withToken(fresh));
    await unary(images, 'ListImages', EMPTY_LIST, withToken(alice));
    const kids = JSON.parse((await unary<{ jwks_json: string }>(await t.workload('gateway', 'auth'), 'GetJwks', {})).jwks_json).keys.map((k: { kid: string }) => k.kid);
    expect(kids).to.have.length(3).and.include(oldKid).and.include(decodeProtectedHeader(fresh).kid);
  });

  it('manages users with `twokey users`; disabled users cannot log in; repeated failures are throttled', async () => {
    const dataDir = `${t.stateDir}/data/auth`;
    const cli = (args: string[], input?: string) => {
      const child = run(process.execPath, [TWOKEY_BIN, 'users', ...args, '--data-dir', dataDir]);
      if (input !== undefined) child.child.stdin!.end(input);
      return child;
    };
    await cli(['add', 'carol', '--password-stdin'], 'carol-long-password\n');
    const auth = t.gateway('auth');
    await unary(auth, 'Login', { username: 'carol', password: 'carol-long-password' });
    await cli(['disable', 'carol']);
    await expectStatus(unary(auth, 'Login', { username: 'carol', password: 'carol-long-password' }), 'UNAUTHENTICATED');
    expect((await cli(['list'])).stdout).to.match(/carol\s+disabled/);
    // A password typed into the username field is refused and never written to the log.
    await expectStatus(unary(auth, 'Login', { username: 'Hunter2 Secret!', password: 'x' }), 'UNAUTHENTICATED');
    expect(readFileSync(t.mesh.layout.logFile('auth'), 'utf8')).to.not.include('Hunter2');

    // A spoofed X-Forwarded-For from the client is dropped; the gateway reports the real address.
    const spoof = withToken(undefined);
    spoof.set('x-forwarded-for', '203.0.113.9');
    for (let i = 0; i < 5; i++) {
      await expectStatus(unary(auth, 'Login', { username: 'ghost', password: 'wrong password' }, spoof), 'UNAUTHENTICATED');
    }
    const throttled = await expectStatus(unary(auth, 'Login', { username: 'ghost', password: 'wrong password' }), 'RESOURCE_EXHAUSTED');
    expect(throttled).to.include('too many failed logins for this username');
    const failures = logLines(t.mesh, 'auth').filter((l) => l['event'] === 'auth.login_failed' && l['user'] === 'ghost');
    expect(failures.map((l) => l['code'])).to.deep.equal([...Array<string>(5).fill('ERR_LOGIN_FAILED'), 'ERR_LOGIN_THROTTLED']);
    for (const line of failures) expect(line['source'], JSON.stringify(line)).to.be.oneOf([`${GATEWAY}|127.0.0.1`, `${GATEWAY}|::1`]);
  });

  it('`twokey users unlock` ends a login-throttle lock at once; only existing users', async () => {
    const dataDir = `${t.stateDir}/data/auth`;
    const cli = (args: string[], input?: string) => {
      const child = run(process.execPath, [TWOKEY_BIN, 'users', ...args, '--data-dir', dataDir]);
      if (input !== undefined) child.child.stdin!.end(input);
      return child;
    };
    const auth = t.gateway('auth');
    const login = (password: string) => unary(auth, 'Login', { username: 'dave', password });
    await cli(['add', 'dave', '--password-stdin'], 'dave-long-password\n');
    expect((await cli(['unlock', 'dave'])).stdout).to.equal('dave was not locked (no failed logins recorded)\n');
    for (let i = 0; i < 5; i++) await expectStatus(login('wrong password'), 'UNAUTHENTICATED');
    // Held back from this address: even the right password waits out the delay (1 s after the fifth failure).
    expect(await expectStatus(login('dave-long-password'), 'RESOURCE_EXHAUSTED')).to.include('too many failed logins for this username');
    expect((await cli(['unlock', 'dave'])).stdout).to.equal('unlocked dave (cleared 5 failed logins)\n');
    await login('dave-long-password');
    // A misspelt name is an error, not a reported unlock.
    const typo = await cli(['unlock', 'dvae']).then(() => null, (err: { code: number; stderr: string }) => err);
    expect(typo?.code).to.equal(2);
    expect(typo?.stderr).to.include('twokey users: no user dvae');
  });
});
