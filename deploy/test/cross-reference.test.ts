// Tests that manifests, registry and proto/ agree, and that each cross-reference check catches its mistake.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { CertificateAuthority, loadRegistry, parseRegistry, type Registry } from '../../certs-ca/index.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { workloadSecrets } from '../../scripts/k8s-secrets.ts';
import { crossReferenceProblems, impliedCallees, type DeploymentFacts } from '../tools/cross-reference.ts';
import { renderKustomization } from '../tools/kustomize.ts';
import type { JsonObject, K8sObject } from '../tools/manifest.ts';
import { containersOf, objects, podSpecOf } from '../tools/pod-spec.ts';
import { validateManifests } from '../tools/schema.ts';
import { DATABASE_SECRET } from '../tools/workload-secrets.ts';
import { KUSTOMIZATIONS, REGISTRY_FILE, SERVICES_DIR } from './paths.ts';

// Mutations address objects by kind and name, then by JSON path, so a failing case reads as the
// one change it makes.
function get(objs: K8sObject[], kind: string, name: string): K8sObject {
  const found = objs.find((o) => o.kind === kind && o.metadata.name === name);
  if (found === undefined) throw new Error(`no ${kind}/${name}`);
  return found;
}

function container(objs: K8sObject[], workload: string): JsonObject {
  const w = objs.find((o) => (o.kind === 'Deployment' || o.kind === 'StatefulSet') && o.metadata.name === workload)!;
  return containersOf(podSpecOf(w)!)[0]!;
}

function spec(obj: K8sObject): JsonObject {
  return obj['spec'] as JsonObject;
}

describe('deploy: manifests, registry and proto/ agree', function () {
  let tmp: string;
  let registry: Registry;
  let catalog: MethodCatalog;
  let secrets: K8sObject[];
  let base: K8sObject[];

  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'twokey-k8s-xref-'));
    registry = loadRegistry(REGISTRY_FILE);
    catalog = MethodCatalog.default();
    const ca = CertificateAuthority.init({ dir: join(tmp, 'ca'), trustDomain: registry.trustDomain, catalog });
    // The real Secrets `twokey k8s secrets` makes, so mounts resolve against what users apply.
    secrets = workloadSecrets(ca, registry, { namespace: 'twokey', gatewayTlsDir: join(tmp, 'gateway-tls') });
    base = [...renderKustomization(KUSTOMIZATIONS[0].dir), ...secrets];
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  function facts(objs: K8sObject[], reg: Registry = registry): DeploymentFacts {
    // The database Secret is the operator's, as `twokey k8s check` assumes.
    return { objects: objs, registry: reg, catalog, externalSecrets: new Set([`twokey/${DATABASE_SECRET}`]), registrySource: { text: readFileSync(REGISTRY_FILE, 'utf8'), file: 'deploy/registry.yaml' } };
  }

  /** The problems one mutation of the base set causes. */
  function problemsAfter(mutate: (objs: K8sObject[]) => void, reg: Registry = registry): string[] {
    const objs = structuredClone(base);
    mutate(objs);
    return crossReferenceProblems(facts(objs, reg));
  }

  for (const { name, dir } of KUSTOMIZATIONS) {
    it(`${name} with the issued Secrets has no problems, and the Secrets are valid objects`, () => {
      const objs = [...renderKustomization(dir), ...secrets];
      expect(crossReferenceProblems(facts(objs))).to.deep.equal([]);
      expect(validateManifests(secrets)).to.deep.equal([]);
    });
  }

  it('gives a data directory to exactly the services whose code keeps state there', () => {
    for (const w of registry.workloads.filter((x) => x.deployed)) {
      const main = readFileSync(join(SERVICES_DIR, w.name, 'main.ts'), 'utf8');
      const keepsState = /\bdataDir\(env\)/.test(main);
      const env = objects(container(base, w.name), 'env').map((e) => e['name']);
      expect(env.includes('TWOKEY_DATA_DIR'), `${w.name} keeps state: ${keepsState}`).to.equal(keepsState);
    }
  });

  it('derives the network paths from the grants: exactly these callers and callees', () => {
    const { callees, problems } = impliedCallees(facts(base));
    expect(problems).to.deep.equal([]);
    const pairs = [...callees].map(([caller, m]) => [caller, [...m.keys()].sort()]);
    expect(Object.fromEntries(pairs)).to.deep.equal({
      auth: [],
      gateway: ['auth', 'image-store', 'tagging'],
      'image-store': ['auth'],
      tagging: ['auth', 'image-store'],
      cleaner: ['auth', 'image-store'],
      // The grants imply it; no NetworkPolicy opens it, as admin has no pod (it reaches auth by port-forward).
      admin: ['auth'],
    });
  });

  describe('each check fails on the mistake it exists for', () => {
    it('a Service whose selector matches no pods', () => {
      expect(problemsAfter((o) => ((spec(get(o, 'Service', 'tagging'))['selector'] as JsonObject)['app.kubernetes.io/name'] = 'taging'))).to.include(
        'Service/twokey/tagging: selector {"app.kubernetes.io/name":"taging"} selects 0 workloads\' pods, expected exactly one',
      );
    });

    it('a Service port aimed at a port no container declares', () => {
      expect(problemsAfter((o) => (objects(spec(get(o, 'Service', 'image-store')), 'ports')[0]!['targetPort'] = 'grpc'))).to.include(
        'Service/twokey/image-store: port grpc-mesh targets "grpc", which no container of StatefulSet/twokey/image-store declares',
      );
    });

    it('a StatefulSet governed by a Service that is not headless', () => {
      expect(problemsAfter((o) => void delete spec(get(o, 'Service', 'auth'))['clusterIP'])).to.include(
        'StatefulSet/twokey/auth: serviceName "auth" must name a headless Service that selects its pods',
      );
    });

    it('a registry workload without its ServiceAccount', () => {
      const problems = problemsAfter((o) => o.splice(o.indexOf(get(o, 'ServiceAccount', 'cleaner')), 1));
      expect(problems).to.include('registry workload cleaner: no ServiceAccount twokey/cleaner');
      expect(problems).to.include('Deployment/twokey/cleaner: ServiceAccount twokey/cleaner does not exist');
    });

    it('the admin identity (deployed: false) given a ServiceAccount or its certificate in a Secret, so a pod could act as it', () => {
      const problems = problemsAfter((o) => {
        o.push({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'admin', namespace: 'twokey' } });
        o.push({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'admin-svid', namespace: 'twokey' }, type: 'Opaque', data: {} });
      });
      expect(problems).to.include('registry workload admin is not deployed (deployed: false), but ServiceAccount twokey/admin exists');
      expect(problems).to.include('registry workload admin is not deployed (deployed: false), but its certificate is in Secret twokey/admin-svid');
    });

    it('a pod running under another workload\'s service account, so its SPIFFE ID is wrong', () => {
      expect(problemsAfter((o) => (podSpecOf(get(o, 'StatefulSet', 'tagging'))!['serviceAccountName'] = 'gateway'))).to.include(
        'StatefulSet/twokey/tagging: runs as spiffe://twokey.local/ns/twokey/sa/gateway, but the registry gives workload tagging spiffe://twokey.local/ns/twokey/sa/tagging',
      );
    });

    it('a registry whose SPIFFE IDs are not namespace and service account', () => {
      const text = readFileSync(REGISTRY_FILE, 'utf8').replace('serviceAccount: cleaner', 'serviceAccount: janitor');
      const problems = crossReferenceProblems(facts(structuredClone(base), parseRegistry(text)));
      expect(problems).to.include('registry workload cleaner: no ServiceAccount twokey/janitor');
      expect(problems).to.include('Deployment/twokey/cleaner: runs as spiffe://twokey.local/ns/twokey/sa/cleaner, but the registry gives workload cleaner spiffe://twokey.local/ns/twokey/sa/janitor');
      expect(problems).to.include('ServiceAccount/twokey/cleaner belongs to no registry workload');
    });

    it('pods loading a registry other than the one certificates are issued from', () => {
      const problems = problemsAfter((o) => {
        const cm = o.find((x) => x.kind === 'ConfigMap')!;
        const data = cm['data'] as Record<string, string>;
        data['registry.yaml'] = data['registry.yaml']!.replace('userTokenTtl: 15m', 'userTokenTtl: 12h');
      });
      expect(problems).to.have.length(5);
      for (const p of problems) expect(p).to.match(/^\w+\/twokey\/[a-z-]+: loads a registry from ConfigMap\/twokey\/twokey-registry-\w+ that differs from deploy\/registry.yaml, which certificates are issued from/);
      expect(problems.some((p) => p.startsWith('StatefulSet/twokey/auth: '))).to.equal(true);
    });

    it('a workload the registry does not know', () => {
      const problems = problemsAfter((o) => {
        const copy = structuredClone(get(o, 'Deployment', 'cleaner'));
        copy.metadata.name = 'reporter';
        o.push(copy);
      });
      expect(problems).to.include('Deployment/twokey/reporter is not a registry workload');
    });

    it('an SVID Secret mounted with subPath, which never sees rotated certificates', () => {
      const problems = problemsAfter((o) => {
        const mount = objects(container(o, 'gateway'), 'volumeMounts').find((m) => m['name'] === 'svid')!;
        mount['subPath'] = 'svid.pem';
      });
      expect(problems).to.include('Deployment/twokey/gateway: Secret gateway-svid must be mounted once, read-only, without subPath, at /var/run/twokey/svid');
    });

    it('a mounted Secret or ConfigMap that does not exist', () => {
      const problems = problemsAfter((o) => {
        o.splice(o.indexOf(get(o, 'Secret', 'auth-svid')), 1);
        o.splice(o.indexOf(o.find((x) => x.kind === 'ConfigMap')!), 1);
      });
      expect(problems).to.include('StatefulSet/twokey/auth: volume svid refers to Secret twokey/auth-svid, which does not exist');
      expect(problems.filter((p) => p.includes('volume registry refers to ConfigMap'))).to.have.length(5);
    });

    it('a Secret holding another workload\'s certificate', () => {
      const problems = problemsAfter((o) => {
        get(o, 'Secret', 'tagging-svid')['data'] = structuredClone(get(o, 'Secret', 'cleaner-svid')['data']);
      });
      expect(problems).to.include('Secret/twokey/tagging-svid: certificate is for spiffe://twokey.local/ns/twokey/sa/cleaner, not spiffe://twokey.local/ns/twokey/sa/tagging');
      expect(problems.some((p) => p.startsWith('Secret/twokey/tagging-svid: certificate grants'))).to.equal(true);
    });

    it('a NetworkPolicy that lets in a caller the grants do not imply', () => {
      const problems = problemsAfter((o) => {
        const from = (objects(spec(get(o, 'NetworkPolicy', 'tagging')), 'ingress')[0]!['from'] as JsonObject[]);
        from.push({ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'cleaner' } } });
        (objects(spec(get(o, 'NetworkPolicy', 'cleaner')), 'egress')[0]!['to'] as JsonObject[]).push({ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'tagging' } } });
      });
      expect(problems).to.deep.equal(["NetworkPolicies allow cleaner -> tagging:8443, which the registry's grants do not imply"]);
    });

    it('a NetworkPolicy that blocks a path the grants need', () => {
      const problems = problemsAfter((o) => {
        const to = objects(spec(get(o, 'NetworkPolicy', 'tagging')), 'egress')[0]!['to'] as JsonObject[];
        to.splice(1, 1); // image-store
      });
      expect(problems).to.deep.equal(["NetworkPolicies block tagging -> image-store:8443, which tagging's grants need (twokey.images.v1.ImageStore)"]);
    });

    it('default deny holds without a workload\'s own policy: a missing policy blocks, never opens', () => {
      const problems = problemsAfter((o) => o.splice(o.indexOf(get(o, 'NetworkPolicy', 'cleaner')), 1));
      expect(problems).to.deep.equal([
        "NetworkPolicies block cleaner -> auth:8443, which cleaner's grants need (twokey.auth.v1.Auth)",
        "NetworkPolicies block cleaner -> image-store:8443, which cleaner's grants need (twokey.images.v1.ImageStore)",
      ]);
    });

    it('only the gateway\'s public port is reachable from outside the namespace', () => {
      const problems = problemsAfter((o) => {
        const ingress = objects(spec(get(o, 'NetworkPolicy', 'gateway')), 'ingress')[0]!;
        (ingress['ports'] as JsonObject[]).push({ protocol: 'TCP', port: 8081 });
      });
      expect(problems).to.deep.equal([
        'NetworkPolicies allow a pod in another namespace -> gateway:8081',
        'NetworkPolicies allow the internet -> gateway:8081',
      ]);
    });

    it('a new grant in the registry needs its network path and peer address', () => {
      const text = readFileSync(REGISTRY_FILE, 'utf8').replace(
        '      - /twokey.images.v1.ImageStore/DeleteImage\n    serviceScopes: [images:read:any, images:delete:any]',
        '      - /twokey.images.v1.ImageStore/DeleteImage\n      - /twokey.tagging.v1.Tagging/SuggestTags\n    serviceScopes: [images:read:any, images:delete:any]',
      );
      const problems = crossReferenceProblems(facts(structuredClone(base), parseRegistry(text)));
      expect(problems).to.include("NetworkPolicies block cleaner -> tagging:8443, which cleaner's grants need (twokey.tagging.v1.Tagging)");
      expect(problems).to.include('Deployment/twokey/cleaner: peer addresses for ["auth","image-store"], but its grants call ["auth","image-store","tagging"]');
      // The certificate in the Secret predates the new grant.
      expect(problems.some((p) => p.startsWith('Secret/twokey/cleaner-svid: certificate grants'))).to.equal(true);
    });

    it('a peer address that misses the callee\'s Service or its certificate names', () => {
      const problems = problemsAfter((o) => {
        const env = objects(container(o, 'tagging'), 'env').find((e) => e['name'] === 'TWOKEY_AUTH_ADDR')!;
        env['value'] = 'auth-jwks:8444';
      });
      expect(problems).to.include("StatefulSet/twokey/tagging: auth-jwks:8444 does not reach auth's mesh port through its Service");
      expect(problems.some((p) => p.startsWith("StatefulSet/twokey/tagging: dials auth-jwks, which auth's certificate does not name"))).to.equal(true);
    });

    it('a Service claiming a gRPC service that proto/ does not define', () => {
      expect(problemsAfter((o) => ((get(o, 'Service', 'tagging').metadata['annotations'] as JsonObject)['twokey.local/grpc-services'] = 'twokey.tagging.v2.Tagging'))).to.include(
        'Service/twokey/tagging: serves twokey.tagging.v2.Tagging, which proto/ does not define',
      );
    });

    it('weakened pod hardening, missing probes, resources or /tmp', () => {
      const problems = problemsAfter((o) => {
        const c = container(o, 'image-store');
        const sc = c['securityContext'] as JsonObject;
        sc['readOnlyRootFilesystem'] = false;
        sc['allowPrivilegeEscalation'] = true;
        sc['capabilities'] = { drop: ['ALL'], add: ['NET_ADMIN'] };
        delete c['livenessProbe'];
        delete (c['resources'] as JsonObject)['limits'];
        podSpecOf(get(o, 'Deployment', 'cleaner'))!['automountServiceAccountToken'] = true;
        const gateway = container(o, 'gateway');
        gateway['volumeMounts'] = objects(gateway, 'volumeMounts').filter((m) => m['mountPath'] !== '/tmp');
      });
      const c = 'StatefulSet/twokey/image-store container image-store';
      expect(problems).to.include.members([
        `${c}: readOnlyRootFilesystem must be true`,
        `${c}: allowPrivilegeEscalation must be false`,
        `${c}: capabilities must drop ALL and add none`,
        `${c}: livenessProbe must be a gRPC probe on the health port 8081`,
        `${c}: no cpu limits`,
        `${c}: no memory limits`,
        'Deployment/twokey/cleaner: automountServiceAccountToken must be false (no Kubernetes API token in the pod)',
        'Deployment/twokey/gateway container gateway: needs a writable emptyDir at /tmp (the root filesystem is read-only)',
      ]);
    });

    it('liveness or startup probes that follow the database, a readiness probe that does not', () => {
      const problems = problemsAfter((o) => {
        delete ((container(o, 'auth')['livenessProbe'] as JsonObject)['grpc'] as JsonObject)['service'];
        ((container(o, 'gateway')['startupProbe'] as JsonObject)['grpc'] as JsonObject)['service'] = 'twokey.gateway.v1.Gateway';
        ((container(o, 'image-store')['readinessProbe'] as JsonObject)['grpc'] as JsonObject)['service'] = 'liveness';
      });
      expect(problems).to.have.members([
        `StatefulSet/twokey/auth container auth: livenessProbe must ask for the 'liveness' health service, not "", which turns NOT_SERVING while the database is down`,
        `Deployment/twokey/gateway container gateway: startupProbe must ask for the 'liveness' health service, not "twokey.gateway.v1.Gateway", which turns NOT_SERVING while the database is down`,
        `StatefulSet/twokey/image-store container image-store: readinessProbe must not ask for the 'liveness' health service, which stays SERVING while the database is down`,
      ]);
    });

    it('state on anything but a PersistentVolumeClaim', () => {
      const problems = problemsAfter((o) => {
        const c = container(o, 'tagging');
        c['volumeMounts'] = objects(c, 'volumeMounts').filter((m) => m['name'] !== 'data');
      });
      expect(problems).to.deep.equal(['StatefulSet/twokey/tagging container tagging: TWOKEY_DATA_DIR /var/lib/twokey must be a writable mount of a PersistentVolumeClaim']);
    });

    it('disruption budgets exactly where replicas > 1, and single-replica stateful workloads', () => {
      const problems = problemsAfter((o) => {
        const pdb = structuredClone(get(o, 'PodDisruptionBudget', 'gateway'));
        pdb.metadata.name = 'auth';
        (spec(pdb)['selector'] as JsonObject)['matchLabels'] = { 'app.kubernetes.io/name': 'auth' };
        o.push(pdb);
        o.splice(o.indexOf(get(o, 'PodDisruptionBudget', 'gateway')), 1);
        spec(get(o, 'Deployment', 'cleaner'))['replicas'] = 2;
        spec(get(o, 'StatefulSet', 'image-store'))['replicas'] = 2;
      });
      expect(problems).to.include.members([
        'Deployment/twokey/gateway: 2 replicas need exactly one PodDisruptionBudget, found 0',
        'Deployment/twokey/cleaner: 2 replicas need exactly one PodDisruptionBudget, found 0',
        'StatefulSet/twokey/auth: a single replica must not have a PodDisruptionBudget',
        'StatefulSet/twokey/image-store: a workload with a data volume must be a single-replica StatefulSet',
      ]);
    });
  });

  describe('the replicated shape (overlays/postgres): each check fails on the mistake it exists for', () => {
    let pg: K8sObject[];
    before(() => {
      pg = [...renderKustomization(KUSTOMIZATIONS[2].dir), ...secrets];
    });
    function pgProblemsAfter(mutate: (objs: K8sObject[]) => void): string[] {
      const objs = structuredClone(pg);
      mutate(objs);
      return crossReferenceProblems(facts(objs));
    }
    const ingressFrom = (o: K8sObject[], policy: string) => objects(spec(get(o, 'NetworkPolicy', policy)), 'ingress')[0]!['from'] as JsonObject[];

    it('control: the overlay as rendered has no problems', () => {
      expect(pgProblemsAfter(() => undefined)).to.deep.equal([]);
    });

    it('a PodDisruptionBudget whose selector misses the pods', () => {
      const problems = pgProblemsAfter((o) => (((spec(get(o, 'PodDisruptionBudget', 'auth'))['selector'] as JsonObject)['matchLabels'] as JsonObject)['app.kubernetes.io/name'] = 'auht'));
      expect(problems).to.deep.equal(['Deployment/twokey/auth: 2 replicas need exactly one PodDisruptionBudget, found 0']);
    });

    it('a PodDisruptionBudget that allows no eviction (minAvailable = replicas), so every drain blocks', () => {
      const problems = pgProblemsAfter((o) => (spec(get(o, 'PodDisruptionBudget', 'image-store'))['minAvailable'] = 2));
      expect(problems).to.deep.equal(['PodDisruptionBudget/twokey/image-store: minAvailable must be a number from 1 to 1 for the 2 replicas of Deployment/twokey/image-store, not 2']);
    });

    it('replicas without anti-affinity, or with one that selects other pods', () => {
      const message = (w: string) => `Deployment/twokey/${w}: 2 replicas need pod anti-affinity or a topology spread on kubernetes.io/hostname selecting its own pods, or one node's loss takes them all`;
      expect(pgProblemsAfter((o) => void delete podSpecOf(get(o, 'Deployment', 'auth'))!['affinity'])).to.deep.equal([message('auth')]);
      const wrongPods = pgProblemsAfter((o) => {
        const anti = (podSpecOf(get(o, 'Deployment', 'image-store'))!['affinity'] as JsonObject)['podAntiAffinity'] as JsonObject;
        const term = objects(anti, 'preferredDuringSchedulingIgnoredDuringExecution')[0]!['podAffinityTerm'] as JsonObject;
        ((term['labelSelector'] as JsonObject)['matchLabels'] as JsonObject)['app.kubernetes.io/name'] = 'auth';
      });
      expect(wrongPods).to.deep.equal([message('image-store')]);
    });

    it('a database Secret that is not the one the operator creates', () => {
      const problems = pgProblemsAfter((o) => {
        const env = objects(container(o, 'auth'), 'env').find((e) => e['name'] === 'TWOKEY_DATABASE_URL')!;
        ((env['valueFrom'] as JsonObject)['secretKeyRef'] as JsonObject)['name'] = 'twokey-databse';
      });
      expect(problems).to.deep.equal(['Deployment/twokey/auth: env TWOKEY_DATABASE_URL refers to Secret twokey/twokey-databse, which does not exist']);
    });

    it('a database URL written into the manifest with its password', () => {
      const problems = pgProblemsAfter((o) => {
        const env = objects(container(o, 'image-store'), 'env').find((e) => e['name'] === 'TWOKEY_DATABASE_URL')!;
        delete env['valueFrom'];
        env['value'] = 'postgres://twokey:hunter2@postgres:5432/twokey';
      });
      expect(problems).to.deep.equal(['Deployment/twokey/image-store: TWOKEY_DATABASE_URL must come from a Secret (valueFrom.secretKeyRef) when it carries a password']);
    });

    it('a replica that keeps a data directory beside the database', () => {
      const problems = pgProblemsAfter((o) => (container(o, 'auth')['env'] as JsonObject[]).push({ name: 'TWOKEY_DATA_DIR', value: '/tmp' }));
      expect(problems).to.include('Deployment/twokey/auth: keeps state in PostgreSQL (TWOKEY_DATABASE_URL) and in TWOKEY_DATA_DIR; one store, not two');
    });

    it('a NetworkPolicy that lets a workload without a database reach PostgreSQL', () => {
      const problems = pgProblemsAfter((o) => {
        ingressFrom(o, 'postgres').push({ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'tagging' } } });
        (objects(spec(get(o, 'NetworkPolicy', 'tagging')), 'egress')[0]!['to'] as JsonObject[]).push({ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'postgres' } } });
        (objects(spec(get(o, 'NetworkPolicy', 'tagging')), 'egress')[0]!['ports'] as JsonObject[]).push({ protocol: 'TCP', port: 5432 });
      });
      expect(problems).to.deep.equal(['NetworkPolicies allow tagging -> postgres:5432, but tagging names no database (TWOKEY_DATABASE_URL)']);
    });

    it('a database client whose egress to PostgreSQL is missing', () => {
      const problems = pgProblemsAfter((o) => (spec(get(o, 'NetworkPolicy', 'auth'))['egress'] as JsonObject[]).pop());
      expect(problems).to.deep.equal(['NetworkPolicies block auth -> postgres:5432, the database auth names']);
    });

    it('PostgreSQL open to other namespaces', () => {
      const problems = pgProblemsAfter((o) => ingressFrom(o, 'postgres').push({ namespaceSelector: {} }));
      expect(problems).to.deep.equal(['NetworkPolicies allow a pod in another namespace -> postgres:5432']);
    });

    it('PostgreSQL allowed to call out', () => {
      const problems = pgProblemsAfter((o) => (spec(get(o, 'NetworkPolicy', 'postgres'))['egress'] = [{}]));
      // auth's own ingress still keeps it out; the gateway's public port does not.
      expect(problems).to.deep.equal([
        'NetworkPolicies allow postgres -> gateway:9443; the database calls nobody',
        'NetworkPolicies allow postgres -> a pod in another namespace',
        'NetworkPolicies allow postgres -> the internet',
      ]);
    });

    it('PostgreSQL without its readiness probe, or not marked as a backing service', () => {
      expect(pgProblemsAfter((o) => void delete containersOf(podSpecOf(get(o, 'StatefulSet', 'postgres'))!)[0]!['readinessProbe'])).to.deep.equal([
        'StatefulSet/twokey/postgres container postgres: no readinessProbe',
      ]);
      expect(pgProblemsAfter((o) => void delete get(o, 'StatefulSet', 'postgres').metadata['annotations'])).to.include('StatefulSet/twokey/postgres is not a registry workload');
    });

    it('PostgreSQL hardened like every pod: root and a writable root filesystem are refused', () => {
      const problems = pgProblemsAfter((o) => {
        const c = containersOf(podSpecOf(get(o, 'StatefulSet', 'postgres'))!)[0]!;
        (c['securityContext'] as JsonObject)['readOnlyRootFilesystem'] = false;
        (podSpecOf(get(o, 'StatefulSet', 'postgres'))!['securityContext'] as JsonObject)['runAsUser'] = 0;
      });
      expect(problems).to.deep.equal([
        'StatefulSet/twokey/postgres: pod securityContext.runAsUser must be a non-zero uid',
        'StatefulSet/twokey/postgres container postgres: readOnlyRootFilesystem must be true',
      ]);
    });
  });
});
