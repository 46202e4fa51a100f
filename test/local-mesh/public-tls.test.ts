// The local gateway certificate: its own CA, reused while fresh, renewed near expiry.
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { ensurePublicTls } from '../../scripts/local-mesh/public-tls.ts';

describe('local gateway TLS certificate', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'twokey-tls-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('issues a loopback server certificate from its own CA, keys owner-only', () => {
    const files = ensurePublicTls(dir);
    const ca = new X509Certificate(readFileSync(files.caFile));
    const leaf = new X509Certificate(readFileSync(files.certFile));
    expect(leaf.verify(ca.publicKey)).to.equal(true);
    expect(leaf.ca).to.equal(false);
    expect(leaf.subjectAltName).to.include('DNS:localhost').and.include('IP Address:127.0.0.1');
    expect(leaf.checkHost('localhost')).to.equal('localhost');
    expect(statSync(files.keyFile).mode & 0o777).to.equal(0o600);
    expect(statSync(join(dir, 'ca.key')).mode & 0o777).to.equal(0o600);
  });

  it('reuses a fresh certificate and renews one within a day of expiry, under the same CA', () => {
    const first = readFileSync(ensurePublicTls(dir).certFile, 'utf8');
    expect(readFileSync(ensurePublicTls(dir).certFile, 'utf8')).to.equal(first);
    const later = new Date(Date.now() + 29.5 * 86_400_000);
    const files = ensurePublicTls(dir, later);
    const renewed = new X509Certificate(readFileSync(files.certFile));
    expect(renewed.toString()).to.not.equal(new X509Certificate(first).toString());
    expect(renewed.verify(new X509Certificate(readFileSync(files.caFile)).publicKey)).to.equal(true);
  });

  it("issues a second page's certificate with its own key from the same CA", () => {
    const gateway = ensurePublicTls(dir);
    const web = ensurePublicTls(dir, new Date(), 'console');
    expect(web.certFile).to.equal(join(dir, 'console.crt'));
    expect(web.caFile).to.equal(gateway.caFile);
    const ca = new X509Certificate(readFileSync(gateway.caFile));
    const a = new X509Certificate(readFileSync(gateway.certFile));
    const b = new X509Certificate(readFileSync(web.certFile));
    expect(b.verify(ca.publicKey)).to.equal(true);
    expect(b.publicKey.export({ type: 'spki', format: 'der' }).equals(a.publicKey.export({ type: 'spki', format: 'der' }))).to.equal(false);
    expect(readFileSync(ensurePublicTls(dir).certFile, 'utf8')).to.equal(a.toString());
    expect(statSync(web.keyFile).mode & 0o777).to.equal(0o600);
  });
});
