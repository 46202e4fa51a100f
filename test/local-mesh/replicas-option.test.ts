// `npm start -- --replicas N`: how the number is read, and what the local mesh refuses before starting anything.
import { expect } from 'chai';
import { checkReplicas, replicaTarget } from '../../scripts/local-mesh/local-mesh.ts';
import { replicasFrom } from '../../scripts/start-mesh.ts';

describe('local mesh replicas option', () => {
  it('reads --replicas N, --replicas=N or TWOKEY_REPLICAS, the argument first; 1 by default', () => {
    expect(replicasFrom([], {})).to.equal(1);
    expect(replicasFrom(['--replicas', '2'], {})).to.equal(2);
    expect(replicasFrom(['--replicas=3'], { TWOKEY_REPLICAS: '2' })).to.equal(3);
    expect(replicasFrom([], { TWOKEY_REPLICAS: '2' })).to.equal(2);
  });

  it('refuses a count outside 1..4, a missing count and unknown arguments, naming them', () => {
    expect(() => replicasFrom(['--replicas', '0'], {})).to.throw(/replicas must be a whole number from 1 to 4, not "0"/);
    expect(() => replicasFrom([], { TWOKEY_REPLICAS: 'two' })).to.throw(/not "two"/);
    expect(() => replicasFrom(['--replicas'], {})).to.throw(/--replicas needs a number/);
    expect(() => replicasFrom(['--replica', '2'], {})).to.throw(/unknown argument "--replica"/);
  });

  it('refuses replicas without a shared PostgreSQL database, and names every replica to callers', () => {
    expect(checkReplicas(1)).to.equal(1);
    expect(() => checkReplicas(2)).to.throw(/2 replicas of auth and image-store must share one database: set TWOKEY_DATABASE_URL/);
    expect(checkReplicas(2, { TWOKEY_DATABASE_URL: 'postgres://u@127.0.0.1:5432/db' })).to.equal(2);
    expect(() => checkReplicas(5, { TWOKEY_DATABASE_URL: 'postgres://u@127.0.0.1:5432/db' })).to.throw(/from 1 to 4, not 5/);
    expect(replicaTarget([8443])).to.equal('127.0.0.1:8443');
    expect(replicaTarget([8443, 8444])).to.equal('ipv4:127.0.0.1:8443,127.0.0.1:8444');
  });
});
