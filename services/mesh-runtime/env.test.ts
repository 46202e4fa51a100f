// Service configuration from the environment: defaults, and errors that name the variable.
import { expect } from 'chai';
import { besideMeshListener, envDurationMs, envTarget, parseAddress, readCommonConfig } from './env.ts';

describe('service environment', () => {
  it('uses the container defaults of the deployment contract', () => {
    expect(readCommonConfig({})).to.deep.equal({
      listen: '0.0.0.0:8443',
      healthListen: '0.0.0.0:8081',
      svidDir: '/var/run/twokey/svid',
      registryPath: '/etc/twokey/registry.yaml',
      logLevel: 'info',
      logSync: false,
      dryRun: false,
    });
    expect(readCommonConfig({ TWOKEY_LOG_SYNC: '1' }).logSync).to.equal(true);
  });

  it("puts the other listeners on TWOKEY_LISTEN's host unless told otherwise", () => {
    expect(readCommonConfig({ TWOKEY_LISTEN: '127.0.0.1:9443' }).healthListen).to.equal('127.0.0.1:8081');
    expect(readCommonConfig({ TWOKEY_LISTEN: '127.0.0.1:9443', TWOKEY_HEALTH_LISTEN: '0.0.0.0:9444' }).healthListen).to.equal('0.0.0.0:9444');
    expect(besideMeshListener({ TWOKEY_LISTEN: '[::1]:9443' }, 8444)).to.equal('[::1]:8444');
    expect(besideMeshListener({}, 8444)).to.equal('0.0.0.0:8444');
  });

  it('accepts host:port forms, IPv6 in brackets, and refuses the rest naming the variable', () => {
    expect(parseAddress('[::1]:8443', 'X')).to.equal('[::1]:8443');
    expect(parseAddress('auth.twokey.svc:8443', 'X')).to.equal('auth.twokey.svc:8443');
    expect(() => readCommonConfig({ TWOKEY_LISTEN: '8443' })).to.throw(/TWOKEY_LISTEN: "8443" is not host:port/);
    expect(() => readCommonConfig({ TWOKEY_HEALTH_LISTEN: 'h:70000' })).to.throw(/TWOKEY_HEALTH_LISTEN/);
    expect(() => readCommonConfig({ TWOKEY_DRY_RUN: 'yes' })).to.throw(/TWOKEY_DRY_RUN must be 0 or 1/);
  });

  it('takes a peer as host:port, dns:///host:port or a fixed list of replicas, and refuses the rest naming the variable', () => {
    expect(envTarget({}, 'TWOKEY_AUTH_ADDR', 'auth:8443')).to.equal('auth:8443');
    expect(envTarget({ A: 'dns:///auth.twokey.svc:8443' }, 'A', 'x:1')).to.equal('dns:///auth.twokey.svc:8443');
    expect(envTarget({ A: 'ipv4:127.0.0.1:8443,127.0.0.1:8444' }, 'A', 'x:1')).to.equal('ipv4:127.0.0.1:8443,127.0.0.1:8444');
    expect(envTarget({ A: 'ipv6:[::1]:8443,[::1]:8444' }, 'A', 'x:1')).to.equal('ipv6:[::1]:8443,[::1]:8444');
    expect(() => envTarget({ A: 'ipv4:127.0.0.1:8443,127.0.0.1' }, 'A', 'x:1')).to.throw(/A: "127.0.0.1" is not host:port/);
    expect(() => envTarget({ A: 'ipv4:[::1]:8443' }, 'A', 'x:1')).to.throw(/A: "\[::1\]:8443" is not an ipv4 address/);
    expect(() => envTarget({ A: 'unix:/tmp/s' }, 'A', 'x:1')).to.throw(/A: "unix:\/tmp\/s" is not host:port/);
  });

  it('reads durations in milliseconds', () => {
    expect(envDurationMs({ T: '90s' }, 'T', '1h')).to.equal(90_000);
    expect(envDurationMs({}, 'T', '1h')).to.equal(3_600_000);
    expect(() => envDurationMs({ T: 'soon' }, 'T', '1h')).to.throw(/T: invalid duration/);
  });
});
