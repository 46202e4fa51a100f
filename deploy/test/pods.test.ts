// Tests that run the local overlay's pods as processes and use them the way docs/kubernetes.md does.
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { CertificateAuthority, loadRegistry } from '../../certs-ca/index.ts';
import { checkHealth } from '../../services/authz/health-server.ts';
import { AuthClient, ImageStoreClient, bearer, unary } from '../../services/mesh-runtime/protos.ts';
import { jpegWithGps } from '../../scripts/fixtures/gps-jpeg.ts';
import { workloadSecrets } from '../../scripts/k8s-secrets.ts';
import { TWOKEY_BIN } from '../../scripts/local-mesh/supervisor.ts';
import { renderKustomization } from '../tools/kustomize.ts';
import type { JsonObject, K8sObject } from '../tools/manifest.ts';
import { containersOf, podSpecOf } from '../tools/pod-spec.ts';
import { RunningPods, podCannotRun, podIdentity, podProcessEnv, preparePods, writeAtomicVolume, type LocalPod } from './local-pods.ts';
import { LOCAL_OVERLAY_DIR, REGISTRY_FILE, REPO } from './paths.ts';


function pod(pods: readonly LocalPod[], name: string): LocalPod {
  return pods.find((p) => p.name === name)!;
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, stopIf: () => string | undefined = () => undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    const fatal = stopIf();
    if (fatal !== undefined) throw new Error(fatal);
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}${last === undefined ? '' : ` (last error: ${(last as Error).message})`}`);
}

/** The serial of the certificate a TLS server presents. */
function servedSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      resolve(socket.getPeerX509Certificate()!.serialNumber);
      socket.end();
    });
    socket.once('error', reject);
  });
}

// The manifests are run, not just read: every pod of the local overlay starts as `twokey serve`
// with exactly its env, its volumes laid out as the kubelet would, and its Secrets from
// `twokey k8s secrets`. A wrong variable name, port, mount path or Service address fails here.
describe('deploy: the pods the manifests describe run and talk to each other', function () {
  this.timeout(180_000);
  let tmp: string;
  let ca: CertificateAuthority;
  let objs: K8sObject[];
  let pods: LocalPod[];
  let running: RunningPods | undefined;
  const registry = loadRegistry(REGISTRY_FILE);

  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'twokey-k8s-pods-'));
    // The pods' own uid must reach its volume directories below this one.
    chmodSync(tmp, 0o711);
    ca = CertificateAuthority.init({ dir: join(tmp, 'ca'), trustDomain: registry.trustDomain });
    const secrets = workloadSecrets(ca, registry, { namespace: 'twokey', gatewayTlsDir: join(tmp, 'gateway-tls') });
    objs = [...renderKustomization(LOCAL_OVERLAY_DIR), ...secrets];
    pods = await preparePods(objs, join(tmp, 'pods'));
    // Fail with the reason, not with a pod's "Cannot find module" or a 90 s wait for a pod that never started.
    const unreachable = pods.map((p) => podCannotRun(p)).filter((r) => r !== undefined);
    if (unreachable.length > 0) throw new Error(`the pods cannot run from this checkout: ${unreachable.join('; ')}`);
    running = new RunningPods(pods, REPO, tmp);
    const exits = running.unexpectedExits;
    for (const p of pods) {
      await until(
        `${p.name} to report SERVING`,
        90_000,
        async () => ((await checkHealth(`127.0.0.1:${p.ports.get(8081)}`, '', 1000)) === 'SERVING' ? true : undefined),
        () => (exits.length > 0 ? `${exits.join('; ')}\n${exits.map((e) => readFileSync(e.slice(e.lastIndexOf('see ') + 4), 'utf8').slice(-2000)).join('\n')}` : undefined),
      );
    }
  });

  after(async () => {
    await running?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('every pod reports SERVING on its health port, and none exited', () => {
    expect(pods.map((p) => p.name).sort()).to.deep.equal(registry.workloads.filter((w) => w.deployed).map((w) => w.name).sort());
    expect(running!.unexpectedExits).to.deep.equal([]);
    // Run as root, the harness runs each pod as the uid and gid of its securityContext.
    if (process.getuid?.() === 0) {
      for (const p of pods) {
        const status = readFileSync(`/proc/${running!.pid(p.name)}/status`, 'utf8');
        expect(/^Uid:\s+(\d+)/m.exec(status)![1], p.name).to.equal(String(p.user.uid));
        expect(/^Gid:\s+(\d+)/m.exec(status)![1], p.name).to.equal(String(p.user.gid));
      }
    }
  });

  it("answers each probe the kubelet would send, with the manifest's port and service name, SERVING", async () => {
    for (const p of pods) {
      const workload = objs.find((o) => (o.kind === 'Deployment' || o.kind === 'StatefulSet') && o.metadata.name === p.name)!;
      const container = containersOf(podSpecOf(workload)!)[0]!;
      const asked: string[] = [];
      for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
        const grpcProbe = (container[probe] as JsonObject | undefined)?.['grpc'] as JsonObject | undefined;
        expect(grpcProbe, `${p.name} ${probe}`).to.not.equal(undefined);
        const service = typeof grpcProbe!['service'] === 'string' ? grpcProbe!['service'] : '';
        // A name the health server does not know is answered NOT_FOUND, which fails the probe.
        expect(await checkHealth(`127.0.0.1:${p.ports.get(Number(grpcProbe!['port']))}`, service, 1000), `${p.name} ${probe} (service ${JSON.stringify(service)})`).to.equal('SERVING');
        asked.push(service);
      }
      expect(asked, p.name).to.deep.equal(['liveness', '', 'liveness']);
    }
  });

  it('a user added as docs/kubernetes.md says logs in through the gateway, uploads, and tagging tags the upload', async () => {
    // `kubectl exec auth-0 -- node dist/scripts/twokey.js users add alice`, with auth's environment.
    const password = 'correct horse battery staple';
    await new Promise<void>((resolve, reject) => {
      const auth = pod(pods, 'auth');
      const child = execFile(process.execPath, [TWOKEY_BIN, 'users', 'add', 'alice', '--password-stdin'], { cwd: REPO, env: podProcessEnv(auth), ...podIdentity(auth) }, (err, _out, stderr) =>
        err ? reject(new Error(`users add failed: ${stderr}`)) : resolve(),
      );
      child.stdin!.end(`${password}\n`);
    });
    // `kubectl port-forward svc/gateway 9443:9443`, trusting the gateway's own CA.
    const address = `127.0.0.1:${pod(pods, 'gateway').ports.get(9443)}`;
    const credentials = grpc.credentials.createSsl(readFileSync(join(tmp, 'gateway-tls', 'ca.pem')));
    // Through a port-forward the client dials localhost, the name the certificate carries.
    const options = { 'grpc.ssl_target_name_override': 'localhost', 'grpc.default_authority': 'localhost' };
    const auth = new AuthClient(address, credentials, options);
    const images = new ImageStoreClient(address, credentials, options);
    try {
      const { access_token: token } = await unary<{ access_token: string }>(auth, 'Login', { username: 'alice', password });
      // Pods start together, so the gateway may have failed to fetch auth's keys and then waits a
      // cooldown (5 s) before asking again; tokens are refused meanwhile, which this waits out.
      await until("the gateway to hold auth's verification keys", 20_000, async () =>
        unary(images, 'ListImages', { owner: '', tag: '', page_size: 0, page_token: '' }, bearer(token)),
      );
      const photo = await unary<{ id: string; owner: string }>(
        images,
        'CreateImage',
        { name: 'eiffel.jpg', content_type: 'image/jpeg', content: jpegWithGps({ latitude: 48.8584, longitude: 2.2945 }), tags: [] },
        bearer(token),
      );
      expect(photo.owner).to.equal('alice');
      const tagged = await until('tagging to tag the upload', 30_000, async () => {
        const image = await unary<{ tags: string[] }>(images, 'GetImage', { id: photo.id, without_content: true }, bearer(token));
        return image.tags.includes('gps') ? image : undefined;
      });
      expect(tagged.tags).to.include('gps');
    } finally {
      auth.close();
      images.close();
    }
  });

  it('rotated Secrets, delivered the way the kubelet updates a volume, are picked up without a restart', async () => {
    const authPod = pod(pods, 'auth');
    const bundle = ca.bundlePem();
    const before = await servedSerial(authPod.ports.get(8444)!, bundle);
    const pids = new Map(pods.map((p) => [p.name, running!.pid(p.name)]));

    const rotated = workloadSecrets(ca, registry, { namespace: 'twokey' });
    for (const p of pods) {
      const secret = rotated.find((s) => s.metadata.name === `${p.name}-svid`)!;
      const files = Object.fromEntries(Object.entries(secret['data'] as Record<string, string>).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
      writeAtomicVolume(p.mounts.get('/var/run/twokey/svid')!, files, 0o440, p.user.fsGroup);
    }
    const expected = new X509Certificate(Buffer.from((rotated[0]!['data'] as Record<string, string>)['svid.pem']!, 'base64')).serialNumber;
    expect(rotated[0]!.metadata.name).to.equal('auth-svid');
    expect(expected).not.to.equal(before);
    await until("auth's JWKS endpoint to serve the rotated certificate", 15_000, async () =>
      (await servedSerial(authPod.ports.get(8444)!, bundle)) === expected ? true : undefined,
    );
    for (const p of pods) expect(running!.pid(p.name), `${p.name} was restarted`).to.equal(pids.get(p.name));
    for (const p of pods) expect(await checkHealth(`127.0.0.1:${p.ports.get(8081)}`, '', 1000)).to.equal('SERVING');
    expect(running!.unexpectedExits).to.deep.equal([]);
  });
});
