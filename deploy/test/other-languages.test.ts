// deploy/overlays/other-languages: a Python service behind an Envoy sidecar and the twokey authorizer, checked offline like the other overlays.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { parse as parseYaml } from 'yaml';
import { CertificateAuthority, loadRegistry, type Registry } from '../../certs-ca/index.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { renderEnvoyConfig } from '../../services/authorizer/envoy-config.ts';
import { AUTHORIZER_PROTO_ROOT } from '../../services/authorizer/proxy-admission.ts';
import { workloadSecrets } from '../../scripts/k8s-secrets.ts';
import { crossReferenceProblems } from '../tools/cross-reference.ts';
import { renderKustomization } from '../tools/kustomize.ts';
import type { K8sObject } from '../tools/manifest.ts';
import { validateManifests } from '../tools/schema.ts';
import { TWOKEY_BIN } from '../../scripts/local-mesh/supervisor.ts';
import { REGISTRY_FILE, REPO } from './paths.ts';

const OVERLAY = fileURLToPath(new URL('../overlays/other-languages', import.meta.url));
const OVERLAY_REGISTRY = join(OVERLAY, 'registry.yaml');

describe('deploy: a service in another language behind Envoy and the authorizer (deploy/overlays/other-languages)', () => {
  let tmp: string;
  let registry: Registry;
  let catalog: MethodCatalog;
  let rendered: K8sObject[];
  let secrets: K8sObject[];

  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'twokey-k8s-other-'));
    registry = loadRegistry(OVERLAY_REGISTRY);
    // twokey's protos, Envoy's Check (the proxy's grant) and the Python service's (its rules).
    catalog = MethodCatalog.load({ extraRoots: [AUTHORIZER_PROTO_ROOT, OVERLAY] });
    const ca = CertificateAuthority.init({ dir: join(tmp, 'ca'), trustDomain: registry.trustDomain });
    // As `twokey k8s secrets --proto-root` issues them: the proxy's grant names Envoy's Check.
    secrets = workloadSecrets(ca, registry, { namespace: 'twokey', gatewayTlsDir: join(tmp, 'gateway-tls'), extraProtoRoots: [AUTHORIZER_PROTO_ROOT] });
    rendered = renderKustomization(OVERLAY);
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('renders objects valid for Kubernetes', () => {
    expect(validateManifests(rendered)).to.deep.equal([]);
  });

  it('agrees with its registry, the protos, the certificates and the network policies', () => {
    const problems = crossReferenceProblems({
      objects: [...rendered, ...secrets],
      registry,
      catalog,
      externalSecrets: new Set(['twokey/twokey-database']),
      registrySource: { text: readFileSync(OVERLAY_REGISTRY, 'utf8'), file: 'deploy/overlays/other-languages/registry.yaml' },
    });
    expect(problems).to.deep.equal([]);
  });

  it('passes `twokey k8s check` with its registry and the proto roots', () => {
    const r = spawnSync(
      process.execPath,
      [TWOKEY_BIN, 'k8s', 'check', OVERLAY, '--registry', OVERLAY_REGISTRY, '--proto-root', AUTHORIZER_PROTO_ROOT, '--proto-root', OVERLAY],
      { cwd: REPO, encoding: 'utf8' },
    );
    expect(r.status, `${r.stdout}${r.stderr}`).to.equal(0);
    expect(r.stdout).to.match(/ 0 problems /);
  });

  it('catches the mistakes the proxied pod could make', () => {
    const problemsAfter = (mutate: (objs: K8sObject[]) => void): string[] => {
      const objs = structuredClone([...rendered, ...secrets]);
      mutate(objs);
      return crossReferenceProblems({ objects: objs, registry, catalog, externalSecrets: new Set(['twokey/twokey-database']) });
    };
    const pod = (objs: K8sObject[]): any => (objs.find((o) => o.kind === 'Deployment' && o.metadata.name === 'notes') as any).spec.template.spec;
    // The application must never hold the workload's key.
    expect(problemsAfter((o) => pod(o).containers[1].volumeMounts.push({ name: 'svid', mountPath: '/var/run/twokey/svid', readOnly: true }))).to.include(
      "Deployment/twokey/notes: container notes also mounts notes's private key",
    );
    expect(problemsAfter((o) => void delete pod(o).containers[0].readinessProbe)).to.include('Deployment/twokey/notes container envoy: no readinessProbe');
    // The proxy's grant needs a Service that serves Envoy's Check.
    expect(
      problemsAfter((o) => void delete (o.find((x) => x.kind === 'Service' && x.metadata.name === 'authorizer')!.metadata as any).annotations),
    ).to.include('registry workload notes is granted /envoy.service.auth.v3.Authorization/Check, but no Service declares that it serves envoy.service.auth.v3.Authorization');
  });

  it("its registry is the base's plus the authorizer and notes, and only those", () => {
    const base = loadRegistry(REGISTRY_FILE);
    const names = (r: Registry): string[] => r.workloads.map((w) => w.name);
    expect(names(registry)).to.deep.equal([...names(base), 'authorizer', 'notes']);
    for (const w of base.workloads) expect(registry.workloads.find((x) => x.name === w.name)!.grants.toStrings()).to.deep.equal(w.grants.toStrings());
    expect(readFileSync(OVERLAY_REGISTRY, 'utf8').startsWith(readFileSync(REGISTRY_FILE, 'utf8').trimEnd())).to.equal(true);
  });

  it("runs the Envoy config `twokey authz envoy-config` writes, fail-closed", () => {
    const expected = renderEnvoyConfig({
      service: 'spiffe://twokey.local/ns/twokey/sa/notes',
      listen: '0.0.0.0:8443',
      backend: '127.0.0.1:50051',
      svidDir: '/var/run/twokey/svid',
      authorizer: 'authorizer:8443',
      authorizerId: 'spiffe://twokey.local/ns/twokey/sa/authorizer',
    });
    const envoyYaml = readFileSync(join(OVERLAY, 'envoy.yaml'), 'utf8');
    expect(envoyYaml).to.equal(expected);
    const bootstrap = parseYaml(envoyYaml);
    const hcm = bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
    const extAuthz = hcm.http_filters.find((f: { name: string }) => f.name === 'envoy.filters.http.ext_authz').typed_config;
    expect(extAuthz).to.deep.include({ include_peer_certificate: true, failure_mode_allow: false, status_on_error: { code: 'ServiceUnavailable' }, transport_api_version: 'V3' });
    expect(hcm.http_filters.map((f: { name: string }) => f.name)).to.deep.equal(['envoy.filters.http.ext_authz', 'envoy.filters.http.router']);
  });
});
