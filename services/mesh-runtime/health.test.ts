// grpc.health.v1 over a real plaintext listener: NOT_SERVING until told, unknown services refused.
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { checkHealth, HealthServer, MAX_HEALTH_WATCHERS } from './health.ts';

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
