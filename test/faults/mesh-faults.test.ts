// Faults operators meet, on the running example mesh under steady load: each reports attempted, failed and lost counts.
import { X509Certificate, createPrivateKey, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { expect } from 'chai';
import type { Client } from '@grpc/grpc-js';
import { decodeProtectedHeader } from 'jose';
import { CertificateAuthority } from '../../certs-ca/certificate-authority.ts';
import * as builder from '../../certs-ca/certificate-builder.ts';
import { generateP256 } from '../../certs-ca/index.ts';
import { caSubject, svidSpec } from '../../certs-ca/svid-profile.ts';
import type { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { loadRegistry } from '../../certs-ca/registry.ts';
import { DEFAULT_REGISTRY } from '../../scripts/local-mesh/local-mesh.ts';
import { jpegWithGps, jpegWithoutExif } from '../../scripts/fixtures/gps-jpeg.ts';
import { unary } from '../../services/mesh-runtime/protos.ts';
import { STATUS_NAMES, eventually, logLines, removeState, startTestMesh, withToken, type TestMesh } from '../e2e/mesh-harness.ts';
import { userClaims } from '../adversarial/hostile-tokens.ts';
import { RawSigner } from '../adversarial/jws.ts';
import { Load, SOAK_SCALE, printReport, sleep } from './load.ts';
import { parseExposition, samplesOf } from '../metrics/prometheus-text.ts';

interface Image {
  id: string;
  owner: string;
  tags: string[];
}

const EMPTY_LIST = { owner: '', tag: '', page_size: 0, page_token: '' };
const ms = (n: number) => n * SOAK_SCALE;

describe('faults on the running example mesh', function () {
  this.timeout(60_000 * SOAK_SCALE);
  let t: TestMesh;
  let images: Client;
  let alice: string;

  before(async function () {
    this.timeout(120_000);
    // Every simulated user logs in from 127.0.0.1: the gateway's per-address login limits (meant for
    // one attacker's address) are raised so the load measures the faults, not the login throttle.
    t = await startTestMesh({
      cleanerInterval: '1h',
      env: { TWOKEY_GATEWAY_LOGINS_PER_MINUTE_PER_SOURCE: '100000', TWOKEY_GATEWAY_MAX_LOGINS_IN_FLIGHT_PER_SOURCE: '1000' },
    });
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

  const list = (token: string) => unary<{ images: Image[] }>(images, 'ListImages', EMPTY_LIST, withToken(token));
  const upload = (token: string, name: string, content = jpegWithoutExif()) =>
    unary<Image>(images, 'CreateImage', { name, content_type: 'image/jpeg', content, tags: [] }, withToken(token));
  /** Every image of alice's, across pages. */
  async function allIds(token: string): Promise<Set<string>> {
    const ids = new Set<string>();
    let pageToken = '';
    do {
      const page = await unary<{ images: Image[]; next_page_token: string }>(images, 'ListImages', { ...EMPTY_LIST, page_size: 100, page_token: pageToken }, withToken(token));
      for (const i of page.images) ids.add(i.id);
      pageToken = page.next_page_token;
    } while (pageToken !== '');
    return ids;
  }

  it('auth signing-key rotation during steady load: zero failed calls, with old and new tokens', async () => {
    // Past the JWKS refetch cooldown of the start-up fetch, as in a mesh that has been running.
    await sleep(5500);
    const oldKid = decodeProtectedHeader(alice).kid;
    let current = alice;
    // Half the workers keep the pre-rotation token; the others log in afresh every few calls.
    const load = new Load('key rotation', 4, async (i) => {
      if (i % 2 === 0) return list(alice);
      if (i % 8 === 1) current = await t.login('alice');
      return list(current);
    });
    await sleep(ms(1000));
    process.kill(t.mesh.pid('auth')!, 'SIGHUP');
    await eventually('a token signed with the new key', 5000, async () => {
      const token = await t.login('alice');
      return decodeProtectedHeader(token).kid !== oldKid ? token : undefined;
    });
    await sleep(ms(2500));
    const report = await load.stop();
    printReport(report, `new kid in use: ${decodeProtectedHeader(current).kid !== oldKid}`);
    expect(decodeProtectedHeader(current).kid).to.not.equal(oldKid);
    expect(report.attempted).to.be.greaterThan(5);
    expect(report.failures).to.deep.equal({});
    // Auth keeps one previous key: a second rotation would retire the key alice's token was signed with.
    alice = current;
  });

  it('workload certificate rotation during steady load (files replaced on disk): zero failed calls, new connections see the new certificate', async () => {
    const registry = loadRegistry(DEFAULT_REGISTRY);
    const ca = CertificateAuthority.open(t.mesh.layout.caDir);
    const store = t.mesh.endpoints.services['image-store']!;
    const servedSerial = () => peerSerial(store.address!, join(t.mesh.layout.svidRoot, 'gateway'));
    const before = await servedSerial();
    const load = new Load('certificate rotation', 4, () => list(alice));
    await sleep(ms(500));
    for (const name of ['image-store', 'gateway']) {
      const w = registry.workloads.find((x) => x.name === name)!;
      ca.writeWorkload(join(t.mesh.layout.svidRoot, name), ca.issue({ spiffeId: w.spiffeId, grants: w.grants, ttl: w.ttl, dns: w.dns, ip: w.ip }));
    }
    const after = await eventually('the image store to serve its new certificate', 10_000, async () => {
      const serial = await servedSerial();
      return serial !== before ? serial : undefined;
    });
    await sleep(ms(1500));
    const report = await load.stop();
    printReport(report, `image-store serial ${before.slice(0, 8)}... -> ${after.slice(0, 8)}...`);
    expect(report.attempted).to.be.greaterThan(5);
    expect(report.failures).to.deep.equal({});
    expect(logLines(t.mesh, 'image-store').some((l) => l['event'] === 'svid.rotated')).to.equal(true);
  });

  it('bad certificate files dropped in place (another identity, a foreign key, expired, truncated): the old certificate keeps serving, zero failed calls', async () => {
    const registry = loadRegistry(DEFAULT_REGISTRY);
    const ca = CertificateAuthority.open(t.mesh.layout.caDir);
    const dir = join(t.mesh.layout.svidRoot, 'image-store');
    const store = t.mesh.endpoints.services['image-store']!;
    const servedSerial = () => peerSerial(store.address!, join(t.mesh.layout.svidRoot, 'gateway'));
    const good = { cert: readFileSync(join(dir, 'svid.pem')), key: readFileSync(join(dir, 'svid.key')) };
    const serial = await servedSerial();
    const own = registry.workloads.find((x) => x.name === 'image-store')!;
    const tagging = registry.workloads.find((x) => x.name === 'tagging')!;
    const rejectedBefore = logLines(t.mesh, 'image-store').filter((l) => l['event'] === 'svid.rejected').length;
    const other = ca.issue({ spiffeId: tagging.spiffeId, grants: tagging.grants });
    const fresh = ca.issue({ spiffeId: own.spiffeId, grants: own.grants, dns: own.dns, ip: own.ip });
    const expired = expiredLeaf(t.mesh.layout.caDir, own.spiffeId, own.grants.toStrings(), ca.grantsOid);
    // Each set of files with the reason the service must give for refusing it: the wait for that
    // reason in its log is the barrier (the service polls the files and keeps refusing them while
    // they stay), so each case shows its own files were read and refused, not merely that time passed.
    const bad: Array<[string, string, string, RegExp]> = [
      ['another identity', other.chainPem, other.keyPem, new RegExp(`new certificate names ${tagging.spiffeId}, not ${own.spiffeId}`)],
      ['a key that is not the certificate\'s', fresh.chainPem, other.keyPem, /svid\.key does not match the certificate in svid\.pem/],
      ['an expired certificate', expired.chainPem, expired.keyPem, /certificate expired at /],
      ['a truncated certificate', fresh.chainPem.slice(0, 200), fresh.keyPem, /svid\.pem holds no PEM certificate/],
    ];
    const load = new Load('bad certificate files', 3, () => list(alice));
    try {
      for (const [name, cert, key, reason] of bad) {
        const seen = logLines(t.mesh, 'image-store').filter((l) => l['event'] === 'svid.rejected').length;
        writeFileSync(join(dir, 'svid.key'), key, { mode: 0o600 });
        writeFileSync(join(dir, 'svid.pem'), cert);
        await eventually(`image-store refusing ${name}`, 15_000, () =>
          logLines(t.mesh, 'image-store')
            .filter((l) => l['event'] === 'svid.rejected')
            .slice(seen)
            .some((l) => reason.test(String(l['err'])))
            ? true
            : undefined,
        );
        expect(await servedSerial()).to.equal(serial);
      }
    } finally {
      writeFileSync(join(dir, 'svid.key'), good.key, { mode: 0o600 });
      writeFileSync(join(dir, 'svid.pem'), good.cert);
      await load.stop();
    }
    const report = load.report;
    const rejected = logLines(t.mesh, 'image-store').filter((l) => l['event'] === 'svid.rejected').slice(rejectedBefore);
    printReport(report, `${rejected.length} rejections logged, serial unchanged`);
    expect(report.failures).to.deep.equal({});
    expect(rejected.length).to.be.at.least(bad.length);
  });

  it('auth down for a while: calls with tokens already verified keep succeeding; new logins fail cleanly with UNAVAILABLE', async () => {
    await list(alice);
    await t.mesh.stopService('auth');
    try {
      const load = new Load('auth down', 3, () => list(alice));
      const logins = { attempted: 0, unavailable: 0, other: [] as string[] };
      const until = Date.now() + ms(2500);
      while (Date.now() < until) {
        logins.attempted += 1;
        await t.login('alice').then(
          () => logins.other.push('OK'),
          (err) => (err.code === 14 ? (logins.unavailable += 1) : logins.other.push(`${STATUS_NAMES[err.code]}: ${err.details}`)),
        );
        await sleep(100);
      }
      const report = await load.stop();
      printReport(report, `logins attempted ${logins.attempted}, UNAVAILABLE ${logins.unavailable}`);
      expect(report.attempted).to.be.greaterThan(5);
      expect(report.failures).to.deep.equal({});
      expect(logins.other).to.deep.equal([]);
      expect(logins.unavailable).to.equal(logins.attempted);
    } finally {
      await t.mesh.start('auth');
    }
    // The gateway's channel to auth reconnects with backoff; logins come back without a restart.
    const restarted = Date.now();
    await eventually('a login after auth is back', 15_000, () => t.login('alice'));
    process.stdout.write(`      [fault] auth down: logins work again ${Date.now() - restarted} ms after auth is healthy\n`);
    // The services' revocation watches reconnect too: each holds a set auth signed after it came back.
    for (const service of ['image-store', 'tagging']) {
      await eventually(`${service} holding a revocation set signed after auth restarted`, 15_000, async () => {
        const age = await revocationSetAge(service);
        return age >= 0 && age * 1000 < Date.now() - restarted ? true : undefined;
      });
    }
    process.stdout.write(`      [fault] auth down: image-store and tagging hold a fresh revocation set ${Date.now() - restarted} ms after auth is healthy\n`);
  });

  /** What a service's /metrics says of the age of the revocation set it holds, in seconds (-1: none). */
  async function revocationSetAge(service: string): Promise<number> {
    const res = await fetch(`http://${t.mesh.endpoints.services[service]!.health}/metrics`);
    const [sample] = samplesOf(parseExposition(await res.text()), 'twokey_revocation_set_age_seconds');
    if (sample === undefined) throw new Error(`${service} exports no twokey_revocation_set_age_seconds`);
    return sample.value;
  }

  it('key rotation during an unknown-kid flood: zero failed calls with new-key tokens (verifiers already hold the next key)', async () => {
    const attacker = RawSigner.create('x');
    const flood = new Load('rotation under an unknown-kid flood (attacker)', 4, (i) =>
      list(attacker.sign(attacker.header({ kid: `forged-${i}` }), userClaims({ scope: 'images:read' }))).then(
        () => {
          throw new Error('a forged token was accepted');
        },
        (err) => {
          if (err.code !== 16) throw err;
        },
      ),
    );
    // The flood holds every service's unknown-kid refetch cooldown busy before the rotation.
    await sleep(300);
    const oldKid = decodeProtectedHeader(await t.login('alice')).kid;
    process.kill(t.mesh.pid('auth')!, 'SIGHUP');
    const fresh = await eventually('a token signed with the new key', 5000, async () => {
      const token = await t.login('alice');
      return decodeProtectedHeader(token).kid !== oldKid ? token : undefined;
    });
    const legit = new Load('rotation under an unknown-kid flood (new-key tokens)', 2, () => list(fresh), { pauseMs: 20 });
    await sleep(ms(1500));
    const report = await legit.stop();
    const attack = await flood.stop();
    printReport(attack);
    printReport(report);
    expect(attack.failures).to.deep.equal({});
    expect(report.attempted).to.be.greaterThan(2);
    expect(report.failures).to.deep.equal({});
    alice = fresh;
  });

  it('image-store killed with SIGKILL during uploads, restarted: every acknowledged upload is present', async () => {
    const acknowledged: string[] = [];
    const tag = `run-${Date.now()}`;
    const load = new Load('SIGKILL image-store during uploads', 3, async (i) => {
      const image = await upload(alice, `${tag}-${i}.jpg`, Buffer.concat([jpegWithoutExif(), Buffer.from(`${i}`)]));
      acknowledged.push(image.id);
    }, { pauseMs: 10 });
    await sleep(ms(700));
    await t.mesh.kill('image-store');
    await sleep(300);
    await t.mesh.start('image-store');
    await sleep(ms(700));
    const report = await load.stop();
    const present = await eventually('the restarted image store', 10_000, () => allIds(alice));
    report.lost = acknowledged.filter((id) => !present.has(id)).length;
    printReport(report, `acknowledged ${acknowledged.length}`);
    expect(acknowledged.length).to.be.at.least(3);
    expect(report.lost).to.equal(0);
    // The only failures are the store being away: never a wrong answer.
    for (const key of Object.keys(report.failures)) expect(key).to.match(/^UNAVAILABLE/);
  });

  it('tagging stopped while uploads continue, restarted: every upload is tagged exactly once', async () => {
    await t.mesh.stopService('tagging');
    const uploaded: string[] = [];
    const load = new Load('tagging stopped during uploads', 2, async (i) => {
      const image = await upload(alice, `gps-${i}.jpg`, jpegWithGps({ latitude: 10 + i / 1000, longitude: 20 }));
      uploaded.push(image.id);
    }, { pauseMs: 50 });
    await sleep(ms(1000));
    const report = await load.stop();
    await t.mesh.start('tagging');
    await eventually('every upload tagged', 20_000, async () => {
      // In batches: the gateway sheds more than 32 calls in flight for one user.
      for (let i = 0; i < uploaded.length; i += 16) {
        const batch = uploaded.slice(i, i + 16);
        const tagged = await Promise.all(batch.map((id) => unary<Image>(images, 'GetImage', { id, without_content: true }, withToken(alice))));
        if (!tagged.every((img) => img.tags.includes('gps'))) return undefined;
      }
      return true;
    });
    // Restart once more: the durable cursor must not replay what was already tagged.
    await t.mesh.stopService('tagging');
    await t.mesh.start('tagging');
    // The barrier is an event, not a sleep: the worker handles the feed in sequence order from its
    // cursor, so once it has processed an upload made after this restart, any replay is in its log.
    const marker = await upload(alice, 'after-restart.jpg', jpegWithGps({ latitude: 1, longitude: 2 }));
    await eventually('the upload after the restart processed', 20_000, () =>
      logLines(t.mesh, 'tagging').some((l) => l['event'] === 'tagging.processed' && l['image_id'] === marker.id) ? true : undefined,
    );
    const processed = logLines(t.mesh, 'tagging').filter((l) => l['event'] === 'tagging.processed' && uploaded.includes(l['image_id'] as string));
    const perImage = new Map<string, number>();
    for (const l of processed) perImage.set(l['image_id'] as string, (perImage.get(l['image_id'] as string) ?? 0) + 1);
    report.lost = uploaded.filter((id) => perImage.get(id) !== 1).length;
    printReport(report, `uploads ${uploaded.length}, tagged exactly once ${[...perImage.values()].filter((n) => n === 1).length}`);
    expect(uploaded.length).to.be.greaterThan(5);
    expect(report.failures).to.deep.equal({});
    expect(report.lost).to.equal(0);
  });

  it('many idle connections that send nothing: the service keeps serving others', async () => {
    const store = t.mesh.endpoints.services['image-store']!;
    const [host, port] = store.address!.split(':') as [string, string];
    const sockets: Array<Socket | TLSSocket> = [];
    const load = new Load('idle-connection flood', 3, () => list(alice));
    const gatewayDir = join(t.mesh.layout.svidRoot, 'gateway');
    // Capped so the soak run stays under common open-file limits.
    for (let i = 0; i < 150 * Math.min(SOAK_SCALE, 4); i++) {
      // Half stop before the TLS handshake, half hold a verified TLS connection and send no HTTP/2 preface.
      if (i % 2 === 0) sockets.push(netConnect(Number(port), host).on('error', () => undefined));
      else sockets.push(tlsClient(store.address!, gatewayDir).on('error', () => undefined));
    }
    await sleep(ms(2000));
    const report = await load.stop();
    const open = sockets.filter((s) => !s.destroyed).length;
    for (const s of sockets) s.destroy();
    printReport(report, `${sockets.length} idle connections, ${open} still open`);
    expect(report.attempted).to.be.greaterThan(5);
    expect(report.failures).to.deep.equal({});
  });

  it('many idle TLS connections from anonymous clients at the public gateway: it keeps serving others', async () => {
    const [host, port] = t.mesh.endpoints.gateway.address.split(':') as [string, string];
    const ca = readFileSync(t.mesh.endpoints.gateway.caFile);
    const load = new Load('idle anonymous connections at the gateway', 3, () => list(alice));
    const sockets: TLSSocket[] = [];
    for (let i = 0; i < 150 * Math.min(SOAK_SCALE, 4); i++) {
      sockets.push(tlsConnect({ host, port: Number(port), servername: 'localhost', ca, ALPNProtocols: ['h2'] }).on('error', () => undefined));
    }
    await sleep(ms(2000));
    const report = await load.stop();
    const open = sockets.filter((s) => !s.destroyed).length;
    for (const s of sockets) s.destroy();
    printReport(report, `${sockets.length} idle anonymous TLS connections, ${open} still open`);
    expect(report.attempted).to.be.greaterThan(5);
    expect(report.failures).to.deep.equal({});
  });

  it('a flood of tokens with unknown kids: all refused, bounded JWKS refetches, others keep being served', async () => {
    const attacker = RawSigner.create('x');
    const fetchesBefore = jwksFetches();
    let refused = 0;
    const legit = new Load('unknown-kid flood (legitimate traffic)', 2, () => list(alice));
    const flood = new Load('unknown-kid flood (attacker)', 6, async (i) => {
      const token = attacker.sign(attacker.header({ kid: `forged-${i}` }), userClaims({ scope: 'images:read' }));
      try {
        await list(token);
      } catch (err) {
        if ((err as { code: number }).code === 16) {
          refused += 1;
          return;
        }
        throw err;
      }
      throw new Error('a forged token was accepted');
    });
    await sleep(ms(2000));
    const attack = await flood.stop();
    const report = await legit.stop();
    const fetches = jwksFetches() - fetchesBefore;
    printReport(attack, `refused ${refused}, JWKS fetches by the gateway ${fetches}`);
    printReport(report);
    expect(refused).to.equal(attack.attempted);
    expect(attack.attempted).to.be.greaterThan(50);
    // One fetch per 5 s cooldown at most (plus one already due).
    expect(fetches).to.be.at.most(1 + Math.ceil(attack.durationMs / 5000));
    expect(report.failures).to.deep.equal({});
  });

  /** How often the gateway fetched the JWKS from auth (auth logs every GetJwks decision). */
  function jwksFetches(): number {
    return logLines(t.mesh, 'auth').filter(
      (l) => l['event'] === 'authz.decision' && l['method'] === '/twokey.auth.v1.Auth/GetJwks' && l['peer_spiffe_id'] === 'spiffe://twokey.local/ns/twokey/sa/gateway',
    ).length;
  }
});

/** A leaf in the CA's own profile whose validity ended an hour ago (the CA refuses to issue one). */
function expiredLeaf(caDir: string, spiffeId: SpiffeId, grants: string[], grantsOid: string): { chainPem: string; keyPem: string } {
  const caKey = createPrivateKey(readFileSync(join(caDir, 'ca.key')));
  const caCert = new X509Certificate(readFileSync(join(caDir, 'ca.pem')));
  const keys = generateP256();
  const now = Math.floor(Date.now() / 1000) * 1000;
  const cert = builder.buildCertificate(
    svidSpec({
      spiffeId,
      grants,
      grantsOid,
      dns: [],
      ip: [],
      publicKey: keys.publicKey,
      issuer: caSubject(spiffeId.trustDomain),
      issuerKeyId: builder.keyIdentifier(caCert.publicKey),
      serial: builder.randomSerial(randomBytes),
      notBefore: new Date(now - 3 * 3600_000),
      notAfter: new Date(now - 3600_000),
    }),
    caKey,
  );
  return { chainPem: cert.pem, keyPem: keys.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

function tlsClient(address: string, dir: string): TLSSocket {
  const [host, port] = address.split(':') as [string, string];
  return tlsConnect({
    host,
    port: Number(port),
    servername: 'twokey.local',
    ca: readFileSync(join(dir, 'bundle.pem')),
    cert: readFileSync(join(dir, 'svid.pem')),
    key: readFileSync(join(dir, 'svid.key')),
    ALPNProtocols: ['h2'],
    checkServerIdentity: () => undefined,
  });
}

/** The serial number of the certificate a mesh listener serves to a new connection. */
function peerSerial(address: string, dir: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsClient(address, dir);
    socket.once('secureConnect', () => {
      const serial = socket.getPeerX509Certificate()?.serialNumber ?? '';
      socket.destroy();
      resolve(serial);
    });
    socket.once('error', reject);
  });
}

