// Tests of the offline NetworkPolicy model against the semantics Kubernetes documents.
import { expect } from 'chai';
import type { K8sObject } from '../tools/manifest.ts';
import { connectionAllowed, namespaceLabels, type Endpoint, type PodEndpoint } from '../tools/network-policy.ts';

function pod(namespace: string, labels: Record<string, string>, nsLabels: Record<string, string> = {}): PodEndpoint {
  return {
    kind: 'pod',
    namespace,
    namespaceLabels: namespaceLabels(namespace, nsLabels),
    labels,
    ports: [
      { name: 'grpc-mesh', containerPort: 8443, protocol: 'TCP' },
      { name: 'dns', containerPort: 53, protocol: 'UDP' },
    ],
  };
}

function policy(namespace: string, spec: Record<string, unknown>): K8sObject {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'p', namespace }, spec } as K8sObject;
}

const api = pod('shop', { app: 'api' });
const web = pod('shop', { app: 'web' });
const monitor = pod('ops', { app: 'prom' }, { team: 'ops' });
const internet: Endpoint = { kind: 'external', ip: '198.51.100.7' };

describe('deploy: NetworkPolicy evaluator', () => {
  it('allows everything while no policy selects a pod', () => {
    expect(connectionAllowed([], web, api, 8443)).to.equal(true);
    expect(connectionAllowed([policy('shop', { podSelector: { matchLabels: { app: 'db' } }, policyTypes: ['Ingress'] })], web, api, 8443)).to.equal(true);
  });

  it('isolates a selected pod; policyTypes defaults to Ingress, plus Egress when egress rules exist', () => {
    const ingressOnly = policy('shop', { podSelector: {} });
    expect(connectionAllowed([ingressOnly], web, api, 8443)).to.equal(false);
    expect(connectionAllowed([ingressOnly], api, internet, 443)).to.equal(true);
    const withEgress = policy('shop', { podSelector: {}, ingress: [{}], egress: [] });
    expect(connectionAllowed([withEgress], api, internet, 443)).to.equal(false);
    expect(connectionAllowed([withEgress], internet, api, 8443)).to.equal(true);
  });

  it('needs both the sender\'s egress and the receiver\'s ingress', () => {
    const policies = [
      policy('shop', { podSelector: { matchLabels: { app: 'api' } }, policyTypes: ['Ingress'], ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }] }] }),
      policy('shop', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Egress'], egress: [] }),
    ];
    expect(connectionAllowed(policies, web, api, 8443)).to.equal(false);
    policies[1] = policy('shop', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Egress'], egress: [{ to: [{ podSelector: { matchLabels: { app: 'api' } } }] }] });
    expect(connectionAllowed(policies, web, api, 8443)).to.equal(true);
  });

  it('a podSelector alone means the policy\'s own namespace; with a namespaceSelector both must match', () => {
    const sameNs = policy('shop', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'prom' } } }] }] });
    expect(connectionAllowed([sameNs], monitor, api, 8443)).to.equal(false);
    const both = policy('shop', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'ops' } }, podSelector: { matchLabels: { app: 'prom' } } }] }] });
    expect(connectionAllowed([both], monitor, api, 8443)).to.equal(true);
    expect(connectionAllowed([both], pod('ops', { app: 'other' }, { team: 'ops' }), api, 8443)).to.equal(false);
    // Two peers are alternatives, not a conjunction.
    const either = policy('shop', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'ops' } } }, { podSelector: { matchLabels: { app: 'web' } } }] }] });
    expect(connectionAllowed([either], pod('ops', { app: 'other' }, { team: 'ops' }), api, 8443)).to.equal(true);
    expect(connectionAllowed([either], web, api, 8443)).to.equal(true);
  });

  it('matches ports by number, by the destination pod\'s port name, by protocol and by range', () => {
    const named = policy('shop', { podSelector: {}, ingress: [{ ports: [{ port: 'grpc-mesh' }] }] });
    expect(connectionAllowed([named], web, api, 8443)).to.equal(true);
    expect(connectionAllowed([named], web, api, 8444)).to.equal(false);
    const udp = policy('shop', { podSelector: {}, ingress: [{ ports: [{ protocol: 'UDP', port: 53 }] }] });
    expect(connectionAllowed([udp], web, api, 53, 'UDP')).to.equal(true);
    expect(connectionAllowed([udp], web, api, 53, 'TCP')).to.equal(false);
    const range = policy('shop', { podSelector: {}, ingress: [{ ports: [{ port: 8000, endPort: 8500 }] }] });
    expect(connectionAllowed([range], web, api, 8443)).to.equal(true);
    expect(connectionAllowed([range], web, api, 9000)).to.equal(false);
  });

  it('matches ipBlock against external addresses only, honouring except', () => {
    const block = policy('shop', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '198.51.100.0/24', except: ['198.51.100.0/30'] } }] }] });
    expect(connectionAllowed([block], internet, api, 8443)).to.equal(true);
    expect(connectionAllowed([block], { kind: 'external', ip: '198.51.100.3' }, api, 8443)).to.equal(false);
    expect(connectionAllowed([block], { kind: 'external', ip: '203.0.113.1' }, api, 8443)).to.equal(false);
    expect(connectionAllowed([block], web, api, 8443)).to.equal(false);
  });

  it('supports matchExpressions and refuses what it does not model', () => {
    const expr = policy('shop', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['web'] }] } }] }] });
    expect(connectionAllowed([expr], web, api, 8443)).to.equal(true);
    const unknown = policy('shop', { podSelector: {}, ingress: [{ from: [{ serviceAccountSelector: {} }] }] });
    expect(() => connectionAllowed([unknown], web, api, 8443)).to.throw('peer field serviceAccountSelector is outside what the NetworkPolicy evaluator models');
    const badOp = policy('shop', { podSelector: { matchExpressions: [{ key: 'app', operator: 'Like', values: ['w'] }] } });
    expect(() => connectionAllowed([badOp], web, api, 8443)).to.throw('matchExpression operator "Like"');
  });
});
