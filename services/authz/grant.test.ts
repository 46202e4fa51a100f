// MethodGrant and GrantSet: exact paths or whole services, nothing else ever matches.
import { expect } from 'chai';
import { TwokeyError } from './errors.ts';
import { GrantSet, MethodGrant } from './grant.ts';

function rejects(input: unknown, why: RegExp): void {
  let caught: unknown;
  try {
    MethodGrant.parse(input);
  } catch (err) {
    caught = err;
  }
  expect(caught, `${String(input)} should be rejected`).to.be.instanceOf(TwokeyError);
  expect((caught as TwokeyError).code).to.equal('ERR_GRANT_INVALID');
  expect((caught as TwokeyError).message).to.match(why);
}

describe('MethodGrant.parse', () => {
  it('accepts exact methods and whole-service wildcards', () => {
    const g = MethodGrant.parse('/twokey.images.v1.ImageStore/GetImage');
    expect([g.service, g.method, g.isWildcard]).to.deep.equal(['twokey.images.v1.ImageStore', 'GetImage', false]);
    const w = MethodGrant.parse('/twokey.auth.v1.Auth/*');
    expect([w.service, w.method, w.isWildcard]).to.deep.equal(['twokey.auth.v1.Auth', '*', true]);
  });

  it('rejects every other shape, naming the grant', () => {
    rejects('twokey.images.v1.ImageStore/GetImage', /"twokey\.images\.v1\.ImageStore\/GetImage": must be an exact gRPC path/);
    rejects('/twokey.images.v1.ImageStore/Get*', /must be an exact gRPC path/);
    rejects('/twokey.images.v1.*/GetImage', /must be an exact gRPC path/);
    rejects('/*', /must be an exact gRPC path/);
    rejects('/twokey.images.v1.ImageStore/', /must be an exact gRPC path/);
    rejects('/twokey.images.v1.ImageStore/GetImage/', /must be an exact gRPC path/);
    rejects('/twokey.images.v1.ImageStore/GetImage\n', /must be an exact gRPC path/);
    rejects('/twokey..v1.ImageStore/GetImage', /must be an exact gRPC path/);
    rejects(' /twokey.images.v1.ImageStore/GetImage', /must be an exact gRPC path/);
    rejects('/ImageStore/GetImage', /service must be package-qualified/);
    rejects(7, /not a string/);
    rejects(`/a.${'b'.repeat(600)}/C`, /longer than 512/);
  });
});

describe('GrantSet', () => {
  const set = GrantSet.parse(['/twokey.images.v1.ImageStore/GetImage', '/twokey.auth.v1.Auth/*']);

  it('allows exact methods and every method of a wildcard service', () => {
    expect(set.allows('/twokey.images.v1.ImageStore/GetImage')).to.equal(true);
    expect(set.allows('/twokey.auth.v1.Auth/Login')).to.equal(true);
    expect(set.allows('/twokey.auth.v1.Auth/AnythingElse')).to.equal(true);
  });

  it('denies other methods, case variants, prefixes and wildcard look-alikes', () => {
    expect(set.allows('/twokey.images.v1.ImageStore/DeleteImage')).to.equal(false);
    expect(set.allows('/twokey.images.v1.ImageStore/getimage')).to.equal(false);
    expect(set.allows('/twokey.images.v1.ImageStore/GetImageX')).to.equal(false);
    expect(set.allows('/twokey.images.v1.ImageStore/GetImag')).to.equal(false);
    expect(set.allows('/twokey.images.v1.ImageStore/*')).to.equal(false);
    expect(set.allows('/twokey.auth.v1.Auth/*')).to.equal(false);
    expect(set.allows('/twokey.auth.v1.AuthX/Login')).to.equal(false);
    expect(set.allows('/twokey.auth.v1/Auth/Login')).to.equal(false);
    expect(set.allows('/twokey.auth.v1.Auth/Login/')).to.equal(false);
    expect(set.allows('')).to.equal(false);
  });

  it('grants nothing when empty', () => {
    expect(GrantSet.empty().allows('/twokey.auth.v1.Auth/Login')).to.equal(false);
    expect(GrantSet.parse([]).size).to.equal(0);
  });

  it('rejects duplicates and reports its grants in order', () => {
    expect(() => GrantSet.parse(['/a.B/C', '/a.B/C'])).to.throw(TwokeyError, /duplicate grant "\/a\.B\/C"/);
    expect(set.toStrings()).to.deep.equal(['/twokey.images.v1.ImageStore/GetImage', '/twokey.auth.v1.Auth/*']);
    expect(set.size).to.equal(2);
  });
});
