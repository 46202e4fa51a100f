// Dry-run mode: would-be denials are logged and the call proceeds; allowed calls are unchanged.
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { createMeshClient } from '../../services/authz/client.ts';
import { StaticKeys } from '../../services/authz/jwks.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { TestIssuer } from './token-fixtures.ts';
import { CALLER_ID, P, SERVER_ID, TD, TestPki, capturingLogger, probeClientCtor, startProbe, type ProbeClient, type ProbeServer } from './mesh-fixtures.ts';

describe('dry-run mode', function () {
  this.timeout(20000);
  let pki: TestPki;
  let probe: ProbeServer;
  let caller: SvidSource;
  let client: ProbeClient;
  let granted: SvidSource;
  let grantedClient: ProbeClient;
  let issuer: TestIssuer;
  const log = capturingLogger();

  before(async () => {
    pki = TestPki.create();
    issuer = await TestIssuer.create('k1');
    probe = await startProbe({
      svidDir: pki.workload('probe', SERVER_ID, []),
      keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)),
      logger: log.logger,
      dryRun: true,
    });
    caller = await SvidSource.open(pki.workload('caller', CALLER_ID, [`${P}/CertOnly`]), { trustDomain: TD, pollIntervalMs: 0 });
    client = createMeshClient(probeClientCtor(), `127.0.0.1:${probe.port}`, { svid: caller, serverId: SERVER_ID }) as ProbeClient;
    granted = await SvidSource.open(pki.workload('granted', CALLER_ID, [`${P}/Unary`]), { trustDomain: TD, pollIntervalMs: 0 });
    grantedClient = createMeshClient(probeClientCtor(), `127.0.0.1:${probe.port}`, { svid: granted, serverId: SERVER_ID, propagate: false }) as ProbeClient;
  });
  after(async () => {
    client.close();
    caller.close();
    grantedClient.close();
    granted.close();
    await probe.close();
    pki.cleanup();
  });

  it('lets a call the policy denies through and logs that it would have been denied', async () => {
    // Not granted and no token: two reasons to deny; the first (grant) is logged.
    const res = await new Promise<any>((resolve, reject) =>
      client.Unary!({ text: 'x' }, new grpc.Metadata(), (err: Error | null, r: any) => (err ? reject(err) : resolve(r))));
    expect(res.text).to.equal('unary x');
    expect(res.subject).to.equal('');
    expect(probe.ran['Unary']).to.equal(1);
    const line = log.lines.at(-1)!;
    expect(line).to.include({ allow: false, would_deny: true, dry_run: true, failed_check: 'grant', grpc_code: grpc.status.PERMISSION_DENIED, level: 40 });
    expect(line.msg).to.equal('authz would deny (dry run)');
  });

  const unaryWith = (token: string) => {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    return new Promise<any>((resolve, reject) => grantedClient.Unary!({ text: 'y' }, md, (err: Error | null, r: any) => (err ? reject(err) : resolve(r))));
  };

  it("does not hand the handler the verified token of a call it would deny (the scope is missing)", async () => {
    const before = probe.ran['Unary'] ?? 0;
    const res = await unaryWith(await issuer.sign({ sub: 'mallory', scope: 'images:read' }));
    expect(probe.ran['Unary']).to.equal(before + 1);
    expect(log.lines.at(-1)).to.include({ allow: false, would_deny: true, failed_check: 'scope', grpc_code: grpc.status.PERMISSION_DENIED });
    // callContext().token is undefined, so the handler knows no subject.
    expect(res.subject).to.equal('');
  });

  it('control: an allowed call in dry-run hands the handler its token', async () => {
    const res = await unaryWith(await issuer.sign({ sub: 'mallory', scope: 'probe:call' }));
    expect(log.lines.at(-1)).to.include({ allow: true });
    expect(res.subject).to.equal('mallory');
  });
});
