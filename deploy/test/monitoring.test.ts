// The monitoring overlay and the scrape checks: every workload scraped at /metrics on its health port, from the monitoring namespace only.
import { expect } from 'chai';
import { loadRegistry, type Registry } from '../../certs-ca/index.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { crossReferenceProblems, scrapeProblems, type DeploymentFacts } from '../tools/cross-reference.ts';
import { renderKustomization } from '../tools/kustomize.ts';
import { parseManifests, type JsonObject, type K8sObject } from '../tools/manifest.ts';
import { objects, podTemplateOf } from '../tools/pod-spec.ts';
import { validateManifests } from '../tools/schema.ts';
import { MONITORING_OVERLAY_DIR, REGISTRY_FILE } from './paths.ts';

function get(objs: K8sObject[], kind: string, name: string): K8sObject {
  const found = objs.find((o) => o.kind === kind && o.metadata.name === name);
  if (found === undefined) throw new Error(`no ${kind}/${name}`);
  return found;
}

function spec(obj: K8sObject): JsonObject {
  return obj['spec'] as JsonObject;
}

describe('deploy: metrics scraping (deploy/overlays/monitoring)', () => {
  let registry: Registry;
  let catalog: MethodCatalog;
  let rendered: K8sObject[];

  before(() => {
    registry = loadRegistry(REGISTRY_FILE);
    catalog = MethodCatalog.default();
    rendered = renderKustomization(MONITORING_OVERLAY_DIR);
  });

  function problemsAfter(mutate: (objs: K8sObject[]) => void): string[] {
    const objs = structuredClone(rendered);
    mutate(objs);
    const facts: DeploymentFacts = { objects: objs, registry, catalog };
    return scrapeProblems(facts);
  }

  it('annotates every workload\'s pods and gives each a metrics Service the one ServiceMonitor selects', () => {
    expect(problemsAfter(() => undefined)).to.deep.equal([]);
    for (const w of registry.workloads.filter((x) => x.deployed)) {
      const workload = rendered.find((o) => (o.kind === 'Deployment' || o.kind === 'StatefulSet') && o.metadata.name === w.name)!;
      expect((podTemplateOf(workload)!['metadata'] as JsonObject)['annotations']).to.deep.equal({
        'prometheus.io/scrape': 'true',
        'prometheus.io/port': '8081',
        'prometheus.io/path': '/metrics',
      });
      expect(get(rendered, 'Service', `${w.name}-metrics`).metadata.namespace).to.equal('twokey');
    }
    expect(rendered.filter((o) => o.kind === 'ServiceMonitor').map((o) => `${o.metadata.namespace}/${o.metadata.name}`)).to.deep.equal(['twokey/twokey']);
  });

  describe('each check fails on the mistake it exists for', () => {
    it('a pod without the scrape annotations', () => {
      expect(problemsAfter((o) => void delete ((podTemplateOf(get(o, 'StatefulSet', 'image-store'))!['metadata'] as JsonObject)['annotations'] as JsonObject)['prometheus.io/port'])).to.include(
        'StatefulSet/twokey/image-store: pod annotation prometheus.io/port must be "8081" (metrics are served at /metrics on the health port)',
      );
    });

    it('a scrape policy that lets in every namespace, or the scrape port left closed', () => {
      const objs = structuredClone(rendered);
      ((objects(spec(get(objs, 'NetworkPolicy', 'allow-metrics-scrape')), 'ingress')[0]!['from'] as JsonObject[])[0]!)['namespaceSelector'] = {};
      expect(crossReferenceProblems({ objects: objs, registry, catalog })).to.include('NetworkPolicies allow a pod in another namespace -> auth:8081');
      expect(problemsAfter((o) => o.splice(o.indexOf(get(o, 'NetworkPolicy', 'allow-metrics-scrape')), 1))).to.include(
        'NetworkPolicies block Prometheus in namespace monitoring -> auth:8081, its scrape port',
      );
    });

    it('a scrape policy that opens more than the health port', () => {
      expect(problemsAfter((o) => void delete objects(spec(get(o, 'NetworkPolicy', 'allow-metrics-scrape')), 'ingress')[0]!['ports'])).to.include(
        'NetworkPolicies allow Prometheus in namespace monitoring -> image-store:8443',
      );
    });

    it('a ServiceMonitor aimed at the wrong port, path or scheme, or missing a workload', () => {
      const endpoint = (o: K8sObject[]): JsonObject => objects(spec(get(o, 'ServiceMonitor', 'twokey')), 'endpoints')[0]!;
      expect(problemsAfter((o) => void (endpoint(o)['port'] = 'grpc-mesh'))).to.include('ServiceMonitor/twokey/twokey: endpoint port grpc-mesh is not a port of Service/twokey/auth-metrics');
      expect(problemsAfter((o) => void (endpoint(o)['path'] = '/metric'))).to.include('ServiceMonitor/twokey/twokey: endpoint path "/metric" is not /metrics');
      expect(problemsAfter((o) => void (endpoint(o)['scheme'] = 'https'))).to.include('ServiceMonitor/twokey/twokey: endpoint scheme "https"; the health port serves plain HTTP');
      expect(problemsAfter((o) => o.splice(o.indexOf(get(o, 'Service', 'cleaner-metrics')), 1))).to.deep.equal([
        'ServiceMonitor/twokey/twokey: scrapes no pod of registry workload cleaner',
      ]);
      expect(problemsAfter((o) => void (objects(spec(get(o, 'Service', 'tagging-metrics')), 'ports')[0]!['targetPort'] = 'grpc-mesh'))).to.include(
        'ServiceMonitor/twokey/twokey: endpoint port metrics of Service/twokey/tagging-metrics does not reach StatefulSet/twokey/tagging\'s health port 8081',
      );
      expect(problemsAfter((o) => void (spec(get(o, 'ServiceMonitor', 'twokey'))['namespaceSelector'] = { matchNames: ['default'] }))).to.deep.equal([
        'ServiceMonitor/twokey/twokey: selects no Service',
      ]);
    });
  });

  describe('the ServiceMonitor schema', () => {
    const monitor = (specYaml: string): K8sObject[] =>
      parseManifests(`apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: m\n  namespace: twokey\nspec:\n${specYaml}`, 'm.yaml');

    it('accepts the overlay\'s ServiceMonitor', () => {
      expect(validateManifests(rendered.filter((o) => o.kind === 'ServiceMonitor'))).to.deep.equal([]);
    });

    it('refuses misspelt or unknown fields, bad durations, and missing required fields', () => {
      const problems = (yaml: string): string[] => validateManifests(monitor(yaml)).map((p) => p.message);
      expect(problems('  selector: {}\n  endpoints:\n    - port: metrics\n      intervall: 30s\n')).to.deep.equal([
        '/spec/endpoints/0/intervall is not a field of monitoring.coreos.com/v1 ServiceMonitor (as checked here)',
      ]);
      expect(problems('  selector: {}\n  endpoints:\n    - port: metrics\n      interval: 30 seconds\n')).to.deep.equal(['/spec/endpoints/0/interval must be a duration like 30s']);
      expect(problems('  endpoints: []\n')).to.deep.equal(['/spec/selector is required', '/spec/endpoints must not be empty']);
      expect(problems('  selector: {}\n  namespaceSelector: {any: true, matchNames: [a]}\n  endpoints:\n    - port: metrics\n      scheme: HTTP\n')).to.deep.equal([
        '/spec/endpoints/0/scheme must be one of ["http","https"]',
        '/spec/namespaceSelector sets both any and matchNames',
      ]);
    });
  });
});
