// Tests that every rendered object is valid Kubernetes v1.33.0, and that broken manifests are caught.
import { expect } from 'chai';
import { renderKustomization } from '../tools/kustomize.ts';
import { parseManifests, type K8sObject } from '../tools/manifest.ts';
import { KUBERNETES_VERSION, validateManifests } from '../tools/schema.ts';
import { KUSTOMIZATIONS } from './paths.ts';

// A valid Deployment, broken one way per test below.
const VALID = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: web:1.0
          ports:
            - containerPort: 8080
          securityContext:
            readOnlyRootFilesystem: true
`;

function one(yaml: string): K8sObject[] {
  return parseManifests(yaml, 'test.yaml');
}

describe(`deploy: manifests validate against the Kubernetes ${KUBERNETES_VERSION} OpenAPI schema`, () => {
  for (const { name, dir } of KUSTOMIZATIONS) {
    it(`every object ${name} renders is valid`, () => {
      const objs = renderKustomization(dir);
      expect(objs.length).to.be.greaterThan(20);
      expect(validateManifests(objs)).to.deep.equal([]);
    });
  }

  it('accepts the valid fixture the failing cases start from', () => {
    expect(validateManifests(one(VALID))).to.deep.equal([]);
  });

  it('fails a port given as a string', () => {
    const problems = validateManifests(one(VALID.replace('containerPort: 8080', 'containerPort: "8080"')));
    expect(problems).to.deep.include({ object: 'Deployment/shop/web', message: '/spec/template/spec/containers/0/ports/0/containerPort must be integer' });
  });

  it('fails a misspelt security field that the JSON schema alone would let through', () => {
    const problems = validateManifests(one(VALID.replace('readOnlyRootFilesystem', 'readOnlyRootFileSystem')));
    expect(problems).to.have.length(1);
    expect(problems[0]!.object).to.equal('Deployment/shop/web');
    expect(problems[0]!.message).to.contain("'\"readOnlyRootFileSystem\"' does not exist in type 'ISecurityContext'");
  });

  it('fails a missing required field', () => {
    const problems = validateManifests(one(VALID.replace(/  selector:\n    matchLabels: \{app: web\}\n/, '')));
    expect(problems.map((p) => p.message)).to.include('/spec must have required property selector');
  });

  it('fails a value outside an enum', () => {
    const problems = validateManifests(one(VALID.replace('containerPort: 8080', 'containerPort: 8080\n              protocol: HTTP')));
    expect(problems.map((p) => p.message)).to.include('/spec/template/spec/containers/0/ports/0/protocol must be equal to one of the allowed values (["SCTP","TCP","UDP"])');
  });

  it('refuses an API version Kubernetes no longer serves', () => {
    const problems = validateManifests(one(VALID.replace('apps/v1', 'extensions/v1beta1')));
    expect(problems).to.deep.equal([
      { object: 'Deployment/shop/web', message: `extensions/v1beta1 Deployment is not a kind this validator knows Kubernetes ${KUBERNETES_VERSION} to serve` },
    ]);
  });

  it('finds a broken object among valid ones and names it', () => {
    const objs = renderKustomization(KUSTOMIZATIONS[0].dir);
    const broken = structuredClone(objs);
    const gateway = broken.find((o) => o.kind === 'Deployment' && o.metadata.name === 'gateway')!;
    (gateway['spec'] as { replicas: unknown }).replicas = 'two';
    const problems = validateManifests(broken);
    expect(problems.length).to.be.greaterThan(0);
    for (const p of problems) expect(p.object).to.equal('Deployment/twokey/gateway');
    expect(problems.map((p) => p.message)).to.include('/spec/replicas must be integer');
  });
});
