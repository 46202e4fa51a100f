// Mesh client connections over real mTLS are renewed: a rotated certificate is presented on new connections while open streams finish on the old, and a certificate refused for good is not reconnected with.
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { RenewableChannel } from '../../services/authz/renewable-channel.ts';
import { RevocationHolder, buildRevocationSet, normalizeSerial } from '../../services/authz/revocation-set.ts';
import type { RevocationEntries } from '../../services/authz/types.ts';
import { CALLER_ID, P, meshBed, probeWithCaller, type ProbeClient } from './mesh-fixtures.ts';

const { status } = grpc;
const EMPTY: RevocationEntries = { disabledSubjects: new Map(), jtis: new Map(), serials: new Map(), kids: new Set() };

interface Outcome {
  code: grpc.status;
  details: string;
  serial: string;
}

function unary(client: ProbeClient, token: string): Promise<Outcome> {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return new Promise((resolve) =>
    client.Unary!({ text: 'x' }, md, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, res?: { peer_serial: string }) =>
      resolve(err ? { code: err.code, details: err.details, serial: '' } : { code: status.OK, details: '', serial: res!.peer_serial })));
}

describe('mesh client connections are renewed', function () {
  this.timeout(20_000);
  const GRANTS = [`${P}/Unary`, `${P}/Bidi`];
  const bed = meshBed();

  async function setUp(revocation?: RevocationHolder) {
    const mesh = await probeWithCaller(bed, revocation);
    const channel = grpc.getClientChannel(mesh.client);
    expect(channel).to.be.instanceOf(RenewableChannel);
    return { ...mesh, channel: channel as RenewableChannel };
  }

  it('a rotated certificate is presented on a new connection at the next call; an open stream finishes on the old one, which then closes', async () => {
    const { callerDir, caller, client, channel } = await setUp();
    const token = await bed.issuer.sign({ scope: 'probe:call' });
    const first = await unary(client, token);
    expect(first.code).to.equal(status.OK);
    expect(first.serial.toLowerCase()).to.equal(caller.svid.serialHex.toLowerCase());
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    const stream = client.Bidi!(md, { deadline: Date.now() + 15_000 });
    const echoes: string[] = [];
    const echoed = (n: number) => new Promise<void>((resolve) => {
      const check = () => (echoes.length >= n ? resolve() : setTimeout(check, 5));
      check();
    });
    stream.on('data', (d: { text: string }) => echoes.push(d.text));
    const ended = new Promise<grpc.status>((resolve) => {
      stream.on('error', (err: grpc.ServiceError) => resolve(err.code));
      stream.on('status', (s: grpc.StatusObject) => resolve(s.code));
    });
    stream.write({ text: 'a' });
    await echoed(1);

    bed.pki.ca.writeWorkload(callerDir, bed.pki.issue(CALLER_ID, GRANTS));
    expect(await caller.poll()).to.equal(true);
    const after = await unary(client, token);
    expect(after.code).to.equal(status.OK);
    expect(after.serial.toLowerCase(), 'the next call presents the new certificate').to.equal(caller.svid.serialHex.toLowerCase());
    expect(after.serial).to.not.equal(first.serial);
    // The stream opened before the rotation still runs on its connection; both channels are open.
    stream.write({ text: 'b' });
    await echoed(2);
    expect(echoes).to.deep.equal(['echo a', 'echo b']);
    expect(channel.openChannels).to.equal(2);
    stream.end();
    expect(await ended).to.equal(status.OK);
    expect(channel.openChannels, 'the old channel closes with its last call').to.equal(1);
  });

  it('after a refusal for a revoked certificate the client holds no connection until its next call', async () => {
    const holder = new RevocationHolder({ keys: bed.keys });
    holder.acceptVerified(buildRevocationSet(1, Date.now(), EMPTY));
    const { probe, caller, client, channel } = await setUp(holder);
    const token = await bed.issuer.sign({ scope: 'probe:call' });
    expect((await unary(client, token)).code).to.equal(status.OK);
    expect(channel.openChannels).to.equal(1);
    const serials = new Map([[normalizeSerial(caller.svid.serialHex), Math.floor(Date.now() / 1000) + 3600]]);
    holder.acceptVerified(buildRevocationSet(2, Date.now(), { ...EMPTY, serials }));
    const refused = await unary(client, token);
    expect(refused.code).to.equal(status.UNAUTHENTICATED);
    expect(refused.details).to.match(/^twokey: peer check failed: peer certificate [0-9A-Fa-f]+ is revoked \(decision [0-9a-f-]{36}\)$/);
    // round_robin would reconnect at once with the refused certificate; the channel was closed instead.
    expect(channel.openChannels, 'no channel (and so no connection) left open with the refused certificate').to.equal(0);
    // Without a new certificate the next call is refused again, on a connection of its own.
    const again = await unary(client, token);
    expect(again.code).to.equal(status.UNAUTHENTICATED);
    expect(again.details).to.match(/^twokey: peer check failed: peer certificate [0-9A-Fa-f]+ is revoked \(decision [0-9a-f-]{36}\)$/);
    expect(channel.openChannels).to.equal(0);
    expect(probe.ran['Unary']).to.equal(1);
  });
});
