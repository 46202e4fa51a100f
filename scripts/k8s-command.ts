// `twokey k8s ...`: certificates as Kubernetes Secrets, and offline checks of the manifests.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CertificateAuthority, loadRegistry } from '../certs-ca/index.ts';
import { TwokeyError, isTwokeyError } from '../services/authz/errors.ts';
import { MethodCatalog } from '../services/authz/method-catalog.ts';
import { crossReferenceProblems } from '../deploy/tools/cross-reference.ts';
import { renderKustomization } from '../deploy/tools/kustomize.ts';
import { parseManifests, toYamlStream, type K8sObject } from '../deploy/tools/manifest.ts';
import { KUBERNETES_VERSION } from '../deploy/tools/kubernetes-version.ts';
import { DATABASE_SECRET, GATEWAY_PUBLIC_TLS_SECRET, svidSecretName } from '../deploy/tools/workload-secrets.ts';
import { workloadSecrets, writeSecrets } from './k8s-secrets.ts';

const DEFAULT_REGISTRY = 'deploy/registry.yaml';
// kustomize reads generator files only inside the kustomization's directory, so the base keeps a
// copy of the registry, kept identical by `sync-registry` and checked by `check` and the tests.
const DEFAULT_REGISTRY_COPY = 'deploy/base/registry.yaml';

export const usage = `Usage: twokey k8s <subcommand> [options]

Subcommands:
  secrets  --ca-dir DIR --out FILE|- [--registry FILE] [--namespace NS] [--gateway-tls-dir DIR]
           Issue a fresh certificate for every workload in the registry and write them as
           Kubernetes Secrets (<workload>-svid: svid.pem, svid.key, bundle.pem), one YAML
           stream for 'kubectl apply -f'. FILE is created mode 0600; '-' writes to stdout.
           Re-running it and applying the result rotates every certificate.
             --registry         default ${DEFAULT_REGISTRY}
             --namespace        refuse a registry with a workload outside NS
             --gateway-tls-dir  also write the ${GATEWAY_PUBLIC_TLS_SECRET} Secret from DIR/tls.crt
                                and DIR/tls.key; when DIR has none, a certificate for localhost is
                                made there by DIR's own small CA (clients trust DIR/ca.pem)
             --proto-root       further proto roots defining methods the registry grants
                                (repeatable), e.g. the authorizer's Envoy protos

  sync-registry  [--registry FILE] [--to FILE]
           Copy the registry (default ${DEFAULT_REGISTRY}), after checking it, to the copy the
           kustomize base turns into the registry ConfigMap (default ${DEFAULT_REGISTRY_COPY}).
           Run it after every registry change, then re-issue the Secrets and apply.

  render   DIR
           Print the manifests the kustomization in DIR renders (the kustomize subset deploy/
           uses), as 'kubectl apply -k DIR' would send them.

  check    [DIR ...] [--registry FILE] [--secrets FILE] [--grants-oid OID] [--proto-root DIR ...]
           Render each kustomization (default: deploy) and check it offline: every object
           against the Kubernetes ${KUBERNETES_VERSION} schema, and the manifests against the registry
           and proto/ (identities, Services, mounts, network paths, pod hardening, the
           registry the pods load is the registry file's exact text). With
           --secrets (the output of 'k8s secrets') those Secrets are checked too; without it
           they are assumed to be created separately. The database Secret ${DATABASE_SECRET}
           (deploy/overlays/postgres) is the operator's and always assumed. --grants-oid: the
           CA's grants extension OID, when it is not the default.

Exit status: 0 success, 1 refused, failed or problems found, 2 bad usage.
`;

class UsageError extends Error {}

function value(values: Record<string, unknown>, name: string, fallback?: string): string {
  const v = values[name];
  if (typeof v === 'string' && v !== '') return v;
  if (fallback !== undefined) return fallback;
  throw new UsageError(`--${name} is required`);
}

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(usage);
    return sub === undefined ? 2 : 0;
  }
  try {
    switch (sub) {
      case 'secrets':
        return secrets(rest);
      case 'render':
        return render(rest);
      case 'sync-registry':
        return syncRegistry(rest);
      case 'check':
        return await check(rest);
      default:
        throw new UsageError(`unknown subcommand ${JSON.stringify(sub)}`);
    }
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true) {
      process.stderr.write(`twokey k8s: ${(err as Error).message}\nRun 'twokey k8s --help' for usage.\n`);
      return 2;
    }
    if (isTwokeyError(err)) {
      process.stderr.write(`twokey k8s ${sub}: ${err.message} [${err.code}]\n`);
      return 1;
    }
    throw err;
  }
}

function secrets(args: string[]): number {
  const { values } = parseArgs({
    args,
    strict: true,
    options: { 'ca-dir': { type: 'string' }, out: { type: 'string' }, registry: { type: 'string' }, namespace: { type: 'string' }, 'gateway-tls-dir': { type: 'string' }, 'proto-root': { type: 'string', multiple: true } },
  });
  const ca = CertificateAuthority.open(value(values, 'ca-dir'));
  const out = value(values, 'out');
  const registry = loadRegistry(value(values, 'registry', DEFAULT_REGISTRY));
  const made = workloadSecrets(ca, registry, {
    ...(values.namespace === undefined ? {} : { namespace: values.namespace }),
    ...(values['gateway-tls-dir'] === undefined ? {} : { gatewayTlsDir: values['gateway-tls-dir'] }),
    ...(values['proto-root'] === undefined ? {} : { extraProtoRoots: values['proto-root'] }),
  });
  writeSecrets(made, out);
  if (out !== '-') process.stderr.write(`wrote ${made.length} Secrets to ${out}; apply with: kubectl apply -f ${out}\n`);
  return 0;
}

function syncRegistry(args: string[]): number {
  const { values } = parseArgs({ args, strict: true, options: { registry: { type: 'string' }, to: { type: 'string' } } });
  const from = value(values, 'registry', DEFAULT_REGISTRY);
  const to = value(values, 'to', DEFAULT_REGISTRY_COPY);
  loadRegistry(from); // an invalid registry is never copied towards the cluster
  const text = readFileSync(from, 'utf8');
  const tmp = `${to}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { flag: 'wx' });
  renameSync(tmp, to);
  process.stderr.write(`copied ${from} to ${to}\n`);
  return 0;
}

function render(args: string[]): number {
  const { positionals } = parseArgs({ args, strict: true, allowPositionals: true, options: {} });
  if (positionals.length !== 1) throw new UsageError('render takes exactly one kustomization directory');
  process.stdout.write(toYamlStream(renderKustomization(positionals[0]!)));
  return 0;
}

// The schema check needs kubernetes-models and the TypeScript compiler (about 45 MB together):
// development dependencies here and optional peers of the installed package, so the rest of
// `twokey k8s` works without them and `check` says what to install.
const SCHEMA_PACKAGES = ['kubernetes-models@^4.5.1', 'typescript@~5.9.3'];

async function schemaValidator(): Promise<typeof import('../deploy/tools/schema.ts')> {
  try {
    return await import('../deploy/tools/schema.ts');
  } catch (err) {
    const missing = (err as { code?: string }).code === 'ERR_MODULE_NOT_FOUND' && /'(kubernetes-models|typescript)[/']/.test((err as Error).message);
    if (!missing) throw err;
    throw new TwokeyError(
      'ERR_CONFIG_INVALID',
      `the schema check needs the optional packages ${SCHEMA_PACKAGES.join(' and ')}, which are not installed: npm install --save-dev ${SCHEMA_PACKAGES.join(' ')}`,
      { cause: err },
    );
  }
}

async function check(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, strict: true, allowPositionals: true, options: { registry: { type: 'string' }, secrets: { type: 'string' }, 'grants-oid': { type: 'string' }, 'proto-root': { type: 'string', multiple: true } } });
  const { validateManifests } = await schemaValidator();
  const registryFile = value(values, 'registry', DEFAULT_REGISTRY);
  const registry = loadRegistry(registryFile);
  const registrySource = { text: readFileSync(registryFile, 'utf8'), file: registryFile };
  const catalog = values['proto-root'] === undefined ? MethodCatalog.default() : MethodCatalog.load({ extraRoots: values['proto-root'] });
  const extra: K8sObject[] = values.secrets === undefined ? [] : parseManifests(readFileSync(values.secrets, 'utf8'), values.secrets);
  const has = (ns: string, name: string): boolean => extra.some((o) => o.kind === 'Secret' && o.metadata.namespace === ns && o.metadata.name === name);
  // Without --secrets, the Secrets 'k8s secrets' makes are taken to exist; the public TLS Secret
  // may always come from elsewhere (kubectl create secret tls, cert-manager).
  const gateway = registry.workloads.find((w) => w.name === 'gateway');
  const externalSecrets = new Set([
    ...(values.secrets === undefined ? registry.workloads.filter((w) => w.deployed).map((w) => `${w.namespace}/${svidSecretName(w.name)}`) : []),
    ...(gateway === undefined || has(gateway.namespace, GATEWAY_PUBLIC_TLS_SECRET) ? [] : [`${gateway.namespace}/${GATEWAY_PUBLIC_TLS_SECRET}`]),
    // The database Secret is the operator's (docs/kubernetes.md): never in the rendered set.
    ...[...new Set(registry.workloads.map((w) => w.namespace))].map((ns) => `${ns}/${DATABASE_SECRET}`),
  ]);
  const grantsOid = values['grants-oid'];
  let problems = 0;
  for (const dir of positionals.length === 0 ? ['deploy'] : positionals) {
    const objects = [...renderKustomization(dir), ...extra];
    const found = [
      ...validateManifests(objects).map((p) => `${p.object}: ${p.message}`),
      ...crossReferenceProblems({ objects, registry, registrySource, catalog, externalSecrets, ...(grantsOid === undefined ? {} : { grantsOid }) }),
    ];
    for (const p of found) process.stdout.write(`${dir}: ${p}\n`);
    process.stdout.write(`${dir}: ${objects.length} objects, ${found.length} problems (Kubernetes ${KUBERNETES_VERSION} schema, registry, proto/)\n`);
    problems += found.length;
  }
  return problems === 0 ? 0 : 1;
}
