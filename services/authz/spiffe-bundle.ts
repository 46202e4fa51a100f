// One trust domain's SPIFFE bundle (a JWK Set with spiffe_sequence and spiffe_refresh_hint), parsed strictly.
import { X509Certificate, createPublicKey, type JsonWebKey } from 'node:crypto';
import { TwokeyError } from './errors.ts';
import { SpiffeId } from './spiffe-id.ts';

/** A bundle larger than this is refused before it is parsed (a few dozen roots fit easily). */
export const MAX_BUNDLE_BYTES = 128 * 1024;
/** At most this many keys; more is not a bundle but an attempt to make parsing expensive. */
const MAX_KEYS = 64;
// JWK members that hold private key material (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;

function invalid(trustDomain: string, why: string, cause?: unknown): TwokeyError {
  return new TwokeyError('ERR_BUNDLE_INVALID', `SPIFFE bundle of trust domain "${trustDomain}" refused: ${why}`, cause === undefined ? undefined : { cause });
}

/**
 * The X.509 authorities of one trust domain, as its SPIFFE bundle publishes them. Built only by
 * parse() (bytes from a file or a bundle endpoint) or fromCertificates() (our own CA's roots).
 */
export class SpiffeBundle {
  readonly trustDomain: string;
  /** spiffe_sequence; undefined when the publisher set none. */
  readonly sequence: number | undefined;
  /** spiffe_refresh_hint in seconds; undefined when the publisher set none. */
  readonly refreshHintSeconds: number | undefined;
  /** The roots that x509-svid keys carry, in bundle order. */
  readonly x509Authorities: readonly X509Certificate[];

  private constructor(trustDomain: string, sequence: number | undefined, refreshHintSeconds: number | undefined, roots: readonly X509Certificate[]) {
    this.trustDomain = trustDomain;
    this.sequence = sequence;
    this.refreshHintSeconds = refreshHintSeconds;
    this.x509Authorities = Object.freeze([...roots]);
  }

  /**
   * Parses a bundle for `trustDomain` (the trust domain comes from configuration, never from the
   * bytes). Refuses, with ERR_BUNDLE_INVALID naming why: more than MAX_BUNDLE_BYTES, anything not
   * a JSON object with a `keys` array, any key holding private material, an x509-svid key whose
   * x5c is not exactly one CA certificate or whose public members do not match it, a sequence or
   * refresh hint that is not a non-negative safe integer, and a bundle with no X.509 authority.
   * Keys of other uses (jwt-svid) or types are ignored, as the spec says, once checked for
   * private material.
   */
  static parse(bytes: Buffer | string, trustDomain: string): SpiffeBundle {
    if (!SpiffeId.isValidTrustDomain(trustDomain)) throw invalid(trustDomain, 'not a valid trust domain name');
    const size = typeof bytes === 'string' ? Buffer.byteLength(bytes) : bytes.length;
    if (size > MAX_BUNDLE_BYTES) throw invalid(trustDomain, `${size} bytes is more than the ${MAX_BUNDLE_BYTES} allowed`);
    let doc: unknown;
    try {
      doc = JSON.parse(typeof bytes === 'string' ? bytes : new TextDecoder('utf-8', { fatal: true }).decode(bytes));
    } catch (err) {
      throw invalid(trustDomain, 'not JSON (a SPIFFE bundle is a JWK Set)', err);
    }
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw invalid(trustDomain, 'not a JSON object');
    const set = doc as Record<string, unknown>;
    const sequence = optionalInteger(set['spiffe_sequence'], 'spiffe_sequence', trustDomain);
    const hint = optionalInteger(set['spiffe_refresh_hint'], 'spiffe_refresh_hint', trustDomain);
    const keys = set['keys'];
    if (!Array.isArray(keys)) throw invalid(trustDomain, '"keys" must be an array');
    if (keys.length > MAX_KEYS) throw invalid(trustDomain, `${keys.length} keys is more than the ${MAX_KEYS} allowed`);
    const roots: X509Certificate[] = [];
    keys.forEach((key: unknown, i) => {
      if (key === null || typeof key !== 'object' || Array.isArray(key)) throw invalid(trustDomain, `keys[${i}] is not an object`);
      const jwk = key as Record<string, unknown>;
      // Checked for every key, whatever its use: a publisher leaking private keys is not to be trusted.
      const leaked = PRIVATE_MEMBERS.filter((m) => m in jwk);
      if (leaked.length > 0) throw invalid(trustDomain, `keys[${i}] holds private key material (${leaked.join(', ')})`);
      if (jwk['use'] !== 'x509-svid') return;
      roots.push(x509Authority(jwk, i, trustDomain));
    });
    if (roots.length === 0) throw invalid(trustDomain, 'no x509-svid key: the bundle would trust nothing');
    return new SpiffeBundle(trustDomain, sequence, hint, roots);
  }

  /** Our own bundle, from our CA certificates. */
  static fromCertificates(trustDomain: string, roots: readonly X509Certificate[], opts: { sequence?: number; refreshHintSeconds?: number } = {}): SpiffeBundle {
    if (roots.length === 0) throw invalid(trustDomain, 'no CA certificate');
    for (const root of roots) if (!root.ca) throw invalid(trustDomain, `${root.subject} is not a CA certificate`);
    return new SpiffeBundle(trustDomain, opts.sequence, opts.refreshHintSeconds, roots);
  }

  /** Whether both hold the same roots in the same order (the sequence aside). */
  sameAuthorities(other: SpiffeBundle): boolean {
    return (
      this.x509Authorities.length === other.x509Authorities.length &&
      this.x509Authorities.every((c, i) => c.raw.equals(other.x509Authorities[i]!.raw))
    );
  }

  /** The roots as PEM, as a TLS context takes them. */
  toPem(): string {
    return this.x509Authorities.map((c) => c.toString()).join('');
  }

  /** The JWK Set the SPIFFE bundle format defines: public members and x5c only. */
  toJSON(): Record<string, unknown> {
    const keys = this.x509Authorities.map((cert) => {
      const jwk = cert.publicKey.export({ format: 'jwk' });
      return { ...jwk, use: 'x509-svid', x5c: [cert.raw.toString('base64')] };
    });
    return {
      keys,
      ...(this.sequence === undefined ? {} : { spiffe_sequence: this.sequence }),
      ...(this.refreshHintSeconds === undefined ? {} : { spiffe_refresh_hint: this.refreshHintSeconds }),
    };
  }

  toString(): string {
    return `${JSON.stringify(this.toJSON(), null, 2)}\n`;
  }
}

function optionalInteger(value: unknown, name: string, trustDomain: string): number | undefined {
  if (value === undefined) return undefined;
  // A sequence beyond 2^53 cannot be compared exactly after JSON.parse: refused rather than rounded.
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw invalid(trustDomain, `"${name}" must be a non-negative integer below 2^53`);
  }
  return value;
}

/** The one CA certificate an x509-svid key carries (X.509-SVID spec §6: x5c holds exactly one). */
function x509Authority(jwk: Record<string, unknown>, i: number, trustDomain: string): X509Certificate {
  const x5c = jwk['x5c'];
  if (!Array.isArray(x5c) || x5c.length !== 1 || typeof x5c[0] !== 'string') {
    throw invalid(trustDomain, `keys[${i}]: an x509-svid key's "x5c" must hold exactly one certificate`);
  }
  // Standard base64 (RFC 7517 §4.7), not base64url.
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(x5c[0])) throw invalid(trustDomain, `keys[${i}]: "x5c" is not base64`);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(Buffer.from(x5c[0], 'base64'));
  } catch (err) {
    throw invalid(trustDomain, `keys[${i}]: "x5c" is not a DER certificate`, err);
  }
  if (!cert.ca) throw invalid(trustDomain, `keys[${i}]: ${cert.subject} is not a CA certificate`);
  // Where the key states its public members they must be the certificate's: otherwise the JWK
  // says one thing and the certificate another, and a reader could be led to trust either.
  if (typeof jwk['kty'] !== 'string') throw invalid(trustDomain, `keys[${i}]: "kty" is required`);
  const members = Object.keys(jwk).filter((m) => !['use', 'x5c', 'kid', 'alg', 'key_ops', 'x5t', 'x5t#S256'].includes(m));
  if (members.length > 1) {
    let stated;
    try {
      stated = createPublicKey({ key: Object.fromEntries(members.map((m) => [m, jwk[m]])) as JsonWebKey, format: 'jwk' });
    } catch (err) {
      throw invalid(trustDomain, `keys[${i}]: its public key members do not form a key`, err);
    }
    if (!stated.equals(cert.publicKey)) throw invalid(trustDomain, `keys[${i}]: its public key is not the key of its x5c certificate`);
  }
  return cert;
}
