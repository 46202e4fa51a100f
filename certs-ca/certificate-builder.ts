// Low-level X.509 v3 builder: encodes exactly the fields it is given (node-forge ASN.1) and signs
// the TBS bytes with Node's crypto. No policy lives here: the CA decides what is valid, and
// test fixtures use this to produce deliberately defective certificates.
import { createHash, sign, type KeyObject } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import forge from 'node-forge';
import { encodeOid } from '../services/authz/der.ts';
import { TwokeyError } from '../services/authz/errors.ts';

const { asn1 } = forge;
type Node = forge.asn1.Asn1;
// The typings predate fromDer's options object; decodeBitStrings off keeps keys and signatures opaque.
const fromDer = asn1.fromDer as unknown as (bytes: string, options: { strict: boolean; decodeBitStrings: boolean }) => Node;

/** One extension: its OID, criticality and the DER of its value (the OCTET STRING contents). */
export interface Extension {
  oid: string;
  critical: boolean;
  value: Buffer;
}

export type NameAttribute = 'CN' | 'O' | 'OU' | 'C' | 'serialNumber';
/** A distinguished name as ordered attribute/value pairs, one per RDN. */
export type Name = ReadonlyArray<readonly [NameAttribute, string]>;

export interface CertificateSpec {
  /** INTEGER contents, encoded verbatim (use randomSerial for a valid one). */
  serial: Buffer;
  issuer: Name;
  subject: Name;
  notBefore: Date;
  notAfter: Date;
  publicKey: KeyObject;
  extensions: readonly Extension[];
}

export interface BuiltCertificate {
  der: Buffer;
  pem: string;
}

const NAME_OIDS: Record<NameAttribute, string> = {
  CN: '2.5.4.3',
  serialNumber: '2.5.4.5',
  C: '2.5.4.6',
  O: '2.5.4.10',
  OU: '2.5.4.11',
};

export const OID = {
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

// --- DER primitives over node-forge's ASN.1 model ---

const U = asn1.Class.UNIVERSAL;
const T = asn1.Type;
const bin = (b: Buffer): string => b.toString('binary');
const seq = (items: Node[]): Node => asn1.create(U, T.SEQUENCE, true, items);
const set = (items: Node[]): Node => asn1.create(U, T.SET, true, items);
const prim = (type: number, bytes: Buffer): Node => asn1.create(U, type, false, bin(bytes));
const oidNode = (dotted: string): Node => prim(T.OID, encodeOid(dotted));
const integer = (contents: Buffer): Node => prim(T.INTEGER, contents);
const bool = (v: boolean): Node => prim(T.BOOLEAN, Buffer.from([v ? 0xff : 0x00]));
const octets = (bytes: Buffer): Node => prim(T.OCTETSTRING, bytes);
const utf8 = (text: string): Node => prim(T.UTF8, Buffer.from(text, 'utf8'));
const bitString = (bytes: Buffer, unused = 0): Node => prim(T.BITSTRING, Buffer.concat([Buffer.from([unused]), bytes]));
const context = (n: number, constructed: boolean, value: Node[] | Buffer): Node =>
  asn1.create(asn1.Class.CONTEXT_SPECIFIC, n, constructed, Array.isArray(value) ? value : bin(value));
/** Embeds an already-encoded DER element (e.g. an SPKI exported by Node). */
const embed = (der: Buffer): Node => fromDer(bin(der), { strict: true, decodeBitStrings: false });

export function toDer(node: Node): Buffer {
  return Buffer.from(asn1.toDer(node).getBytes(), 'binary');
}

export function pemOf(label: string, der: Buffer): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

function encodeName(name: Name): Node {
  return seq(
    name.map(([attr, value]) =>
      // countryName is PrintableString by its ASN.1 definition; the rest are UTF8String.
      set([seq([oidNode(NAME_OIDS[attr]), attr === 'C' ? prim(T.PRINTABLESTRING, Buffer.from(value, 'ascii')) : utf8(value)])]),
    ),
  );
}

/** UTCTime through 2049, GeneralizedTime after, as RFC 5280 §4.1.2.5 requires; whole seconds. */
function encodeTime(date: Date): Node {
  const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  const year = date.getUTCFullYear();
  return year >= 1950 && year < 2050 ? prim(T.UTCTIME, Buffer.from(digits.slice(2), 'ascii')) : prim(T.GENERALIZEDTIME, Buffer.from(digits, 'ascii'));
}

interface SignatureScheme {
  algorithm: Node;
  hash: string | null;
}

/** The signature algorithm the issuer's key implies. */
function signatureScheme(key: KeyObject): SignatureScheme {
  const type = key.asymmetricKeyType;
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return { algorithm: seq([oidNode('1.2.840.10045.4.3.2')]), hash: 'sha256' };
    if (curve === 'secp384r1') return { algorithm: seq([oidNode('1.2.840.10045.4.3.3')]), hash: 'sha384' };
  } else if (type === 'rsa') {
    return { algorithm: seq([oidNode('1.2.840.113549.1.1.11'), prim(T.NULL, Buffer.alloc(0))]), hash: 'sha256' };
  } else if (type === 'ed25519') {
    return { algorithm: seq([oidNode('1.3.101.112')]), hash: null };
  }
  throw new TwokeyError('ERR_CA_POLICY', `unsupported signing key type ${type}`);
}

/** The largest DER signature value `key` can produce (ECDSA's r and s vary in length). */
function maxSignatureBytes(key: KeyObject): number {
  const type = key.asymmetricKeyType;
  if (type === 'ec') {
    const orderBytes = key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 48 : 32;
    // Each INTEGER may need a leading zero octet to stay positive.
    const int = integer(Buffer.alloc(orderBytes + 1, 0x80));
    return toDer(seq([int, int])).length;
  }
  if (type === 'rsa') return Math.ceil((key.asymmetricKeyDetails?.modulusLength ?? 0) / 8);
  return 64; // ed25519
}

/** A certificate encoded but not yet signed, so its size can be checked before any signature exists. */
export interface UnsignedCertificate {
  /** The DER length of the signed certificate at most (ECDSA signatures vary by a few octets). */
  maxDerBytes: number;
  sign(): BuiltCertificate;
}

/** Encodes the TBSCertificate for `signingKey`; nothing is signed until sign() is called. */
export function prepareCertificate(spec: CertificateSpec, signingKey: KeyObject): UnsignedCertificate {
  const scheme = signatureScheme(signingKey);
  const spki = spec.publicKey.export({ type: 'spki', format: 'der' });
  const fields: Node[] = [
    context(0, true, [integer(Buffer.from([2]))]),
    integer(spec.serial),
    scheme.algorithm,
    encodeName(spec.issuer),
    seq([encodeTime(spec.notBefore), encodeTime(spec.notAfter)]),
    encodeName(spec.subject),
    embed(spki),
  ];
  if (spec.extensions.length > 0) {
    fields.push(
      context(3, true, [
        seq(spec.extensions.map((e) => seq([oidNode(e.oid), ...(e.critical ? [bool(true)] : []), octets(e.value)]))),
      ]),
    );
  }
  const tbs = toDer(seq(fields));
  const wrap = (signature: Buffer): Buffer => toDer(seq([embed(tbs), scheme.algorithm, bitString(signature)]));
  return {
    maxDerBytes: wrap(Buffer.alloc(maxSignatureBytes(signingKey))).length,
    sign: () => {
      const der = wrap(sign(scheme.hash, tbs, signingKey));
      return { der, pem: pemOf('CERTIFICATE', der) };
    },
  };
}

/** Encodes the TBSCertificate, signs it with `signingKey`, and returns the certificate. */
export function buildCertificate(spec: CertificateSpec, signingKey: KeyObject): BuiltCertificate {
  return prepareCertificate(spec, signingKey).sign();
}

// --- Serial numbers and key identifiers ---

/** A positive DER INTEGER holding all 128 random bits (a sign octet is added when needed). */
export function randomSerial(random: (n: number) => Buffer): Buffer {
  for (;;) {
    let bytes = random(16);
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0 && (bytes[i + 1]! & 0x80) === 0) i++;
    bytes = bytes.subarray(i);
    if (bytes.length === 1 && bytes[0] === 0) continue;
    return bytes[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : Buffer.from(bytes);
  }
}

/** RFC 7093 method 1: the leftmost 160 bits of SHA-256 over the subjectPublicKey bits. */
export function keyIdentifier(publicKey: KeyObject): Buffer {
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const parsed = fromDer(bin(spki), { strict: true, decodeBitStrings: false });
  const bits = Buffer.from((parsed.value as Node[])[1]!.value as string, 'binary').subarray(1);
  return createHash('sha256').update(bits).digest().subarray(0, 20);
}

// --- Extension encoders ---

export function basicConstraints(opts: { ca: boolean; pathLen?: number; critical?: boolean }): Extension {
  const body: Node[] = [];
  if (opts.ca) body.push(bool(true));
  if (opts.pathLen !== undefined) body.push(integer(Buffer.from([opts.pathLen])));
  return { oid: OID.basicConstraints, critical: opts.critical ?? true, value: toDer(seq(body)) };
}

const KEY_USAGE_BITS = {
  digitalSignature: 0,
  nonRepudiation: 1,
  keyEncipherment: 2,
  dataEncipherment: 3,
  keyAgreement: 4,
  keyCertSign: 5,
  cRLSign: 6,
} as const;
export type KeyUsage = keyof typeof KEY_USAGE_BITS;

/** keyUsage as a DER named-bit BIT STRING (trailing zero bits trimmed). */
export function keyUsage(usages: readonly KeyUsage[], critical = true): Extension {
  const bits = usages.map((u) => KEY_USAGE_BITS[u]);
  const highest = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(highest / 8) + 1);
  for (const b of bits) bytes[b >> 3]! |= 0x80 >> (b & 7);
  const unused = 7 - (highest & 7);
  return { oid: OID.keyUsage, critical, value: toDer(bitString(bytes, unused)) };
}

export function extKeyUsage(oids: readonly string[], critical = false): Extension {
  return { oid: OID.extKeyUsage, critical, value: toDer(seq(oids.map(oidNode))) };
}

export function subjectAltName(names: { uris?: readonly string[]; dns?: readonly string[]; ips?: readonly string[] }, critical = false): Extension {
  const general: Node[] = [
    ...(names.uris ?? []).map((u) => context(6, false, Buffer.from(u, 'ascii'))),
    ...(names.dns ?? []).map((d) => context(2, false, Buffer.from(d, 'ascii'))),
    ...(names.ips ?? []).map((ip) => context(7, false, ipBytes(ip))),
  ];
  return { oid: OID.subjectAltName, critical, value: toDer(seq(general)) };
}

export function subjectKeyIdentifier(publicKey: KeyObject): Extension {
  return { oid: OID.subjectKeyIdentifier, critical: false, value: toDer(octets(keyIdentifier(publicKey))) };
}

export function authorityKeyIdentifier(keyId: Buffer): Extension {
  return { oid: OID.authorityKeyIdentifier, critical: false, value: toDer(seq([context(0, false, keyId)])) };
}

/** The grants extension: DER SEQUENCE OF UTF8String under the CA's OID. */
export function grantsExtension(oid: string, grants: readonly string[], critical = false): Extension {
  return { oid, critical, value: toDer(seq(grants.map(utf8))) };
}

/** The 4 or 16 octets of an IP address in its textual form. */
export function ipBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  if (!isIPv6(ip)) throw new TwokeyError('ERR_CA_POLICY', `invalid IP address ${JSON.stringify(ip)}`);
  let text = ip;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4 !== null) {
    const [a, b, c, d] = v4[1]!.split('.').map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') as [string, string] : [text, undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? [] : new Array<string>(8 - headGroups.length - tailGroups.length).fill('0');
  const groups = [...headGroups, ...zeros, ...tailGroups];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}
