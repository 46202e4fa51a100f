// The registry loader: deploy/registry.yaml as the other parts read it, and strict refusals that
// name the file, line and path of every mistake.
import { expect } from 'chai';
import { fileURLToPath } from 'node:url';
import { TwokeyError } from '../services/authz/errors.ts';
import { findWorkload, loadRegistry, parseRegistry } from './registry.ts';

const REGISTRY = fileURLToPath(new URL('../deploy/registry.yaml', import.meta.url));

function refused(yaml: string, why: RegExp): void {
  let caught: unknown;
  try {
    parseRegistry(yaml, 'test.yaml');
  } catch (err) {
    caught = err;
  }
  expect(caught, 'registry should be refused').to.be.instanceOf(TwokeyError);
  expect((caught as TwokeyError).code).to.equal('ERR_REGISTRY_INVALID');
  expect((caught as TwokeyError).message).to.match(why);
}

const base = (workloads: string, extra = ''): string => `trustDomain: twokey.local\n${extra}workloads:\n${workloads}`;
const one = (fields: string): string => base(`  - name: web\n    namespace: demo\n    serviceAccount: web\n    grants: []\n${fields}`);

describe('loadRegistry', () => {
  it('reads deploy/registry.yaml with identities, grants, lifetimes and token settings', () => {
    const r = loadRegistry(REGISTRY);
    expect(r.trustDomain).to.equal('twokey.local');
    expect(r.defaultTtl).to.equal(86400);
    expect(r.auth).to.deep.equal({
      userScopes: ['images:read', 'images:write', 'images:delete', 'images:tag', 'tags:suggest'],
      roleScopes: { admin: ['console:read'] },
      userTokenTtl: 900,
      delegatedTokenTtl: 300,
      serviceTokenTtl: 600,
      maxDelegationDepth: 2,
      issuer: 'https://auth.twokey.local',
    });
    expect(r.workloads.map((w) => w.name)).to.deep.equal(['auth', 'gateway', 'image-store', 'tagging', 'cleaner', 'admin']);
    expect(r.workloads.map((w) => w.deployed)).to.deep.equal([true, true, true, true, true, false]);
    const tagging = findWorkload(r, 'spiffe://twokey.local/ns/twokey/sa/tagging')!;
    expect(tagging.grants.allows('/twokey.images.v1.ImageStore/SetTags')).to.equal(true);
    expect(tagging.grants.allows('/twokey.images.v1.ImageStore/DeleteImage')).to.equal(false);
    expect(tagging.serviceScopes).to.deep.equal(['images:read:any', 'images:watch']);
    expect(tagging.delegation.scopes).to.deep.equal(['images:tag']);
    expect(tagging.delegation.audiences.map(String)).to.deep.equal(['spiffe://twokey.local/ns/twokey/sa/image-store']);
    expect(tagging.delegation.withoutSubjectToken).to.equal(true);
    expect(tagging.ttl).to.equal(86400);
    expect(tagging.dns).to.deep.equal(['tagging', 'tagging.twokey', 'tagging.twokey.svc', 'tagging.twokey.svc.cluster.local', 'localhost']);
    expect(tagging.ip).to.deep.equal(['127.0.0.1', '::1']);
    const auth = r.workloads[0]!;
    expect(auth.grants.size).to.equal(0);
    expect(auth.delegation).to.deep.equal({ scopes: [], audiences: [], withoutSubjectToken: false });
  });

  it("names the team's proto roots relative to the registry file, and derives the issuer from the trust domain", () => {
    const r = parseRegistry(base('  []\n', 'protoRoots: [proto, /abs/protos]\n').replace('twokey.local', 'acme.test'), 'x', '/team/repo');
    expect(r.protoRoots).to.deep.equal(['/team/repo/proto', '/abs/protos']);
    expect(r.auth.issuer).to.equal('https://auth.acme.test');
    expect(parseRegistry(base('  []\n')).protoRoots).to.deep.equal([]);
    expect(loadRegistry(REGISTRY).protoRoots).to.deep.equal([]);
    refused(base('  []\n', 'protoRoots: proto\n'), /protoRoots: must be a list/);
    refused(base('  []\n', 'protoRoots: [proto, proto]\n'), /protoRoots\[1\]: duplicate entry/);
  });

  it('takes per-workload ttl, dns, ip and the auth issuer when given', () => {
    const r = parseRegistry(one('    ttl: 1h30m\n    dns: [web.example.com]\n    ip: ["10.0.0.7"]\n'), 'x');
    expect([r.workloads[0]!.ttl, r.workloads[0]!.dns, r.workloads[0]!.ip]).to.deep.equal([5400, ['web.example.com'], ['10.0.0.7']]);
    expect(parseRegistry(base('  []\n', 'auth:\n  issuer: https://login.example.com/twokey\n')).auth.issuer).to.equal('https://login.example.com/twokey');
  });

  it('takes the grants OID, defaulting to the CA default, and refuses one with an arc over 32 bits', () => {
    expect(loadRegistry(REGISTRY).grantsOid).to.equal('1.3.6.1.4.1.32473.7.1');
    expect(parseRegistry(base('  []\n', 'grantsOid: 1.3.6.1.4.1.99999.1\n')).grantsOid).to.equal('1.3.6.1.4.1.99999.1');
    refused(base('  []\n', 'grantsOid: 2.25.329800735698586629295641978511506172918\n'), /:2: grantsOid: .*every arc must fit in 32 bits/);
    refused(base('  []\n', 'grantsOid: 7\n'), /grantsOid/);
  });

  it('refuses an unreadable file', () => {
    expect(() => loadRegistry('/nonexistent/registry.yaml')).to.throw(TwokeyError, /cannot read registry \/nonexistent\/registry\.yaml/);
  });

  it('refuses YAML syntax errors and duplicate keys, with the line', () => {
    refused('trustDomain: [unclosed\n', /invalid registry test\.yaml:\d+:/);
    refused('trustDomain: twokey.local\ntrustDomain: other.local\nworkloads: []\n', /test\.yaml:2: Map keys must be unique/);
  });

  it('refuses YAML aliases, so one entry cannot silently stand for another', () => {
    refused(base('  - &w { name: web, namespace: demo, serviceAccount: web, grants: [] }\n  - *w\n'), /aliases are not allowed/);
  });

  it('refuses unknown keys, naming their path and line', () => {
    refused(base('  []\n', 'defaultTTL: 1h\n'), /test\.yaml:2: defaultTTL: unknown key/);
    refused(one('    grant: [/twokey.auth.v1.Auth/Login]\n'), /test\.yaml:7: workloads\[0\]\.grant: unknown key \(allowed: name, namespace/);
    refused(one('    delegation: { scope: [images:tag] }\n'), /workloads\[0\]\.delegation\.scope: unknown key/);
    refused(base('  []\n', 'auth: { userScope: [] }\n'), /auth\.userScope: unknown key/);
  });

  it('refuses missing keys and wrong types', () => {
    refused('workloads: []\n', /missing required key "trustDomain"/);
    refused(base('  - name: web\n    namespace: demo\n    serviceAccount: web\n'), /workloads\[0\]: missing required key "grants"/);
    refused(one('').replace('grants: []', 'grants: /twokey.auth.v1.Auth/Login'), /workloads\[0\]\.grants: must be a list, got string/);
    refused(one('').replace('grants: []', 'grants: [42]'), /workloads\[0\]\.grants\[0\]: must be a string, got number 42/);
    refused(base('  - just-a-name\n'), /workloads\[0\]: must be a mapping/);
    refused(one('    delegation: { withoutSubjectToken: "yes" }\n'), /workloads\[0\]\.delegation\.withoutSubjectToken: must be true or false/);
    refused(one('    deployed: "no"\n'), /workloads\[0\]\.deployed: must be true or false/);
    refused(base('  []\n', 'auth: { maxDelegationDepth: 99 }\n'), /auth\.maxDelegationDepth: must be an integer from 0 to 10/);
  });

  it('refuses bad grants, naming the entry', () => {
    const yaml = base(
      [
        '  - { name: a, namespace: demo, serviceAccount: a, grants: [] }',
        '  - { name: b, namespace: demo, serviceAccount: b, grants: [] }',
        '  - { name: c, namespace: demo, serviceAccount: c, grants: ["/twokey.images.v1.ImageStore/Get*"] }',
        '',
      ].join('\n'),
    );
    refused(yaml, /workloads\[2\]\.grants\[0\]: invalid grant "\/twokey\.images\.v1\.ImageStore\/Get\*"/);
    refused(one('').replace('grants: []', 'grants: [/a.B/C, /a.B/C]'), /workloads\[0\]\.grants\[1\]: duplicate entry "\/a\.B\/C"/);
  });

  it('refuses bad names, duplicate workloads and duplicate identities', () => {
    refused(one('').replace('namespace: demo', 'namespace: Demo'), /workloads\[0\]\.namespace: invalid name "Demo"/);
    refused(one('').replace('serviceAccount: web', 'serviceAccount: a/sa/b'), /workloads\[0\]\.serviceAccount: invalid name/);
    refused(
      base('  - { name: web, namespace: demo, serviceAccount: web, grants: [] }\n  - { name: web, namespace: demo, serviceAccount: other, grants: [] }\n'),
      /workloads\[1\]\.name: duplicate workload name "web"/,
    );
    refused(
      base('  - { name: web, namespace: demo, serviceAccount: web, grants: [] }\n  - { name: web2, namespace: demo, serviceAccount: web, grants: [] }\n'),
      /workloads\[1\]\.serviceAccount: another workload already has SPIFFE ID spiffe:\/\/twokey\.local\/ns\/demo\/sa\/web/,
    );
  });

  it('refuses bad durations, scopes, SANs, trust domains, audiences and issuers', () => {
    refused(one('    ttl: 24 hours\n'), /workloads\[0\]\.ttl: invalid duration "24 hours"/);
    refused(base('  []\n', 'defaultTtl: 0s\n'), /defaultTtl: duration "0s" must be/);
    refused(one('    serviceScopes: ["images read"]\n'), /workloads\[0\]\.serviceScopes\[0\]: invalid scope "images read"/);
    refused(one('    dns: ["*.demo"]\n'), /workloads\[0\]\.dns\[0\]: invalid DNS name "\*\.demo"/);
    refused(one('    ip: ["localhost"]\n'), /workloads\[0\]\.ip\[0\]: invalid IP address "localhost"/);
    refused('trustDomain: Twokey.Local\nworkloads: []\n', /trustDomain: invalid SPIFFE ID/);
    refused(one('    delegation: { audiences: ["spiffe://other.local/ns/x/sa/y"] }\n'), /delegation\.audiences\[0\]: audience spiffe:\/\/other\.local\/ns\/x\/sa\/y is outside the trust domain/);
    refused(one('    delegation: { audiences: ["spiffe://twokey.local/ns/x/sa/y"] }\n'), /delegation\.audiences\[0\]: audience .* is not a workload in this registry/);
    refused(base('  []\n', 'auth: { issuer: "http://auth.twokey.local" }\n'), /auth\.issuer: must be an https URL/);
    refused(base('  []\n', 'auth: { roles: { admin: ["Console Read"] } }\n'), /auth\.roles\.admin\[0\]: invalid scope "Console Read"/);
    refused(base('  []\n', 'auth: { roles: { "Big Boss": [console:read] } }\n'), /auth\.roles: invalid name "Big Boss"/);
    refused(base('  []\n', 'auth: { roles: [admin] }\n'), /auth\.roles: must be a mapping/);
  });
});
