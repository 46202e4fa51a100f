// Certificate rotation without restart: new files validated, then used by new connections of servers and clients.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { createMeshClient, spiffeServerCheck } from '../../services/authz/client.ts';
import { StaticKeys } from '../../services/authz/jwks.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { TwokeyError } from '../../services/authz/errors.ts';
import { TestIssuer } from './token-fixtures.ts';
import { CALLER_ID, P, SERVER_ID, TD, TestPki, probeClientCtor, startProbe, type ProbeClient, type ProbeServer } from './mesh-fixtures.ts';

describe('certificate rotation', function () {
  this.timeout(20000);
  let pki: TestPki;
  let issuer: TestIssuer;
  let probe: ProbeServer;
  let serverDir: string;
  let callerDir: string;
  let caller: SvidSource;
  const rejected: TwokeyError[] = [];
  const clients: grpc.Client[] = [];

  before(async () => {
    pki = TestPki.create();
    issuer = await TestIssuer.create('k1');
    serverDir = pki.workload('probe', SERVER_ID, [`${P}/Unary`]);
    callerDir = pki.workload('caller', CALLER_ID, [`${P}/Unary`]);
    probe = await startProbe({ svidDir: serverDir, keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)) });
    caller = await SvidSource.open(callerDir, { trustDomain: TD, pollIntervalMs: 0, onRejected: (e) => rejected.push(e) });
  });
  after(async () => {
    for (const c of clients) c.close();
    caller.close();
    await probe.close();
    pki.cleanup();
  });

  /** A fresh connection that records the serial of the certificate the server presents. */
  async function call(): Promise<{ serverSerial: string; res: any }> {
    let serverSerial = '';
    const check = spiffeServerCheck(SpiffeId.parse(SERVER_ID));
    const creds = grpc.experimental.createCertificateProviderChannelCredentials(caller, caller, {
      checkServerIdentity: (host, cert) => {
        serverSerial = cert.serialNumber.toLowerCase().replace(/^0+/, '');
        return check(host, cert);
      },
    });
    const Probe = probeClientCtor();
    const c = new Probe(`127.0.0.1:${probe.port}`, creds, { 'grpc.use_local_subchannel_pool': 1, 'grpc.ssl_target_name_override': TD }) as ProbeClient;
    clients.push(c);
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${await issuer.sign({ scope: 'probe:call' })}`);
    const res = await new Promise<any>((resolve, reject) =>
      c.Unary!({ text: 'r' }, md, { deadline: Date.now() + 5000 }, (err: Error | null, r: any) => (err ? reject(err) : resolve(r))));
    return { serverSerial, res };
  }

  it('a server picks up new files and new connections see the new certificate', async () => {
    const first = await call();
    expect(first.serverSerial).to.equal(probe.svid.svid.serialHex.replace(/^0+/, ''));
    const old = probe.svid.svid.serialHex;
    pki.ca.writeWorkload(serverDir, pki.issue(SERVER_ID, [`${P}/Unary`]));
    expect(await probe.svid.poll()).to.equal(true);
    expect(probe.svid.svid.serialHex).not.to.equal(old);
    const second = await call();
    expect(second.serverSerial).to.equal(probe.svid.svid.serialHex.replace(/^0+/, ''));
  });

  it('a client picks up new files and the server sees the new peer certificate', async () => {
    const before = (await call()).res.peer_serial;
    pki.ca.writeWorkload(callerDir, pki.issue(CALLER_ID, [`${P}/Unary`]));
    expect(await caller.poll()).to.equal(true);
    const after = (await call()).res.peer_serial;
    expect(after).to.equal(caller.svid.serialHex);
    expect(after).not.to.equal(before);
  });

  it('refuses a certificate whose key does not match, and keeps the current one', async () => {
    const serial = caller.svid.serialHex;
    const other = pki.issue(CALLER_ID, [`${P}/Unary`]);
    writeFileSync(join(callerDir, 'svid.pem'), other.chainPem);
    expect(await caller.poll()).to.equal(false);
    expect(rejected.at(-1)?.message).to.contain('svid.key does not match the certificate in svid.pem');
    expect(caller.svid.serialHex).to.equal(serial);
    expect((await call()).res.peer_serial).to.equal(serial);
    // Completing the write (the key arrives) publishes it.
    writeFileSync(join(callerDir, 'svid.key'), other.keyPem);
    expect(await caller.poll()).to.equal(true);
    expect((await call()).res.peer_serial).to.equal(other.svid.serialHex);
  });

  it('refuses an expired certificate, another SPIFFE ID, another CA and a non-SVID', async () => {
    const serial = caller.svid.serialHex;
    const attempts: Array<[string, () => void, RegExp]> = [
      ['expired', () => copyDir(pki.forged('rot-expired', { uris: [CALLER_ID], notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 60_000) }), callerDir), /expired/],
      ['other id', () => pki.ca.writeWorkload(callerDir, pki.issue(`spiffe://${TD}/ns/test/sa/intruder`, [`${P}/Unary`])), /names spiffe:\/\/twokey.local\/ns\/test\/sa\/intruder/],
      ['two URIs', () => copyDir(pki.forged('rot-two', { uris: [CALLER_ID, `spiffe://${TD}/x`] }), callerDir), /URI/],
    ];
    for (const [name, write, message] of attempts) {
      write();
      expect(await caller.poll(), name).to.equal(false);
      expect(rejected.at(-1)?.message, name).to.match(message);
      expect(caller.svid.serialHex, name).to.equal(serial);
    }
    const other = TestPki.create(TD, `${pki.root}-other`);
    try {
      const dir = other.workload('x', CALLER_ID, [`${P}/Unary`]);
      writeFileSync(join(callerDir, 'svid.pem'), readFileSync(join(dir, 'svid.pem')));
      writeFileSync(join(callerDir, 'svid.key'), readFileSync(join(dir, 'svid.key')));
      expect(await caller.poll()).to.equal(false);
      expect(rejected.at(-1)?.message).to.contain('does not chain to a CA in bundle.pem');
    } finally {
      other.cleanup();
    }
    // Restore a valid certificate for the rest of the run.
    pki.ca.writeWorkload(callerDir, pki.issue(CALLER_ID, [`${P}/Unary`]));
    expect(await caller.poll()).to.equal(true);
  });

  it('polls on its own when given an interval', async () => {
    const dir = pki.workload('polled', CALLER_ID, [`${P}/Unary`]);
    const rotated: string[] = [];
    const source = await SvidSource.open(dir, { trustDomain: TD, pollIntervalMs: 25, onRotated: (m) => rotated.push(m.svid.serialHex) });
    try {
      pki.ca.writeWorkload(dir, pki.issue(CALLER_ID, [`${P}/Unary`]));
      for (let i = 0; i < 40 && rotated.length === 0; i++) await new Promise((r) => setTimeout(r, 25));
      expect(rotated).to.have.length(1);
      expect(source.svid.serialHex).to.equal(rotated[0]);
    } finally {
      source.close();
    }
  });

  it('refuses to open a directory whose files are not usable', async () => {
    const dir = pki.forged('open-ca', { uris: [CALLER_ID], ca: true });
    const err = await SvidSource.open(dir, { trustDomain: TD, pollIntervalMs: 0 }).catch((e: TwokeyError) => e);
    expect((err as TwokeyError).code).to.equal('ERR_CONFIG_INVALID');
    expect((err as TwokeyError).message).to.match(/^workload certificate files rejected: svid.pem: .*CA/);
  });
});

describe('trust bundle rotation and open connections', function () {
  this.timeout(20000);

  it('a connection whose CA left the bundle is refused at its next call', async () => {
    const pki = TestPki.create();
    const next = TestPki.create(TD, `${pki.root}-next`);
    const issuer = await TestIssuer.create('k1');
    const serverDir = pki.workload('probe', SERVER_ID, [`${P}/Unary`]);
    const probe = await startProbe({ svidDir: serverDir, keys: await StaticKeys.fromJwks(TestIssuer.jwks(issuer)) });
    const caller = await SvidSource.open(pki.workload('caller', CALLER_ID, [`${P}/Unary`]), { trustDomain: TD, pollIntervalMs: 0 });
    const client = createMeshClient(probeClientCtor(), `127.0.0.1:${probe.port}`, { svid: caller, serverId: SERVER_ID }) as ProbeClient;
    const call = async () => {
      const md = new grpc.Metadata();
      md.set('authorization', `Bearer ${await issuer.sign({ scope: 'probe:call' })}`);
      return new Promise<{ code: grpc.status; details: string }>((resolve) =>
        client.Unary!({ text: 'x' }, md, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null) =>
          resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '' })));
    };
    try {
      expect((await call()).code).to.equal(grpc.status.OK);
      // A rotation under the same CA re-checks the open connection, which still chains.
      pki.ca.writeWorkload(serverDir, pki.issue(SERVER_ID, [`${P}/Unary`]));
      expect(await probe.svid.poll()).to.equal(true);
      await new Promise((r) => setImmediate(r));
      expect((await call()).code).to.equal(grpc.status.OK);
      // The server moves to the next CA and stops trusting the old one.
      next.ca.writeWorkload(serverDir, next.issue(SERVER_ID, [`${P}/Unary`]));
      expect(await probe.svid.poll()).to.equal(true);
      await new Promise((r) => setImmediate(r)); // bundle updates are delivered asynchronously
      const out = await call();
      expect(out.code).to.equal(grpc.status.UNAUTHENTICATED);
      expect(out.details).to.match(/^twokey: peer check failed: peer certificate no longer chains to the trust bundle/);
      expect(probe.ran['Unary']).to.equal(2);
    } finally {
      client.close();
      caller.close();
      await probe.close();
      pki.cleanup();
      next.cleanup();
    }
  });
});

function copyDir(from: string, to: string): void {
  for (const f of ['svid.pem', 'svid.key', 'bundle.pem']) writeFileSync(join(to, f), readFileSync(join(from, f)));
}
