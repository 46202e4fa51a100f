// The fixtures script: each hostile certificate fails exactly where its manifest says, checked
// against parseSvid, openssl verify and a real TLS handshake.
import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TwokeyError } from '../services/authz/errors.ts';
import { parseSvid } from '../services/authz/svid.ts';
import type { FixtureSet } from './hostile-fixtures.ts';

const SCRIPT = fileURLToPath(new URL('../scripts/make-fixtures.ts', import.meta.url));

describe('scripts/make-fixtures.ts', function () {
  this.timeout(30000);
  let dir: string;
  let set: FixtureSet;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'twokey-fixtures-'));
    const r = spawnSync(process.execPath, ['--import', 'tsx', SCRIPT, dir], { encoding: 'utf8', timeout: 20000 });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.include(`wrote 13 fixtures and manifest.json to ${dir}`);
    set = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as FixtureSet;
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const pem = (name: string, file: string): string => readFileSync(join(dir, name, file), 'utf8');

  it('writes every defect the CA must be tested against, each in its own folder', () => {
    expect(set.fixtures.map((f) => f.name)).to.include.members([
      'valid',
      'expired',
      'not-yet-valid',
      'wrong-ca',
      'ca-true-leaf',
      'two-uri-sans',
      'no-uri-san',
      'other-trust-domain',
      'critical-grant-extension',
      'malformed-grant-extension',
    ]);
    for (const f of set.fixtures) {
      expect(new X509Certificate(pem(f.name, 'svid.pem')).checkPrivateKey(createPrivateKey(pem(f.name, 'svid.key')))).to.equal(true);
    }
  });

  it('the manifest declares the outcome each defect must have (pinned here, not taken from the generator)', () => {
    const declared = Object.fromEntries(set.fixtures.map((f) => [f.name, [f.parse, f.chainTrusted]]));
    expect(declared).to.deep.equal({
      valid: ['ok', true],
      expired: ['ok', false],
      'not-yet-valid': ['ok', false],
      'wrong-ca': ['ok', false],
      'ca-true-leaf': ['ERR_PEER_CERT_INVALID', true],
      'two-uri-sans': ['ERR_PEER_CERT_INVALID', true],
      'no-uri-san': ['ERR_PEER_CERT_INVALID', true],
      'other-trust-domain': ['ok', true],
      'invalid-spiffe-id': ['ERR_SPIFFE_ID_INVALID', true],
      'critical-grant-extension': ['ERR_GRANT_EXTENSION_INVALID', false],
      'malformed-grant-extension': ['ERR_GRANT_EXTENSION_INVALID', true],
      'duplicate-grant-extension': ['ERR_GRANT_EXTENSION_INVALID', true],
      'bad-grant-syntax': ['ERR_GRANT_EXTENSION_INVALID', true],
    });
  });

  it('parseSvid accepts or refuses each one as the manifest says', () => {
    for (const f of set.fixtures) {
      const der = new X509Certificate(pem(f.name, 'svid.pem')).raw;
      if (f.parse === 'ok') {
        expect(() => parseSvid(der), f.name).not.to.throw();
      } else {
        let caught: unknown;
        try {
          parseSvid(der);
        } catch (err) {
          caught = err;
        }
        expect(caught, f.name).to.be.instanceOf(TwokeyError);
        expect((caught as TwokeyError).code, f.name).to.equal(f.parse);
      }
    }
    expect(parseSvid(new X509Certificate(pem('other-trust-domain', 'svid.pem')).raw).spiffeId.trustDomain).to.equal('evil.example');
  });

  it('openssl verify trusts or rejects each chain as the manifest says', () => {
    for (const f of set.fixtures) {
      const r = spawnSync('openssl', ['verify', '-CAfile', join(dir, f.name, 'bundle.pem'), join(dir, f.name, 'svid.pem')], { encoding: 'utf8' });
      expect(r.status === 0, `${f.name}: ${r.stdout}${r.stderr}`).to.equal(f.chainTrusted);
    }
    expect(execFileSync('openssl', ['verify', '-CAfile', join(dir, 'valid', 'bundle.pem'), join(dir, 'valid', 'svid.pem')], { encoding: 'utf8' })).to.include('OK');
  });

  it('a TLS server verifying client certificates authorizes exactly the trusted chains', async () => {
    const results = new Map<string, boolean>();
    const server = createServer({ key: pem('valid', 'svid.key'), cert: pem('valid', 'svid.pem'), ca: pem('valid', 'bundle.pem'), requestCert: true, rejectUnauthorized: false });
    server.on('secureConnection', (socket: TLSSocket) => socket.end());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as AddressInfo).port;
      for (const f of set.fixtures) {
        const authorized = new Promise<boolean>((resolve) => {
          server.once('secureConnection', (socket: TLSSocket) => resolve(socket.authorized));
        });
        const client = connect({ host: '127.0.0.1', port, servername: 'localhost', key: pem(f.name, 'svid.key'), cert: pem(f.name, 'svid.pem'), ca: pem('valid', 'bundle.pem') });
        client.on('error', () => {});
        results.set(f.name, await authorized);
        client.destroy();
      }
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    for (const f of set.fixtures) expect(results.get(f.name), f.name).to.equal(f.chainTrusted);
  });
});
