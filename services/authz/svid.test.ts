// parseSvid: strict DER parsing of peer certificates, against our builder and against openssl.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildCertificate, keyIdentifier, keyUsage, subjectAltName, type CertificateSpec, type Extension } from '../../certs-ca/certificate-builder.ts';
import { caSubject, svidSpec } from '../../certs-ca/svid-profile.ts';
import { generateP256 } from '../../certs-ca/workload-key.ts';
import { checkInteger, DerReader } from './der.ts';
import { TwokeyError, type ErrorCode } from './errors.ts';
import { SpiffeId } from './spiffe-id.ts';
import { checkSvidValidity, DEFAULT_GRANTS_OID, parseSvid } from './svid.ts';

const signer = generateP256();
const leafKeys = generateP256();
const ID = 'spiffe://twokey.local/ns/test/sa/client';
const GRANTS = ['/twokey.images.v1.ImageStore/GetImage', '/twokey.auth.v1.Auth/*'];

function spec(overrides: Partial<Parameters<typeof svidSpec>[0]> = {}): CertificateSpec {
  return svidSpec({
    spiffeId: SpiffeId.parse(ID),
    grants: GRANTS,
    grantsOid: DEFAULT_GRANTS_OID,
    dns: ['localhost'],
    ip: ['127.0.0.1', '::1'],
    publicKey: leafKeys.publicKey,
    issuer: caSubject('twokey.local'),
    issuerKeyId: keyIdentifier(signer.publicKey),
    serial: Buffer.from('00c0ffee00112233445566778899aabbcc', 'hex'),
    notBefore: new Date('2026-01-01T00:00:00Z'),
    notAfter: new Date('2026-01-02T00:00:00Z'),
    ...overrides,
  });
}

function withExtensions(s: CertificateSpec, edit: (exts: Extension[]) => Extension[]): Buffer {
  return buildCertificate({ ...s, extensions: edit([...s.extensions]) }, signer.privateKey).der;
}

const grantsValue = (bytes: number[]): Extension => ({ oid: DEFAULT_GRANTS_OID, critical: false, value: Buffer.from(bytes) });
const replaceGrants = (ext: Extension) => (exts: Extension[]) => exts.map((e) => (e.oid === DEFAULT_GRANTS_OID ? ext : e));

function rejects(der: Buffer, code: ErrorCode, why: RegExp): void {
  let caught: unknown;
  try {
    parseSvid(der);
  } catch (err) {
    caught = err;
  }
  expect(caught, 'certificate should be rejected').to.be.instanceOf(TwokeyError);
  expect((caught as TwokeyError).code).to.equal(code);
  expect((caught as TwokeyError).message).to.match(why);
}

describe('parseSvid', () => {
  it('reads the SPIFFE ID, grants, SANs, serial, validity, issuer and thumbprint', () => {
    const der = buildCertificate(spec(), signer.privateKey).der;
    const svid = parseSvid(der);
    expect(svid.spiffeId.toString()).to.equal(ID);
    expect(svid.grants.toStrings()).to.deep.equal(GRANTS);
    expect(svid.grants.allows('/twokey.auth.v1.Auth/Login')).to.equal(true);
    expect(svid.dns).to.deep.equal(['localhost']);
    expect(svid.ip).to.deep.equal(['127.0.0.1', '::1']);
    expect(svid.serialHex).to.equal('c0ffee00112233445566778899aabbcc');
    expect(svid.notBefore.toISOString()).to.equal('2026-01-01T00:00:00.000Z');
    expect(svid.notAfter.toISOString()).to.equal('2026-01-02T00:00:00.000Z');
    expect(svid.issuer).to.equal('O=twokey, CN=twokey CA twokey.local');
    expect(svid.thumbprint).to.equal(createHash('sha256').update(der).digest('base64url'));
    expect(svid.der).to.equal(der);
    // Node's own parser agrees on the serial.
    expect(new X509Certificate(der).serialNumber.toLowerCase()).to.equal(svid.serialHex);
  });

  it('parses a certificate encoded by openssl (an independent encoder)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'twokey-svid-'));
    try {
      writeFileSync(
        join(dir, 'leaf.cnf'),
        [
          '[req]',
          'distinguished_name = dn',
          'prompt = no',
          '[dn]',
          'O = twokey',
          'CN = openssl',
          '[ext]',
          'basicConstraints = critical,CA:FALSE',
          'keyUsage = critical,digitalSignature',
          'extendedKeyUsage = serverAuth,clientAuth',
          'subjectAltName = URI:spiffe://twokey.local/ns/a/sa/b,DNS:b.a.svc,IP:10.0.0.1,IP:fe80::1',
          `${DEFAULT_GRANTS_OID} = ASN1:SEQUENCE:grants`,
          '[grants]',
          'g1 = UTF8String:/twokey.images.v1.ImageStore/ListImages',
          '',
        ].join('\n'),
      );
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-config', join(dir, 'leaf.cnf'), '-extensions', 'ext', '-days', '1', '-set_serial', '0x7fabc'], { stdio: 'pipe' });
      const der = new X509Certificate(readFileSync(join(dir, 'c.pem'))).raw;
      const svid = parseSvid(der);
      expect(svid.spiffeId.toString()).to.equal('spiffe://twokey.local/ns/a/sa/b');
      expect(svid.grants.toStrings()).to.deep.equal(['/twokey.images.v1.ImageStore/ListImages']);
      expect(svid.dns).to.deep.equal(['b.a.svc']);
      expect(svid.ip).to.deep.equal(['10.0.0.1', 'fe80::1']);
      expect(svid.serialHex).to.equal('07fabc');
      expect(svid.issuer).to.equal('O=twokey, CN=openssl');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads grants only under the configured OID', () => {
    const der = buildCertificate(spec({ grantsOid: '1.3.6.1.4.1.99999.1' }), signer.privateKey).der;
    expect(parseSvid(der).grants.size).to.equal(0);
    expect(parseSvid(der, { grantsOid: '1.3.6.1.4.1.99999.1' }).grants.toStrings()).to.deep.equal(GRANTS);
  });

  it('grants nothing when the grants extension is absent', () => {
    const der = withExtensions(spec(), (exts) => exts.filter((e) => e.oid !== DEFAULT_GRANTS_OID));
    expect(parseSvid(der).grants.size).to.equal(0);
  });

  it('rejects zero or several URI SANs', () => {
    rejects(withExtensions(spec(), (e) => e.map((x) => (x.oid === '2.5.29.17' ? subjectAltName({ dns: ['localhost'] }) : x))), 'ERR_PEER_CERT_INVALID', /has 0 URI SANs; an X.509-SVID has exactly one/);
    rejects(
      withExtensions(spec(), (e) => e.map((x) => (x.oid === '2.5.29.17' ? subjectAltName({ uris: [ID, 'spiffe://twokey.local/ns/test/sa/admin'] }) : x))),
      'ERR_PEER_CERT_INVALID',
      /has 2 URI SANs/,
    );
    rejects(withExtensions(spec(), (e) => e.filter((x) => x.oid !== '2.5.29.17')), 'ERR_PEER_CERT_INVALID', /no subjectAltName/);
  });

  it('rejects a URI SAN that is not a valid SPIFFE ID', () => {
    const der = withExtensions(spec(), (e) => e.map((x) => (x.oid === '2.5.29.17' ? subjectAltName({ uris: ['spiffe://twokey.local/ns/../sa/x'] }) : x)));
    rejects(der, 'ERR_SPIFFE_ID_INVALID', /dot segment/);
  });

  it('rejects a CA=true leaf and a leaf with certificate-signing key usage', () => {
    const der = withExtensions(spec(), (e) => e.map((x) => (x.oid === '2.5.29.19' ? { oid: '2.5.29.19', critical: true, value: Buffer.from([0x30, 0x03, 0x01, 0x01, 0xff]) } : x)));
    rejects(der, 'ERR_PEER_CERT_INVALID', /CA=true; a workload certificate must not be a CA/);
    const signing = withExtensions(spec(), (e) => e.map((x) => (x.oid === '2.5.29.15' ? keyUsage(['digitalSignature', 'keyCertSign']) : x)));
    rejects(signing, 'ERR_PEER_CERT_INVALID', /keyCertSign/);
  });

  it('rejects a critical, duplicated or malformed grants extension', () => {
    rejects(withExtensions(spec(), (e) => e.map((x) => (x.oid === DEFAULT_GRANTS_OID ? { ...x, critical: true } : x))), 'ERR_GRANT_EXTENSION_INVALID', /grants extension is marked critical/);
    rejects(withExtensions(spec(), (e) => [...e, e.find((x) => x.oid === DEFAULT_GRANTS_OID)!]), 'ERR_GRANT_EXTENSION_INVALID', /grants extension appears more than once/);
    // SEQUENCE OF INTEGER
    rejects(withExtensions(spec(), replaceGrants(grantsValue([0x30, 0x03, 0x02, 0x01, 0x07]))), 'ERR_GRANT_EXTENSION_INVALID', /grant 0: expected tag 0x0c, found 0x02/);
    // a SET instead of a SEQUENCE
    rejects(withExtensions(spec(), replaceGrants(grantsValue([0x31, 0x00]))), 'ERR_GRANT_EXTENSION_INVALID', /expected tag 0x30/);
    // trailing bytes after the SEQUENCE
    rejects(withExtensions(spec(), replaceGrants(grantsValue([0x30, 0x00, 0x00]))), 'ERR_GRANT_EXTENSION_INVALID', /trailing data/);
    // BER, not DER: non-minimal and indefinite lengths
    rejects(withExtensions(spec(), replaceGrants(grantsValue([0x30, 0x81, 0x03, 0x0c, 0x01, 0x61]))), 'ERR_GRANT_EXTENSION_INVALID', /non-minimal length/);
    rejects(withExtensions(spec(), replaceGrants(grantsValue([0x30, 0x80, 0x0c, 0x01, 0x61, 0x00, 0x00]))), 'ERR_GRANT_EXTENSION_INVALID', /indefinite length/);
    // a UTF8String that is not UTF-8
    rejects(withExtensions(spec(), replaceGrants(grantsValue([0x30, 0x04, 0x0c, 0x02, 0xc3, 0x28]))), 'ERR_GRANT_EXTENSION_INVALID', /not valid UTF-8/);
    // well-formed DER, but a grant with a prefix wildcard
    const prefix = Buffer.from('/a.B/Get*');
    rejects(withExtensions(spec(), replaceGrants(grantsValue([0x30, prefix.length + 2, 0x0c, prefix.length, ...prefix]))), 'ERR_GRANT_EXTENSION_INVALID', /"\/a\.B\/Get\*": must be an exact gRPC path/);
  });

  it('rejects an unrecognized critical extension and any duplicated extension', () => {
    rejects(withExtensions(spec(), (e) => [...e, { oid: '1.2.3.4', critical: true, value: Buffer.from([0x05, 0x00]) }]), 'ERR_PEER_CERT_INVALID', /unrecognized critical extension 1\.2\.3\.4/);
    rejects(withExtensions(spec(), (e) => [...e, e.find((x) => x.oid === '2.5.29.17')!]), 'ERR_PEER_CERT_INVALID', /extension 2\.5\.29\.17 appears more than once/);
  });

  it('rejects malformed DER: trailing data, truncation, garbage, a negative serial', () => {
    const der = buildCertificate(spec(), signer.privateKey).der;
    rejects(Buffer.concat([der, Buffer.from([0])]), 'ERR_PEER_CERT_INVALID', /Certificate: unexpected trailing data/);
    rejects(der.subarray(0, der.length - 1), 'ERR_PEER_CERT_INVALID', /runs past the end/);
    rejects(Buffer.from('not a certificate'), 'ERR_PEER_CERT_INVALID', /invalid certificate/);
    rejects(Buffer.alloc(0), 'ERR_PEER_CERT_INVALID', /missing/);
    rejects(buildCertificate(spec({ serial: Buffer.from([0x80, 0x01]) }), signer.privateKey).der, 'ERR_PEER_CERT_INVALID', /serialNumber: must be positive/);
    // node-forge normalizes INTEGERs when encoding, so the non-minimal one is checked at the reader.
    const reader = new DerReader(Buffer.from([0x02, 0x02, 0x00, 0x01]), 'ERR_PEER_CERT_INVALID', 'invalid certificate');
    expect(() => checkInteger(reader, reader.expect(0x02, 'serialNumber'), 'serialNumber')).to.throw(TwokeyError, /non-minimal INTEGER encoding/);
    const longForm = new DerReader(Buffer.from([0x04, 0x81, 0x01, 0x00]), 'ERR_PEER_CERT_INVALID', 'invalid certificate');
    expect(() => longForm.next('x')).to.throw(TwokeyError, /non-minimal length encoding/);
  });

  // Re-encodes a parsed certificate after editing its tree: how BER-isms that our builder never
  // writes get into a certificate.
  function edited(edit: (tbs: forge.asn1.Asn1[]) => void): Buffer {
    const der = buildCertificate(spec(), signer.privateKey).der;
    const cert = forge.asn1.fromDer(der.toString('binary'));
    edit(((cert.value as forge.asn1.Asn1[])[0]!.value as forge.asn1.Asn1[]));
    return Buffer.from(forge.asn1.toDer(cert).getBytes(), 'binary');
  }
  const U = forge.asn1.Class.UNIVERSAL;
  const extensionsOf = (tbs: forge.asn1.Asn1[]): forge.asn1.Asn1[] => ((tbs[7]!.value as forge.asn1.Asn1[])[0]!.value as forge.asn1.Asn1[]);

  it('rejects an explicit critical FALSE (DER omits DEFAULT values)', () => {
    const der = edited((tbs) => {
      const ext = extensionsOf(tbs).at(-1)!.value as forge.asn1.Asn1[];
      ext.splice(1, 0, forge.asn1.create(U, forge.asn1.Type.BOOLEAN, false, '\x00'));
    });
    rejects(der, 'ERR_PEER_CERT_INVALID', /extension 1\.3\.6\.1\.4\.1\.32473\.7\.1: critical FALSE must be omitted in DER/);
  });

  it('rejects a non-canonical extension OID, which could otherwise dodge the duplicate check', () => {
    const der = edited((tbs) => {
      const ext = extensionsOf(tbs).at(-1)!.value as forge.asn1.Asn1[];
      // 1.3.6.1.4.1.32473.7.1 with its 32473 arc padded by a leading 0x80 octet.
      ext[0] = forge.asn1.create(U, forge.asn1.Type.OID, false, Buffer.from('2b0601040180 81fd590701'.replace(' ', ''), 'hex').toString('binary'));
    });
    rejects(der, 'ERR_PEER_CERT_INVALID', /extnID: non-minimal OID encoding/);
  });

  it('rejects times that are not YYMMDDHHMMSSZ or that name no real date', () => {
    const withNotBefore = (text: string, type = forge.asn1.Type.UTCTIME): Buffer =>
      edited((tbs) => {
        (tbs[4]!.value as forge.asn1.Asn1[])[0] = forge.asn1.create(U, type, false, text);
      });
    rejects(withNotBefore('2601010000Z'), 'ERR_PEER_CERT_INVALID', /notBefore: must be UTCTime YYMMDDHHMMSSZ/);
    rejects(withNotBefore('260101000000+0100'), 'ERR_PEER_CERT_INVALID', /notBefore: must be UTCTime/);
    rejects(withNotBefore('20260101000000.5Z', forge.asn1.Type.GENERALIZEDTIME), 'ERR_PEER_CERT_INVALID', /notBefore: must be/);
    rejects(withNotBefore('260230000000Z'), 'ERR_PEER_CERT_INVALID', /notBefore: not a valid date/);
    rejects(withNotBefore('2601010000a0Z'), 'ERR_PEER_CERT_INVALID', /notBefore: must be/);
    rejects(withNotBefore('260103000000Z'), 'ERR_PEER_CERT_INVALID', /notAfter is before notBefore/);
  });

  it('rejects a v1 certificate and a signature algorithm mismatch', () => {
    rejects(edited((tbs) => tbs.shift()), 'ERR_PEER_CERT_INVALID', /version: expected tag 0xa0/);
    rejects(
      edited((tbs) => {
        tbs[2] = forge.asn1.create(U, forge.asn1.Type.SEQUENCE, true, [forge.asn1.create(U, forge.asn1.Type.OID, false, forge.asn1.oidToDer('1.2.840.10045.4.3.3').getBytes())]);
      }),
      'ERR_PEER_CERT_INVALID',
      /signature algorithm differs/,
    );
  });

  it('encodes dates after 2049 as GeneralizedTime and reads them back', () => {
    const svid = parseSvid(buildCertificate(spec({ notAfter: new Date('2051-06-01T12:00:00Z') }), signer.privateKey).der);
    expect(svid.notAfter.toISOString()).to.equal('2051-06-01T12:00:00.000Z');
  });

  it('checkSvidValidity refuses expired and not-yet-valid certificates', () => {
    const svid = parseSvid(buildCertificate(spec(), signer.privateKey).der);
    expect(() => checkSvidValidity(svid, new Date('2026-01-01T12:00:00Z'))).not.to.throw();
    expect(() => checkSvidValidity(svid, new Date('2026-01-03T00:00:00Z'))).to.throw(TwokeyError, /certificate expired/);
    expect(() => checkSvidValidity(svid, new Date('2025-12-31T00:00:00Z'))).to.throw(TwokeyError, /not yet valid/);
  });
});
