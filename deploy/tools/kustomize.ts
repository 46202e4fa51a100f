// Renders the kustomize subset deploy/ uses, offline: what `kubectl apply -k DIR` would send.
// Fields outside the subset are refused, never ignored, so a render here cannot silently differ.
import { readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, join, relative, resolve, sep } from 'node:path';
import { parseDocument } from 'yaml';
import { TwokeyError } from '../../services/authz/errors.ts';
import { configMapHashSuffix } from './config-map-hash.ts';
import { applyPatch, parsePatch } from './json-patch.ts';
import { asK8sObject, isObject, objectId, parseManifests, type Json, type JsonObject, type K8sObject } from './manifest.ts';
import { containersOf, objects, podSpecOf } from './pod-spec.ts';

const KUSTOMIZATION_FILE = 'kustomization.yaml';
const SUPPORTED_FIELDS = new Set(['apiVersion', 'kind', 'namespace', 'resources', 'configMapGenerator', 'images', 'patches']);

// Kinds whose objects live in a namespace; an unknown kind is refused rather than guessed.
const NAMESPACED_KINDS = new Set([
  'ConfigMap', 'Secret', 'Service', 'ServiceAccount', 'PersistentVolumeClaim', 'Pod',
  'Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job', 'CronJob',
  'NetworkPolicy', 'PodDisruptionBudget', 'Role', 'RoleBinding',
  // The Prometheus Operator's custom resource (deploy/overlays/monitoring).
  'ServiceMonitor',
]);

// kustomize's default ("legacy") output order: what must exist first comes first.
const ORDER_FIRST = [
  'Namespace', 'ResourceQuota', 'StorageClass', 'CustomResourceDefinition', 'ServiceAccount',
  'PodSecurityPolicy', 'Role', 'ClusterRole', 'RoleBinding', 'ClusterRoleBinding', 'ConfigMap',
  'Secret', 'Endpoints', 'Service', 'LimitRange', 'PriorityClass', 'PersistentVolume',
  'PersistentVolumeClaim', 'Deployment', 'StatefulSet', 'CronJob', 'PodDisruptionBudget',
];
const ORDER_LAST = ['MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration'];

function invalid(where: string, message: string): TwokeyError {
  return new TwokeyError('ERR_CONFIG_INVALID', `${where}: ${message}`);
}

/** Renders the kustomization in `dir` (and every kustomization it includes). */
export function renderKustomization(dir: string): K8sObject[] {
  return sortLegacy(build(resolve(dir), []));
}

function build(dir: string, stack: readonly string[]): K8sObject[] {
  const root = realpathSync(dir);
  // kustomize refuses a kustomization at or above any it is already building from: an overlay
  // inside its base's directory cannot use that base.
  const visited = stack.find((v) => v === root || v.startsWith(root + sep));
  if (visited !== undefined) {
    throw invalid(relativeName(root), `cycle detected: candidate root ${relativeName(root)} contains visited root ${relativeName(visited)} (kustomize refuses it)`);
  }
  const file = join(root, KUSTOMIZATION_FILE);
  const where = relativeName(file);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw invalid(where, `cannot read (${(err as Error).message})`);
  }
  const doc = parseDocument(text, { version: '1.1', uniqueKeys: true });
  if (doc.errors.length > 0) throw invalid(where, doc.errors[0]!.message);
  const k: unknown = doc.toJS({ maxAliasCount: 0 });
  if (!isObject(k)) throw invalid(where, 'not a mapping');
  for (const key of Object.keys(k)) {
    if (!SUPPORTED_FIELDS.has(key)) throw invalid(where, `field ${JSON.stringify(key)} is outside the supported kustomize subset`);
  }
  if (k['apiVersion'] !== 'kustomize.config.k8s.io/v1beta1' || k['kind'] !== 'Kustomization') {
    throw invalid(where, 'must be apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization');
  }

  let objs: K8sObject[] = [];
  for (const [i, entry] of stringList(k['resources'], `${where} resources`).entries()) {
    const path = resolve(root, entry);
    let isDir: boolean;
    try {
      isDir = statSync(path).isDirectory();
    } catch {
      throw invalid(where, `resources[${i}] ${JSON.stringify(entry)} does not exist`);
    }
    // Like kustomize: another kustomization may sit anywhere, a plain file only inside the root.
    if (isDir) objs.push(...build(path, [...stack, root]));
    else objs.push(...parseManifests(readInsideRoot(root, entry, `${where} resources[${i}]`), relativeName(path)));
  }

  const generated = generateConfigMaps(root, k['configMapGenerator'], where);
  for (const g of generated) {
    if (replacing.has(g)) objs = replaceGenerated(objs, g.metadata.name, where);
  }
  objs.push(...generated);
  rejectDuplicates(objs, where);

  objs = applyPatches(root, objs, k['patches'], where);
  if (k['namespace'] !== undefined) {
    if (typeof k['namespace'] !== 'string' || k['namespace'] === '') throw invalid(where, 'namespace must be a non-empty string');
    objs = objs.map((o) => setNamespace(o, k['namespace'] as string));
  }
  objs = setImages(objs, k['images'], where);
  objs = suffixGeneratedNames(objs, new Set(generated.map((g) => g.metadata.name)));
  rejectDuplicates(objs, where);
  return objs;
}

function relativeName(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel === '' || rel.startsWith('..') ? path : rel;
}

function stringList(value: unknown, where: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string' && v !== '')) {
    throw invalid(where, 'must be a list of non-empty strings');
  }
  return value as string[];
}

/** kustomize's load restriction: files a kustomization reads must be inside its own directory. */
function readInsideRoot(root: string, entry: string, where: string): string {
  let real: string;
  try {
    real = realpathSync(resolve(root, entry));
  } catch {
    throw invalid(where, `${JSON.stringify(entry)} does not exist`);
  }
  if (real !== root && !real.startsWith(root + sep)) {
    throw invalid(where, `${JSON.stringify(entry)} is outside the kustomization directory ${root} (kustomize refuses it)`);
  }
  return readFileSync(real, 'utf8');
}

function generateConfigMaps(root: string, value: unknown, where: string): K8sObject[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw invalid(where, 'configMapGenerator must be a list');
  return value.map((gen, i) => {
    const at = `${where} configMapGenerator[${i}]`;
    if (!isObject(gen)) throw invalid(at, 'must be a mapping');
    for (const key of Object.keys(gen)) {
      if (!['name', 'files', 'literals', 'behavior'].includes(key)) throw invalid(at, `field ${JSON.stringify(key)} is outside the supported subset`);
    }
    const behavior = gen['behavior'] ?? 'create';
    if (behavior !== 'create' && behavior !== 'replace') throw invalid(at, `behavior ${JSON.stringify(behavior)} is outside the supported subset (create, replace)`);
    if (typeof gen['name'] !== 'string' || gen['name'] === '') throw invalid(at, 'name must be a non-empty string');
    const data: Record<string, string> = {};
    const put = (key: string, val: string): void => {
      if (!/^[-._a-zA-Z0-9]+$/.test(key)) throw invalid(at, `key ${JSON.stringify(key)} is not a valid ConfigMap key`);
      if (Object.hasOwn(data, key)) throw invalid(at, `key ${JSON.stringify(key)} appears twice`);
      data[key] = val;
    };
    for (const entry of stringList(gen['files'], `${at} files`)) {
      // `key=path` names the key; otherwise the file's base name is the key.
      const eq = entry.indexOf('=');
      const [key, path] = eq === -1 ? [basename(entry), entry] : [entry.slice(0, eq), entry.slice(eq + 1)];
      put(key, readInsideRoot(root, path, at));
    }
    for (const entry of stringList(gen['literals'], `${at} literals`)) {
      const eq = entry.indexOf('=');
      if (eq <= 0) throw invalid(at, `literal ${JSON.stringify(entry)} must be KEY=VALUE`);
      put(entry.slice(0, eq), entry.slice(eq + 1));
    }
    const map: K8sObject = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: gen['name'] }, data };
    if (behavior === 'replace') replacing.add(map);
    return map;
  });
}

/** Generated ConfigMaps whose generator says `behavior: replace`. */
const replacing = new WeakSet<K8sObject>();

/**
 * `behavior: replace`: the ConfigMap a resource's generator made under `name` (already given its
 * hash suffix there) gives way to this kustomization's, which keeps the name; the pods that
 * mounted the old one are pointed at the new one, whose own suffix is added afterwards.
 */
function replaceGenerated(objs: K8sObject[], name: string, where: string): K8sObject[] {
  const old = objs.filter((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith(`${name}-`) && configMapHashSuffix((o['data'] ?? {}) as Record<string, string>) === o.metadata.name.slice(name.length + 1));
  if (old.length !== 1) throw invalid(where, `configMapGenerator ${name} replaces a generated ConfigMap, but the resources generate ${old.length} of that name`);
  const renamed = new Map([[old[0]!.metadata.name, name]]);
  return objs
    .filter((o) => o !== old[0])
    .map((o) => {
      const spec = podSpecOf(o);
      if (spec === undefined) return o;
      const copy = structuredClone(o);
      renameConfigMapRefs(podSpecOf(copy)!, renamed);
      return copy;
    });
}

function rejectDuplicates(objs: readonly K8sObject[], where: string): void {
  const seen = new Set<string>();
  for (const o of objs) {
    const id = `${o.apiVersion.split('/').length > 1 ? o.apiVersion.split('/')[0] : ''}|${objectId(o)}`;
    if (seen.has(id)) throw invalid(where, `${objectId(o)} is defined twice`);
    seen.add(id);
  }
}

function setNamespace(obj: K8sObject, namespace: string): K8sObject {
  // kustomize renames Namespace objects to the kustomization's namespace.
  if (obj.kind === 'Namespace') return { ...obj, metadata: { ...obj.metadata, name: namespace } };
  if (!NAMESPACED_KINDS.has(obj.kind)) throw invalid(objectId(obj), `kind ${obj.kind} is not one this renderer knows to be namespaced`);
  return { ...obj, metadata: { ...obj.metadata, namespace } };
}

interface ImageRule {
  name: string;
  newName?: string;
  newTag?: string;
  digest?: string;
}

function setImages(objs: K8sObject[], value: unknown, where: string): K8sObject[] {
  if (value === undefined) return objs;
  if (!Array.isArray(value)) throw invalid(where, 'images must be a list');
  const rules: ImageRule[] = value.map((r, i) => {
    const at = `${where} images[${i}]`;
    if (!isObject(r) || typeof r['name'] !== 'string') throw invalid(at, 'must be a mapping with a name');
    for (const [key, v] of Object.entries(r)) {
      if (!['name', 'newName', 'newTag', 'digest'].includes(key)) throw invalid(at, `field ${JSON.stringify(key)} is outside the supported subset`);
      if (typeof v !== 'string' || v === '') throw invalid(at, `${key} must be a non-empty string`);
    }
    if (r['newTag'] !== undefined && r['digest'] !== undefined) throw invalid(at, 'set newTag or digest, not both');
    return r as unknown as ImageRule;
  });
  return objs.map((obj) => {
    const copy = structuredClone(obj);
    const spec = podSpecOf(copy);
    if (spec === undefined) return copy;
    for (const container of containersOf(spec)) {
      if (typeof container['image'] !== 'string') continue;
      const image = splitImage(container['image']);
      const rule = rules.find((r) => r.name === image.name);
      if (rule === undefined) continue;
      const name = rule.newName ?? image.name;
      if (rule.digest !== undefined) container['image'] = `${name}@${rule.digest}`;
      else if (rule.newTag !== undefined) container['image'] = `${name}:${rule.newTag}`;
      else container['image'] = `${name}${image.suffix}`;
    }
    return copy;
  });
}

/** 'host:5000/repo/name:tag@sha256:...' -> name and the ':tag' / '@digest' suffix. */
function splitImage(image: string): { name: string; suffix: string } {
  const at = image.indexOf('@');
  if (at !== -1) return { name: image.slice(0, at), suffix: image.slice(at) };
  const colon = image.lastIndexOf(':');
  // A colon before the last slash belongs to a registry port, not a tag.
  if (colon > image.lastIndexOf('/')) return { name: image.slice(0, colon), suffix: image.slice(colon) };
  return { name: image, suffix: '' };
}

function applyPatches(root: string, objs: K8sObject[], value: unknown, where: string): K8sObject[] {
  if (value === undefined) return objs;
  if (!Array.isArray(value)) throw invalid(where, 'patches must be a list');
  let out = objs;
  value.forEach((p, i) => {
    const at = `${where} patches[${i}]`;
    if (!isObject(p)) throw invalid(at, 'must be a mapping');
    for (const key of Object.keys(p)) {
      if (!['path', 'patch', 'target'].includes(key)) throw invalid(at, `field ${JSON.stringify(key)} is outside the supported subset`);
    }
    if ((p['path'] === undefined) === (p['patch'] === undefined)) throw invalid(at, 'set exactly one of path and patch');
    const text = typeof p['path'] === 'string' ? readInsideRoot(root, p['path'], at) : p['patch'];
    if (typeof text !== 'string') throw invalid(at, 'patch must be a string');
    const parsed = parseDocument(text, { version: '1.1', uniqueKeys: true });
    if (parsed.errors.length > 0) throw invalid(at, parsed.errors[0]!.message);
    const body: unknown = parsed.toJS({ maxAliasCount: 0 });
    if (!Array.isArray(body)) throw invalid(at, 'only JSON 6902 patches (a list of operations) are supported, not strategic-merge patches');
    const ops = parsePatch(body, at);
    const target = parseTarget(p['target'], at);
    let matched = 0;
    out = out.map((obj) => {
      if (!target(obj)) return obj;
      matched++;
      return asK8sObject(applyPatch(obj as Json, ops), `${at} applied to ${objectId(obj)}`);
    });
    // kustomize ignores a target that matches nothing; here that is an error, so an overlay
    // cannot silently stop applying after a rename in the base.
    if (matched === 0) throw invalid(at, 'target matches no object');
  });
  return out;
}

function parseTarget(value: unknown, where: string): (obj: K8sObject) => boolean {
  if (!isObject(value)) throw invalid(where, 'a JSON 6902 patch needs a target');
  for (const [key, v] of Object.entries(value)) {
    if (!['group', 'version', 'kind', 'name', 'namespace'].includes(key)) throw invalid(where, `target field ${JSON.stringify(key)} is outside the supported subset`);
    if (typeof v !== 'string') throw invalid(where, `target ${key} must be a string`);
    // kustomize matches names as regular expressions; only literal names are accepted here.
    if (!/^[a-z0-9.-]*$/i.test(v)) throw invalid(where, `target ${key} ${JSON.stringify(v)} must be a literal name`);
  }
  const t = value as Record<string, string>;
  return (obj) => {
    const [group, version] = obj.apiVersion.includes('/') ? obj.apiVersion.split('/') : ['', obj.apiVersion];
    return (
      (t['group'] === undefined || t['group'] === group) &&
      (t['version'] === undefined || t['version'] === version) &&
      (t['kind'] === undefined || t['kind'] === obj.kind) &&
      (t['name'] === undefined || t['name'] === obj.metadata.name) &&
      (t['namespace'] === undefined || t['namespace'] === obj.metadata.namespace)
    );
  };
}

/** Gives generated ConfigMaps their content-hash suffix and points every reference at it. */
function suffixGeneratedNames(objs: K8sObject[], generatedNames: ReadonlySet<string>): K8sObject[] {
  const renamed = new Map<string, string>();
  const out = objs.map((obj) => {
    if (obj.kind !== 'ConfigMap' || !generatedNames.has(obj.metadata.name)) return obj;
    const data = (obj['data'] ?? {}) as Record<string, string>;
    const name = `${obj.metadata.name}-${configMapHashSuffix(data)}`;
    renamed.set(obj.metadata.name, name);
    return { ...obj, metadata: { ...obj.metadata, name } };
  });
  if (renamed.size === 0) return out;
  return out.map((obj) => {
    const copy = structuredClone(obj);
    const spec = podSpecOf(copy);
    if (spec !== undefined) renameConfigMapRefs(spec, renamed);
    return copy;
  });
}

function renameConfigMapRefs(spec: JsonObject, renamed: ReadonlyMap<string, string>): void {
  const rename = (ref: unknown): void => {
    if (isObject(ref) && typeof ref['name'] === 'string' && renamed.has(ref['name'])) ref['name'] = renamed.get(ref['name'])!;
  };
  for (const volume of objects(spec, 'volumes')) {
    rename(volume['configMap']);
    for (const source of objects(volume['projected'], 'sources')) rename(source['configMap']);
  }
  for (const container of containersOf(spec)) {
    for (const from of objects(container, 'envFrom')) rename(from['configMapRef']);
    for (const env of objects(container, 'env')) rename(isObject(env['valueFrom']) ? env['valueFrom']['configMapKeyRef'] : undefined);
  }
}

function sortLegacy(objs: K8sObject[]): K8sObject[] {
  const rank = (kind: string): number => {
    const first = ORDER_FIRST.indexOf(kind);
    if (first !== -1) return first;
    const last = ORDER_LAST.indexOf(kind);
    return last === -1 ? ORDER_FIRST.length : ORDER_FIRST.length + 1 + last;
  };
  return [...objs].sort((a, b) => rank(a.kind) - rank(b.kind) || cmp(a.kind, b.kind) || cmp(objectId(a), objectId(b)));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
