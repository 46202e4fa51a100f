// Tests of the offline kustomize renderer: kustomize's name hash, JSON patches, the real kustomizations, refusals.
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { configMapHashInput, configMapHashSuffix } from '../tools/config-map-hash.ts';
import { applyPatch, parsePatch } from '../tools/json-patch.ts';
import { renderKustomization } from '../tools/kustomize.ts';
import type { K8sObject } from '../tools/manifest.ts';
import { containersOf, podSpecOf } from '../tools/pod-spec.ts';
import { DEPLOY_DIR, LOCAL_OVERLAY_DIR, POSTGRES_OVERLAY_DIR, REGISTRY_COPY_FILE, REGISTRY_FILE } from './paths.ts';

const DEPLOYMENT = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: registry.example:5000/web:1.0
      volumes:
        - name: config
          configMap:
            name: settings
            defaultMode: 0440
`;

function byKind(objs: readonly K8sObject[], kind: string): K8sObject[] {
  return objs.filter((o) => o.kind === kind);
}

describe('deploy: config map name suffix', () => {
  it("matches kustomize's own test vectors", () => {
    // From kustomize's hasher tests: empty data, one key, three keys in unsorted order.
    expect(configMapHashSuffix({})).to.equal('42745tchd9');
    expect(configMapHashSuffix({ one: '' })).to.equal('9g67k2htb6');
    expect(configMapHashSuffix({ two: '2', one: '', three: '3' })).to.equal('f5h7t85m9b');
  });

  it("escapes <, > and & the way Go's json.Marshal does", () => {
    expect(configMapHashInput({ k: 'a -> b & <c>' })).to.equal(
      '{"data":{"k":"a -\\u003e b \\u0026 \\u003cc\\u003e"},"kind":"ConfigMap","name":""}',
    );
  });
});

describe('deploy: JSON patch', () => {
  it('adds, replaces, removes, moves, copies and tests', () => {
    const doc = { a: { b: [1, 2] }, c: 'x' };
    const out = applyPatch(
      doc,
      parsePatch(
        [
          { op: 'add', path: '/a/b/1', value: 9 },
          { op: 'replace', path: '/c', value: 'y' },
          { op: 'copy', from: '/c', path: '/d' },
          { op: 'move', from: '/d', path: '/a/e' },
          { op: 'remove', path: '/a/b/0' },
          { op: 'test', path: '/a', value: { e: 'y', b: [9, 2] } },
        ],
        'patch',
      ),
    );
    expect(out).to.deep.equal({ a: { b: [9, 2], e: 'y' }, c: 'y' });
    expect(doc).to.deep.equal({ a: { b: [1, 2] }, c: 'x' });
  });

  it('fails on a missing path, a bad index and a failed test', () => {
    expect(() => applyPatch({ a: 1 }, parsePatch([{ op: 'replace', path: '/b', value: 1 }], 'p'))).to.throw('"/b" does not exist');
    expect(() => applyPatch({ a: [] }, parsePatch([{ op: 'add', path: '/a/3', value: 1 }], 'p'))).to.throw('out of range');
    expect(() => applyPatch({ a: 1 }, parsePatch([{ op: 'test', path: '/a', value: 2 }], 'p'))).to.throw('test failed at "/a"');
    expect(() => parsePatch([{ op: 'merge', path: '/a' }], 'p')).to.throw('op must be one of');
  });
});

describe('deploy: kustomize renderer on the real kustomizations', () => {
  const base = renderKustomization(DEPLOY_DIR);
  const local = renderKustomization(LOCAL_OVERLAY_DIR);

  it('generates the registry ConfigMap from deploy/registry.yaml with its content-hash name', () => {
    const registry = readFileSync(REGISTRY_FILE, 'utf8');
    const [cm, ...rest] = byKind(base, 'ConfigMap');
    expect(rest).to.have.length(0);
    expect(cm!.metadata.name).to.equal(`twokey-registry-${configMapHashSuffix({ 'registry.yaml': registry })}`);
    expect(cm!['data']).to.deep.equal({ 'registry.yaml': registry });
  });

  it("keeps the base's registry copy identical to deploy/registry.yaml (npx twokey k8s sync-registry)", () => {
    expect(readFileSync(REGISTRY_COPY_FILE, 'utf8')).to.equal(readFileSync(REGISTRY_FILE, 'utf8'));
  });

  it('points every pod at the hashed registry ConfigMap', () => {
    const name = byKind(base, 'ConfigMap')[0]!.metadata.name;
    const workloads = base.filter((o) => podSpecOf(o) !== undefined);
    expect(workloads).to.have.length(5);
    for (const w of workloads) {
      const volumes = podSpecOf(w)!['volumes'] as { configMap?: { name: string } }[];
      expect(volumes.filter((v) => v.configMap !== undefined).map((v) => v.configMap!.name)).to.deep.equal([name]);
    }
  });

  it('puts every object in the twokey namespace', () => {
    for (const obj of [...base, ...local]) {
      if (obj.kind === 'Namespace') expect(obj.metadata.name).to.equal('twokey');
      else expect(obj.metadata.namespace, obj.kind).to.equal('twokey');
    }
  });

  it('reads defaultMode 0440 as octal, as kubectl does', () => {
    for (const w of base.filter((o) => podSpecOf(o) !== undefined)) {
      const modes = (podSpecOf(w)!['volumes'] as { secret?: { defaultMode: number } }[]).filter((v) => v.secret).map((v) => v.secret!.defaultMode);
      expect(modes.length).to.be.greaterThan(0);
      for (const mode of modes) expect(mode).to.equal(0o440);
    }
  });

  it('the local overlay swaps the image tag, never pulls, and shrinks the image volume', () => {
    for (const w of local.filter((o) => podSpecOf(o) !== undefined)) {
      for (const c of containersOf(podSpecOf(w)!)) {
        expect(c['image']).to.equal('twokey:dev');
        expect(c['imagePullPolicy']).to.equal('Never');
      }
    }
    const store = local.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'image-store')!;
    expect((store['spec'] as { volumeClaimTemplates: { spec: { resources: { requests: { storage: string } } } }[] }).volumeClaimTemplates[0]!.spec.resources.requests.storage).to.equal('1Gi');
    // The base is untouched by the overlay.
    for (const w of base.filter((o) => podSpecOf(o) !== undefined)) {
      for (const c of containersOf(podSpecOf(w)!)) expect(c['image']).to.equal('twokey:0.1.0');
    }
  });
});

describe('deploy: the postgres overlay (auth and image-store replicated)', () => {
  const base = renderKustomization(DEPLOY_DIR);
  const pg = renderKustomization(POSTGRES_OVERLAY_DIR);
  const find = (kind: string, name: string) => pg.find((o) => o.kind === kind && o.metadata.name === name);
  const envOf = (w: K8sObject) => containersOf(podSpecOf(w)!)[0]!['env'] as { name: string; value?: string; valueFrom?: unknown }[];

  it('turns the auth and image-store StatefulSets into Deployments of 2 on the database Secret, without a data volume', () => {
    for (const name of ['auth', 'image-store']) {
      expect(find('StatefulSet', name), name).to.equal(undefined);
      const d = find('Deployment', name)!;
      const spec = d['spec'] as Record<string, unknown>;
      expect(spec['replicas']).to.equal(2);
      for (const gone of ['serviceName', 'volumeClaimTemplates', 'persistentVolumeClaimRetentionPolicy']) expect(spec, gone).to.not.have.property(gone);
      expect(spec['strategy']).to.deep.equal({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } });
      const env = envOf(d);
      expect(env.find((e) => e.name === 'TWOKEY_DATABASE_URL')).to.deep.equal({ name: 'TWOKEY_DATABASE_URL', valueFrom: { secretKeyRef: { name: 'twokey-database', key: 'url' } } });
      expect(env.map((e) => e.name)).to.not.include('TWOKEY_DATA_DIR');
      const mounts = (containersOf(podSpecOf(d)!)[0]!['volumeMounts'] as { name: string }[]).map((m) => m.name);
      expect(mounts).to.deep.equal(['svid', 'registry', 'tmp']);
      const pdb = find('PodDisruptionBudget', name)!;
      expect(pdb['spec']).to.deep.include({ minAvailable: 1, selector: { matchLabels: { 'app.kubernetes.io/name': name } } });
      // Everything else of the base pod is kept.
      const before = base.find((o) => o.kind === 'StatefulSet' && o.metadata.name === name)!;
      expect(envOf(d).length).to.equal(envOf(before).length);
    }
    expect(find('StatefulSet', 'tagging'), 'tagging stays as it is').to.not.equal(undefined);
  });

  it('adds one PostgreSQL StatefulSet, its headless Service and policy, all in the twokey namespace', () => {
    const db = find('StatefulSet', 'postgres')!;
    expect((db['spec'] as { replicas: number }).replicas).to.equal(1);
    expect(db.metadata['annotations']).to.deep.equal({ 'twokey.local/backing-service': 'postgresql' });
    expect(find('Service', 'postgres')!['spec']).to.deep.include({ clusterIP: 'None' });
    for (const o of pg) if (o.kind !== 'Namespace') expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).to.equal('twokey');
    for (const name of ['auth', 'image-store']) {
      const egress = (find('NetworkPolicy', name)!['spec'] as { egress: unknown[] }).egress;
      expect(egress.at(-1)).to.deep.equal({ to: [{ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'postgres' } } }], ports: [{ protocol: 'TCP', port: 5432 }] });
    }
  });

  it("stops when the base's env or mounts move, rather than patch the wrong entry", () => {
    const dir = mkdtempSync(join(tmpdir(), 'twokey-kustomize-pg-'));
    try {
      cpSync(join(DEPLOY_DIR, 'base'), join(dir, 'base'), { recursive: true });
      cpSync(POSTGRES_OVERLAY_DIR, join(dir, 'overlays', 'postgres'), { recursive: true });
      const auth = join(dir, 'base', 'auth.yaml');
      // A variable added before TWOKEY_DATA_DIR shifts it to another index.
      writeFileSync(auth, readFileSync(auth, 'utf8').replace('            - name: TWOKEY_DATA_DIR', '            - name: TWOKEY_EXTRA\n              value: x\n            - name: TWOKEY_DATA_DIR'));
      expect(() => renderKustomization(join(dir, 'overlays', 'postgres'))).to.throw(/test failed at "\/spec\/template\/spec\/containers\/0\/env\/5\/name"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('deploy: kustomize renderer refuses what it does not render', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'twokey-kustomize-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function kustomization(path: string, body: string): void {
    mkdirSync(path, { recursive: true });
    writeFileSync(join(path, 'kustomization.yaml'), `apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n${body}`);
  }

  it('renders resources, a generator, a namespace, images and a JSON patch together', () => {
    mkdirSync(join(dir, 'base'));
    writeFileSync(join(dir, 'base', 'web.yaml'), DEPLOYMENT);
    writeFileSync(join(dir, 'base', 'settings.txt'), 'x=1\n');
    kustomization(join(dir, 'base'), 'namespace: shop\nresources: [web.yaml]\nconfigMapGenerator:\n  - name: settings\n    files: [settings.txt]\n');
    kustomization(join(dir, 'overlay'), [
      'resources: [../base]',
      'images:',
      '  - name: registry.example:5000/web',
      '    newName: mirror.example/web',
      '    newTag: "2.0"',
      'patches:',
      '  - target: {kind: Deployment, name: web}',
      '    patch: |-',
      '      - op: add',
      '        path: /spec/replicas',
      '        value: 3',
      '',
    ].join('\n'));
    const [cm, deployment] = renderKustomization(join(dir, 'overlay'));
    const suffix = configMapHashSuffix({ 'settings.txt': 'x=1\n' });
    expect(cm!.metadata).to.deep.equal({ name: `settings-${suffix}`, namespace: 'shop' });
    expect(deployment!.metadata.namespace).to.equal('shop');
    expect((deployment!['spec'] as { replicas: number }).replicas).to.equal(3);
    const spec = podSpecOf(deployment!)!;
    expect(containersOf(spec)[0]!['image']).to.equal('mirror.example/web:2.0');
    expect((spec['volumes'] as { configMap: { name: string } }[])[0]!.configMap.name).to.equal(`settings-${suffix}`);
  });

  it('refuses a field outside the subset instead of ignoring it', () => {
    kustomization(dir, 'commonLabels: {team: a}\n');
    expect(() => renderKustomization(dir)).to.throw('field "commonLabels" is outside the supported kustomize subset');
  });

  it('refuses a generator file outside the kustomization directory, as kustomize does', () => {
    writeFileSync(join(dir, 'registry.yaml'), 'a: 1\n');
    kustomization(join(dir, 'inner'), 'configMapGenerator:\n  - name: r\n    files: [../registry.yaml]\n');
    expect(() => renderKustomization(join(dir, 'inner'))).to.throw('is outside the kustomization directory');
  });

  it('refuses strategic-merge patches and patches whose target matches nothing', () => {
    writeFileSync(join(dir, 'web.yaml'), DEPLOYMENT);
    kustomization(dir, 'resources: [web.yaml]\npatches:\n  - target: {kind: Deployment}\n    patch: "spec: {replicas: 2}"\n');
    expect(() => renderKustomization(dir)).to.throw('only JSON 6902 patches');
    kustomization(dir, 'resources: [web.yaml]\npatches:\n  - target: {kind: StatefulSet}\n    patch: "[{op: remove, path: /spec}]"\n');
    expect(() => renderKustomization(dir)).to.throw('target matches no object');
  });

  it('refuses the same object twice and a kustomization cycle', () => {
    writeFileSync(join(dir, 'a.yaml'), DEPLOYMENT);
    writeFileSync(join(dir, 'b.yaml'), DEPLOYMENT);
    kustomization(dir, 'resources: [a.yaml, b.yaml]\n');
    expect(() => renderKustomization(dir)).to.throw('Deployment/web is defined twice');
    kustomization(join(dir, 'x'), 'resources: [../y]\n');
    kustomization(join(dir, 'y'), 'resources: [../x]\n');
    expect(() => renderKustomization(join(dir, 'x'))).to.throw('cycle detected');
  });

  it('refuses an overlay inside the directory of the base it uses, as kustomize does', () => {
    writeFileSync(join(dir, 'web.yaml'), DEPLOYMENT);
    kustomization(dir, 'resources: [web.yaml]\n');
    kustomization(join(dir, 'overlays', 'dev'), 'resources: [../..]\n');
    expect(() => renderKustomization(join(dir, 'overlays', 'dev'))).to.throw(/cycle detected: candidate root .* contains visited root .*overlays\/dev/);
  });

  it('refuses a namespaced kind it does not know', () => {
    writeFileSync(join(dir, 'w.yaml'), 'apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n');
    kustomization(dir, 'namespace: shop\nresources: [w.yaml]\n');
    expect(() => renderKustomization(dir)).to.throw('kind Widget is not one this renderer knows to be namespaced');
  });
});
