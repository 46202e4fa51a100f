// Where each workload kind keeps its pod template: the one place deploy tools look for it.
import { isObject, type JsonObject, type K8sObject } from './manifest.ts';

const TEMPLATE_PATHS: Record<string, readonly string[]> = {
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

export function isWorkloadKind(kind: string): boolean {
  return Object.hasOwn(TEMPLATE_PATHS, kind);
}

/** The pod template (metadata + spec) of a workload object, or undefined for other kinds. */
export function podTemplateOf(obj: K8sObject): JsonObject | undefined {
  const path = TEMPLATE_PATHS[obj.kind];
  if (path === undefined) return undefined;
  let node: unknown = obj;
  for (const key of path) node = isObject(node) ? node[key] : undefined;
  return isObject(node) ? node : undefined;
}

export function podSpecOf(obj: K8sObject): JsonObject | undefined {
  const spec = podTemplateOf(obj)?.['spec'];
  return isObject(spec) ? spec : undefined;
}

/** Containers and init containers of a pod spec. */
export function containersOf(spec: JsonObject): JsonObject[] {
  const out: JsonObject[] = [];
  for (const key of ['initContainers', 'containers']) {
    const list = spec[key];
    if (Array.isArray(list)) for (const c of list) if (isObject(c)) out.push(c);
  }
  return out;
}

/** A string field of a JSON object, or undefined. */
export function str(obj: unknown, key: string): string | undefined {
  if (!isObject(obj)) return undefined;
  const value = obj[key];
  return typeof value === 'string' ? value : undefined;
}

/** An array field of a JSON object's object elements ([] when absent). */
export function objects(obj: unknown, key: string): JsonObject[] {
  if (!isObject(obj)) return [];
  const value = obj[key];
  return Array.isArray(value) ? value.filter(isObject) : [];
}
