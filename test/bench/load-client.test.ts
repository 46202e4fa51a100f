// The benchmark's load clients against a real grpc-js server over mTLS: the lean HTTP/2 client must
// deliver exactly the headers it was given (its own HPACK encoding) and classify responses right,
// or every benchmark figure built on it would be wrong.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { CertificateAuthority } from '../../certs-ca/certificate-authority.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { BENCH_PROTO_ROOT, ECHO_METHOD, encodeEchoRequest, loadEchoService } from '../../bench/echo-service.ts';
import { RawH2Connection, type RawOutcome } from '../../bench/h2-raw-client.ts';
import { median, percentile } from '../../bench/latency.ts';
import { WireConnection, frameMessage, type CallOutcome, type WireTarget } from '../../bench/wire-client.ts';

describe('benchmark load clients', () => {
  let dir: string;
  let server: grpc.Server;
  let target: WireTarget;
  const seen: Array<string | undefined> = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twokey-bench-test-'));
    const catalog = MethodCatalog.load({ extraRoots: [BENCH_PROTO_ROOT] });
    const ca = CertificateAuthority.init({ dir: path.join(dir, 'ca'), trustDomain: 'twokey.local', catalog });
    const serverCert = ca.issue({ spiffeId: 'spiffe://twokey.local/ns/bench/sa/server', grants: [], ip: ['127.0.0.1'] });
    const clientCert = ca.issue({ spiffeId: 'spiffe://twokey.local/ns/bench/sa/client', grants: [ECHO_METHOD] });
    server = new grpc.Server();
    server.addService(loadEchoService(), {
      Echo(call: grpc.ServerUnaryCall<{ payload: Buffer }, unknown>, callback: grpc.sendUnaryData<unknown>) {
        const value = call.metadata.get('authorization')[0];
        seen.push(typeof value === 'string' ? value : undefined);
        callback(null, { payload: call.request.payload });
      },
      Other(_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) {
        callback({ code: grpc.status.PERMISSION_DENIED, details: 'denied for the test' });
      },
    });
    const credentials = grpc.ServerCredentials.createSsl(
      Buffer.from(serverCert.bundlePem),
      [{ cert_chain: Buffer.from(serverCert.chainPem), private_key: Buffer.from(serverCert.keyPem) }],
      true,
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', credentials, (err, p) => (err ? reject(err) : resolve(p))),
    );
    target = { port, cert: clientCert.chainPem, key: clientCert.keyPem, ca: clientCert.bundlePem };
  });

  after(() => {
    server.forceShutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  beforeEach(() => {
    seen.length = 0;
  });

  const body = frameMessage(encodeEchoRequest(64));
  const rawCall = (c: RawH2Connection, p: string, token: string | undefined, indexable: boolean): Promise<RawOutcome> =>
    new Promise((resolve) => c.call(p, body, token, indexable, resolve));

  it('sends a repeated token HPACK-indexed and the server reads it intact on every call', async () => {
    const connection = await RawH2Connection.open(target);
    try {
      const outcomes = [];
      for (let i = 0; i < 5; i += 1) outcomes.push(await rawCall(connection, ECHO_METHOD, 'token-one', true));
      // Concurrent calls share one write; they must still arrive as five separate, intact requests.
      outcomes.push(...(await Promise.all([1, 2, 3, 4, 5].map(() => rawCall(connection, ECHO_METHOD, 'token-one', true)))));
      expect(outcomes).to.deep.equal(Array(10).fill('message'));
      expect(seen).to.deep.equal(Array(10).fill('Bearer token-one'));
    } finally {
      await connection.close();
    }
  });

  it('sends per-call tokens as literals, each reaching the server unchanged', async () => {
    const connection = await RawH2Connection.open(target);
    try {
      const tokens = Array.from({ length: 50 }, (_, i) => `token-${i}-${'x'.repeat(i * 7)}`);
      const outcomes = await Promise.all(tokens.map((t) => rawCall(connection, ECHO_METHOD, t, false)));
      expect(outcomes).to.deep.equal(Array(50).fill('message'));
      expect([...seen].sort()).to.deep.equal(tokens.map((t) => `Bearer ${t}`).sort());
    } finally {
      await connection.close();
    }
  });

  it('classifies a trailers-only response (every gRPC denial) apart from a response message', async () => {
    const connection = await RawH2Connection.open(target);
    try {
      expect(await rawCall(connection, '/twokey.bench.v1.Echo/Other', undefined, true)).to.equal('trailers-only');
      expect(await rawCall(connection, '/twokey.bench.v1.Echo/NoSuchMethod', undefined, true)).to.equal('trailers-only');
      expect(await rawCall(connection, ECHO_METHOD, undefined, true)).to.equal('message');
      expect(seen).to.deep.equal([undefined]);
    } finally {
      await connection.close();
    }
  });

  it('reads exact status codes and messages with the checking client', async () => {
    const connection = await WireConnection.open(target);
    const call = (p: string): Promise<CallOutcome> => new Promise((resolve) => connection.call(p, body, { authorization: 'Bearer t' }, resolve));
    try {
      expect(await call(ECHO_METHOD)).to.deep.equal({ code: 0, message: 'OK' });
      expect(await call('/twokey.bench.v1.Echo/Other')).to.deep.equal({ code: grpc.status.PERMISSION_DENIED, message: 'denied for the test' });
      expect((await call('/twokey.bench.v1.Echo/NoSuchMethod')).code).to.equal(grpc.status.UNIMPLEMENTED);
    } finally {
      await connection.close();
    }
  });

  it('refuses a server certificate that does not chain to the bundle', async () => {
    const other = CertificateAuthority.init({
      dir: path.join(dir, 'other-ca'),
      trustDomain: 'twokey.local',
      catalog: MethodCatalog.load({ extraRoots: [BENCH_PROTO_ROOT] }),
    });
    let error: unknown;
    try {
      await (await RawH2Connection.open({ ...target, ca: other.bundlePem() })).close();
    } catch (err) {
      error = err;
    }
    expect(String(error)).to.match(/certificate/i);
  });
});

describe('benchmark statistics', () => {
  it('takes nearest-rank percentiles of a sorted sample', () => {
    const sorted = Float64Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(sorted, 0.5)).to.equal(50);
    expect(percentile(sorted, 0.99)).to.equal(99);
    expect(percentile(sorted, 1)).to.equal(100);
    expect(percentile(new Float64Array([7]), 0.99)).to.equal(7);
    expect(Number.isNaN(percentile(new Float64Array(0), 0.5))).to.equal(true);
  });

  it('takes the median of the finite values only', () => {
    expect(median([3, 1, 2])).to.equal(2);
    expect(median([4, 1, 3, 2])).to.equal(2.5);
    expect(median([Number.NaN, 5])).to.equal(5);
    expect(Number.isNaN(median([]))).to.equal(true);
  });
});
