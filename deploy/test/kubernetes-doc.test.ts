// Tests that the Kubernetes page (docs/kubernetes.md) names Services, ports, pods and labels that exist.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { renderKustomization } from '../tools/kustomize.ts';
import type { JsonObject, K8sObject } from '../tools/manifest.ts';
import { podTemplateOf } from '../tools/pod-spec.ts';
import { GATEWAY_PUBLIC_TLS_SECRET } from '../tools/workload-secrets.ts';
import { KUBERNETES_DOC, LOCAL_OVERLAY_DIR, REPO } from './paths.ts';

// The Kubernetes page names objects, ports and labels; they must be the rendered ones.
function page(): string {
  const text = readFileSync(KUBERNETES_DOC, 'utf8');
  expect(text, 'docs/kubernetes.md is the "Deploy to Kubernetes" page').to.match(/^# Deploy to Kubernetes\n/);
  return text;
}

function servicePorts(objs: readonly K8sObject[], name: string): number[] {
  const svc = objs.find((o) => o.kind === 'Service' && o.metadata.name === name);
  expect(svc, `Service ${name}`).not.to.equal(undefined);
  return ((svc!['spec'] as JsonObject)['ports'] as JsonObject[]).map((p) => p['port'] as number);
}

describe('deploy: the Kubernetes page matches the manifests', () => {
  const text = page();
  const objs = renderKustomization(LOCAL_OVERLAY_DIR);

  it('port-forwards to Services and ports that exist', () => {
    const forwards = [...text.matchAll(/port-forward svc\/([a-z-]+) (\d+):(\d+)/g)];
    expect(forwards.length).to.be.greaterThanOrEqual(2);
    for (const [, name, , remote] of forwards) expect(servicePorts(objs, name!)).to.include(Number(remote));
  });

  it('execs into a pod that the auth StatefulSet creates, and names the real Secret', () => {
    expect(text).to.contain('exec auth-0 --');
    expect(objs.some((o) => o.kind === 'StatefulSet' && o.metadata.name === 'auth')).to.equal(true);
    expect(text).to.contain(`create secret tls ${GATEWAY_PUBLIC_TLS_SECRET}`);
  });

  it('selects pods and Secrets by a label every pod carries', () => {
    expect(text).to.contain('-l app.kubernetes.io/part-of=twokey');
    for (const o of objs) {
      const template = podTemplateOf(o);
      if (template === undefined) continue;
      expect(((template['metadata'] as JsonObject)['labels'] as JsonObject)['app.kubernetes.io/part-of'], o.metadata.name).to.equal('twokey');
    }
  });

  it('applies kustomizations that exist', () => {
    const dirs = [...text.matchAll(/kubectl apply -k ([\w./-]+)/g)].map((m) => m[1]!);
    expect(dirs).to.include.members(['deploy/', 'deploy/overlays/local']);
    for (const dir of dirs) expect(() => renderKustomization(join(REPO, dir))).not.to.throw();
  });
});
