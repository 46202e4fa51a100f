// Kubernetes objects as plain data: the shape every deploy tool reads, and the YAML that holds them.
import { parseAllDocuments, stringify } from 'yaml';
import { TwokeyError } from '../../services/authz/errors.ts';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/** A Kubernetes object: apiVersion, kind and metadata.name are required. */
export interface K8sObject extends JsonObject {
  apiVersion: string;
  kind: string;
  metadata: JsonObject & { name: string; namespace?: string };
}

export function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `kind/name` (with the namespace when set): how errors and tests name an object. */
export function objectId(obj: K8sObject): string {
  const ns = obj.metadata.namespace;
  return `${obj.kind}/${ns === undefined ? '' : `${ns}/`}${obj.metadata.name}`;
}

/**
 * Parses a multi-document manifest file. YAML 1.1 rules, as kubectl and kustomize read
 * manifests: `defaultMode: 0440` is the octal number 288, not 440.
 */
export function parseManifests(text: string, source: string): K8sObject[] {
  const out: K8sObject[] = [];
  const docs = parseAllDocuments(text, { version: '1.1', uniqueKeys: true, prettyErrors: true });
  docs.forEach((doc, index) => {
    const where = `${source} (document ${index + 1})`;
    if (doc.errors.length > 0) {
      throw new TwokeyError('ERR_CONFIG_INVALID', `${where}: ${doc.errors[0]!.message}`);
    }
    const value: unknown = doc.toJS({ maxAliasCount: 0 });
    if (value === null || value === undefined) return; // an empty document between separators
    out.push(asK8sObject(value, where));
  });
  return out;
}

export function asK8sObject(value: unknown, where: string): K8sObject {
  if (!isObject(value)) throw new TwokeyError('ERR_CONFIG_INVALID', `${where}: not a mapping`);
  for (const key of ['apiVersion', 'kind'] as const) {
    if (typeof value[key] !== 'string' || value[key] === '') {
      throw new TwokeyError('ERR_CONFIG_INVALID', `${where}: ${key} must be a non-empty string`);
    }
  }
  const metadata = value['metadata'];
  if (!isObject(metadata) || typeof metadata['name'] !== 'string' || metadata['name'] === '') {
    throw new TwokeyError('ERR_CONFIG_INVALID', `${where}: metadata.name must be a non-empty string`);
  }
  if (metadata['namespace'] !== undefined && typeof metadata['namespace'] !== 'string') {
    throw new TwokeyError('ERR_CONFIG_INVALID', `${where}: metadata.namespace must be a string`);
  }
  return value as K8sObject;
}

/** Objects as one multi-document YAML stream, the form `kubectl apply -f` reads. */
export function toYamlStream(objects: readonly K8sObject[]): string {
  // YAML 1.1 output quotes every string that a YAML 1.1 reader (kubectl) would take for a
  // timestamp, boolean or octal number, so what is written is what is read back.
  return objects.map((obj) => stringify(obj, { lineWidth: 0, version: '1.1' })).join('---\n');
}

/** A deep copy, so transformations never alias the parsed input. */
export function clone<T extends Json>(value: T): T {
  return structuredClone(value);
}
