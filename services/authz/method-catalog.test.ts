// MethodCatalog: every method under proto/ with the rule it declares, plus other teams' roots.
import { expect } from 'chai';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TwokeyError } from './errors.ts';
import { MethodGrant } from './grant.ts';
import { MethodCatalog } from './method-catalog.ts';

describe('MethodCatalog', () => {
  const catalog = MethodCatalog.default();
  let extraRoot: string;

  before(() => {
    extraRoot = mkdtempSync(join(tmpdir(), 'twokey-protos-'));
    mkdirSync(join(extraRoot, 'acme', 'billing', 'v1'), { recursive: true });
    writeFileSync(
      join(extraRoot, 'acme', 'billing', 'v1', 'billing.proto'),
      `syntax = "proto3";
package acme.billing.v1;
import "twokey/authz/v1/authz.proto";
service Billing {
  rpc Charge(ChargeRequest) returns (ChargeResponse) { option (twokey.authz.v1.rule) = { permission: "billing:charge" }; }
  rpc Undeclared(ChargeRequest) returns (ChargeResponse);
}
message ChargeRequest { string id = 1; }
message ChargeResponse {}
`,
    );
  });

  after(() => rmSync(extraRoot, { recursive: true, force: true }));

  it('lists every method of the example system with its declared rule', () => {
    expect(catalog.methods().map((m) => m.path).sort()).to.deep.equal(
      [
        '/twokey.auth.v1.Auth/DisableUser',
        '/twokey.auth.v1.Auth/ExchangeToken',
        '/twokey.auth.v1.Auth/GetJwks',
        '/twokey.auth.v1.Auth/GetRevocations',
        '/twokey.auth.v1.Auth/GetServiceToken',
        '/twokey.auth.v1.Auth/ListRevocations',
        '/twokey.auth.v1.Auth/Login',
        '/twokey.auth.v1.Auth/RevokeCertificate',
        '/twokey.auth.v1.Auth/RevokeToken',
        '/twokey.auth.v1.Auth/WatchRevocations',
        '/twokey.auth.v1.Auth/WithdrawKey',
        '/twokey.images.v1.ImageStore/CreateImage',
        '/twokey.images.v1.ImageStore/DeleteImage',
        '/twokey.images.v1.ImageStore/GetImage',
        '/twokey.images.v1.ImageStore/ListImages',
        '/twokey.images.v1.ImageStore/SetTags',
        '/twokey.images.v1.ImageStore/UpdateImage',
        '/twokey.images.v1.ImageStore/WatchImages',
        '/twokey.tagging.v1.Tagging/SuggestTags',
      ].sort(),
    );
    expect(catalog.ruleOf('/twokey.images.v1.ImageStore/DeleteImage')).to.deep.equal({ permission: 'images:delete' });
    expect(catalog.ruleOf('/twokey.auth.v1.Auth/Login')).to.deep.equal({ certificateOnly: true });
    expect(catalog.get('/twokey.images.v1.ImageStore/WatchImages')).to.include({ service: 'twokey.images.v1.ImageStore', name: 'WatchImages', responseStream: true, requestStream: false });
    // Every method here declares a rule.
    expect(catalog.methods().filter((m) => m.rule === undefined)).to.deep.equal([]);
    expect(catalog.ruleOf('/twokey.images.v1.ImageStore/Nope')).to.equal(undefined);
  });

  it('covers exact methods and wildcards of existing services only', () => {
    expect(catalog.covers(MethodGrant.parse('/twokey.images.v1.ImageStore/GetImage'))).to.equal(true);
    expect(catalog.covers(MethodGrant.parse('/twokey.images.v1.ImageStore/*'))).to.equal(true);
    expect(catalog.covers(MethodGrant.parse('/twokey.images.v1.ImageStore/getImage'))).to.equal(false);
    expect(catalog.covers(MethodGrant.parse('/twokey.images.v2.ImageStore/*'))).to.equal(false);
    expect(() => catalog.requireGrant(MethodGrant.parse('/twokey.images.v1.ImageStore/Nope'))).to.throw(
      TwokeyError,
      /grant "\/twokey\.images\.v1\.ImageStore\/Nope" names no existing method/,
    );
    expect(() => catalog.requireGrant(MethodGrant.parse('/acme.billing.v1.Billing/*'))).to.throw(TwokeyError, /names no existing service acme\.billing\.v1\.Billing/);
  });

  it('adds other teams\' proto roots, which may import the rule option', () => {
    const wider = MethodCatalog.load({ extraRoots: [extraRoot] });
    expect(wider.ruleOf('/acme.billing.v1.Billing/Charge')).to.deep.equal({ permission: 'billing:charge' });
    expect(wider.get('/acme.billing.v1.Billing/Undeclared')?.rule).to.equal(undefined);
    expect(wider.covers(MethodGrant.parse('/acme.billing.v1.Billing/*'))).to.equal(true);
    expect(wider.covers(MethodGrant.parse('/twokey.auth.v1.Auth/Login'))).to.equal(true);
  });

  it('refuses a rule that sets neither permission nor certificate_only', () => {
    const root = mkdtempSync(join(tmpdir(), 'twokey-protos-'));
    try {
      writeFileSync(
        join(root, 'bad.proto'),
        `syntax = "proto3";
package bad.v1;
import "twokey/authz/v1/authz.proto";
service Bad { rpc Empty(M) returns (M) { option (twokey.authz.v1.rule) = { permission: "" }; } }
message M {}
`,
      );
      expect(() => MethodCatalog.load({ extraRoots: [root] })).to.throw(TwokeyError, /\/bad\.v1\.Bad\/Empty: \(twokey\.authz\.v1\.rule\) must set exactly one/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('fails closed on a missing root or a broken proto', () => {
    expect(() => MethodCatalog.load({ roots: [join(extraRoot, 'missing')] })).to.throw(TwokeyError, /cannot read proto root/);
    const root = mkdtempSync(join(tmpdir(), 'twokey-protos-'));
    try {
      writeFileSync(join(root, 'broken.proto'), 'syntax = "proto3"; service {');
      expect(() => MethodCatalog.load({ extraRoots: [root] })).to.throw(TwokeyError, /cannot load protos/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
