// The source a login is charged to: one IPv6 /64 is one source, so rotating addresses inside it gains nothing.
import { isIP } from 'node:net';
import { expect } from 'chai';
import { loginSource } from './login-source.ts';

describe('gateway login source', () => {
  it('charges every address of one IPv6 /64 to the same source', () => {
    const a = loginSource('2001:db8:1:2:aaaa:bbbb:cccc:dddd');
    expect(a).to.equal('2001:db8:1:2::');
    expect(loginSource('2001:0db8:0001:0002::1')).to.equal(a);
    expect(loginSource('2001:DB8:1:2:ffff:ffff:ffff:ffff')).to.equal(a);
    expect(loginSource('2001:db8:1:3::1')).to.not.equal(a);
    expect(loginSource('::1')).to.equal('0:0:0:0::');
  });

  it('keys IPv4 by address, an IPv4-mapped address as its IPv4 one', () => {
    expect(loginSource('203.0.113.7')).to.equal('203.0.113.7');
    expect(loginSource('::ffff:203.0.113.7')).to.equal('203.0.113.7');
    expect(loginSource('::FFFF:cb00:7107')).to.equal('203.0.113.7');
  });

  it('passes auth\'s x-forwarded-for check (else every login would share the "unknown" source)', () => {
    for (const address of ['2001:db8:1:2:aaaa:bbbb:cccc:dddd', 'fe80::1', '203.0.113.7']) {
      expect(isIP(loginSource(address)), address).to.not.equal(0);
    }
  });

  it('charges an unreadable address to one shared source', () => {
    for (const bad of ['', 'unknown', '1:2:3:4:5:6:7:8:9', '1::2::3', '::ffff:300.1.1.1', 'g::1']) expect(loginSource(bad)).to.equal('unknown');
  });
});
