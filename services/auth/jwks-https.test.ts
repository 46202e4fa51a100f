// The HTTPS JWKS endpoint over real TLS: the key set, discovery metadata, and nothing else.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { ensurePublicTls } from '../../scripts/local-mesh/public-tls.ts';
import { createJwksHttpsServer } from './jwks-https.ts';

describe('HTTPS JWKS endpoint', () => {
  let dir: string;
  let server: Server;
  let port: number;
  let ca: Buffer;
  const jwks = { keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y', kid: 'k1', alg: 'ES256', use: 'sig' }] };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'twokey-jwks-'));
    const tls = ensurePublicTls(dir);
    ca = readFileSync(tls.caFile);
    server = createJwksHttpsServer({ issuer: 'https://auth.twokey.local', jwks: () => jwks, tls: { cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) } });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  const fetch = (path: string, method = 'GET') =>
    new Promise<{ status: number; type: string | undefined; body: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, method, ca, servername: 'localhost' }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, type: res.headers['content-type'], body }));
      });
      req.on('error', reject);
      req.end();
    });

  it('serves the key set as application/jwk-set+json', async () => {
    const res = await fetch('/.well-known/jwks.json');
    expect(res.status).to.equal(200);
    expect(res.type).to.equal('application/jwk-set+json');
    expect(JSON.parse(res.body)).to.deep.equal(jwks);
  });

  it('serves discovery metadata pointing at the key set', async () => {
    const res = await fetch('/.well-known/openid-configuration');
    expect(JSON.parse(res.body)).to.include({ issuer: 'https://auth.twokey.local', jwks_uri: 'https://auth.twokey.local/.well-known/jwks.json' });
  });

  it('answers 404 for other paths and 405 for other methods', async () => {
    expect((await fetch('/admin')).status).to.equal(404);
    expect((await fetch('/.well-known/jwks.json', 'POST')).status).to.equal(405);
  });
});
