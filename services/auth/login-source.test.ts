// Which source auth charges a login to: only the gateway may name an address, and only a parsed IP address counts.
import { Metadata } from '@grpc/grpc-js';
import { expect } from 'chai';
import { loginSource } from './main.ts';

const GATEWAY = 'spiffe://example.org/gateway';
const withHeader = (value?: string): Metadata => {
  const m = new Metadata();
  if (value !== undefined) m.set('x-forwarded-for', value);
  return m;
};

describe('auth login source', () => {
  it('takes the address the gateway reports when it is an IPv4 or IPv6 address', () => {
    expect(loginSource(GATEWAY, GATEWAY, withHeader('203.0.113.9'))).to.equal(`${GATEWAY}|203.0.113.9`);
    expect(loginSource(GATEWAY, GATEWAY, withHeader('2001:db8:1:2::'))).to.equal(`${GATEWAY}|2001:db8:1:2::`);
  });

  it('charges anything that does not parse as an address to one shared source', () => {
    for (const junk of ['', ':::::', '....', '1.2.3', 'fe80::1:::', '203.0.113.9.1']) {
      expect(loginSource(GATEWAY, GATEWAY, withHeader(junk)), junk).to.equal(`${GATEWAY}|unknown`);
    }
    expect(loginSource(GATEWAY, GATEWAY, withHeader())).to.equal(`${GATEWAY}|unknown`);
  });

  it('ignores the header from any workload but the gateway', () => {
    const other = 'spiffe://example.org/image-store';
    expect(loginSource(other, GATEWAY, withHeader('203.0.113.9'))).to.equal(`${other}|direct`);
    expect(loginSource(other, undefined, withHeader('203.0.113.9'))).to.equal(`${other}|direct`);
  });
});
