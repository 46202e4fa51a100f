// The console's policy graph: one edge per granted method group, each method with its permission.
import { expect } from 'chai';
import { loadRegistry, parseRegistry } from '../../certs-ca/registry.ts';
import { buildPolicyGraph } from '../../scripts/console/policy-graph.ts';
import { SERVED_SERVICES } from '../../scripts/local-mesh/ports.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { packagePath } from '../../services/authz/package-root.ts';

describe('console policy graph', () => {
  it("joins deploy/registry.yaml's grants with proto/'s permissions", () => {
    const graph = buildPolicyGraph(loadRegistry(packagePath('deploy', 'registry.yaml')), MethodCatalog.default(), SERVED_SERVICES);
    expect(graph.nodes.map((n) => n.name)).to.deep.equal(['auth', 'gateway', 'image-store', 'tagging', 'cleaner', 'admin']);
    const edge = (from: string, to: string) => graph.edges.find((e) => e.from === from && e.to === to);
    expect(edge('tagging', 'image-store')!.methods).to.deep.equal([
      { name: 'GetImage', path: '/twokey.images.v1.ImageStore/GetImage', permission: 'images:read' },
      { name: 'WatchImages', path: '/twokey.images.v1.ImageStore/WatchImages', permission: 'images:watch' },
      { name: 'SetTags', path: '/twokey.images.v1.ImageStore/SetTags', permission: 'images:tag' },
    ]);
    expect(edge('tagging', 'auth')!.methods.map((m) => [m.name, m.permission])).to.deep.equal([['GetJwks', null], ['GetServiceToken', null], ['ExchangeToken', null], ['GetRevocations', null], ['WatchRevocations', null]]);
    expect(edge('cleaner', 'tagging')).to.equal(undefined);
    // The revocation methods: admin's alone, each needing revocations:admin.
    expect(edge('admin', 'auth')!.methods.map((m) => [m.name, m.permission])).to.deep.equal([
      ['GetServiceToken', null],
      ['DisableUser', 'revocations:admin'],
      ['RevokeToken', 'revocations:admin'],
      ['RevokeCertificate', 'revocations:admin'],
      ['WithdrawKey', 'revocations:admin'],
      ['ListRevocations', 'revocations:admin'],
    ]);
    expect(graph.edges.filter((e) => e.methods.some((m) => m.permission === 'revocations:admin')).map((e) => e.from)).to.deep.equal(['admin']);
    expect(graph.edges.filter((e) => e.from === 'auth')).to.deep.equal([]);
    const tagging = graph.nodes.find((n) => n.name === 'tagging')!;
    expect(tagging.serviceScopes).to.deep.equal(['images:read:any', 'images:watch']);
    expect(tagging.delegation).to.deep.equal({ scopes: ['images:tag'], audiences: ['spiffe://twokey.local/ns/twokey/sa/image-store'], withoutSubjectToken: true });
  });

  it('expands a service wildcard to every method and draws a service nobody serves as its own node', () => {
    const registry = parseRegistry(
      'trustDomain: twokey.local\nworkloads:\n  - { name: ops, namespace: x, serviceAccount: ops, grants: ["/twokey.tagging.v1.Tagging/*", "/twokey.images.v1.ImageStore/GetImage"] }\n',
    );
    const graph = buildPolicyGraph(registry, MethodCatalog.default(), { ops: [] });
    expect(graph.edges.map((e) => [e.from, e.to, e.wildcard])).to.deep.equal([
      ['ops', 'twokey.tagging.v1.Tagging', true],
      ['ops', 'twokey.images.v1.ImageStore', false],
    ]);
    expect(graph.edges[0]!.methods.map((m) => m.name)).to.deep.equal(['SuggestTags']);
  });
});
