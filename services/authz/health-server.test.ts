// grpc.health.v1 over a real plaintext listener: NOT_SERVING until told, unknown services refused; /metrics on the same port.
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { Counter, Registry } from 'prom-client';
import { checkHealth, HealthServer, LIVENESS_SERVICE, MAX_HEALTH_WATCHERS } from './health-server.ts';

async function until(ok: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A TCP relay to `port` that hands on the client's first bytes one at a time: the listener must wait for the whole preface. */
async function trickleRelay(port: number): Promise<{ port: number; close: () => void }> {
  const sockets = new Set<net.Socket>();
  const relay = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    sockets.add(client).add(upstream);
    let first = true;
    client.on('data', (chunk: Buffer) => {
      if (!first) return void upstream.write(chunk);
      first = false;
      client.pause();
      let i = 0;
      const step = (): void => {
        if (i >= chunk.length) return void client.resume();
        upstream.write(chunk.subarray(i, i + 1));
        i += 1;
        setTimeout(step, 1);
      };
      step();
    });
    upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return {
    port: (relay.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      relay.close();
    },
  };
}

/** One raw HTTP/1.1 request, written in the given pieces; resolves to the whole response text. */
function rawHttp(port: number, pieces: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (text += d));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
    socket.on('connect', async () => {
      for (const piece of pieces) {
        socket.write(piece);
        await new Promise((r) => setTimeout(r, 5));
      }
    });
  });
}

describe('health server', () => {
  let health: HealthServer;
  let address: string;
  beforeEach(async () => {
    health = new HealthServer(['twokey.images.v1.ImageStore']);
    address = `127.0.0.1:${await health.listen('127.0.0.1:0')}`;
  });
  afterEach(() => health.close());

  it('reports NOT_SERVING until the service says it serves, for the process and each service', async () => {
    expect(await checkHealth(address)).to.equal('NOT_SERVING');
    health.setAll('SERVING');
    expect(await checkHealth(address)).to.equal('SERVING');
    expect(await checkHealth(address, 'twokey.images.v1.ImageStore')).to.equal('SERVING');
  });

  it('keeps liveness SERVING while a watched dependency fails, and readiness NOT_SERVING until it passes again', async () => {
    expect(await checkHealth(address, LIVENESS_SERVICE)).to.equal('NOT_SERVING');
    health.setAll('SERVING');
    let up = false;
    health.watchDependency(async () => {
      if (!up) throw new Error('database unreachable');
    }, { intervalMs: 20, timeoutMs: 500 });
    await until(async () => (await checkHealth(address)) === 'NOT_SERVING');
    expect(await checkHealth(address, 'twokey.images.v1.ImageStore')).to.equal('NOT_SERVING');
    expect(await checkHealth(address, LIVENESS_SERVICE)).to.equal('SERVING');
    up = true;
    await until(async () => (await checkHealth(address)) === 'SERVING');
    expect(await checkHealth(address, LIVENESS_SERVICE)).to.equal('SERVING');
    health.setAll('NOT_SERVING');
    expect(await checkHealth(address, LIVENESS_SERVICE)).to.equal('NOT_SERVING');
  });

  it('watches several dependencies: NOT_SERVING while any fails, each change told with its cause', async () => {
    health.setAll('SERVING');
    const down = { db: false, keys: true };
    const changes: string[] = [];
    health.watchDependency(async () => {
      if (down.db) throw new Error('database unreachable');
    }, { intervalMs: 20, onChange: (err) => changes.push(`db ${err?.message ?? 'up'}`) });
    health.watchDependency(async () => {
      if (down.keys) throw new Error('no token keys');
    }, { intervalMs: 20, onChange: (err) => changes.push(`keys ${err?.message ?? 'up'}`) });
    await until(async () => (await checkHealth(address)) === 'NOT_SERVING');
    down.keys = false;
    await until(async () => (await checkHealth(address)) === 'SERVING');
    down.db = true;
    await until(async () => (await checkHealth(address)) === 'NOT_SERVING');
    down.db = false;
    await until(async () => (await checkHealth(address)) === 'SERVING');
    expect(changes).to.deep.equal(['keys no token keys', 'keys up', 'db database unreachable', 'db up']);
  });

  it('answers NOT_FOUND for a service it does not know', async () => {
    let code: number | undefined;
    await checkHealth(address, 'no.Such').catch((err: grpc.ServiceError) => (code = err.code));
    expect(code).to.equal(grpc.status.NOT_FOUND);
  });

  it(`refuses a Watch beyond ${MAX_HEALTH_WATCHERS} open ones with RESOURCE_EXHAUSTED`, async () => {
    const client = new grpc.Client(address, grpc.credentials.createInsecure());
    const watch = (): grpc.ClientReadableStream<Buffer> =>
      client.makeServerStreamRequest('/grpc.health.v1.Health/Watch', () => Buffer.alloc(0), (b: Buffer) => b, {});
    const open: grpc.ClientReadableStream<Buffer>[] = [];
    try {
      for (let i = 0; i < MAX_HEALTH_WATCHERS; i++) {
        const stream = watch();
        // Cancelling in the finally surfaces as a CANCELLED error on each stream.
        stream.on('error', () => undefined);
        open.push(stream);
        await new Promise((resolve) => stream.once('data', resolve));
      }
      const extra = watch();
      extra.on('data', () => undefined);
      const code = await new Promise<number>((resolve) => extra.once('error', (err: grpc.ServiceError) => resolve(err.code)));
      expect(code).to.equal(grpc.status.RESOURCE_EXHAUSTED);
    } finally {
      open.forEach((s) => s.cancel());
      client.close();
    }
  });
});

describe('health listener: /metrics beside gRPC health on one port', () => {
  let health: HealthServer;
  let port: number;
  beforeEach(async () => {
    const registry = new Registry();
    new Counter({ name: 'probe_total', help: 'a probe', registers: [registry] }).inc(7);
    health = new HealthServer([], { metrics: registry });
    port = await health.listen('127.0.0.1:0');
    health.setAll('SERVING');
  });
  afterEach(() => health.close());

  it('routes a connection by its first bytes even when they arrive one at a time', async () => {
    const relay = await trickleRelay(port);
    try {
      expect(await checkHealth(`127.0.0.1:${relay.port}`, '', 5000)).to.equal('SERVING');
      const res = await rawHttp(relay.port, ['GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n']);
      expect(res).to.match(/^HTTP\/1\.1 200 /);
      expect(res).to.contain('\nprobe_total 7\n');
    } finally {
      relay.close();
    }
  });

  it('answers an HTTP/1 request split in pieces, and a request that starts like the HTTP/2 preface but is not one', async () => {
    const split = await rawHttp(port, ['G', 'ET /metr', 'ics HTTP/1.1\r\nHost: x\r\n', 'Connection: close\r\n\r\n']);
    expect(split).to.match(/^HTTP\/1\.1 200 /);
    const pri = await rawHttp(port, ['PRIX /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n']);
    expect(pri).to.match(/^HTTP\/1\.1 (400|405) /);
    expect(await checkHealth(`127.0.0.1:${port}`)).to.equal('SERVING');
  });

  it('refuses every other path with 404 and every other method with 405, and serves HEAD without a body', async () => {
    expect(await rawHttp(port, ['GET /metrics/../x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'])).to.match(/^HTTP\/1\.1 404 /);
    expect(await rawHttp(port, ['GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'])).to.match(/^HTTP\/1\.1 404 /);
    expect(await rawHttp(port, ['DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'])).to.match(/^HTTP\/1\.1 405 [^]*\r\nallow: GET, HEAD\r\n/i);
    const head = await rawHttp(port, ['HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n']);
    expect(head).to.match(/^HTTP\/1\.1 200 /);
    expect(head).not.to.contain('probe_total');
  });

  it('closes while a scraper keeps its connection alive', async () => {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((resolve) => socket.once('data', resolve));
    const closed = new Promise((resolve) => socket.once('close', resolve));
    await health.close();
    await closed;
  });
});
