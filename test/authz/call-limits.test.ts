// A mesh server's load limits over real mTLS: each sheds at once RESOURCE_EXHAUSTED naming itself, is counted, and refuses a bad value at start.
import { connect as h2connect } from 'node:http2';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { CALL_LIMIT_DEFAULTS, callLimits } from '../../services/authz/call-limits.ts';
import { createMeshClient } from '../../services/authz/client.ts';
import { createMeshServer } from '../../services/authz/server.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { ISSUER } from './token-fixtures.ts';
import { CALLER_ID, P, SERVER_ID, TD, meshBed, capturingLogger, probeClientCtor, startProbe, type ProbeClient } from './mesh-fixtures.ts';

const { status } = grpc;
const OTHER_CALLER_ID = `spiffe://${TD}/ns/test/sa/other`;

interface Outcome {
  code: grpc.status;
  details: string;
}

function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

function unary(client: ProbeClient, token: string): Promise<Outcome> {
  return new Promise((resolve) =>
    client.Unary!({ text: 'x' }, bearer(token), { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null) =>
      resolve(err ? { code: err.code, details: err.details } : { code: status.OK, details: '' })));
}

/** A Bidi stream held open (a call in flight) until `end`; resolves once the server has answered its first message. */
async function holdStream(client: ProbeClient, token: string): Promise<{ end(): void }> {
  const call = client.Bidi!(bearer(token), { deadline: Date.now() + 15_000 });
  call.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    call.once('data', () => resolve());
    call.once('error', reject);
    call.write({ text: 'hold' });
  });
  return { end: () => call.end() };
}

function shedCount(text: string, limit: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`twokey_calls_shed_total{limit="${limit}"}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

describe('mesh server load limits over real mTLS', function () {
  this.timeout(20_000);
  const GRANTS = [`${P}/Unary`, `${P}/Bidi`];
  const bed = meshBed();

  async function setUp(limits: Parameters<typeof callLimits>[0]) {
    const registry = new Registry();
    const log = capturingLogger();
    const probe = await startProbe({
      svidDir: bed.pki.workload('probe', SERVER_ID, [`${P}/Unary`]),
      keys: bed.keys,
      limits: limits ?? {},
      logger: log.logger,
      metrics: { registry, knownCallers: [CALLER_ID] },
    });
    bed.cleanups.push(() => probe.close());
    const clientAs = async (name: string, id: string): Promise<ProbeClient> => {
      const svid = await SvidSource.open(bed.pki.workload(name, id, GRANTS), { trustDomain: TD, pollIntervalMs: 0 });
      bed.cleanups.push(() => svid.close());
      const client = createMeshClient(probeClientCtor(), `127.0.0.1:${probe.port}`, { svid, serverId: SERVER_ID }) as ProbeClient;
      bed.cleanups.push(() => client.close());
      return client;
    };
    return { probe, registry, log, clientAs };
  }

  it('calls in flight per peer identity: the next call of that peer -> RESOURCE_EXHAUSTED (in_flight_per_peer), another peer served, counted', async () => {
    const { registry, log, clientAs } = await setUp({ maxInFlightPerPeer: 2 });
    const caller = await clientAs('caller', CALLER_ID);
    const other = await clientAs('other', OTHER_CALLER_ID);
    const alice = await bed.issuer.sign({ sub: 'alice', scope: 'probe:call' });
    const held = [await holdStream(caller, alice), await holdStream(caller, await bed.issuer.sign({ sub: 'bob', scope: 'probe:call' }))];
    const shed = await unary(caller, alice);
    expect(shed.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(shed.details).to.match(/^twokey: overloaded: too many calls in flight for this peer \(limit 2, in_flight_per_peer\); retry later \(decision [0-9a-f-]{36}\)$/);
    expect((await unary(other, alice)).code).to.equal(status.OK);
    expect(shedCount(await registry.metrics(), 'in_flight_per_peer')).to.equal(1);
    expect(log.lines.filter((l) => l.event === 'authz.shed').map((l) => [l.limit, l.peer_spiffe_id])).to.deep.equal([['in_flight_per_peer', CALLER_ID]]);
    // What a call held is given back when it ends.
    for (const h of held) h.end();
    await waitFor(async () => (await unary(caller, alice)).code === status.OK);
  });

  it('calls in flight per user: that user\'s next call -> RESOURCE_EXHAUSTED (in_flight_per_user), another user served, counted', async () => {
    const { registry, clientAs } = await setUp({ maxInFlightPerUser: 1 });
    const caller = await clientAs('caller', CALLER_ID);
    const alice = await bed.issuer.sign({ sub: 'alice', scope: 'probe:call' });
    const held = await holdStream(caller, alice);
    const shed = await unary(caller, await bed.issuer.sign({ sub: 'alice', scope: 'probe:call' }));
    expect(shed.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(shed.details).to.include('too many calls in flight for this user (limit 1, in_flight_per_user)');
    expect((await unary(caller, await bed.issuer.sign({ sub: 'bob', scope: 'probe:call' }))).code).to.equal(status.OK);
    expect(shedCount(await registry.metrics(), 'in_flight_per_user')).to.equal(1);
    held.end();
    await waitFor(async () => (await unary(caller, alice)).code === status.OK);
  });

  it('calls in flight in total: the next call -> RESOURCE_EXHAUSTED (in_flight_total), counted', async () => {
    const { registry, clientAs } = await setUp({ maxInFlight: 1 });
    const caller = await clientAs('caller', CALLER_ID);
    const other = await clientAs('other', OTHER_CALLER_ID);
    const held = await holdStream(caller, await bed.issuer.sign({ sub: 'alice', scope: 'probe:call' }));
    const shed = await unary(other, await bed.issuer.sign({ sub: 'bob', scope: 'probe:call' }));
    expect(shed.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(shed.details).to.include('too many calls in flight on this server (limit 1, in_flight_total)');
    expect(shedCount(await registry.metrics(), 'in_flight_total')).to.equal(1);
    held.end();
  });

  it('concurrent streams per connection are advertised (SETTINGS_MAX_CONCURRENT_STREAMS)', async () => {
    const { probe } = await setUp({ maxConcurrentStreams: 7 });
    const dir = bed.pki.workload('caller', CALLER_ID, GRANTS);
    const session = h2connect(`https://127.0.0.1:${probe.port}`, {
      ca: readFileSync(join(dir, 'bundle.pem')),
      cert: readFileSync(join(dir, 'svid.pem')),
      key: readFileSync(join(dir, 'svid.key')),
      checkServerIdentity: () => undefined,
    });
    session.on('error', () => undefined);
    bed.cleanups.push(() => session.destroy());
    const settings = await new Promise<{ maxConcurrentStreams?: number }>((resolve) => session.once('remoteSettings', resolve));
    expect(settings.maxConcurrentStreams).to.equal(7);
  });

  it(`defaults: ${JSON.stringify(CALL_LIMIT_DEFAULTS)}`, () => {
    expect(callLimits(undefined)).to.deep.equal(CALL_LIMIT_DEFAULTS);
  });

  for (const [key, value] of [
    ['maxConcurrentStreams', 0],
    ['maxInFlightPerPeer', -1],
    ['maxInFlightPerUser', 1.5],
    ['maxInFlight', Number.NaN],
  ] as const) {
    it(`limits.${key} = ${value} is refused at start: ERR_CONFIG_INVALID naming the setting`, async () => {
      const svid = await SvidSource.open(bed.pki.workload('probe', SERVER_ID, [`${P}/Unary`]), { trustDomain: TD, pollIntervalMs: 0 });
      bed.cleanups.push(() => svid.close());
      let err: unknown;
      try {
        createMeshServer({ svid, keys: bed.keys, issuer: ISSUER, limits: { [key]: value } });
      } catch (e) {
        err = e;
      }
      expect(err).to.have.property('code', 'ERR_CONFIG_INVALID');
      expect((err as Error).message).to.equal(`limits.${key} must be a positive integer, not ${Number.isNaN(value) ? 'null' : value}`);
    });
  }
});

async function waitFor(probe: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
