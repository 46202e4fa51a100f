// A minimal strict DER reader and the OID codec: only the subset X.509 needs, rejecting BER.
import { TwokeyError, type ErrorCode } from './errors.ts';

/** Universal tags and the context-specific tags X.509 uses, as full identifier octets. */
export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Context-specific tag numbers: [n] primitive is 0x80|n, [n] constructed is 0xa0|n. */
export const contextTag = (n: number, constructed: boolean): number => (constructed ? 0xa0 : 0x80) | n;

/**
 * One decoded TLV, held as offsets into the original buffer: views are only cut for the few
 * elements whose bytes are needed, which keeps a certificate parse allocation-light.
 */
export class DerElement {
  constructor(
    readonly buf: Buffer,
    readonly tag: number,
    readonly start: number,
    readonly valueStart: number,
    readonly end: number,
  ) {}

  get value(): Buffer {
    return this.buf.subarray(this.valueStart, this.end);
  }

  /** The whole TLV (header and value), e.g. for signature checks over the TBS bytes. */
  get raw(): Buffer {
    return this.buf.subarray(this.start, this.end);
  }

  get length(): number {
    return this.end - this.valueStart;
  }

  /** The value octets as a latin1 string: a cheap exact-match key for OIDs. */
  get key(): string {
    return this.buf.toString('latin1', this.valueStart, this.end);
  }

  /** Whether the whole TLV equals another's byte for byte. */
  sameAs(other: DerElement): boolean {
    return this.buf.compare(other.buf, other.start, other.end, this.start, this.end) === 0;
  }
}

/**
 * Reads consecutive TLVs from a range of a buffer. Rejects indefinite lengths, non-minimal
 * length encodings, high tag numbers and any element running past its container.
 */
export class DerReader {
  private readonly buf: Buffer;
  private pos: number;
  private readonly limit: number;
  private readonly code: ErrorCode;
  private readonly what: string;

  constructor(buf: Buffer, code: ErrorCode, what: string, start = 0, limit = buf.length) {
    this.buf = buf;
    this.pos = start;
    this.limit = limit;
    this.code = code;
    this.what = what;
  }

  // The caller's code keeps a bad peer certificate and a bad CSR distinguishable.
  fail(why: string): never {
    throw new TwokeyError(this.code, `${this.what}: ${why}`);
  }

  get done(): boolean {
    return this.pos >= this.limit;
  }

  /** The next element's tag without consuming it, or -1 at the end. */
  peekTag(): number {
    return this.pos >= this.limit ? -1 : this.buf[this.pos]!;
  }

  next(label: string): DerElement {
    const buf = this.buf;
    const limit = this.limit;
    const start = this.pos;
    if (start >= limit) this.fail(`${label}: missing`);
    const tag = buf[start]!;
    if ((tag & 0x1f) === 0x1f) this.fail(`${label}: high tag numbers are not used in X.509`);
    if (start + 1 >= limit) this.fail(`${label}: truncated length`);
    let length = buf[start + 1]!;
    let headerLength = 2;
    if (length & 0x80) {
      const count = length & 0x7f;
      if (count === 0) this.fail(`${label}: indefinite length is not DER`);
      if (count > 4) this.fail(`${label}: length too large`);
      if (start + 2 + count > limit) this.fail(`${label}: truncated length`);
      if (buf[start + 2] === 0) this.fail(`${label}: non-minimal length encoding is not DER`);
      length = 0;
      for (let i = 0; i < count; i++) length = length * 256 + buf[start + 2 + i]!;
      if (length < 0x80) this.fail(`${label}: non-minimal length encoding is not DER`);
      headerLength = 2 + count;
    }
    const end = start + headerLength + length;
    if (end > limit) this.fail(`${label}: runs past the end of its container`);
    this.pos = end;
    return new DerElement(buf, tag, start, start + headerLength, end);
  }

  /** The next element, which must carry `tag`. */
  expect(tag: number, label: string): DerElement {
    const el = this.next(label);
    if (el.tag !== tag) this.fail(`${label}: expected tag 0x${hex2(tag)}, found 0x${hex2(el.tag)}`);
    return el;
  }

  /** The next element if it carries `tag`, else nothing (for OPTIONAL and DEFAULT fields). */
  optional(tag: number, label: string): DerElement | undefined {
    return this.peekTag() === tag ? this.next(label) : undefined;
  }

  /** A reader over the contents of a primitive element holding DER (an OCTET STRING's value). */
  static within(el: DerElement, code: ErrorCode, what: string): DerReader {
    return new DerReader(el.buf, code, what, el.valueStart, el.end);
  }

  /** A reader over the contents of a constructed element. */
  child(el: DerElement, label: string): DerReader {
    if ((el.tag & 0x20) === 0) this.fail(`${label}: expected a constructed element`);
    return new DerReader(el.buf, this.code, `${this.what}: ${label}`, el.valueStart, el.end);
  }

  end(label: string): void {
    if (this.pos < this.limit) this.fail(`${label}: unexpected trailing data`);
  }
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/** A DER BOOLEAN's value: exactly one octet, 0x00 or 0xff. */
export function readBoolean(reader: DerReader, el: DerElement, label: string): boolean {
  const b = el.buf[el.valueStart];
  if (el.length !== 1 || (b !== 0x00 && b !== 0xff)) reader.fail(`${label}: BOOLEAN must be a single 0x00 or 0xff octet`);
  return b === 0xff;
}

/** Checks a DER INTEGER's minimal two's-complement encoding; returns whether it is negative. */
export function checkInteger(reader: DerReader, el: DerElement, label: string): { negative: boolean } {
  const v = el.value;
  if (v.length === 0) reader.fail(`${label}: empty INTEGER`);
  if (v.length > 1 && ((v[0] === 0x00 && (v[1]! & 0x80) === 0) || (v[0] === 0xff && (v[1]! & 0x80) !== 0))) {
    reader.fail(`${label}: non-minimal INTEGER encoding is not DER`);
  }
  return { negative: (v[0]! & 0x80) !== 0 };
}

/** A small non-negative INTEGER (versions, path lengths). */
export function readSmallInteger(reader: DerReader, el: DerElement, label: string): number {
  const { negative } = checkInteger(reader, el, label);
  if (negative || el.value.length > 4) reader.fail(`${label}: out of range`);
  let n = 0;
  for (const b of el.value) n = n * 256 + b;
  return n;
}

/** A DER BIT STRING with no unused bits (keys, signatures), as its bytes. */
export function readBitStringBytes(reader: DerReader, el: DerElement, label: string): Buffer {
  if (el.value.length === 0 || el.value[0] !== 0) reader.fail(`${label}: BIT STRING must have no unused bits`);
  return el.value.subarray(1);
}

/**
 * A named-bit BIT STRING (keyUsage) as a bit mask where bit 0 is the first named bit.
 * DER requires trailing zero bits to be trimmed, so the last octet's lowest used bit is set.
 */
export function readNamedBits(reader: DerReader, el: DerElement, label: string): number {
  const v = el.value;
  if (v.length === 0) reader.fail(`${label}: empty BIT STRING`);
  const unused = v[0]!;
  if (unused > 7 || (v.length === 1 && unused !== 0)) reader.fail(`${label}: bad unused-bit count`);
  if (v.length > 5) reader.fail(`${label}: too many bits`);
  if (v.length > 1) {
    const last = v[v.length - 1]!;
    if ((last & ((1 << unused) - 1)) !== 0) reader.fail(`${label}: unused bits must be zero`);
    if ((last & (1 << unused)) === 0) reader.fail(`${label}: trailing zero bits must be trimmed in DER`);
  }
  let mask = 0;
  for (let i = 1; i < v.length; i++) {
    for (let bit = 0; bit < 8; bit++) {
      if (v[i]! & (0x80 >> bit)) mask += 2 ** ((i - 1) * 8 + bit);
    }
  }
  return mask;
}

const MAX_ARC = 0xffffffff;
const DOTTED = /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$/;

/**
 * Encodes a dotted OID (the contents octets only). Every arc must fit in 32 bits: widely used
 * parsers refuse larger arcs, so twokey never writes one.
 */
export function encodeOid(dotted: string): Buffer {
  if (!DOTTED.test(dotted)) throw new TwokeyError('ERR_CONFIG_INVALID', `invalid OID ${JSON.stringify(dotted)}: must be dotted decimal with at least two arcs`);
  const arcs = dotted.split('.').map(Number);
  for (const arc of arcs) {
    if (!Number.isSafeInteger(arc) || arc > MAX_ARC) {
      throw new TwokeyError('ERR_CONFIG_INVALID', `invalid OID ${JSON.stringify(dotted)}: every arc must fit in 32 bits`);
    }
  }
  const [first, second] = [arcs[0]!, arcs[1]!];
  if (first > 2 || (first < 2 && second > 39)) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `invalid OID ${JSON.stringify(dotted)}: first arcs out of range`);
  }
  const subids = [first * 40 + second, ...arcs.slice(2)];
  const out: number[] = [];
  for (const subid of subids) {
    const chunk: number[] = [];
    let v = subid;
    do {
      chunk.unshift(v % 128);
      v = Math.floor(v / 128);
    } while (v > 0);
    for (let i = 0; i < chunk.length - 1; i++) chunk[i]! |= 0x80;
    out.push(...chunk);
  }
  return Buffer.from(out);
}

/**
 * Rejects an OID whose encoding is not canonical (a subidentifier padded with 0x80, or a
 * truncated last one), so one OID always has one byte form and byte comparison is exact.
 */
export function checkOidEncoding(reader: DerReader, el: DerElement, label: string): void {
  const buf = el.buf;
  if (el.length === 0) reader.fail(`${label}: empty OID`);
  let startOfSubid = true;
  for (let i = el.valueStart; i < el.end; i++) {
    const b = buf[i]!;
    if (startOfSubid && b === 0x80) reader.fail(`${label}: non-minimal OID encoding`);
    startOfSubid = (b & 0x80) === 0;
  }
  if (!startOfSubid) reader.fail(`${label}: truncated OID`);
}

/** Decodes OID contents octets to dotted form, rejecting non-minimal subidentifiers. */
export function decodeOid(reader: DerReader, value: Buffer, label: string): string {
  if (value.length === 0) reader.fail(`${label}: empty OID`);
  const subids: bigint[] = [];
  let acc = 0n;
  let startOfSubid = true;
  for (const b of value) {
    if (startOfSubid && b === 0x80) reader.fail(`${label}: non-minimal OID encoding`);
    acc = (acc << 7n) | BigInt(b & 0x7f);
    startOfSubid = (b & 0x80) === 0;
    if (startOfSubid) {
      subids.push(acc);
      acc = 0n;
    }
  }
  if (!startOfSubid) reader.fail(`${label}: truncated OID`);
  const head = subids[0]!;
  const first = head < 40n ? 0n : head < 80n ? 1n : 2n;
  return [first, head - first * 40n, ...subids.slice(1)].join('.');
}
