// grpc.health.v1 over a real plaintext listener: NOT_SERVING until told, unknown services refused.
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { checkHealth, HealthServer } from './health.ts';

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
});
