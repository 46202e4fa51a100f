// SpiffeId.parse: every rule of the SPIFFE ID specification, each failure naming its cause.
import { expect } from 'chai';
import { TwokeyError } from './errors.ts';
import { SpiffeId } from './spiffe-id.ts';

function rejects(input: unknown, why: RegExp): void {
  let caught: unknown;
  try {
    SpiffeId.parse(input);
  } catch (err) {
    caught = err;
  }
  expect(caught, `${String(input)} should be rejected`).to.be.instanceOf(TwokeyError);
  expect((caught as TwokeyError).code).to.equal('ERR_SPIFFE_ID_INVALID');
  expect((caught as TwokeyError).message).to.match(why);
}

describe('SpiffeId.parse', () => {
  it('accepts workload and trust-domain IDs and splits them', () => {
    const id = SpiffeId.parse('spiffe://twokey.local/ns/prod/sa/image-store');
    expect(id.trustDomain).to.equal('twokey.local');
    expect(id.path).to.equal('/ns/prod/sa/image-store');
    expect(id.toString()).to.equal('spiffe://twokey.local/ns/prod/sa/image-store');
    expect(JSON.stringify({ id })).to.equal('{"id":"spiffe://twokey.local/ns/prod/sa/image-store"}');
    expect(SpiffeId.parse('spiffe://td_1.example-x').path).to.equal('');
    expect(SpiffeId.parse('spiffe://a/B.c_d-e/...x').path).to.equal('/B.c_d-e/...x');
  });

  it('rejects a wrong or uppercase scheme', () => {
    rejects('https://twokey.local/ns/a', /scheme must be "spiffe:\/\/"/);
    rejects('SPIFFE://twokey.local/ns/a', /scheme/);
    rejects('spiffe:/twokey.local/ns/a', /scheme/);
  });

  it('rejects non-strings and empty input', () => {
    rejects(42, /not a string/);
    rejects(undefined, /not a string/);
    rejects('', /empty/);
  });

  it('rejects bad trust domains: empty, uppercase, port, userinfo, percent-encoding, too long', () => {
    rejects('spiffe:///ns/a', /trust domain is empty/);
    rejects('spiffe://Twokey.local/ns/a', /trust domain may hold only lowercase/);
    rejects('spiffe://twokey.local:8443/ns/a', /no port/);
    rejects('spiffe://user@twokey.local/ns/a', /userinfo/);
    rejects('spiffe://twokey%2elocal/ns/a', /percent-encoding/);
    rejects(`spiffe://${'a'.repeat(256)}/x`, /trust domain longer than 255/);
  });

  it('rejects bad paths: empty segments, trailing slash, dot segments, query, fragment, percent-encoding', () => {
    rejects('spiffe://twokey.local/', /empty segment or a trailing slash/);
    rejects('spiffe://twokey.local/ns//sa', /empty segment/);
    rejects('spiffe://twokey.local/ns/a/', /trailing slash/);
    rejects('spiffe://twokey.local/ns/./a', /dot segment/);
    rejects('spiffe://twokey.local/ns/../a', /dot segment/);
    rejects('spiffe://twokey.local/ns/a?x=1', /character outside/);
    rejects('spiffe://twokey.local/ns/a#frag', /character outside/);
    rejects('spiffe://twokey.local/ns/%61', /character outside/);
    rejects('spiffe://twokey.local/ns/caf\u00e9', /character outside/);
    rejects('spiffe://twokey.local/ns/a b', /character outside/);
  });

  it('rejects IDs longer than 2048 bytes', () => {
    rejects(`spiffe://twokey.local/${'a'.repeat(2040)}`, /longer than 2048/);
  });

  it('builds service-account and trust-domain IDs through the same checks', () => {
    expect(SpiffeId.forServiceAccount('twokey.local', 'twokey', 'gateway').toString()).to.equal('spiffe://twokey.local/ns/twokey/sa/gateway');
    expect(SpiffeId.forTrustDomain('twokey.local').toString()).to.equal('spiffe://twokey.local');
    expect(() => SpiffeId.forServiceAccount('twokey.local', 'a/b', 'c')).to.throw(TwokeyError);
    expect(SpiffeId.isValidTrustDomain('twokey.local')).to.equal(true);
    expect(SpiffeId.isValidTrustDomain('Twokey.local')).to.equal(false);
  });

  it('compares by value and knows its trust domain', () => {
    const a = SpiffeId.parse('spiffe://twokey.local/ns/a/sa/b');
    expect(a.equals(SpiffeId.parse('spiffe://twokey.local/ns/a/sa/b'))).to.equal(true);
    expect(a.equals(SpiffeId.parse('spiffe://twokey.local/ns/a/sa/B'))).to.equal(false);
    expect(a.memberOf('twokey.local')).to.equal(true);
    expect(a.memberOf('twokey.localx')).to.equal(false);
    expect(a.trustDomainId.toString()).to.equal('spiffe://twokey.local');
  });
});
