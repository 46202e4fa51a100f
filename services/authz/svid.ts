// Strict X.509-SVID parsing from DER: the SPIFFE ID and method grants a peer certificate carries.
import { createHash } from 'node:crypto';
import {
  DerReader,
  TAG,
  checkInteger,
  checkOidEncoding,
  contextTag,
  decodeOid,
  encodeOid,
  readBoolean,
  readNamedBits,
  readSmallInteger,
  type DerElement,
} from './der.ts';
import { TwokeyError } from './errors.ts';
import { GrantSet } from './grant.ts';
import { SpiffeId } from './spiffe-id.ts';

/**
 * Default OID of the grants extension, under 32473, the enterprise number RFC 5612 reserves for
 * documentation; operators set their own arc in the CA config.
 */
export const DEFAULT_GRANTS_OID = '1.3.6.1.4.1.32473.7.1';

export interface Svid {
  spiffeId: SpiffeId;
  grants: GrantSet;
  /** Lowercase hex of the serial number, without a sign octet. */
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  /** base64url SHA-256 of the DER certificate: the `x5t#S256` tokens are bound to. */
  thumbprint: string;
  /** Issuer distinguished name, e.g. `O=twokey, CN=twokey CA twokey.local`. */
  issuer: string;
  /** DNS and IP subject alternative names (for hostname-verifying clients). */
  dns: string[];
  ip: string[];
  der: Buffer;
}

export interface ParseSvidOptions {
  /** OID of the grants extension; defaults to DEFAULT_GRANTS_OID. */
  grantsOid?: string;
}

const oidKey = (dotted: string): string => encodeOid(dotted).toString('latin1');

const OID_SAN = oidKey('2.5.29.17');
const OID_BASIC_CONSTRAINTS = oidKey('2.5.29.19');
const OID_KEY_USAGE = oidKey('2.5.29.15');
const OID_EXT_KEY_USAGE = oidKey('2.5.29.37');

// keyUsage named bits (RFC 5280 §4.2.1.3).
const KU_DIGITAL_SIGNATURE = 1 << 0;
const KU_KEY_CERT_SIGN = 1 << 5;
const KU_CRL_SIGN = 1 << 6;

// GeneralName choices (RFC 5280 §4.2.1.6), all IMPLICIT primitive here.
const GN_DNS = contextTag(2, false);
const GN_URI = contextTag(6, false);
const GN_IP = contextTag(7, false);

const ATTRIBUTE_NAMES = new Map<string, string>(
  Object.entries({
    '2.5.4.3': 'CN',
    '2.5.4.5': 'serialNumber',
    '2.5.4.6': 'C',
    '2.5.4.7': 'L',
    '2.5.4.8': 'ST',
    '2.5.4.10': 'O',
    '2.5.4.11': 'OU',
    '0.9.2342.19200300.100.1.25': 'DC',
  }).map(([oid, name]) => [oidKey(oid), name]),
);

// The grants OID arrives as configuration; encoding it once per distinct value keeps parsing cheap.
const grantsOidKeys = new Map<string, string>();
function grantsOidKey(oid: string): string {
  let key = grantsOidKeys.get(oid);
  if (key === undefined) {
    key = oidKey(oid);
    grantsOidKeys.set(oid, key);
  }
  return key;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function invalid(message: string, cause?: unknown): TwokeyError {
  return new TwokeyError('ERR_PEER_CERT_INVALID', message, cause === undefined ? undefined : { cause });
}

/**
 * Parses an X.509-SVID leaf certificate from DER. Throws TwokeyError:
 * ERR_PEER_CERT_INVALID for malformed DER, zero or several URI SANs, a SPIFFE ID without a path,
 * a CA certificate, no keyUsage, or an unrecognized critical extension; ERR_SPIFFE_ID_INVALID for a bad URI SAN;
 * ERR_GRANT_EXTENSION_INVALID for a duplicated, critical or malformed grants extension.
 * It does not verify the signature or the validity period: TLS verified the chain, and callers
 * compare the dates with their own clock (see checkSvidValidity).
 */
export function parseSvid(der: Buffer, opts?: ParseSvidOptions): Svid {
  const grantsKey = grantsOidKey(opts?.grantsOid ?? DEFAULT_GRANTS_OID);
  const top = new DerReader(der, 'ERR_PEER_CERT_INVALID', 'invalid certificate');
  const certEl = top.expect(TAG.SEQUENCE, 'Certificate');
  top.end('Certificate');
  const cert = top.child(certEl, 'Certificate');
  const tbsEl = cert.expect(TAG.SEQUENCE, 'tbsCertificate');
  const outerSigAlg = cert.expect(TAG.SEQUENCE, 'signatureAlgorithm');
  cert.expect(TAG.BIT_STRING, 'signatureValue');
  cert.end('Certificate');

  const tbs = cert.child(tbsEl, 'tbsCertificate');
  const versionEl = tbs.expect(contextTag(0, true), 'version');
  const versionReader = tbs.child(versionEl, 'version');
  const version = readSmallInteger(versionReader, versionReader.expect(TAG.INTEGER, 'version'), 'version');
  versionReader.end('version');
  if (version !== 2) tbs.fail('version must be v3 (extensions are required)');

  const serialEl = tbs.expect(TAG.INTEGER, 'serialNumber');
  const serialHex = readSerial(tbs, serialEl);
  const innerSigAlg = tbs.expect(TAG.SEQUENCE, 'signature');
  if (!innerSigAlg.sameAs(outerSigAlg)) tbs.fail('signature algorithm differs from signatureAlgorithm');
  const issuerEl = tbs.expect(TAG.SEQUENCE, 'issuer');
  const validityEl = tbs.expect(TAG.SEQUENCE, 'validity');
  tbs.expect(TAG.SEQUENCE, 'subject');
  tbs.expect(TAG.SEQUENCE, 'subjectPublicKeyInfo');
  const extsWrapper = tbs.expect(contextTag(3, true), 'extensions');
  tbs.end('tbsCertificate');

  const validity = tbs.child(validityEl, 'validity');
  const notBefore = readTime(validity, validity.next('notBefore'), 'notBefore');
  const notAfter = readTime(validity, validity.next('notAfter'), 'notAfter');
  validity.end('validity');
  if (notAfter.getTime() < notBefore.getTime()) tbs.fail('validity: notAfter is before notBefore');

  const wrapper = tbs.child(extsWrapper, 'extensions');
  const extsEl = wrapper.expect(TAG.SEQUENCE, 'extensions');
  wrapper.end('extensions');
  const exts = wrapper.child(extsEl, 'extensions');

  let spiffeId: SpiffeId | undefined;
  let dns: string[] = [];
  let ip: string[] = [];
  let grants: GrantSet | undefined;
  const seen = new Set<string>();
  if (exts.done) exts.fail('extensions: empty');
  while (!exts.done) {
    const ext = exts.child(exts.expect(TAG.SEQUENCE, 'extension'), 'extension');
    const oidEl = ext.expect(TAG.OID, 'extnID');
    // Canonical bytes, so neither the duplicate check nor the grants lookup can be sidestepped.
    checkOidEncoding(ext, oidEl, 'extnID');
    const key = oidEl.key;
    const criticalEl = ext.optional(TAG.BOOLEAN, 'critical');
    // DER omits a DEFAULT value, so an explicit FALSE is itself malformed.
    if (criticalEl !== undefined && !readBoolean(ext, criticalEl, 'critical')) ext.fail(`${extensionLabel(ext, oidEl)}: critical FALSE must be omitted in DER`);
    const critical = criticalEl !== undefined;
    const value = ext.expect(TAG.OCTET_STRING, 'extnValue');
    if (!ext.done) ext.fail(`${extensionLabel(ext, oidEl)}: unexpected trailing data`);
    if (seen.has(key)) {
      if (key === grantsKey) throw new TwokeyError('ERR_GRANT_EXTENSION_INVALID', 'invalid certificate: grants extension appears more than once');
      throw invalid(`invalid certificate: ${extensionLabel(ext, oidEl)} appears more than once`);
    }
    seen.add(key);

    if (key === grantsKey) {
      if (critical) {
        throw new TwokeyError('ERR_GRANT_EXTENSION_INVALID', 'invalid certificate: grants extension is marked critical; it must be non-critical');
      }
      grants = readGrants(value);
    } else if (key === OID_SAN) {
      ({ spiffeId, dns, ip } = readSubjectAltName(value));
    } else if (key === OID_BASIC_CONSTRAINTS) {
      readBasicConstraints(value);
    } else if (key === OID_KEY_USAGE) {
      readKeyUsage(value);
    } else if (key === OID_EXT_KEY_USAGE) {
      // Recognized so it may be critical; TLS already applied it.
    } else if (critical) {
      throw invalid(`invalid certificate: unrecognized critical ${extensionLabel(ext, oidEl)}`);
    }
  }
  if (spiffeId === undefined) throw invalid('invalid certificate: no subjectAltName; an X.509-SVID has exactly one URI SAN');
  // X.509-SVID §3.1 and §5.2: the trust domain's own ID names no workload, so a leaf needs a path.
  if (spiffeId.path === '') throw invalid(`invalid certificate: SPIFFE ID ${spiffeId} has no path; an X.509-SVID leaf needs a non-root path`);
  // X.509-SVID §4.3: every SVID carries keyUsage; without it the key is unrestricted.
  if (!seen.has(OID_KEY_USAGE)) throw invalid('invalid certificate: no keyUsage extension; an X.509-SVID leaf must carry one with digitalSignature');

  return {
    spiffeId,
    // A certificate without the extension is granted nothing.
    grants: grants ?? GrantSet.empty(),
    serialHex,
    notBefore,
    notAfter,
    thumbprint: createHash('sha256').update(der).digest('base64url'),
    issuer: readName(tbs, issuerEl),
    dns,
    ip,
    der,
  };
}

/** Throws ERR_PEER_CERT_EXPIRED unless `now` lies within the certificate's validity period. */
export function checkSvidValidity(svid: Svid, now: Date): void {
  if (now.getTime() < svid.notBefore.getTime()) {
    throw new TwokeyError('ERR_PEER_CERT_EXPIRED', `certificate not yet valid (notBefore ${svid.notBefore.toISOString()})`);
  }
  if (now.getTime() > svid.notAfter.getTime()) {
    throw new TwokeyError('ERR_PEER_CERT_EXPIRED', `certificate expired (notAfter ${svid.notAfter.toISOString()})`);
  }
}

// Decoding OID text costs more than the rest of a parse, so only error messages pay for it.
function extensionLabel(reader: DerReader, oidEl: DerElement): string {
  return `extension ${decodeOid(reader, oidEl.value, 'extnID')}`;
}

function readSerial(reader: DerReader, el: DerElement): string {
  const { negative } = checkInteger(reader, el, 'serialNumber');
  const bytes = el.value[0] === 0 && el.value.length > 1 ? el.value.subarray(1) : el.value;
  if (negative) reader.fail('serialNumber: must be positive');
  if (bytes.length === 1 && bytes[0] === 0) reader.fail('serialNumber: must be positive');
  if (bytes.length > 20) reader.fail('serialNumber: longer than 20 octets');
  return bytes.toString('hex');
}

function readSubjectAltName(value: DerElement): { spiffeId: SpiffeId; dns: string[]; ip: string[] } {
  const outer = DerReader.within(value, 'ERR_PEER_CERT_INVALID', 'invalid certificate: subjectAltName');
  const names = outer.child(outer.expect(TAG.SEQUENCE, 'GeneralNames'), 'GeneralNames');
  outer.end('GeneralNames');
  if (names.done) names.fail('no names');
  const uris: string[] = [];
  const dns: string[] = [];
  const ip: string[] = [];
  while (!names.done) {
    const name = names.next('GeneralName');
    if (name.tag === GN_URI) uris.push(readIa5(names, name, 'URI'));
    else if (name.tag === GN_DNS) dns.push(readIa5(names, name, 'dNSName'));
    else if (name.tag === GN_IP) ip.push(formatIp(names, name.value));
  }
  if (uris.length !== 1) {
    throw invalid(`invalid certificate: has ${uris.length} URI SANs; an X.509-SVID has exactly one`);
  }
  return { spiffeId: SpiffeId.parse(uris[0]), dns, ip };
}

function readIa5(reader: DerReader, el: DerElement, label: string): string {
  const buf = el.buf;
  for (let i = el.valueStart; i < el.end; i++) {
    const b = buf[i]!;
    if (b > 0x7e || b < 0x20) reader.fail(`${label}: not printable IA5String`);
  }
  return el.key;
}

function formatIp(reader: DerReader, value: Buffer): string {
  if (value.length === 4) return `${value[0]}.${value[1]}.${value[2]}.${value[3]}`;
  if (value.length !== 16) reader.fail('iPAddress: must be 4 or 16 octets');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(value.readUInt16BE(i).toString(16));
  // The URL parser yields the canonical compressed IPv6 text form.
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}

function readBasicConstraints(value: DerElement): void {
  const outer = DerReader.within(value, 'ERR_PEER_CERT_INVALID', 'invalid certificate: basicConstraints');
  const bc = outer.child(outer.expect(TAG.SEQUENCE, 'BasicConstraints'), 'BasicConstraints');
  outer.end('BasicConstraints');
  const caEl = bc.optional(TAG.BOOLEAN, 'cA');
  if (caEl !== undefined) {
    if (readBoolean(bc, caEl, 'cA')) throw invalid('invalid certificate: CA=true; a workload certificate must not be a CA');
    bc.fail('cA FALSE must be omitted in DER');
  }
  if (bc.optional(TAG.INTEGER, 'pathLenConstraint') !== undefined) bc.fail('pathLenConstraint on a non-CA certificate');
  bc.end('BasicConstraints');
}

function readKeyUsage(value: DerElement): void {
  const reader = DerReader.within(value, 'ERR_PEER_CERT_INVALID', 'invalid certificate: keyUsage');
  const bits = readNamedBits(reader, reader.expect(TAG.BIT_STRING, 'KeyUsage'), 'KeyUsage');
  reader.end('KeyUsage');
  if (bits & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) throw invalid('invalid certificate: keyUsage keyCertSign/cRLSign on a workload certificate');
  if (!(bits & KU_DIGITAL_SIGNATURE)) throw invalid('invalid certificate: keyUsage lacks digitalSignature');
}

function readGrants(value: DerElement): GrantSet {
  const outer = DerReader.within(value, 'ERR_GRANT_EXTENSION_INVALID', 'invalid certificate: grants extension');
  const seq = outer.child(outer.expect(TAG.SEQUENCE, 'SEQUENCE OF UTF8String'), 'SEQUENCE OF UTF8String');
  outer.end('grants');
  const texts: string[] = [];
  while (!seq.done) {
    const el = seq.expect(TAG.UTF8_STRING, `grant ${texts.length}`);
    try {
      texts.push(utf8.decode(el.value));
    } catch {
      seq.fail(`grant ${texts.length}: not valid UTF-8`);
    }
  }
  try {
    return GrantSet.parse(texts);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new TwokeyError('ERR_GRANT_EXTENSION_INVALID', `invalid certificate: grants extension: ${why}`, { cause: err });
  }
}

// UTCTime YYMMDDHHMMSSZ and GeneralizedTime YYYYMMDDHHMMSSZ: the only forms RFC 5280 allows.
// Read digit by digit from the buffer: this runs twice per connection.
function readTime(reader: DerReader, el: DerElement, label: string): Date {
  const buf = el.buf;
  const utc = el.tag === TAG.UTC_TIME;
  const width = utc ? 13 : 15;
  if ((!utc && el.tag !== TAG.GENERALIZED_TIME) || el.length !== width || buf[el.end - 1] !== 0x5a /* Z */) {
    reader.fail(`${label}: must be UTCTime YYMMDDHHMMSSZ or GeneralizedTime YYYYMMDDHHMMSSZ`);
  }
  let pos = el.valueStart;
  const digits = (count: number): number => {
    let n = 0;
    for (let i = 0; i < count; i++, pos++) {
      const d = buf[pos]! - 0x30;
      if (d < 0 || d > 9) reader.fail(`${label}: must be UTCTime YYMMDDHHMMSSZ or GeneralizedTime YYYYMMDDHHMMSSZ`);
      n = n * 10 + d;
    }
    return n;
  };
  let year = digits(utc ? 2 : 4);
  if (utc) year += year < 50 ? 2000 : 1900;
  const month = digits(2);
  const day = digits(2);
  const hour = digits(2);
  const minute = digits(2);
  const second = digits(2);
  const date = new Date(Date.UTC(year, month - 1, day, hour, minute, second));
  // Date.UTC rolls over out-of-range fields; a round trip catches e.g. February 30th.
  if (
    date.getUTCFullYear() !== year ||
    date.getUTCMonth() !== month - 1 ||
    date.getUTCDate() !== day ||
    date.getUTCHours() !== hour ||
    date.getUTCMinutes() !== minute ||
    date.getUTCSeconds() !== second
  ) {
    reader.fail(`${label}: not a valid date`);
  }
  return date;
}

const STRING_TAGS: ReadonlySet<number> = new Set([TAG.UTF8_STRING, TAG.PRINTABLE_STRING, TAG.IA5_STRING]);

// Every peer shares one issuer or a few, so rendered names are kept (bounded) by their bytes.
const renderedNames = new Map<string, string>();
const MAX_RENDERED_NAMES = 64;

/** Renders a Name as `TYPE=value, ...` in certificate order, escaping RFC 4514 specials. */
function readName(parent: DerReader, el: DerElement): string {
  const key = el.buf.toString('latin1', el.start, el.end);
  let text = renderedNames.get(key);
  if (text === undefined) {
    text = renderName(parent, el);
    if (renderedNames.size >= MAX_RENDERED_NAMES) renderedNames.clear();
    renderedNames.set(key, text);
  }
  return text;
}

function renderName(parent: DerReader, el: DerElement): string {
  const name = parent.child(el, 'Name');
  const parts: string[] = [];
  while (!name.done) {
    const rdn = name.child(name.expect(TAG.SET, 'RelativeDistinguishedName'), 'RelativeDistinguishedName');
    const atvs: string[] = [];
    while (!rdn.done) {
      const atv = rdn.child(rdn.expect(TAG.SEQUENCE, 'AttributeTypeAndValue'), 'AttributeTypeAndValue');
      const typeEl = atv.expect(TAG.OID, 'type');
      const valueEl = atv.next('value');
      atv.end('AttributeTypeAndValue');
      const type = ATTRIBUTE_NAMES.get(typeEl.value.toString('latin1')) ?? decodeOid(atv, typeEl.value, 'type');
      let text: string;
      if (STRING_TAGS.has(valueEl.tag)) {
        try {
          text = utf8.decode(valueEl.value).replace(/[,+"\\<>;=]/g, (c) => `\\${c}`);
        } catch {
          text = `#${valueEl.raw.toString('hex')}`;
        }
      } else {
        text = `#${valueEl.raw.toString('hex')}`;
      }
      atvs.push(`${type}=${text}`);
    }
    parts.push(atvs.join('+'));
  }
  return parts.join(', ');
}
