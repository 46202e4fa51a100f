// Revoked workload certificates, withdrawn signing keys and a CA leaving a trust bundle on the running mesh: how long each takes, and recovery.
import { X509Certificate } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Client, ClientReadableStream, ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { decodeProtectedHeader } from 'jose';
import { CertificateAuthority } from '../../certs-ca/certificate-authority.ts';
import { loadRegistry } from '../../certs-ca/registry.ts';
import { jpegWithGps } from '../../scripts/fixtures/gps-jpeg.ts';
import { DEFAULT_REGISTRY } from '../../scripts/local-mesh/local-mesh.ts';
import { TWOKEY_BIN } from '../../scripts/local-mesh/supervisor.ts';
import { unary } from '../../services/mesh-runtime/protos.ts';
import { STATUS_NAMES, eventually, expectStatus, logLines, removeState, startTestMesh, timeUntilRefused, withToken, type TestMesh } from './mesh-harness.ts';

const run = promisify(execFile);
const EMPTY_LIST = { owner: '', tag: '', page_size: 0, page_token: '' };
// Generous: the figures are printed, not asserted (the machine is shared).
const BOUND_MS = 15_000;

interface Image {
  id: string;
  tags: string[];
}

/** A WatchImages stream's end: its status code name and details (OK when it ended cleanly). */
function streamEnd(stream: ClientReadableStream<unknown>): Promise<{ code: string; details: string; at: number }> {
  return new Promise((resolve) => {
    stream.on('data', () => undefined);
    stream.on('error', (err: ServiceError) => resolve({ code: STATUS_NAMES[err.code] ?? String(err.code), details: err.details, at: Date.now() }));
    stream.on('end', () => resolve({ code: 'OK', details: '', at: Date.now() }));
  });
}

/** Replaces a file in one rename, so a service polling it never reads it half-written. */
function replaceFile(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

describe('revoked credentials on the running mesh', function () {
  this.timeout(90_000);
  let t: TestMesh;
  let images: Client;
  let alice: string;

  before(async function () {
    this.timeout(120_000);
    t = await startTestMesh({ env: { TWOKEY_REVOCATION_HEARTBEAT: '1s' } });
    images = t.gateway('image-store');
    alice = await t.login('alice');
  });

  after(async function () {
    this.timeout(30_000);
    if (t !== undefined) {
      await t.close();
      removeState(t.stateDir);
    }
  });

  // As an operator runs it: over mTLS to auth, as the admin identity of the mesh's state directory.
  const revoke = (...args: string[]) => run(process.execPath, [TWOKEY_BIN, 'revoke', ...args, '--state-dir', t.stateDir]);
  const upload = (name: string, latitude: number, token = alice) =>
    unary<Image>(images, 'CreateImage', { name, content_type: 'image/jpeg', content: jpegWithGps({ latitude, longitude: 2.2945 }), tags: [] }, withToken(token));
  const tagged = (id: string, timeoutMs: number, token = alice) =>
    eventually(`image ${id} to be tagged`, timeoutMs, async () => {
      const image = await unary<Image>(images, 'GetImage', { id, without_content: true }, withToken(token));
      return image.tags.includes('gps') ? image : undefined;
    });

  /**
   * Calls as tagging, with its certificate and its own service token, as the tagging process makes
   * them: clients at auth and image-store, and an open WatchImages stream with the promise of its end.
   */
  async function watchAsTagging() {
    const asTaggingAtAuth = await t.workload('tagging', 'auth');
    const service = (await unary<{ access_token: string }>(asTaggingAtAuth, 'GetServiceToken', { audience: '' })).access_token;
    const asTagging = await t.workload('tagging', 'image-store');
    const watch = (asTagging as unknown as { WatchImages(req: object, md: unknown): ClientReadableStream<unknown> }).WatchImages(
      { after_sequence: '0' },
      withToken(service),
    );
    return { asTaggingAtAuth, service, asTagging, ended: streamEnd(watch) };
  }

  it("refuses tagging's revoked certificate for new calls and ends its open WatchImages stream; its next certificate works", async () => {
    const dir = join(t.mesh.layout.svidRoot, 'tagging');
    await tagged((await upload('before.jpg', 48.1)).id, 20_000);
    const revoked = new X509Certificate(readFileSync(join(dir, 'svid.pem')));
    const { asTaggingAtAuth, service, asTagging, ended } = await watchAsTagging();
    const probe = await upload('probe.jpg', 48.2);
    await unary(asTagging, 'GetImage', { id: probe.id, without_content: true }, withToken(service));
    const retriesBefore = logLines(t.mesh, 'tagging').filter((l) => l['event'] === 'tagging.retry').length;

    const revokedAt = Date.now();
    await revoke('cert', '--serial', revoked.serialNumber);
    console.log(`      \`twokey revoke cert\` returned after ${Date.now() - revokedAt} ms`);
    const { details } = await timeUntilRefused(
      'a new call with the revoked certificate at image-store',
      'UNAUTHENTICATED',
      () => unary(asTagging, 'GetImage', { id: probe.id, without_content: true }, withToken(service)),
      { since: revokedAt, from: 'the command was started', boundMs: BOUND_MS },
    );
    expect(details).to.match(/^twokey: peer check failed: peer certificate [0-9A-Fa-f]+ is revoked \(decision [0-9a-f-]{36}\)$/);
    const atAuth = await expectStatus(unary(asTaggingAtAuth, 'GetServiceToken', { audience: '' }), 'UNAUTHENTICATED');
    expect(atAuth).to.contain('is revoked');
    // The stream opened with that certificate ends with the status a new call gets.
    const end = await Promise.race([ended, new Promise<undefined>((r) => setTimeout(r, BOUND_MS, undefined))]);
    expect(end, 'the WatchImages stream opened with the revoked certificate to end').to.not.equal(undefined);
    console.log(`      our WatchImages stream with the revoked certificate ended ${end!.at - revokedAt} ms after the command was started`);
    expect(end!.code).to.equal('UNAUTHENTICATED');
    expect(end!.details).to.match(/^twokey: peer check failed: peer certificate [0-9A-Fa-f]+ is revoked \(decision [0-9a-f-]{36}\); the stream outlived it$/);
    // tagging's own stream ends the same way (it logs the interruption and retries).
    const retry = await eventually("tagging's own WatchImages stream to end", BOUND_MS, () =>
      logLines(t.mesh, 'tagging')
        .filter((l) => l['event'] === 'tagging.retry')
        .slice(retriesBefore)
        .find((l) => l['code'] === 16 && String(l['err']).includes('is revoked')),
    );
    console.log(`      tagging's own WatchImages stream ended ${Date.parse(String(retry['time'] ?? new Date().toISOString())) - revokedAt} ms after the command was started`);

    // Uploaded while tagging is refused, tagged once it holds a new certificate.
    const waiting = await upload('during.jpg', 48.3);
    const registry = loadRegistry(DEFAULT_REGISTRY);
    const w = registry.workloads.find((x) => x.name === 'tagging')!;
    const ca = CertificateAuthority.open(t.mesh.layout.caDir);
    const next = ca.issue({ spiffeId: w.spiffeId, grants: w.grants, ttl: w.ttl, dns: w.dns, ip: w.ip });
    ca.writeWorkload(dir, next);
    const replacedAt = Date.now();
    const nextSerial = new X509Certificate(next.chainPem).serialNumber;
    expect(nextSerial).to.not.equal(revoked.serialNumber);
    await eventually('tagging to reload its certificate', BOUND_MS, () =>
      logLines(t.mesh, 'tagging').some((l) => l['event'] === 'svid.rotated' && String(l['serial']).toUpperCase() === nextSerial.toUpperCase()) || undefined,
    );
    const done = await tagged(waiting.id, 30_000);
    console.log(`      with the next certificate in place, the upload made while refused was tagged ${Date.now() - replacedAt} ms later`);
    expect(done.tags).to.include('gps');
    await tagged((await upload('after.jpg', 48.4)).id, 20_000);
    // And a fresh client with the new certificate files is served.
    const fresh = await t.workload('tagging', 'auth');
    await unary(fresh, 'GetServiceToken', { audience: '' });
  });

  it('refuses every token signed by a withdrawn kid at the gateway, image-store and tagging; a fresh login works', async () => {
    const token = await t.login('bob');
    const kid = decodeProtectedHeader(token).kid!;
    const photo = await unary<Image>(images, 'CreateImage', { name: 'k.jpg', content_type: 'image/jpeg', content: jpegWithGps({ latitude: 1.5, longitude: 2.5 }), tags: [] }, withToken(token));
    const tagging = t.gateway('tagging');
    const suggest = (client: Client, tok: string) => unary(client, 'SuggestTags', { image_id: photo.id }, withToken(tok));
    // The mesh services themselves, reached past the gateway with its certificate (it holds both grants).
    const storeDirect = await t.workload('gateway', 'image-store');
    const taggingDirect = await t.workload('gateway', 'tagging');
    await suggest(tagging, token);

    const startedAt = Date.now();
    const { stdout } = await revoke('key', '--kid', kid);
    console.log(`      \`twokey revoke key\` returned after ${Date.now() - startedAt} ms`);
    expect(stdout).to.contain(`withdrew signing key ${kid}`);
    const withdrawn = /^twokey: revocation check failed: token is signed with a withdrawn signing key \(decision [0-9a-f-]{36}\)$/;
    const sinceCommand = { since: startedAt, from: 'the command was started', boundMs: BOUND_MS };
    expect((await timeUntilRefused('a token of the withdrawn kid at image-store', 'UNAUTHENTICATED', () => unary(storeDirect, 'ListImages', EMPTY_LIST, withToken(token)), sinceCommand)).details).to.match(withdrawn);
    expect((await timeUntilRefused('a token of the withdrawn kid at tagging', 'UNAUTHENTICATED', () => suggest(taggingDirect, token), sinceCommand)).details).to.match(withdrawn);
    const atGateway = (await timeUntilRefused('a token of the withdrawn kid at the gateway', 'UNAUTHENTICATED', () => unary(images, 'ListImages', EMPTY_LIST, withToken(token)), sinceCommand)).details;
    expect(atGateway).to.match(/^twokey gateway: revocation check failed: token is signed with a withdrawn signing key \(request [0-9a-f-]{36}\)$/);
    await expectStatus(suggest(tagging, token), 'UNAUTHENTICATED');

    const fresh = await eventually('a login signed by another key', BOUND_MS, async () => {
      const next = await t.login('bob');
      return decodeProtectedHeader(next).kid !== kid ? next : undefined;
    });
    console.log(`      a fresh login is signed by another key ${Date.now() - startedAt} ms after the command was started`);
    await eventually('the fresh token to be accepted at the gateway, image-store and tagging', BOUND_MS, async () => {
      await unary(images, 'ListImages', EMPTY_LIST, withToken(fresh));
      await unary(storeDirect, 'ListImages', EMPTY_LIST, withToken(fresh));
      await suggest(tagging, fresh);
      await suggest(taggingDirect, fresh);
      return true;
    });
    await expectStatus(unary(images, 'ListImages', EMPTY_LIST, withToken(token)), 'UNAUTHENTICATED');
    // Tagging's own service and delegated tokens were signed by that key too: uploads are still tagged.
    const start = Date.now();
    await tagged((await upload('after-kid.jpg', 48.5, fresh)).id, 30_000, fresh);
    console.log(`      an upload after the withdrawal was tagged ${Date.now() - start} ms after it was made`);
  });

  it("a CA removed from image-store's trust bundle ends the open streams of certificates it issued at once, as a new call on their connection would be refused", async () => {
    // A fresh token: one from before the withdrawal above is refused.
    alice = await t.login('alice');
    const registry = loadRegistry(DEFAULT_REGISTRY);
    const w = registry.workloads.find((x) => x.name === 'tagging')!;
    const meshCa = CertificateAuthority.open(t.mesh.layout.caDir);
    // A second CA of the same trust domain, trusted by auth and image-store for a while.
    const other = CertificateAuthority.inMemory({ trustDomain: meshCa.trustDomain, grantsOid: meshCa.grantsOid });
    const both = `${meshCa.bundlePem()}${other.bundlePem()}`;
    const rotations = (service: string) => logLines(t.mesh, service).filter((l) => l['event'] === 'svid.rotated').length;
    const reloaded = async (services: string[], write: () => void) => {
      const before = services.map(rotations);
      write();
      await eventually(`${services.join(', ')} to reload their files`, BOUND_MS, () => services.every((s, i) => rotations(s) > before[i]!) || undefined);
    };
    const bundleOf = (service: string) => join(t.mesh.layout.svidRoot, service, 'bundle.pem');
    await reloaded(['auth', 'image-store'], () => {
      for (const service of ['auth', 'image-store']) replaceFile(bundleOf(service), both);
    });
    // A tagging certificate from the second CA (its bundle holds both: it checks servers against the mesh CA).
    const dir = join(t.mesh.layout.svidRoot, 'tagging');
    const original = { cert: readFileSync(join(dir, 'svid.pem'), 'utf8'), key: readFileSync(join(dir, 'svid.key'), 'utf8'), bundle: readFileSync(join(dir, 'bundle.pem'), 'utf8') };
    const issued = other.issue({ spiffeId: w.spiffeId, grants: w.grants, ttl: w.ttl, dns: w.dns, ip: w.ip });
    await reloaded(['tagging'], () => other.writeWorkload(dir, { ...issued, bundlePem: both }));
    try {
      const { asTaggingAtAuth, service, asTagging, ended } = await watchAsTagging();
      const probe = await upload('bundle.jpg', 48.6);
      await unary(asTagging, 'GetImage', { id: probe.id, without_content: true }, withToken(service));

      // image-store stops trusting the second CA; auth still does.
      const before = rotations('image-store');
      replaceFile(bundleOf('image-store'), meshCa.bundlePem());
      const changedAt = Date.now();
      const end = await Promise.race([ended, new Promise<undefined>((r) => setTimeout(r, BOUND_MS, undefined))]);
      expect(end, 'the WatchImages stream of a certificate from the removed CA to end').to.not.equal(undefined);
      expect(rotations('image-store')).to.be.greaterThan(before);
      console.log(`      the open WatchImages stream ended ${end!.at - changedAt} ms after image-store's bundle file was replaced (polled once a second)`);
      expect(end!.code).to.equal('UNAUTHENTICATED');
      expect(end!.details).to.match(
        /^twokey: peer check failed: peer certificate no longer chains to the trust bundle \(its CA was removed\) \(decision [0-9a-f-]{36}\); the stream outlived it$/,
      );
      // Its connection was closed with the stream: a new call needs a new connection, refused at the TLS handshake.
      const refused = await expectStatus(unary(asTagging, 'GetImage', { id: probe.id, without_content: true }, withToken(service)), 'UNAVAILABLE');
      expect(refused).to.not.contain('twokey:');
      await unary(asTaggingAtAuth, 'GetServiceToken', { audience: '' });
    } finally {
      // Back to the mesh CA alone, and tagging to a certificate from it.
      replaceFile(bundleOf('auth'), meshCa.bundlePem());
      replaceFile(join(dir, 'svid.key'), original.key);
      replaceFile(join(dir, 'svid.pem'), original.cert);
      replaceFile(join(dir, 'bundle.pem'), original.bundle);
    }
  });
});
