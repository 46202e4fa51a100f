// Each of the gateway's load limits on the running example mesh: its status, its message, its metric; and bad values refused at start.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { connect as h2connect, constants as h2, type ClientHttp2Session } from 'node:http2';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { GATEWAY_LIMIT_DEFAULTS, GATEWAY_LIMIT_ENV, GatewayAdmission, gatewayLimitsFromEnv } from '../../services/gateway/gateway-limits.ts';
import { meshCallLimits } from '../../services/mesh-runtime/mesh-runtime.ts';
import { ImageStoreClient, unary } from '../../services/mesh-runtime/protos.ts';
import { DEV_ADMIN } from '../../scripts/local-mesh/local-mesh.ts';
import { eventually, removeState, startTestMesh, withToken, type TestMesh } from '../e2e/mesh-harness.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const LIST = '/twokey.images.v1.ImageStore/ListImages';

function scrape(hostPort: string): Promise<string> {
  const i = hostPort.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    httpGet({ host: hostPort.slice(0, i), port: Number(hostPort.slice(i + 1)), path: '/metrics' }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

function shedCount(text: string, limit: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`twokey_calls_shed_total{limit="${limit}"}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

interface RawEnd {
  grpcStatus: number | undefined;
  grpcMessage: string;
}

/** A raw HTTP/2 connection to the gateway; streams whose headers are sent and whose body may never be. */
class RawGateway {
  readonly session: ClientHttp2Session;
  private constructor(session: ClientHttp2Session) {
    this.session = session;
  }

  static async open(t: TestMesh): Promise<RawGateway> {
    const port = Number(t.mesh.endpoints.gateway.address.split(':').pop());
    const session = h2connect(`https://127.0.0.1:${port}`, { ca: readFileSync(t.mesh.endpoints.gateway.caFile), servername: 'localhost', checkServerIdentity: () => undefined });
    session.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      session.once('connect', () => resolve());
      session.once('error', reject);
    });
    return new RawGateway(session);
  }

  /** Sends the headers of a call (and its body, unless `stall`); resolves with how it ended. */
  call(token: string, opts: { stall?: boolean; path?: string } = {}): { ended: Promise<RawEnd>; cancel(): void } {
    const req = this.session.request({
      [h2.HTTP2_HEADER_METHOD]: 'POST',
      [h2.HTTP2_HEADER_PATH]: opts.path ?? LIST,
      'content-type': 'application/grpc',
      te: 'trailers',
      authorization: `Bearer ${token}`,
    });
    req.on('error', () => undefined);
    const out: RawEnd = { grpcStatus: undefined, grpcMessage: '' };
    const take = (h: Record<string, unknown>) => {
      if (h['grpc-status'] !== undefined) out.grpcStatus = Number(h['grpc-status']);
      if (h['grpc-message'] !== undefined) out.grpcMessage = decodeURIComponent(String(h['grpc-message']));
    };
    req.on('response', take);
    req.on('trailers', take);
    req.on('data', () => undefined);
    const ended = new Promise<RawEnd>((resolve) => req.on('close', () => resolve(out)));
    if (opts.stall !== true) req.end(Buffer.alloc(5));
    return { ended, cancel: () => req.close(h2.NGHTTP2_CANCEL) };
  }

  close(): void {
    this.session.destroy();
  }
}

describe('adversarial: the gateway\'s load limits, one by one', function () {
  this.timeout(120_000);
  let t: TestMesh;
  let tokens: Record<string, string>;
  let health: string;
  const open: Array<RawGateway> = [];
  const raw = async (): Promise<RawGateway> => {
    const r = await RawGateway.open(t);
    open.push(r);
    return r;
  };

  before(async function () {
    this.timeout(120_000);
    t = await startTestMesh({
      cleanerInterval: '1h',
      env: {
        TWOKEY_GATEWAY_MAX_CONCURRENT_STREAMS: '20',
        TWOKEY_GATEWAY_MAX_IN_FLIGHT_PER_CONNECTION: '3',
        TWOKEY_GATEWAY_MAX_IN_FLIGHT_PER_USER: '4',
        TWOKEY_GATEWAY_MAX_IN_FLIGHT: '6',
        TWOKEY_GATEWAY_MAX_BUFFERED_BYTES_PER_USER: String(1024 * 1024),
        TWOKEY_GATEWAY_LOGINS_PER_MINUTE_PER_SOURCE: '5',
        TWOKEY_GATEWAY_REQUEST_TIMEOUT: '6s',
      },
    });
    tokens = { alice: await t.login('alice'), bob: await t.login('bob'), admin: await t.login(DEV_ADMIN) };
    health = t.mesh.endpoints.services['gateway']!.health;
  });
  afterEach(() => {
    for (const r of open.splice(0)) r.close();
  });
  after(async function () {
    this.timeout(30_000);
    if (t !== undefined) {
      await t.close();
      removeState(t.stateDir);
    }
  });

  /** Waits until the gateway holds no call: every stream a test left open has been released. */
  async function drained(): Promise<void> {
    await eventually('the gateway to hold no call', 10_000, async () => ((await scrape(health)).includes('twokey_gateway_in_flight{what="calls"} 0') ? true : undefined));
  }

  it('advertises SETTINGS_MAX_CONCURRENT_STREAMS (20)', async () => {
    const r = await raw();
    const settings = r.session.remoteSettings.maxConcurrentStreams === 20 ? r.session.remoteSettings : await new Promise<{ maxConcurrentStreams?: number }>((res) => r.session.once('remoteSettings', res));
    expect(settings.maxConcurrentStreams).to.equal(20);
  });

  it('calls in flight per connection: the 4th on one connection -> RESOURCE_EXHAUSTED (in_flight_per_connection), counted; another connection served', async () => {
    const before = shedCount(await scrape(health), 'in_flight_per_connection');
    const r = await raw();
    const held = [r.call(tokens['alice']!, { stall: true }), r.call(tokens['bob']!, { stall: true }), r.call(tokens['admin']!, { stall: true })];
    // One connection's streams are taken in order: the three are admitted before the fourth.
    const shed = await r.call(tokens['admin']!).ended;
    expect(shed.grpcStatus).to.equal(grpc.status.RESOURCE_EXHAUSTED);
    expect(shed.grpcMessage).to.match(/^twokey gateway: overloaded: too many calls in flight on this connection \(limit 3, in_flight_per_connection\); retry later \(request [0-9a-f-]{36}\)$/);
    expect(shedCount(await scrape(health), 'in_flight_per_connection')).to.equal(before + 1);
    for (const h of held) h.cancel();
    await drained();
  });

  it('calls in flight per user: alice\'s 5th over several connections -> RESOURCE_EXHAUSTED (in_flight_per_user) before anything is forwarded; bob served', async () => {
    await drained();
    const before = shedCount(await scrape(health), 'in_flight_per_user');
    const [a, b] = [await raw(), await raw()];
    const held = [a.call(tokens['alice']!, { stall: true }), a.call(tokens['alice']!, { stall: true }), b.call(tokens['alice']!, { stall: true }), b.call(tokens['alice']!, { stall: true })];
    const c = await raw();
    await eventually('four calls held', 5000, async () => ((await scrape(health)).includes('twokey_gateway_in_flight{what="calls"} 4') ? true : undefined));
    const shed = await c.call(tokens['alice']!).ended;
    expect(shed.grpcStatus).to.equal(grpc.status.RESOURCE_EXHAUSTED);
    expect(shed.grpcMessage).to.include('too many calls in flight for this user (limit 4, in_flight_per_user)');
    expect((await c.call(tokens['bob']!).ended).grpcStatus).to.equal(grpc.status.OK);
    expect(shedCount(await scrape(health), 'in_flight_per_user')).to.be.at.least(before + 1);
    for (const h of held) h.cancel();
    await drained();
  });

  it('calls in flight in total: the 7th -> RESOURCE_EXHAUSTED (in_flight_total), counted', async () => {
    await drained();
    const before = shedCount(await scrape(health), 'in_flight_total');
    const conns = [await raw(), await raw(), await raw()];
    const held = [
      ...[0, 1, 2].map(() => conns[0]!.call(tokens['alice']!, { stall: true })),
      ...[0, 1, 2].map(() => conns[1]!.call(tokens['bob']!, { stall: true })),
    ];
    // Only once all six are held: a probe sent earlier could take a slot one of them needs.
    await eventually('six calls held', 5000, async () => ((await scrape(health)).includes('twokey_gateway_in_flight{what="calls"} 6') ? true : undefined));
    const shed = await conns[2]!.call(tokens['admin']!).ended;
    expect(shed.grpcStatus).to.equal(grpc.status.RESOURCE_EXHAUSTED);
    expect(shed.grpcMessage).to.include('too many calls in flight at the gateway (limit 6, in_flight_total)');
    expect(shedCount(await scrape(health), 'in_flight_total')).to.be.at.least(before + 1);
    for (const h of held) h.cancel();
    await drained();
  });

  it('a stream that never sends its body ends DEADLINE_EXCEEDED after the request timeout (6 s), counted; its share is given back', async () => {
    const before = shedCount(await scrape(health), 'request_timeout');
    const r = await raw();
    const started = Date.now();
    const out = await r.call(tokens['alice']!, { stall: true }).ended;
    expect(out.grpcStatus).to.equal(grpc.status.DEADLINE_EXCEEDED);
    expect(out.grpcMessage).to.match(/^twokey gateway: request not received within 6000 ms of its headers \(request [0-9a-f-]{36}\)$/);
    expect(Date.now() - started).to.be.at.least(5900);
    expect(shedCount(await scrape(health), 'request_timeout')).to.equal(before + 1);
    await drained();
  });

  it('request bytes per user: a 2 MiB upload over the 1 MiB share -> RESOURCE_EXHAUSTED (buffered_bytes_per_user), counted; a small one stored', async () => {
    const before = shedCount(await scrape(health), 'buffered_bytes_per_user');
    const client = new ImageStoreClient(t.mesh.endpoints.gateway.address, grpc.credentials.createSsl(readFileSync(t.mesh.endpoints.gateway.caFile)), { 'grpc.use_local_subchannel_pool': 1 });
    try {
      const create = (bytes: number) => unary(client, 'CreateImage', { name: 'big.bin', content_type: 'image/jpeg', content: Buffer.alloc(bytes, 1), tags: [] }, withToken(tokens['alice']));
      const err = await create(2 * 1024 * 1024).then(() => undefined, (e: grpc.ServiceError) => e);
      expect(err?.code).to.equal(grpc.status.RESOURCE_EXHAUSTED);
      expect(err?.details).to.include(`too many request bytes held for this user (limit ${1024 * 1024}, buffered_bytes_per_user)`);
      expect(shedCount(await scrape(health), 'buffered_bytes_per_user')).to.equal(before + 1);
      expect(await create(512 * 1024)).to.have.property('owner', 'alice');
      await eventually('the bytes given back', 5000, async () => ((await scrape(health)).includes('twokey_gateway_in_flight{what="request_bytes"} 0') ? true : undefined));
    } finally {
      client.close();
    }
  });

  it('logins per source address: past the per-minute budget -> RESOURCE_EXHAUSTED (login_rate_per_source) before auth hashes anything', async () => {
    const before = shedCount(await scrape(health), 'login_rate_per_source');
    const auth = t.gateway('auth');
    let shed: grpc.ServiceError | undefined;
    // Three logins were spent in before(); the budget is five a minute.
    for (let i = 0; i < 8 && shed === undefined; i++) {
      shed = await unary(auth, 'Login', { username: 'alice', password: t.mesh.users['alice'] }).then(() => undefined, (e: grpc.ServiceError) => (e.code === grpc.status.RESOURCE_EXHAUSTED ? e : undefined));
    }
    expect(shed?.details).to.match(/^twokey gateway: overloaded: too many logins from this address in the last minute \(limit 5, login_rate_per_source\); retry later/);
    expect(shedCount(await scrape(health), 'login_rate_per_source')).to.equal(before + 1);
  });
});

describe('load limits: defaults, and bad values refused at start', () => {
  it(`gateway defaults: ${JSON.stringify(GATEWAY_LIMIT_DEFAULTS)}`, () => {
    expect(gatewayLimitsFromEnv({})).to.deep.equal(GATEWAY_LIMIT_DEFAULTS);
  });

  for (const [key, variable] of Object.entries(GATEWAY_LIMIT_ENV)) {
    for (const bad of key === 'requestTimeoutMs' ? ['0s', '-1s'] : ['0', '-1', '2.5']) {
      it(`${variable}=${bad} -> ERR_CONFIG_INVALID naming it`, () => {
        expect(() => gatewayLimitsFromEnv({ [variable]: bad })).to.throw(variable).with.property('code', 'ERR_CONFIG_INVALID');
      });
    }
  }

  it('the per-source logins in flight and the connection and total byte limits shed with their own names and count', async () => {
    const registry = new Registry();
    const admission = new GatewayAdmission({ ...GATEWAY_LIMIT_DEFAULTS, maxLoginsInFlightPerSource: 1, maxBufferedBytesPerConnection: 10, maxBufferedBytes: 20 }, registry);
    expect(admission.claim([admission.loginClaim('192.0.2.1')])).to.equal(undefined);
    expect(admission.claim([admission.loginClaim('192.0.2.1')])?.reason).to.equal('overloaded: too many logins in flight from this address (limit 1, logins_in_flight_per_source); retry later');
    expect(admission.claim([admission.loginClaim('192.0.2.2')])).to.equal(undefined);
    expect(admission.claim(admission.byteClaims('c1', 'alice'), 8)).to.equal(undefined);
    expect(admission.claim(admission.byteClaims('c1', 'bob'), 8)?.limit).to.equal('buffered_bytes_per_connection');
    expect(admission.claim(admission.byteClaims('c2', 'bob'), 8)).to.equal(undefined);
    expect(admission.claim(admission.byteClaims('c3', 'carol'), 8)?.limit).to.equal('buffered_bytes_total');
    const text = await registry.metrics();
    for (const limit of ['logins_in_flight_per_source', 'buffered_bytes_per_connection', 'buffered_bytes_total']) expect(shedCount(text, limit), limit).to.equal(1);
  });

  it('mesh server limits from the environment: defaults, and 0 refused', () => {
    expect(meshCallLimits({ TWOKEY_MAX_IN_FLIGHT_PER_PEER: '5' }).maxInFlightPerPeer).to.equal(5);
    expect(() => meshCallLimits({ TWOKEY_MAX_IN_FLIGHT_PER_USER: '0' })).to.throw('TWOKEY_MAX_IN_FLIGHT_PER_USER must be a positive integer, not 0');
  });

  for (const [service, variable, value] of [
    ['gateway', 'TWOKEY_GATEWAY_MAX_IN_FLIGHT_PER_USER', '0'],
    ['image-store', 'TWOKEY_MAX_IN_FLIGHT_PER_PEER', '-3'],
  ] as const) {
    it(`\`twokey serve ${service}\` with ${variable}=${value} exits at once, naming the variable`, async () => {
      const out = await new Promise<{ code: number | null; stderr: string }>((resolve) =>
        execFile(process.execPath, [join(ROOT, 'dist/scripts/twokey.js'), 'serve', service], { env: { ...process.env, [variable]: value }, timeout: 20_000 }, (err, _o, stderr) =>
          resolve({ code: err === null ? 0 : ((err as { code?: number }).code ?? null), stderr }),
        ),
      );
      expect(out.code).to.equal(1);
      expect(out.stderr).to.include(`twokey serve ${service}: failed to start: ERR_CONFIG_INVALID: ${variable} must be a positive integer, not ${value}`);
    });
  }
});
