// Checks that the rendered manifests, the registry and proto/ agree with each other: identities,
// names, ports, mounts, network paths and pod hardening. Each check returns the problems it finds.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { WORKLOAD_FILES, type Registry, type RegistryWorkload } from '../../certs-ca/index.ts';
import type { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { LIVENESS_SERVICE } from '../../services/authz/liveness.ts';
import { parseSvid } from '../../services/authz/svid.ts';
import { isObject, objectId, type JsonObject, type K8sObject } from './manifest.ts';
import { connectionAllowed, matchesSelector, namespaceLabels, type ContainerPort, type Endpoint, type PodEndpoint, type Protocol } from './network-policy.ts';
import { containersOf, isWorkloadKind, objects, podSpecOf, podTemplateOf, str } from './pod-spec.ts';
import { SVID_MOUNT_PATH, svidSecretName } from './workload-secrets.ts';

/** Annotation on a Service: the gRPC services (comma-separated) its pods serve on the mesh. */
export const GRPC_SERVICES_ANNOTATION = 'twokey.local/grpc-services';
/** Annotation on a Service: "true" for the one users reach from outside the namespace. */
export const PUBLIC_ANNOTATION = 'twokey.local/public';
export const HEALTH_PORT = 8081;
/**
 * Annotation on a workload that is not a mesh member but a service the mesh's state lives in (the
 * trial PostgreSQL): no certificate, no registry entry, no gRPC health; hardened like the rest,
 * and reached by exactly the workloads that name a database.
 */
export const BACKING_SERVICE_ANNOTATION = 'twokey.local/backing-service';
/**
 * Annotation on a workload whose application is not a twokey service (another language) and whose
 * identity a proxy sidecar holds (Envoy asking twokey's authorizer): the container it names mounts
 * the workload's certificate, and no other container may. Such a pod loads no registry, serves no
 * twokey health or metrics port, and its peers' addresses are in the proxy's own configuration.
 */
export const PROXY_CONTAINER_ANNOTATION = 'twokey.local/proxy-container';
export const DATABASE_PORT = 5432;
/** Where every service serves Prometheus metrics, on the health port. */
export const METRICS_PATH = '/metrics';
/** The namespace Prometheus runs in: the only one that may reach the scrape port. */
export const MONITORING_NAMESPACE = 'monitoring';
/** The pod annotations annotation-based Prometheus discovery reads. */
export const SCRAPE_ANNOTATIONS: Readonly<Record<string, string>> = {
  'prometheus.io/scrape': 'true',
  'prometheus.io/port': String(HEALTH_PORT),
  'prometheus.io/path': METRICS_PATH,
};

export interface DeploymentFacts {
  objects: readonly K8sObject[];
  registry: Registry;
  catalog: MethodCatalog;
  /** Secrets created outside the rendered set (e.g. by `twokey k8s secrets`), by namespace/name. */
  externalSecrets?: ReadonlySet<string>;
  /** OID of the grants extension in the SVID Secrets' certificates (the CA's setting). */
  grantsOid?: string;
  /** The registry file's text and name: the pods must load exactly this registry. */
  registrySource?: { text: string; file: string };
}

/** Where services read the registry unless TWOKEY_REGISTRY says otherwise. */
export const REGISTRY_MOUNT_FILE = '/etc/twokey/registry.yaml';

// ---------------------------------------------------------------------------------------------
// Reading the rendered set

function find(objs: readonly K8sObject[], kind: string, namespace: string | undefined, name: string): K8sObject | undefined {
  return objs.find((o) => o.kind === kind && o.metadata.name === name && o.metadata.namespace === namespace);
}

export function workloadsOf(objs: readonly K8sObject[]): K8sObject[] {
  return objs.filter((o) => isWorkloadKind(o.kind));
}

function isBackingService(obj: K8sObject): boolean {
  return isWorkloadKind(obj.kind) && annotation(obj, BACKING_SERVICE_ANNOTATION) !== undefined;
}

/** The proxy container of a workload fronted by a sidecar (PROXY_CONTAINER_ANNOTATION), else undefined. */
function proxyContainerOf(obj: K8sObject): string | undefined {
  return isWorkloadKind(obj.kind) ? annotation(obj, PROXY_CONTAINER_ANNOTATION) : undefined;
}

/** The workloads that are mesh members (everything but backing services). */
function meshWorkloadsOf(objs: readonly K8sObject[]): K8sObject[] {
  return workloadsOf(objs).filter((o) => !isBackingService(o));
}

export function stringMap(value: unknown): Record<string, string> {
  if (!isObject(value)) return {};
  return Object.fromEntries(Object.entries(value).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

export function podLabels(workload: K8sObject): Record<string, string> {
  const metadata = podTemplateOf(workload)?.['metadata'];
  return stringMap(isObject(metadata) ? metadata['labels'] : undefined);
}

export function containerPorts(workload: K8sObject): ContainerPort[] {
  const spec = podSpecOf(workload);
  if (spec === undefined) return [];
  return containersOf(spec).flatMap((c) =>
    objects(c, 'ports').map((p) => ({
      ...(typeof p['name'] === 'string' ? { name: p['name'] } : {}),
      containerPort: p['containerPort'] as number,
      protocol: ((p['protocol'] as string | undefined) ?? 'TCP') as Protocol,
    })),
  );
}

function replicasOf(workload: K8sObject): number {
  const spec = workload['spec'];
  const replicas = isObject(spec) ? spec['replicas'] : undefined;
  return typeof replicas === 'number' ? replicas : 1;
}

export function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  const entries = Object.entries(selector);
  return entries.length > 0 && entries.every(([k, v]) => labels[k] === v);
}

function podEndpoint(objs: readonly K8sObject[], workload: K8sObject): PodEndpoint {
  const namespace = workload.metadata.namespace ?? '';
  const ns = find(objs, 'Namespace', undefined, namespace);
  return {
    kind: 'pod',
    namespace,
    namespaceLabels: namespaceLabels(namespace, stringMap(ns?.metadata['labels'])),
    labels: podLabels(workload),
    ports: containerPorts(workload),
  };
}

function envOf(container: JsonObject): Map<string, string> {
  return new Map(objects(container, 'env').flatMap((e) => (typeof e['name'] === 'string' && typeof e['value'] === 'string' ? [[e['name'], e['value']] as const] : [])));
}

/** Services that select the workload's pods, with the container port each Service port targets. */
function servicesOf(objs: readonly K8sObject[], workload: K8sObject): K8sObject[] {
  const labels = podLabels(workload);
  return objs.filter((o) => o.kind === 'Service' && o.metadata.namespace === workload.metadata.namespace && selects(stringMap((o['spec'] as JsonObject | undefined)?.['selector']), labels));
}

/** The container port a Service port reaches on a workload's pods, if any. */
export function targetContainerPort(servicePort: JsonObject, ports: readonly ContainerPort[]): ContainerPort | undefined {
  const target = servicePort['targetPort'] ?? servicePort['port'];
  const protocol = (servicePort['protocol'] as string | undefined) ?? 'TCP';
  return ports.find((cp) => cp.protocol === protocol && (typeof target === 'string' ? cp.name === target : cp.containerPort === target));
}

function annotation(obj: K8sObject, key: string): string | undefined {
  return stringMap(obj.metadata['annotations'])[key];
}

// ---------------------------------------------------------------------------------------------
// Registry <-> ServiceAccount, workload, SVID Secret, SPIFFE ID

export function registryProblems(facts: DeploymentFacts): string[] {
  const { objects: objs, registry } = facts;
  const problems: string[] = [];
  for (const w of registry.workloads) {
    const at = `registry workload ${w.name}`;
    const expectedId = SpiffeId.forServiceAccount(registry.trustDomain, w.namespace, w.serviceAccount).toString();
    if (w.spiffeId.toString() !== expectedId) problems.push(`${at}: SPIFFE ID ${w.spiffeId} is not ${expectedId} (namespace ${w.namespace}, service account ${w.serviceAccount})`);
    if (!w.deployed) {
      // Its certificate would let anything running as this account act as the people who hold it.
      if (find(objs, 'ServiceAccount', w.namespace, w.serviceAccount) !== undefined) problems.push(`${at} is not deployed (deployed: false), but ServiceAccount ${w.namespace}/${w.serviceAccount} exists`);
      if (workloadsOf(objs).some((o) => o.metadata.name === w.name && o.metadata.namespace === w.namespace)) problems.push(`${at} is not deployed (deployed: false), but a workload ${w.namespace}/${w.name} runs`);
      if (find(objs, 'Secret', w.namespace, svidSecretName(w.name)) !== undefined) problems.push(`${at} is not deployed (deployed: false), but its certificate is in Secret ${w.namespace}/${svidSecretName(w.name)}`);
      continue;
    }
    if (find(objs, 'ServiceAccount', w.namespace, w.serviceAccount) === undefined) problems.push(`${at}: no ServiceAccount ${w.namespace}/${w.serviceAccount}`);
    const matches = workloadsOf(objs).filter((o) => o.metadata.name === w.name && o.metadata.namespace === w.namespace);
    if (matches.length !== 1) {
      problems.push(`${at}: expected one Deployment or StatefulSet ${w.namespace}/${w.name}, found ${matches.length}`);
      continue;
    }
    problems.push(...workloadIdentityProblems(facts, w, matches[0]!));
    const secret = find(objs, 'Secret', w.namespace, svidSecretName(w.name));
    if (secret !== undefined) problems.push(...svidSecretProblems(facts, w, secret));
  }
  if (facts.registrySource !== undefined) problems.push(...loadedRegistryProblems(facts, facts.registrySource));
  const known = (ns: string | undefined, name: string, field: 'name' | 'serviceAccount'): boolean =>
    registry.workloads.some((w) => w.namespace === ns && w[field] === name);
  for (const o of objs) {
    if (o.kind === 'ServiceAccount' && !known(o.metadata.namespace, o.metadata.name, 'serviceAccount')) problems.push(`${objectId(o)} belongs to no registry workload`);
    if (isWorkloadKind(o.kind) && !isBackingService(o) && !known(o.metadata.namespace, o.metadata.name, 'name')) problems.push(`${objectId(o)} is not a registry workload`);
    if (o.kind === 'Secret' && o.metadata.name.endsWith('-svid') && !known(o.metadata.namespace, o.metadata.name.slice(0, -'-svid'.length), 'name')) {
      problems.push(`${objectId(o)} holds a certificate for no registry workload`);
    }
  }
  return problems;
}

function workloadIdentityProblems(facts: DeploymentFacts, w: RegistryWorkload, workload: K8sObject): string[] {
  const problems: string[] = [];
  const id = objectId(workload);
  const spec = podSpecOf(workload)!;
  const sa = str(spec, 'serviceAccountName') ?? 'default';
  const actual = SpiffeId.forServiceAccount(facts.registry.trustDomain, workload.metadata.namespace ?? 'default', sa).toString();
  if (actual !== w.spiffeId.toString()) problems.push(`${id}: runs as ${actual}, but the registry gives workload ${w.name} ${w.spiffeId}`);
  const containers = containersOf(spec);
  const proxy = proxyContainerOf(workload);
  const holder = proxy ?? w.name;
  const main = containers.find((c) => c['name'] === holder);
  if (main === undefined) {
    problems.push(`${id}: no container named ${holder}`);
    return problems;
  }
  // A proxy reads the certificate by path from its own configuration; a twokey service is started by name.
  if (proxy === undefined) {
    const args = Array.isArray(main['args']) ? main['args'] : [];
    if (args[0] !== w.name) problems.push(`${id}: container args ${JSON.stringify(args)} do not start the ${w.name} service`);
    const svidDir = envOf(main).get('TWOKEY_SVID_DIR') ?? SVID_MOUNT_PATH;
    if (svidDir !== SVID_MOUNT_PATH) problems.push(`${id}: TWOKEY_SVID_DIR is ${svidDir}, not ${SVID_MOUNT_PATH}`);
  }
  const volume = objects(spec, 'volumes').find((v) => str(v['secret'], 'secretName') === svidSecretName(w.name));
  if (volume === undefined) {
    problems.push(`${id}: mounts no volume from Secret ${svidSecretName(w.name)}`);
    return problems;
  }
  const mounts = objects(main, 'volumeMounts').filter((m) => m['name'] === volume['name']);
  const good = mounts.filter((m) => m['mountPath'] === SVID_MOUNT_PATH && m['readOnly'] === true && m['subPath'] === undefined && m['subPathExpr'] === undefined);
  // A subPath mount never sees Secret updates, so rotation would silently stop.
  if (mounts.length !== 1 || good.length !== 1) problems.push(`${id}: Secret ${svidSecretName(w.name)} must be mounted once, read-only, without subPath, at ${SVID_MOUNT_PATH}`);
  for (const other of containers) {
    if (other === main) continue;
    if (objects(other, 'volumeMounts').some((m) => m['name'] === volume['name'])) problems.push(`${id}: container ${String(other['name'])} also mounts ${w.name}'s private key`);
  }
  return problems;
}

/** Each workload must load, from a ConfigMap, the very registry its certificate was issued from. */
function loadedRegistryProblems(facts: DeploymentFacts, source: { text: string; file: string }): string[] {
  const problems: string[] = [];
  for (const w of meshWorkloadsOf(facts.objects)) {
    if (proxyContainerOf(w) !== undefined) continue;
    const spec = podSpecOf(w)!;
    const main = containersOf(spec)[0];
    if (main === undefined) continue;
    const file = envOf(main).get('TWOKEY_REGISTRY') ?? REGISTRY_MOUNT_FILE;
    const slash = file.lastIndexOf('/');
    const [dir, key] = [file.slice(0, slash), file.slice(slash + 1)];
    const mount = objects(main, 'volumeMounts').find((m) => m['mountPath'] === dir && m['subPath'] === undefined);
    const volume = mount === undefined ? undefined : objects(spec, 'volumes').find((v) => v['name'] === mount['name']);
    const name = str(volume?.['configMap'], 'name');
    const cm = name === undefined ? undefined : find(facts.objects, 'ConfigMap', w.metadata.namespace, name);
    if (cm === undefined) {
      problems.push(`${objectId(w)}: no ConfigMap mounted at ${dir} for TWOKEY_REGISTRY ${file}`);
      continue;
    }
    if (stringMap(cm['data'])[key] !== source.text) {
      problems.push(`${objectId(w)}: loads a registry from ${objectId(cm)} that differs from ${source.file}, which certificates are issued from (run 'npx twokey k8s sync-registry')`);
    }
  }
  return problems;
}

function svidSecretProblems(facts: DeploymentFacts, w: RegistryWorkload, secret: K8sObject): string[] {
  const id = objectId(secret);
  const data = stringMap(secret['data']);
  const files = Object.values(WORKLOAD_FILES);
  const missing = files.filter((f) => data[f] === undefined);
  if (missing.length > 0 || Object.keys(data).length !== files.length) return [`${id}: must hold exactly ${files.join(', ')} (missing: ${missing.join(', ') || 'none'})`];
  const decode = (f: string): string => Buffer.from(data[f]!, 'base64').toString('utf8');
  try {
    const leaf = new X509Certificate(decode(WORKLOAD_FILES.chain));
    const svid = parseSvid(leaf.raw, facts.grantsOid === undefined ? {} : { grantsOid: facts.grantsOid });
    const problems: string[] = [];
    if (svid.spiffeId.toString() !== w.spiffeId.toString()) problems.push(`${id}: certificate is for ${svid.spiffeId}, not ${w.spiffeId}`);
    const granted = [...svid.grants.toStrings()].sort();
    const expected = [...w.grants.toStrings()].sort();
    if (JSON.stringify(granted) !== JSON.stringify(expected)) problems.push(`${id}: certificate grants ${JSON.stringify(granted)}, registry grants ${JSON.stringify(expected)}`);
    if (!leaf.checkPrivateKey(createPrivateKey(decode(WORKLOAD_FILES.key)))) problems.push(`${id}: ${WORKLOAD_FILES.key} does not match the certificate`);
    if (!leaf.verify(new X509Certificate(decode(WORKLOAD_FILES.bundle)).publicKey)) problems.push(`${id}: certificate is not signed by the CA in ${WORKLOAD_FILES.bundle}`);
    for (const name of w.dns) if (leaf.checkHost(name) === undefined) problems.push(`${id}: certificate lacks the DNS name ${name}`);
    return problems;
  } catch (err) {
    return [`${id}: unreadable certificate files (${(err as Error).message})`];
  }
}

// ---------------------------------------------------------------------------------------------
// Services, mounts and references

export function serviceProblems(facts: DeploymentFacts): string[] {
  const objs = facts.objects;
  const problems: string[] = [];
  for (const svc of objs.filter((o) => o.kind === 'Service')) {
    const id = objectId(svc);
    const spec = (svc['spec'] ?? {}) as JsonObject;
    const selector = stringMap(spec['selector']);
    const targets = workloadsOf(objs).filter((w) => w.metadata.namespace === svc.metadata.namespace && selects(selector, podLabels(w)));
    if (targets.length !== 1) {
      problems.push(`${id}: selector ${JSON.stringify(selector)} selects ${targets.length} workloads' pods, expected exactly one`);
      continue;
    }
    const ports = containerPorts(targets[0]!);
    for (const port of objects(spec, 'ports')) {
      if (targetContainerPort(port, ports) === undefined) {
        problems.push(`${id}: port ${String(port['name'] ?? port['port'])} targets ${JSON.stringify(port['targetPort'] ?? port['port'])}, which no container of ${objectId(targets[0]!)} declares`);
      }
    }
  }
  for (const sts of objs.filter((o) => o.kind === 'StatefulSet')) {
    const name = str(sts['spec'], 'serviceName');
    const svc = name === undefined ? undefined : find(objs, 'Service', sts.metadata.namespace, name);
    if (svc === undefined || str(svc['spec'], 'clusterIP') !== 'None' || !selects(stringMap((svc['spec'] as JsonObject)['selector']), podLabels(sts))) {
      problems.push(`${objectId(sts)}: serviceName ${JSON.stringify(name)} must name a headless Service that selects its pods`);
    }
  }
  return problems;
}

export function referenceProblems(facts: DeploymentFacts): string[] {
  const objs = facts.objects;
  const problems: string[] = [];
  for (const w of workloadsOf(objs)) {
    const id = objectId(w);
    const ns = w.metadata.namespace;
    const spec = podSpecOf(w)!;
    const need = (kind: 'Secret' | 'ConfigMap', name: string | undefined, what: string): void => {
      if (name === undefined) return;
      if (find(objs, kind, ns, name) !== undefined) return;
      if (kind === 'Secret' && facts.externalSecrets?.has(`${ns}/${name}`) === true) return;
      problems.push(`${id}: ${what} refers to ${kind} ${ns}/${name}, which does not exist`);
    };
    const sa = str(spec, 'serviceAccountName');
    if (sa !== undefined && find(objs, 'ServiceAccount', ns, sa) === undefined) problems.push(`${id}: ServiceAccount ${ns}/${sa} does not exist`);
    const volumeNames = new Set<string>();
    for (const v of objects(spec, 'volumes')) {
      volumeNames.add(String(v['name']));
      need('Secret', str(v['secret'], 'secretName'), `volume ${String(v['name'])}`);
      need('ConfigMap', str(v['configMap'], 'name'), `volume ${String(v['name'])}`);
      for (const s of objects(v['projected'], 'sources')) {
        need('Secret', str(s['secret'], 'name'), `volume ${String(v['name'])}`);
        need('ConfigMap', str(s['configMap'], 'name'), `volume ${String(v['name'])}`);
      }
    }
    for (const t of objects(w['spec'], 'volumeClaimTemplates')) volumeNames.add(String(str(t['metadata'], 'name')));
    for (const c of containersOf(spec)) {
      for (const m of objects(c, 'volumeMounts')) {
        if (!volumeNames.has(String(m['name']))) problems.push(`${id}: container ${String(c['name'])} mounts undefined volume ${String(m['name'])}`);
      }
      for (const f of objects(c, 'envFrom')) {
        need('Secret', str(f['secretRef'], 'name'), `envFrom of ${String(c['name'])}`);
        need('ConfigMap', str(f['configMapRef'], 'name'), `envFrom of ${String(c['name'])}`);
      }
      for (const e of objects(c, 'env')) {
        const from = e['valueFrom'];
        need('Secret', str(isObject(from) ? from['secretKeyRef'] : undefined, 'name'), `env ${String(e['name'])}`);
        need('ConfigMap', str(isObject(from) ? from['configMapKeyRef'] : undefined, 'name'), `env ${String(e['name'])}`);
      }
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Network paths: the NetworkPolicies must allow exactly what the registry's grants imply

interface MeshView {
  /** Registry workload name -> its rendered workload object. */
  workload: Map<string, K8sObject>;
  /** gRPC service -> the registry workload serving it. */
  servedBy: Map<string, string>;
  /** Registry workload name -> container ports it serves the mesh on. */
  meshPorts: Map<string, Set<number>>;
  /** Registry workload name -> container ports users reach from outside. */
  publicPorts: Map<string, Set<number>>;
  problems: string[];
}

function meshView(facts: DeploymentFacts): MeshView {
  const view: MeshView = { workload: new Map(), servedBy: new Map(), meshPorts: new Map(), publicPorts: new Map(), problems: [] };
  for (const w of facts.registry.workloads) {
    const obj = workloadsOf(facts.objects).find((o) => o.metadata.name === w.name && o.metadata.namespace === w.namespace);
    if (obj === undefined) continue; // registryProblems reports it
    view.workload.set(w.name, obj);
    view.meshPorts.set(w.name, new Set());
    view.publicPorts.set(w.name, new Set());
    const ports = containerPorts(obj);
    for (const svc of servicesOf(facts.objects, obj)) {
      const served = annotation(svc, GRPC_SERVICES_ANNOTATION);
      const isPublic = annotation(svc, PUBLIC_ANNOTATION) === 'true';
      const targets = objects(svc['spec'], 'ports').flatMap((p) => targetContainerPort(p, ports)?.containerPort ?? []);
      if (isPublic) for (const p of targets) view.publicPorts.get(w.name)!.add(p);
      if (served === undefined) continue;
      for (const p of targets) view.meshPorts.get(w.name)!.add(p);
      for (const service of served.split(',').map((s) => s.trim())) {
        if (!facts.catalog.hasService(service)) view.problems.push(`${objectId(svc)}: serves ${service}, which proto/ does not define`);
        const previous = view.servedBy.get(service);
        if (previous !== undefined && previous !== w.name) view.problems.push(`${service} is served by both ${previous} and ${w.name}`);
        view.servedBy.set(service, w.name);
      }
    }
  }
  return view;
}

/** caller -> the callees its certificate's grants imply, with the gRPC services that imply each. */
export function impliedCallees(facts: DeploymentFacts): { callees: Map<string, Map<string, string[]>>; problems: string[] } {
  const view = meshView(facts);
  const problems = [...view.problems];
  const callees = new Map<string, Map<string, string[]>>();
  for (const w of facts.registry.workloads) {
    const mine = new Map<string, string[]>();
    for (const grant of w.grants.grants) {
      const callee = view.servedBy.get(grant.service);
      if (callee === undefined) {
        problems.push(`registry workload ${w.name} is granted ${grant.text}, but no Service declares that it serves ${grant.service}`);
        continue;
      }
      if (callee === w.name) continue;
      mine.set(callee, [...new Set([...(mine.get(callee) ?? []), grant.service])]);
    }
    callees.set(w.name, mine);
  }
  return { callees, problems };
}

// Endpoints outside the namespace, as probes: a pod elsewhere in the cluster, a client on the
// internet (a documentation address, RFC 5737; nothing is ever sent to it), and cluster DNS.
const ELSEWHERE: PodEndpoint = { kind: 'pod', namespace: 'elsewhere', namespaceLabels: namespaceLabels('elsewhere'), labels: { app: 'other' }, ports: [{ containerPort: 8443, protocol: 'TCP' }] };
const INTERNET: Endpoint = { kind: 'external', ip: '203.0.113.10' };
const KUBE_DNS: PodEndpoint = {
  kind: 'pod',
  namespace: 'kube-system',
  namespaceLabels: namespaceLabels('kube-system'),
  labels: { 'k8s-app': 'kube-dns' },
  ports: [{ containerPort: 53, protocol: 'UDP' }, { containerPort: 53, protocol: 'TCP' }],
};

export function networkProblems(facts: DeploymentFacts): string[] {
  const view = meshView(facts);
  const { callees, problems } = impliedCallees(facts);
  const policies = facts.objects.filter((o) => o.kind === 'NetworkPolicy');
  const endpoint = (name: string): PodEndpoint => podEndpoint(facts.objects, view.workload.get(name)!);
  const names = [...view.workload.keys()];
  for (const dst of names) {
    const ports = endpoint(dst).ports;
    for (const { containerPort: port, protocol } of ports) {
      for (const src of names) {
        if (src === dst) continue;
        const implied = (callees.get(src)?.has(dst) ?? false) && view.meshPorts.get(dst)!.has(port);
        const allowed = connectionAllowed(policies, endpoint(src), endpoint(dst), port, protocol);
        if (allowed && !implied) problems.push(`NetworkPolicies allow ${src} -> ${dst}:${port}, which the registry's grants do not imply`);
        if (!allowed && implied) problems.push(`NetworkPolicies block ${src} -> ${dst}:${port}, which ${src}'s grants need (${callees.get(src)!.get(dst)!.join(', ')})`);
      }
      const isPublic = view.publicPorts.get(dst)!.has(port);
      for (const [label, outside] of [['a pod in another namespace', ELSEWHERE], ['the internet', INTERNET]] as const) {
        const allowed = connectionAllowed(policies, outside, endpoint(dst), port, protocol);
        if (allowed !== isPublic) problems.push(`NetworkPolicies ${allowed ? 'allow' : 'block'} ${label} -> ${dst}:${port}${isPublic ? ', its public port' : ''}`);
      }
    }
  }
  for (const src of names) {
    for (const protocol of ['UDP', 'TCP'] as const) {
      if (!connectionAllowed(policies, endpoint(src), KUBE_DNS, 53, protocol)) problems.push(`NetworkPolicies block ${src} -> cluster DNS (53/${protocol})`);
    }
    if (connectionAllowed(policies, endpoint(src), KUBE_DNS, 8080, 'TCP')) problems.push(`NetworkPolicies allow ${src} -> kube-dns pods beyond port 53`);
    if (connectionAllowed(policies, endpoint(src), ELSEWHERE, 8443, 'TCP')) problems.push(`NetworkPolicies allow ${src} -> pods in other namespaces`);
    if (connectionAllowed(policies, endpoint(src), INTERNET, 443, 'TCP')) problems.push(`NetworkPolicies allow ${src} -> the internet`);
  }
  problems.push(...peerAddressProblems(facts, view, callees));
  return problems;
}

/** Each caller is told the address of exactly its callees, through a Service the callee's certificate names. */
function peerAddressProblems(facts: DeploymentFacts, view: MeshView, callees: Map<string, Map<string, string[]>>): string[] {
  const problems: string[] = [];
  for (const [name, obj] of view.workload) {
    if (proxyContainerOf(obj) !== undefined) continue;
    const main = containersOf(podSpecOf(obj)!).find((c) => c['name'] === name);
    if (main === undefined) continue;
    const addresses = new Map<string, string>();
    for (const [key, value] of envOf(main)) {
      const m = /^TWOKEY_([A-Z0-9_]+)_ADDR$/.exec(key);
      if (m !== null) addresses.set(m[1]!.toLowerCase().replace(/_/g, '-'), value);
    }
    const expected = [...(callees.get(name)?.keys() ?? [])].sort();
    if (JSON.stringify([...addresses.keys()].sort()) !== JSON.stringify(expected)) {
      problems.push(`${objectId(obj)}: peer addresses for ${JSON.stringify([...addresses.keys()].sort())}, but its grants call ${JSON.stringify(expected)}`);
    }
    for (const [callee, address] of addresses) {
      const target = view.workload.get(callee);
      const m = /^([a-z0-9.-]+):(\d+)$/.exec(address);
      if (target === undefined || m === null) {
        problems.push(`${objectId(obj)}: ${address} is not host:port of a registry workload`);
        continue;
      }
      const [host, port] = [m[1]!, Number(m[2])];
      const svcName = host.split('.')[0]!;
      const svc = servicesOf(facts.objects, target).find((s) => s.metadata.name === svcName);
      const reaches = svc !== undefined && objects(svc['spec'], 'ports').some((p) => p['port'] === port && view.meshPorts.get(callee)!.has(targetContainerPort(p, containerPorts(target))?.containerPort ?? -1));
      if (!reaches) problems.push(`${objectId(obj)}: ${address} does not reach ${callee}'s mesh port through its Service`);
      const dns = facts.registry.workloads.find((w) => w.name === callee)!.dns;
      if (!dns.includes(host)) problems.push(`${objectId(obj)}: dials ${host}, which ${callee}'s certificate does not name (${dns.join(', ')})`);
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Pod hardening, probes, resources and disruption budgets

export function podProblems(facts: DeploymentFacts): string[] {
  const problems: string[] = [];
  for (const w of workloadsOf(facts.objects)) {
    const id = objectId(w);
    const spec = podSpecOf(w)!;
    const podSc = (spec['securityContext'] ?? {}) as JsonObject;
    const bad = (what: string): void => void problems.push(`${id}: ${what}`);
    if (spec['automountServiceAccountToken'] !== false) bad('automountServiceAccountToken must be false (no Kubernetes API token in the pod)');
    for (const key of ['hostNetwork', 'hostPID', 'hostIPC']) if (spec[key] === true) bad(`${key} is set`);
    if (objects(spec, 'volumes').some((v) => v['hostPath'] !== undefined)) bad('mounts a hostPath');
    if (podSc['runAsNonRoot'] !== true) bad('pod securityContext.runAsNonRoot must be true');
    if (typeof podSc['runAsUser'] !== 'number' || podSc['runAsUser'] === 0) bad('pod securityContext.runAsUser must be a non-zero uid');
    if (str(podSc['seccompProfile'], 'type') !== 'RuntimeDefault') bad('pod seccompProfile must be RuntimeDefault');
    for (const c of containersOf(spec)) {
      const cid = `${id} container ${String(c['name'])}`;
      const sc = (c['securityContext'] ?? {}) as JsonObject;
      if (sc['allowPrivilegeEscalation'] !== false) problems.push(`${cid}: allowPrivilegeEscalation must be false`);
      if (sc['privileged'] === true) problems.push(`${cid}: is privileged`);
      if (sc['readOnlyRootFilesystem'] !== true) problems.push(`${cid}: readOnlyRootFilesystem must be true`);
      if (sc['runAsUser'] === 0 || sc['runAsNonRoot'] === false) problems.push(`${cid}: runs as root`);
      const caps = isObject(sc['capabilities']) ? sc['capabilities'] : {};
      if (JSON.stringify(caps['drop']) !== '["ALL"]' || (Array.isArray(caps['add']) && caps['add'].length > 0)) problems.push(`${cid}: capabilities must drop ALL and add none`);
      const seccomp = str(sc['seccompProfile'], 'type');
      if (seccomp !== undefined && seccomp !== 'RuntimeDefault') problems.push(`${cid}: seccompProfile must be RuntimeDefault`);
      const resources = isObject(c['resources']) ? c['resources'] : {};
      for (const kind of ['requests', 'limits']) {
        for (const r of ['cpu', 'memory']) if (!isObject(resources[kind]) || (resources[kind] as JsonObject)[r] === undefined) problems.push(`${cid}: no ${r} ${kind}`);
      }
      for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
        // A backing service has its own readiness check (pg_isready); it must have one.
        if (isBackingService(w) || proxyContainerOf(w) !== undefined) {
          if (probe === 'readinessProbe' && !isObject(c[probe])) problems.push(`${cid}: no ${probe}`);
          if (isBackingService(w) && probe === 'livenessProbe' && !isObject(c[probe])) problems.push(`${cid}: no ${probe}`);
          continue;
        }
        if (probe === 'startupProbe' && c[probe] === undefined) continue;
        const grpc = isObject(c[probe]) && isObject((c[probe] as JsonObject)['grpc']) ? ((c[probe] as JsonObject)['grpc'] as JsonObject) : undefined;
        if (grpc?.['port'] !== HEALTH_PORT) {
          problems.push(`${cid}: ${probe} must be a gRPC probe on the health port ${HEALTH_PORT}`);
          continue;
        }
        // Readiness follows the database, liveness must not: the kubelet would restart every
        // replica during a database outage, which no restart cures.
        const asksLiveness = (grpc['service'] ?? '') === LIVENESS_SERVICE;
        if (probe === 'readinessProbe' && asksLiveness) {
          problems.push(`${cid}: readinessProbe must not ask for the '${LIVENESS_SERVICE}' health service, which stays SERVING while the database is down`);
        }
        if (probe !== 'readinessProbe' && !asksLiveness) {
          problems.push(`${cid}: ${probe} must ask for the '${LIVENESS_SERVICE}' health service, not ${JSON.stringify(grpc['service'] ?? '')}, which turns NOT_SERVING while the database is down`);
        }
      }
      const dataDir = envOf(c).get('TWOKEY_DATA_DIR');
      if (dataDir !== undefined) {
        const claims = new Set(objects(w['spec'], 'volumeClaimTemplates').map((t) => str(t['metadata'], 'name')));
        const mount = objects(c, 'volumeMounts').find((m) => m['mountPath'] === dataDir);
        // Anything else loses the databases (and auth's signing keys) with the pod.
        if (mount === undefined || !claims.has(str(mount, 'name')) || mount['readOnly'] === true) {
          problems.push(`${cid}: TWOKEY_DATA_DIR ${dataDir} must be a writable mount of a PersistentVolumeClaim`);
        }
      }
      const tmp = objects(c, 'volumeMounts').find((m) => m['mountPath'] === '/tmp');
      const tmpVolume = tmp === undefined ? undefined : objects(spec, 'volumes').find((v) => v['name'] === tmp['name']);
      if (tmpVolume === undefined || !isObject(tmpVolume['emptyDir'])) problems.push(`${cid}: needs a writable emptyDir at /tmp (the root filesystem is read-only)`);
    }
  }
  return problems;
}

export function availabilityProblems(facts: DeploymentFacts): string[] {
  const problems: string[] = [];
  const pdbs = facts.objects.filter((o) => o.kind === 'PodDisruptionBudget');
  for (const w of workloadsOf(facts.objects)) {
    const replicas = replicasOf(w);
    const covering = pdbs.filter((p) => p.metadata.namespace === w.metadata.namespace && selects(stringMap(((p['spec'] as JsonObject | undefined)?.['selector'] as JsonObject | undefined)?.['matchLabels']), podLabels(w)));
    if (replicas > 1 && covering.length !== 1) problems.push(`${objectId(w)}: ${replicas} replicas need exactly one PodDisruptionBudget, found ${covering.length}`);
    // A budget over a single pod either blocks every node drain or protects nothing.
    if (replicas <= 1 && covering.length > 0) problems.push(`${objectId(w)}: a single replica must not have a PodDisruptionBudget`);
    // SQLite on a ReadWriteOnce volume has one writer: such a workload never scales out.
    if (objects(w['spec'], 'volumeClaimTemplates').length > 0 && (w.kind !== 'StatefulSet' || replicas !== 1)) {
      problems.push(`${objectId(w)}: a workload with a data volume must be a single-replica StatefulSet`);
    }
    if (replicas > 1 && covering.length === 1) {
      // A budget allowing no eviction blocks every node drain; one allowing all protects nothing.
      const budget = covering[0]!['spec'] as JsonObject;
      const [field, value] = budget['minAvailable'] !== undefined ? ['minAvailable', budget['minAvailable']] : ['maxUnavailable', budget['maxUnavailable']];
      if (typeof value !== 'number' || value < 1 || value >= replicas) {
        problems.push(`${objectId(covering[0]!)}: ${field} must be a number from 1 to ${replicas - 1} for the ${replicas} replicas of ${objectId(w)}, not ${JSON.stringify(value ?? null)}`);
      }
    }
    if (replicas > 1 && !spreadsAcrossNodes(w)) {
      problems.push(`${objectId(w)}: ${replicas} replicas need pod anti-affinity or a topology spread on kubernetes.io/hostname selecting its own pods, or one node's loss takes them all`);
    }
  }
  return problems;
}

/** Whether the pod template keeps its own replicas on different nodes (anti-affinity or topology spread, hard or soft). */
function spreadsAcrossNodes(workload: K8sObject): boolean {
  const anti = (podSpecOf(workload)?.['affinity'] as JsonObject | undefined)?.['podAntiAffinity'];
  const terms = [
    ...objects(anti, 'requiredDuringSchedulingIgnoredDuringExecution'),
    ...objects(anti, 'preferredDuringSchedulingIgnoredDuringExecution').flatMap((p) => (isObject(p['podAffinityTerm']) ? [p['podAffinityTerm']] : [])),
  ];
  const spread = objects(podSpecOf(workload), 'topologySpreadConstraints');
  const labels = podLabels(workload);
  return [...terms, ...spread].some((t) => t['topologyKey'] === 'kubernetes.io/hostname' && selects(stringMap((t['labelSelector'] as JsonObject | undefined)?.['matchLabels']), labels));
}

// ---------------------------------------------------------------------------------------------
// The database: who names one, and who may reach it

function databaseEnv(container: JsonObject): JsonObject | undefined {
  return objects(container, 'env').find((e) => e['name'] === 'TWOKEY_DATABASE_URL');
}

export function databaseProblems(facts: DeploymentFacts): string[] {
  const problems: string[] = [];
  const objs = facts.objects;
  const policies = objs.filter((o) => o.kind === 'NetworkPolicy');
  const clients = new Set<K8sObject>();
  for (const w of meshWorkloadsOf(objs)) {
    const main = containersOf(podSpecOf(w)!)[0];
    const env = main === undefined ? undefined : databaseEnv(main);
    if (env === undefined) continue;
    clients.add(w);
    const id = objectId(w);
    if (envOf(main!).has('TWOKEY_DATA_DIR')) problems.push(`${id}: keeps state in PostgreSQL (TWOKEY_DATABASE_URL) and in TWOKEY_DATA_DIR; one store, not two`);
    // The URL may carry the password: from a Secret, or a literal without one (password in a file).
    const literal = env['value'];
    if (typeof literal === 'string') {
      let password = true;
      try {
        password = new URL(literal).password !== '';
      } catch {
        problems.push(`${id}: TWOKEY_DATABASE_URL is not a URL`);
      }
      if (password) problems.push(`${id}: TWOKEY_DATABASE_URL must come from a Secret (valueFrom.secretKeyRef) when it carries a password`);
    } else if (str(isObject(env['valueFrom']) ? env['valueFrom']['secretKeyRef'] : undefined, 'name') === undefined) {
      problems.push(`${id}: TWOKEY_DATABASE_URL must be a literal without a password or come from a Secret`);
    }
  }
  const meshWorkloads = meshWorkloadsOf(objs);
  for (const db of workloadsOf(objs).filter(isBackingService)) {
    const dbEndpoint = podEndpoint(objs, db);
    const name = podLabels(db)['app.kubernetes.io/name'] ?? db.metadata.name;
    if (!dbEndpoint.ports.some((p) => p.containerPort === DATABASE_PORT)) {
      problems.push(`${objectId(db)}: declares no container port ${DATABASE_PORT}`);
      continue;
    }
    for (const w of meshWorkloads) {
      const src = w.metadata.name;
      const allowed = connectionAllowed(policies, podEndpoint(objs, w), dbEndpoint, DATABASE_PORT, 'TCP');
      if (allowed && !clients.has(w)) problems.push(`NetworkPolicies allow ${src} -> ${name}:${DATABASE_PORT}, but ${src} names no database (TWOKEY_DATABASE_URL)`);
      if (!allowed && clients.has(w)) problems.push(`NetworkPolicies block ${src} -> ${name}:${DATABASE_PORT}, the database ${src} names`);
      for (const { containerPort, protocol } of podEndpoint(objs, w).ports) {
        if (connectionAllowed(policies, dbEndpoint, podEndpoint(objs, w), containerPort, protocol)) problems.push(`NetworkPolicies allow ${name} -> ${src}:${containerPort}; the database calls nobody`);
      }
    }
    for (const [label, outside] of [['a pod in another namespace', ELSEWHERE], ['the internet', INTERNET]] as const) {
      if (connectionAllowed(policies, outside, dbEndpoint, DATABASE_PORT, 'TCP')) problems.push(`NetworkPolicies allow ${label} -> ${name}:${DATABASE_PORT}`);
      if (connectionAllowed(policies, dbEndpoint, outside, 443, 'TCP')) problems.push(`NetworkPolicies allow ${name} -> ${label}`);
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Metrics: every workload scraped on its health port, and only from the monitoring namespace

// A Prometheus pod as policies see it; no policy governs its own (monitoring) namespace here.
const PROMETHEUS: PodEndpoint = {
  kind: 'pod',
  namespace: MONITORING_NAMESPACE,
  namespaceLabels: namespaceLabels(MONITORING_NAMESPACE),
  labels: { 'app.kubernetes.io/name': 'prometheus' },
  ports: [],
};

export function scrapeProblems(facts: DeploymentFacts): string[] {
  const objs = facts.objects;
  const problems: string[] = [];
  const policies = objs.filter((o) => o.kind === 'NetworkPolicy');
  const publicPorts = meshView(facts).publicPorts;
  for (const w of facts.registry.workloads) {
    const obj = workloadsOf(objs).find((o) => o.metadata.name === w.name && o.metadata.namespace === w.namespace);
    if (obj === undefined) continue; // registryProblems reports it
    // A proxied pod serves no twokey metrics port (its proxy's own stats are another matter).
    if (proxyContainerOf(obj) !== undefined) continue;
    const id = objectId(obj);
    const metadata = podTemplateOf(obj)?.['metadata'];
    const annotations = stringMap(isObject(metadata) ? metadata['annotations'] : undefined);
    for (const [key, value] of Object.entries(SCRAPE_ANNOTATIONS)) {
      if (annotations[key] !== value) problems.push(`${id}: pod annotation ${key} must be ${JSON.stringify(value)} (metrics are served at ${METRICS_PATH} on the health port)`);
    }
    const target = podEndpoint(objs, obj);
    for (const { containerPort: port, protocol } of target.ports) {
      // A public port is open to everyone (networkProblems checks it).
      if (publicPorts.get(w.name)?.has(port) === true) continue;
      const scrapePort = port === HEALTH_PORT && protocol === 'TCP';
      const allowed = connectionAllowed(policies, PROMETHEUS, target, port, protocol);
      if (allowed !== scrapePort) {
        problems.push(`NetworkPolicies ${allowed ? 'allow' : 'block'} Prometheus in namespace ${MONITORING_NAMESPACE} -> ${w.name}:${port}${scrapePort ? ', its scrape port' : ''}`);
      }
    }
  }
  for (const monitor of objs.filter((o) => o.kind === 'ServiceMonitor')) problems.push(...serviceMonitorProblems(facts, monitor));
  return problems;
}

/** A ServiceMonitor must reach the health port of every registry workload's pods, over plain HTTP at /metrics. */
function serviceMonitorProblems(facts: DeploymentFacts, monitor: K8sObject): string[] {
  const objs = facts.objects;
  const id = objectId(monitor);
  const spec = (monitor['spec'] ?? {}) as JsonObject;
  const nsSelector = isObject(spec['namespaceSelector']) ? spec['namespaceSelector'] : {};
  const anyNamespace = nsSelector['any'] === true;
  const namespaces = Array.isArray(nsSelector['matchNames']) ? (nsSelector['matchNames'] as unknown[]) : [monitor.metadata.namespace];
  const services = objs.filter(
    (o) => o.kind === 'Service' && (anyNamespace || namespaces.includes(o.metadata.namespace)) && matchesSelector(spec['selector'] ?? {}, stringMap(o.metadata['labels']), id),
  );
  if (services.length === 0) return [`${id}: selects no Service`];
  const problems: string[] = [];
  const scraped = new Set<string>();
  for (const endpoint of objects(spec, 'endpoints')) {
    const name = endpoint['port'];
    if ((endpoint['path'] ?? METRICS_PATH) !== METRICS_PATH) problems.push(`${id}: endpoint path ${JSON.stringify(endpoint['path'])} is not ${METRICS_PATH}`);
    if ((endpoint['scheme'] ?? 'http') !== 'http') problems.push(`${id}: endpoint scheme ${JSON.stringify(endpoint['scheme'])}; the health port serves plain HTTP`);
    if (typeof name !== 'string') {
      problems.push(`${id}: an endpoint must name a Service port`);
      continue;
    }
    for (const svc of services) {
      const port = objects(svc['spec'], 'ports').find((p) => p['name'] === name);
      if (port === undefined) {
        problems.push(`${id}: endpoint port ${name} is not a port of ${objectId(svc)}`);
        continue;
      }
      const selector = stringMap((svc['spec'] as JsonObject | undefined)?.['selector']);
      for (const w of workloadsOf(objs).filter((o) => o.metadata.namespace === svc.metadata.namespace && selects(selector, podLabels(o)))) {
        if (targetContainerPort(port, containerPorts(w))?.containerPort === HEALTH_PORT) scraped.add(`${w.metadata.namespace}/${w.metadata.name}`);
        else problems.push(`${id}: endpoint port ${name} of ${objectId(svc)} does not reach ${objectId(w)}'s health port ${HEALTH_PORT}`);
      }
    }
  }
  for (const w of facts.registry.workloads.filter((x) => x.deployed)) {
    if (!scraped.has(`${w.namespace}/${w.name}`)) problems.push(`${id}: scrapes no pod of registry workload ${w.name}`);
  }
  return problems;
}

/** Every cross-reference check; an empty list means the manifests, registry and proto/ agree. */
export function crossReferenceProblems(facts: DeploymentFacts): string[] {
  return [
    ...registryProblems(facts),
    ...serviceProblems(facts),
    ...referenceProblems(facts),
    ...networkProblems(facts),
    ...podProblems(facts),
    ...availabilityProblems(facts),
    ...databaseProblems(facts),
    ...scrapeProblems(facts),
  ];
}
