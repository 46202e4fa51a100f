// Validates manifests against the Kubernetes v1.33.0 OpenAPI schema, offline.
//
// Two checks, both generated from that one schema by kubernetes-models 4.5 (its 4.5.0 release
// moved to the v1.33.0 spec): its JSON-schema validators (types, required fields, enums,
// formats), and its TypeScript interfaces, type-checked with the compiler's excess-property
// check, which catches the unknown or misspelt fields the JSON schema lets through (the API
// server rejects those under kubectl's default strict field validation; a misspelt
// `readOnlyRootFileSystem` would otherwise pass every other check).
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { CronJob } from 'kubernetes-models/batch/v1/CronJob';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { KUBERNETES_VERSION } from './kubernetes-version.ts';
import { objectId, type K8sObject } from './manifest.ts';
import { SERVICE_MONITOR_API, serviceMonitorProblems } from './service-monitor.ts';

export { KUBERNETES_VERSION };

interface Validatable {
  validate(): void;
}

interface KindSchema {
  /** kubernetes-models module holding the model class and its interface. */
  module: string;
  /** The TypeScript interface of the object in that module. */
  iface: string;
  create(data: K8sObject): Validatable;
}

// Only GA kinds that Kubernetes v1.33 serves; anything else is refused rather than waved through.
const KINDS: Record<string, KindSchema> = {
  'v1/Namespace': { module: 'v1/Namespace', iface: 'INamespace', create: (d) => new Namespace(d as never) },
  'v1/ServiceAccount': { module: 'v1/ServiceAccount', iface: 'IServiceAccount', create: (d) => new ServiceAccount(d as never) },
  'v1/Service': { module: 'v1/Service', iface: 'IService', create: (d) => new Service(d as never) },
  'v1/ConfigMap': { module: 'v1/ConfigMap', iface: 'IConfigMap', create: (d) => new ConfigMap(d as never) },
  'v1/Secret': { module: 'v1/Secret', iface: 'ISecret', create: (d) => new Secret(d as never) },
  'v1/PersistentVolumeClaim': { module: 'v1/PersistentVolumeClaim', iface: 'IPersistentVolumeClaim', create: (d) => new PersistentVolumeClaim(d as never) },
  'apps/v1/Deployment': { module: 'apps/v1/Deployment', iface: 'IDeployment', create: (d) => new Deployment(d as never) },
  'apps/v1/StatefulSet': { module: 'apps/v1/StatefulSet', iface: 'IStatefulSet', create: (d) => new StatefulSet(d as never) },
  'batch/v1/CronJob': { module: 'batch/v1/CronJob', iface: 'ICronJob', create: (d) => new CronJob(d as never) },
  'networking.k8s.io/v1/NetworkPolicy': { module: 'networking.k8s.io/v1/NetworkPolicy', iface: 'INetworkPolicy', create: (d) => new NetworkPolicy(d as never) },
  'policy/v1/PodDisruptionBudget': { module: 'policy/v1/PodDisruptionBudget', iface: 'IPodDisruptionBudget', create: (d) => new PodDisruptionBudget(d as never) },
};

// Custom resources, which kubernetes-models does not model: each with a checked schema of its own.
const CUSTOM_KINDS: Record<string, (obj: K8sObject) => string[]> = {
  [`${SERVICE_MONITOR_API}/ServiceMonitor`]: serviceMonitorProblems,
};

/** One problem found in one object. */
export interface SchemaProblem {
  object: string;
  message: string;
}

function kindSchema(obj: K8sObject): KindSchema | undefined {
  return KINDS[`${obj.apiVersion}/${obj.kind}`];
}

interface AjvError {
  instancePath?: string;
  message?: string;
  params?: Record<string, unknown>;
}

/** JSON-schema validation of each object (types, required fields, enums, formats). */
export function schemaProblems(objs: readonly K8sObject[]): SchemaProblem[] {
  const problems: SchemaProblem[] = [];
  for (const obj of objs) {
    const custom = CUSTOM_KINDS[`${obj.apiVersion}/${obj.kind}`];
    if (custom !== undefined) {
      for (const message of custom(obj)) problems.push({ object: objectId(obj), message });
      continue;
    }
    const schema = kindSchema(obj);
    if (schema === undefined) {
      problems.push({ object: objectId(obj), message: `${obj.apiVersion} ${obj.kind} is not a kind this validator knows Kubernetes ${KUBERNETES_VERSION} to serve` });
      continue;
    }
    try {
      schema.create(structuredClone(obj)).validate();
    } catch (err) {
      const errors = (err as { errors?: AjvError[] }).errors;
      if (!Array.isArray(errors) || errors.length === 0) throw err;
      for (const e of errors) {
        const extra = e.params !== undefined && 'allowedValues' in e.params ? ` (${JSON.stringify(e.params['allowedValues'])})` : '';
        problems.push({ object: objectId(obj), message: `${e.instancePath === '' ? '/' : e.instancePath} ${e.message ?? 'is invalid'}${extra}` });
      }
    }
  }
  return problems;
}

// The virtual source file sits beside this module so `kubernetes-models` resolves from the
// project's node_modules.
const CHECK_FILE = fileURLToPath(new URL('./__manifest-field-check__.ts', import.meta.url));

/**
 * Type-checks every object as an object literal of its kubernetes-models interface: unknown
 * fields, missing required fields and wrong primitive types each become a problem.
 */
export function fieldProblems(objs: readonly K8sObject[]): SchemaProblem[] {
  const imports = new Map<string, string>();
  const spans: { start: number; end: number; object: string }[] = [];
  let body = '';
  objs.forEach((obj, i) => {
    const schema = kindSchema(obj);
    if (schema === undefined) return; // schemaProblems checks it (custom resources) or reports it
    const alias = `${schema.iface}_${imports.size}`;
    if (!imports.has(schema.module)) imports.set(schema.module, alias);
    const start = body.length;
    body += `export const object${i}: ${imports.get(schema.module)} = ${JSON.stringify(obj, null, 1)};\n`;
    spans.push({ start, end: body.length, object: objectId(obj) });
  });
  let header = '';
  for (const [module, alias] of imports) {
    const iface = Object.values(KINDS).find((k) => k.module === module)!.iface;
    header += `import type { ${iface} as ${alias} } from 'kubernetes-models/${module}';\n`;
  }
  const source = header + body;
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.getSourceFile = (name, language, ...rest) =>
    name === CHECK_FILE ? ts.createSourceFile(name, source, language) : getSourceFile(name, language, ...rest);
  host.fileExists = (name) => name === CHECK_FILE || fileExists(name);
  const program = ts.createProgram([CHECK_FILE], options, host);
  const problems: SchemaProblem[] = [];
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(d.messageText, ' ');
    const at = d.file?.fileName === CHECK_FILE && d.start !== undefined ? d.start - header.length : -1;
    const span = spans.find((s) => at >= s.start && at < s.end);
    // A diagnostic outside every object (an import that does not resolve) is a broken check.
    if (span === undefined) throw new Error(`manifest field check failed: ${message}`);
    problems.push({ object: span.object, message });
  }
  return problems;
}

/** Both checks; an empty list means every object is valid for Kubernetes v1.33.0. */
export function validateManifests(objs: readonly K8sObject[]): SchemaProblem[] {
  return [...schemaProblems(objs), ...fieldProblems(objs)];
}
