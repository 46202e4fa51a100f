// The registry's federation section: partner trust domains, their bundle sources and ceilings, refused strictly with the place of each mistake.
import { expect } from 'chai';
import { TwokeyError } from '../services/authz/errors.ts';
import { SpiffeId } from '../services/authz/spiffe-id.ts';
import { parseRegistry } from './registry.ts';

const WORKLOADS = `workloads:
  - name: image-store
    namespace: twokey
    serviceAccount: image-store
    grants: []
`;
const IMAGE_STORE = 'spiffe://twokey.local/ns/twokey/sa/image-store';

const partner = (bundle: string, ceilings: string, td = 'partner.example'): string => `trustDomain: twokey.local
${WORKLOADS}federation:
  - trustDomain: ${td}
    bundle: ${bundle}
    ceilings:
${ceilings}`;
const CEILING = `      - workloads: spiffe://partner.example/ns/reports/sa/*
        methods: [/twokey.images.v1.ImageStore/ListImages, /twokey.images.v1.ImageStore/*]
        serviceScopes: [images:read:any]
        delegation: { scopes: [images:read], audiences: [${IMAGE_STORE}] }
`;
const SPIFFE_BUNDLE = '{ endpoint: "https://bundles.partner.example/b", profile: https_spiffe, endpointSpiffeId: "spiffe://partner.example/ns/infra/sa/bundle", file: partner.json }';

function refused(yaml: string, why: RegExp): void {
  let caught: unknown;
  try {
    parseRegistry(yaml, 'test.yaml', '/etc/twokey');
  } catch (err) {
    caught = err;
  }
  expect(caught, 'registry should be refused').to.be.instanceOf(TwokeyError);
  expect((caught as TwokeyError).code).to.equal('ERR_REGISTRY_INVALID');
  expect((caught as TwokeyError).message).to.match(why);
}

describe('registry: federation', () => {
  it('reads a partner with an https_spiffe endpoint, its initial bundle file (relative to the registry) and a ceiling', () => {
    const r = parseRegistry(partner(SPIFFE_BUNDLE, CEILING), 'test.yaml', '/etc/twokey');
    const p = r.federation!.partner('partner.example')!;
    expect(p.bundle).to.deep.include({ kind: 'https_spiffe', url: 'https://bundles.partner.example/b', initialFile: '/etc/twokey/partner.json' });
    const ceiling = r.federation!.ceilingFor(SpiffeId.parse('spiffe://partner.example/ns/reports/sa/exporter'))!;
    expect(ceiling.workloads.toString()).to.equal('spiffe://partner.example/ns/reports/sa/*');
    expect(ceiling.methods.toStrings()).to.deep.equal(['/twokey.images.v1.ImageStore/ListImages', '/twokey.images.v1.ImageStore/*']);
    expect([...ceiling.scopes]).to.deep.equal(['images:read:any', 'images:read']);
    expect(ceiling.delegation).to.deep.equal({ scopes: ['images:read'], audiences: [IMAGE_STORE], withoutSubjectToken: false });
    // The pattern's '*' is one whole segment: no more, no fewer.
    expect(r.federation!.ceilingFor(SpiffeId.parse('spiffe://partner.example/ns/reports/sa/a/b'))).to.equal(undefined);
    expect(r.federation!.ceilingFor(SpiffeId.parse('spiffe://partner.example/ns/other/sa/a'))).to.equal(undefined);
    expect(r.federation!.ceilingFor(SpiffeId.parse('spiffe://twokey.local/ns/reports/sa/a'))).to.equal(undefined);
  });

  it('reads a static bundle file and an https_web endpoint', () => {
    expect(parseRegistry(partner('{ file: /abs/p.json }', CEILING)).federation!.partners[0]!.bundle).to.deep.equal({ kind: 'file', path: '/abs/p.json' });
    const web = parseRegistry(partner('{ endpoint: "https://p.example/bundle", profile: https_web }', CEILING)).federation!.partners[0]!.bundle;
    expect(web).to.deep.include({ kind: 'https_web', url: 'https://p.example/bundle' });
  });

  it('refuses bad bundle sources, naming the mistake', () => {
    refused(partner('{}', CEILING), /federation\[0\]\.bundle: needs "file" \(a static SPIFFE bundle\) or "endpoint"/);
    refused(partner('{ endpoint: "http://p.example/b", profile: https_web }', CEILING), /bundle\.endpoint: must be an https URL/);
    refused(partner('{ endpoint: "https://u:p@p.example/b", profile: https_web }', CEILING), /without credentials/);
    refused(partner('{ endpoint: "https://p.example/b", profile: https }', CEILING), /bundle\.profile: must be one of https_web, https_spiffe/);
    refused(partner('{ endpoint: "https://p.example/b", profile: https_spiffe, file: p.json }', CEILING), /needs "endpointSpiffeId"/);
    refused(partner('{ endpoint: "https://p.example/b", profile: https_spiffe, endpointSpiffeId: "spiffe://partner.example/x" }', CEILING), /needs "file": the initial bundle/);
    refused(partner('{ endpoint: "https://p.example/b", profile: https_spiffe, endpointSpiffeId: "spiffe://twokey.local/x", file: p.json }', CEILING), /endpointSpiffeId: must be in the partner's trust domain/);
    refused(partner('{ endpoint: "https://p.example/b", profile: https_web, endpointSpiffeId: "spiffe://partner.example/x" }', CEILING), /endpointSpiffeId: only with profile https_spiffe/);
    refused(partner('{ file: p.json, profile: https_web }', CEILING), /bundle\.profile: only with "endpoint"/);
    refused(partner('{ file: p.json, url: x }', CEILING), /bundle\.url: unknown key/);
  });

  it('refuses partners that are us, listed twice, or without ceilings, and ceilings that are outside, overlap or name bad methods, scopes or audiences', () => {
    refused(partner('{ file: p.json }', CEILING, 'twokey.local'), /a partner cannot have our own trust domain twokey\.local/);
    refused(partner('{ file: p.json }', CEILING, 'Partner.Example'), /federation\[0\]\.trustDomain/);
    refused(partner('{ file: p.json }', '        []\n').replace('ceilings:\n        []', 'ceilings: []'), /needs at least one ceiling/);
    refused(partner('{ file: p.json }', CEILING.replace('spiffe://partner.example/ns/reports/sa/*', 'spiffe://other.example/ns/reports/sa/*')), /is outside the partner trust domain partner\.example/);
    refused(partner('{ file: p.json }', CEILING.replace('sa/*', 'sa/ex*')), /"\*" must be a whole path segment/);
    refused(partner('{ file: p.json }', CEILING.replace('spiffe://partner.example/ns/reports/sa/*', 'spiffe://partner.example')), /needs a path/);
    refused(partner('{ file: p.json }', CEILING + CEILING.replace('ns/reports/sa/*', 'ns/*/sa/exporter')), /ceilings spiffe:\/\/partner\.example\/ns\/reports\/sa\/\* and spiffe:\/\/partner\.example\/ns\/\*\/sa\/exporter overlap/);
    refused(partner('{ file: p.json }', CEILING.replace('/twokey.images.v1.ImageStore/ListImages', '/twokey.images.v1.ImageStore/List*')), /ceilings\[0\]\.methods\[0\]: invalid grant/);
    refused(partner('{ file: p.json }', CEILING.replace('images:read:any', 'Images')), /serviceScopes\[0\]: invalid scope/);
    refused(partner('{ file: p.json }', CEILING.replace(IMAGE_STORE, 'spiffe://twokey.local/ns/twokey/sa/nobody')), /audience .* is not a workload of this registry/);
    refused(partner('{ file: p.json }', CEILING.replace(IMAGE_STORE, 'spiffe://partner.example/ns/x/sa/y')), /not a workload of this registry/);
    refused(partner('{ file: p.json }', CEILING.replace(`audiences: [${IMAGE_STORE}]`, 'audiences: []')), /delegation scopes need at least one audience/);
    const twice = partner('{ file: p.json }', CEILING) + `  - trustDomain: partner.example\n    bundle: { file: q.json }\n    ceilings:\n${CEILING}`;
    refused(twice, /partner trust domain partner\.example is listed twice/);
  });
});
