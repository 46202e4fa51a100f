// parseSvid and the DER reader: round-trip what the CA encodes; any mutation of the DER ends in a TwokeyError or a valid SVID.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import fc from 'fast-check';
import * as builder from '../../certs-ca/certificate-builder.ts';
import { CertificateAuthority, generateP256 } from '../../certs-ca/index.ts';
import { caSubject, svidSpec } from '../../certs-ca/svid-profile.ts';
import { DerReader, decodeOid, encodeOid } from '../../services/authz/der.ts';
import type { ErrorCode } from '../../services/authz/errors.ts';
import { MethodGrant } from '../../services/authz/grant.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { DEFAULT_GRANTS_OID, parseSvid } from '../../services/authz/svid.ts';
import { RUNS, grantText, mutated, pathSegment, typedOutcome } from './arbitraries.ts';

const TD = 'twokey.local';
const PARSE_ERRORS: readonly ErrorCode[] = ['ERR_PEER_CERT_INVALID', 'ERR_SPIFFE_ID_INVALID', 'ERR_GRANT_EXTENSION_INVALID'];
// Certificate signing is the slow part; fewer runs keep the suite within its time budget.
const CERT_RUNS = Math.max(20, Math.floor(RUNS / 4));

describe('property: X.509-SVID parsing', function () {
  this.timeout(60_000);
  let root: string;
  let ca: CertificateAuthority;
  let catalogGrants: string[];
  let keys: ReturnType<typeof generateP256>;
  let caKey: import('node:crypto').KeyObject;
  let baseline: Buffer;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'twokey-prop-svid-'));
    ca = CertificateAuthority.init({ dir: join(root, 'ca'), trustDomain: TD });
    const catalog = MethodCatalog.default();
    catalogGrants = [...catalog.methods().map((m) => m.path), ...catalog.services().map((s) => `/${s}/*`)];
    keys = generateP256();
    const { createPrivateKey } = await import('node:crypto');
    const { readFileSync } = await import('node:fs');
    caKey = createPrivateKey(readFileSync(join(ca.dir, 'ca.key')));
    baseline = ca.issue({ spiffeId: `spiffe://${TD}/ns/prop/sa/base`, grants: catalogGrants.slice(0, 3), dns: ['localhost'], ip: ['127.0.0.1'] }).svid.der;
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  /** A leaf in the CA's profile with arbitrary grant strings, signed by the CA key. */
  function leafWithGrants(grants: readonly string[], spiffeId = `spiffe://${TD}/ns/prop/sa/x`): Buffer {
    const now = Date.now();
    return builder.buildCertificate(
      svidSpec({
        spiffeId: SpiffeId.parse(spiffeId),
        grants,
        grantsOid: ca.grantsOid,
        dns: [],
        ip: [],
        publicKey: keys.publicKey,
        issuer: caSubject(TD),
        issuerKeyId: builder.keyIdentifier(ca.certificate.publicKey),
        serial: builder.randomSerial(randomBytes),
        notBefore: new Date(Math.floor(now / 1000) * 1000 - 60_000),
        notAfter: new Date(Math.floor(now / 1000) * 1000 + 3600_000),
      }),
      caKey,
    ).der;
  }

  it('round-trips every certificate the CA issues: SPIFFE ID, grants, names, validity', () => {
    const segs = fc.array(pathSegment, { minLength: 1, maxLength: 4 });
    const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'));
    fc.assert(
      fc.property(segs, fc.nat(), fc.integer({ min: 60, max: 7 * 86400 }), fc.array(ipv4, { maxLength: 2 }), (path, pick, ttl, ips) => {
        const count = pick % 6;
        const grants = Array.from(new Set(Array.from({ length: count }, (_, i) => catalogGrants[(pick * 7 + i * 13) % catalogGrants.length]!)));
        const spiffeId = `spiffe://${TD}/${path.join('/')}`;
        const issued = ca.issue({ spiffeId, grants, ttl, ip: ips, dns: ['localhost'] });
        const svid = parseSvid(issued.svid.der, { grantsOid: ca.grantsOid });
        expect(svid.spiffeId.toString()).to.equal(spiffeId);
        expect(svid.grants.toStrings()).to.deep.equal(grants);
        expect(svid.dns).to.deep.equal(['localhost']);
        expect(svid.ip).to.deep.equal(ips);
        expect((svid.notAfter.getTime() - svid.notBefore.getTime()) / 1000).to.equal(ttl + 60);
        expect(svid.serialHex).to.match(/^[0-9a-f]+$/);
        for (const g of grants) expect(svid.grants.allows(g.endsWith('/*') ? `${g.slice(0, -1)}Any` : g)).to.equal(true);
      }),
      { numRuns: CERT_RUNS },
    );
  });

  it('the grants decoder returns exactly the encoded grants when all are valid, else ERR_GRANT_EXTENSION_INVALID', () => {
    const grant = fc.oneof(grantText, mutated(grantText), fc.string({ maxLength: 20 }));
    fc.assert(
      fc.property(fc.array(grant, { maxLength: 5 }), (grants) => {
        const der = leafWithGrants(grants);
        const out = typedOutcome(() => parseSvid(der, { grantsOid: ca.grantsOid }), ['ERR_GRANT_EXTENSION_INVALID']);
        const encoded = grants.map((g) => Buffer.from(g, 'utf8').toString('utf8'));
        const valid = encoded.every((g) => typedOutcome(() => MethodGrant.parse(g), ['ERR_GRANT_INVALID']).ok) && new Set(encoded).size === encoded.length;
        expect(out.ok, JSON.stringify(grants)).to.equal(valid);
        if (out.ok) expect(out.value.grants.toStrings()).to.deep.equal(encoded);
      }),
      { numRuns: CERT_RUNS },
    );
  });

  it('another grants OID than the CA\'s yields no grants, never someone else\'s', () => {
    const der = leafWithGrants(['/twokey.images.v1.ImageStore/*']);
    expect(parseSvid(der, { grantsOid: ca.grantsOid }).grants.size).to.equal(1);
    expect(parseSvid(der, { grantsOid: '1.3.6.1.4.1.32473.7.2' }).grants.size).to.equal(0);
    expect(ca.grantsOid).to.equal(DEFAULT_GRANTS_OID);
  });

  it('random mutations of a valid certificate end in a TwokeyError or a well-formed SVID, never another exception', () => {
    const mutation = fc.record({
      op: fc.constantFrom('flip', 'set', 'truncate', 'insert', 'delete', 'duplicate', 'zero-run'),
      at: fc.nat(),
      len: fc.integer({ min: 1, max: 16 }),
      byte: fc.integer({ min: 0, max: 255 }),
    });
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), (mutations) => {
        let der: Buffer = Buffer.from(baseline);
        for (const m of mutations) der = applyMutation(der, m);
        const out = typedOutcome(() => parseSvid(der, { grantsOid: ca.grantsOid }), PARSE_ERRORS);
        if (out.ok) {
          // Whatever survives is still a valid SPIFFE ID and valid grants: the types guarantee it.
          expect(SpiffeId.parse(out.value.spiffeId.toString()).equals(out.value.spiffeId)).to.equal(true);
          for (const g of out.value.grants.toStrings()) MethodGrant.parse(g);
        }
      }),
      { numRuns: RUNS * 3 },
    );
  });

  it('arbitrary bytes never make parseSvid or the DER reader throw anything but a TwokeyError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const buf = Buffer.from(bytes);
        typedOutcome(() => parseSvid(buf), PARSE_ERRORS);
        typedOutcome(() => {
          const reader = new DerReader(buf, 'ERR_PEER_CERT_INVALID', 'fuzz');
          while (!reader.done) {
            const el = reader.next('element');
            if (el.tag & 0x20) {
              const inner = reader.child(el, 'inner');
              while (!inner.done) inner.next('inner element');
            }
          }
        }, ['ERR_PEER_CERT_INVALID']);
      }),
      { numRuns: RUNS * 3 },
    );
  });

  it('OIDs with 32-bit arcs round-trip; larger arcs are refused when encoding', () => {
    const reader = new DerReader(Buffer.alloc(0), 'ERR_PEER_CERT_INVALID', 'oid');
    const arc = fc.integer({ min: 0, max: 0xffffffff });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 39 }), fc.array(arc, { maxLength: 8 }), (a, b, rest) => {
        const dotted = [a, b, ...rest].join('.');
        expect(decodeOid(reader, encodeOid(dotted), 'oid')).to.equal(dotted);
      }),
      { numRuns: RUNS },
    );
    fc.assert(
      fc.property(fc.integer({ min: 2 ** 32, max: Number.MAX_SAFE_INTEGER }), (big) => {
        const out = typedOutcome(() => encodeOid(`1.3.6.1.4.1.${big}`), ['ERR_CONFIG_INVALID']);
        expect(out.ok).to.equal(false);
      }),
      { numRuns: RUNS },
    );
  });

  it('non-minimal OID subidentifiers are refused when decoding', () => {
    const reader = new DerReader(Buffer.alloc(0), 'ERR_PEER_CERT_INVALID', 'oid');
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 12 }), (bytes) => {
        const out = typedOutcome(() => decodeOid(reader, Buffer.from([0x2b, 0x80, ...bytes.map((b) => b & 0x7f)]), 'oid'), ['ERR_PEER_CERT_INVALID']);
        expect(out.ok).to.equal(false);
      }),
      { numRuns: RUNS },
    );
  });
});

function applyMutation(der: Buffer, m: { op: string; at: number; len: number; byte: number }): Buffer {
  if (der.length === 0) return der;
  const i = m.at % der.length;
  switch (m.op) {
    case 'flip': {
      const out = Buffer.from(der);
      out[i] = out[i]! ^ (1 << (m.byte % 8));
      return out;
    }
    case 'set': {
      const out = Buffer.from(der);
      out[i] = m.byte;
      return out;
    }
    case 'truncate':
      return der.subarray(0, i);
    case 'insert':
      return Buffer.concat([der.subarray(0, i), Buffer.from([m.byte]), der.subarray(i)]);
    case 'delete':
      return Buffer.concat([der.subarray(0, i), der.subarray(i + m.len)]);
    case 'duplicate':
      return Buffer.concat([der.subarray(0, i + m.len), der.subarray(i)]);
    default: {
      const out = Buffer.from(der);
      out.fill(0, i, Math.min(out.length, i + m.len));
      return out;
    }
  }
}
