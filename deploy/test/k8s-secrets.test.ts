// Tests of `twokey k8s secrets`: one SVID Secret per workload, rotation, refusals, the command itself.
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { CertificateAuthority, loadRegistry, parseRegistry, type Registry } from '../../certs-ca/index.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { parseSvid } from '../../services/authz/svid.ts';
import { workloadSecrets } from '../../scripts/k8s-secrets.ts';
import { TWOKEY_BIN } from '../../scripts/local-mesh/supervisor.ts';
import { parseManifests, toYamlStream, type K8sObject } from '../tools/manifest.ts';
import { REGISTRY_FILE, REPO } from './paths.ts';

const run = promisify(execFile);

async function twokey(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [TWOKEY_BIN, ...args], { cwd: REPO, timeout: 40_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

function decode(secret: K8sObject, key: string): string {
  return Buffer.from((secret['data'] as Record<string, string>)[key]!, 'base64').toString('utf8');
}

describe('deploy: twokey k8s secrets', function () {
  this.timeout(60_000);
  let tmp: string;
  let registry: Registry;
  let catalog: MethodCatalog;
  let ca: CertificateAuthority;

  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'twokey-k8s-secrets-'));
    registry = loadRegistry(REGISTRY_FILE);
    catalog = MethodCatalog.default();
    ca = CertificateAuthority.init({ dir: join(tmp, 'ca'), trustDomain: 'twokey.local', catalog });
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('makes one Secret per deployed registry workload, holding its certificate, key and the trust bundle; none for the admin identity', () => {
    const secrets = workloadSecrets(ca, registry);
    const deployed = registry.workloads.filter((w) => w.deployed);
    expect(deployed.map((w) => w.name)).to.not.include('admin');
    expect(secrets.map((s) => `${s.metadata.namespace}/${s.metadata.name}`)).to.deep.equal(deployed.map((w) => `twokey/${w.name}-svid`));
    for (const [i, w] of deployed.entries()) {
      const secret = secrets[i]!;
      const leaf = new X509Certificate(decode(secret, 'svid.pem'));
      const svid = parseSvid(leaf.raw);
      expect(svid.spiffeId.toString()).to.equal(w.spiffeId.toString());
      expect(svid.grants.toStrings()).to.deep.equal(w.grants.toStrings());
      expect((secret.metadata['annotations'] as Record<string, string>)['twokey.local/spiffe-id']).to.equal(w.spiffeId.toString());
      expect(decode(secret, 'bundle.pem')).to.equal(ca.bundlePem());
      expect(decode(secret, 'svid.key')).to.match(/^-----BEGIN PRIVATE KEY-----\n/);
    }
    // The CA's own key never appears in what goes to the cluster.
    const caKeyBody = readFileSync(join(tmp, 'ca', 'ca.key'), 'utf8').split('\n').slice(1, -2).join('\n');
    expect(caKeyBody.length).to.be.greaterThan(100);
    for (const secret of secrets) {
      for (const key of Object.keys(secret['data'] as object)) expect(decode(secret, key)).not.to.contain(caKeyBody);
    }
  });

  it('rotates on every run: same Secret names, new keys and serials, same trust bundle', () => {
    const first = workloadSecrets(ca, registry);
    const second = workloadSecrets(ca, registry);
    expect(second.map((s) => s.metadata.name)).to.deep.equal(first.map((s) => s.metadata.name));
    for (const [i, s] of second.entries()) {
      expect(decode(s, 'svid.key')).not.to.equal(decode(first[i]!, 'svid.key'));
      expect(new X509Certificate(decode(s, 'svid.pem')).serialNumber).not.to.equal(new X509Certificate(decode(first[i]!, 'svid.pem')).serialNumber);
      expect(decode(s, 'bundle.pem')).to.equal(decode(first[i]!, 'bundle.pem'));
    }
  });

  it('writes YAML that reads back unchanged (timestamps stay strings)', () => {
    const secrets = workloadSecrets(ca, registry);
    expect(parseManifests(toYamlStream(secrets), 'out.yaml')).to.deep.equal(secrets);
  });

  it('refuses a registry of another trust domain, a workload outside --namespace, and any bad workload', () => {
    const other = CertificateAuthority.init({ dir: join(tmp, 'other-ca'), trustDomain: 'other.example', catalog });
    expect(() => workloadSecrets(other, registry)).to.throw('registry trust domain twokey.local is not this CA\'s trust domain other.example');
    expect(() => workloadSecrets(ca, registry, { namespace: 'prod' })).to.throw('workload auth is in namespace twokey, not prod');
    const text = readFileSync(REGISTRY_FILE, 'utf8').replace('      - /twokey.images.v1.ImageStore/DeleteImage\n    serviceScopes', '      - /twokey.images.v1.ImageStore/Purge\n    serviceScopes');
    expect(() => workloadSecrets(ca, parseRegistry(text))).to.throw(/^workload cleaner: /);
  });

  it('the command writes an owner-only file that `k8s check` accepts with the manifests', async () => {
    const out = join(tmp, 'secrets.yaml');
    const made = await twokey(['k8s', 'secrets', '--ca-dir', join(tmp, 'ca'), '--namespace', 'twokey', '--gateway-tls-dir', join(tmp, 'gw'), '--out', out]);
    expect(made.code, made.stderr).to.equal(0);
    expect(statSync(out).mode & 0o777).to.equal(0o600);
    const objs = parseManifests(readFileSync(out, 'utf8'), out);
    expect(objs.map((o) => o.metadata.name)).to.deep.equal([...registry.workloads.filter((w) => w.deployed).map((w) => `${w.name}-svid`), 'gateway-public-tls']);
    expect(objs.at(-1)!['type']).to.equal('kubernetes.io/tls');
    // The gateway's public certificate chains to the small CA clients are told to trust.
    const tls = new X509Certificate(decode(objs.at(-1)!, 'tls.crt'));
    expect(tls.verify(new X509Certificate(readFileSync(join(tmp, 'gw', 'ca.pem'))).publicKey)).to.equal(true);
    expect(tls.checkHost('localhost')).to.equal('localhost');

    // The database Secret of overlays/postgres is the operator's: taken as existing.
    const checked = await twokey(['k8s', 'check', 'deploy', 'deploy/overlays/local', 'deploy/overlays/postgres', '--secrets', out]);
    expect(checked.code, checked.stdout).to.equal(0);
    expect(checked.stdout).to.match(/^deploy\/overlays\/local: \d+ objects, 0 problems/m);
    expect(checked.stdout).to.match(/^deploy\/overlays\/postgres: \d+ objects, 0 problems/m);
  });

  it('the command exits 2 on bad usage and 1, naming the problem, on a broken kustomization', async () => {
    const usage = await twokey(['k8s', 'secrets', '--out', '-']);
    expect(usage.code).to.equal(2);
    expect(usage.stderr).to.contain('--ca-dir is required');

    const dir = join(tmp, 'broken');
    mkdirSync(join(dir, 'base'), { recursive: true });
    writeFileSync(join(dir, 'registry.yaml'), readFileSync(REGISTRY_FILE));
    const base = readFileSync(fileURLToPath(new URL('../base/gateway.yaml', import.meta.url)), 'utf8');
    writeFileSync(join(dir, 'base', 'gateway.yaml'), base.replace('readOnlyRootFilesystem: true', 'readOnlyRootFileSystem: true'));
    writeFileSync(join(dir, 'kustomization.yaml'), 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: twokey\nresources: [base/gateway.yaml]\n');
    const checked = await twokey(['k8s', 'check', dir]);
    expect(checked.code).to.equal(1);
    expect(checked.stdout).to.contain(`'"readOnlyRootFileSystem"' does not exist in type 'ISecurityContext'`);
    expect(checked.stdout).to.contain('registry workload auth: no ServiceAccount twokey/auth');
  });
});
