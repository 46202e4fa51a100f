// SPIFFE ID value type: the only way to hold one is through the strict parser below.
import { TwokeyError } from './errors.ts';

const MAX_ID_LENGTH = 2048;
const MAX_TRUST_DOMAIN_LENGTH = 255;
// SPIFFE ID spec §2.1 and §2.2: the only characters allowed, and no percent-encoding.
const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[A-Za-z0-9._-]+$/;
const SCHEME = 'spiffe://';

function invalid(input: string, why: string): TwokeyError {
  const shown = input.length > 80 ? `${input.slice(0, 80)}...` : input;
  return new TwokeyError('ERR_SPIFFE_ID_INVALID', `invalid SPIFFE ID ${JSON.stringify(shown)}: ${why}`);
}

export class SpiffeId {
  readonly trustDomain: string;
  /** The path, '' or starting with '/', e.g. '/ns/prod/sa/gateway'. */
  readonly path: string;
  readonly #text: string;

  private constructor(trustDomain: string, path: string) {
    this.trustDomain = trustDomain;
    this.path = path;
    this.#text = `${SCHEME}${trustDomain}${path}`;
  }

  /** Parses a SPIFFE ID, rejecting everything the SPIFFE ID specification forbids. */
  static parse(input: unknown): SpiffeId {
    if (typeof input !== 'string') throw invalid(String(input), 'not a string');
    if (input.length === 0) throw invalid(input, 'empty');
    if (input.length > MAX_ID_LENGTH) throw invalid(input, `longer than ${MAX_ID_LENGTH} bytes`);
    if (!input.startsWith(SCHEME)) throw invalid(input, 'scheme must be "spiffe://" (lowercase)');
    const rest = input.slice(SCHEME.length);
    const slash = rest.indexOf('/');
    const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
    const path = slash === -1 ? '' : rest.slice(slash);
    SpiffeId.checkTrustDomain(trustDomain, input);
    if (path !== '') {
      // Every segment between slashes must be non-empty, not '.' or '..', and plain characters:
      // this also rules out a trailing slash, '?', '#', '%', '@' and ':'.
      for (const segment of path.slice(1).split('/')) {
        if (segment === '') throw invalid(input, 'path has an empty segment or a trailing slash');
        if (segment === '.' || segment === '..') throw invalid(input, 'path has a dot segment');
        if (!SEGMENT_CHARS.test(segment)) {
          throw invalid(input, `path segment ${JSON.stringify(segment)} has a character outside [A-Za-z0-9._-]`);
        }
      }
    }
    return new SpiffeId(trustDomain, path);
  }

  /** The workload ID Kubernetes-style deployments use: spiffe://TD/ns/NS/sa/SA. */
  static forServiceAccount(trustDomain: string, namespace: string, serviceAccount: string): SpiffeId {
    const id = `${SCHEME}${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
    // Each part must be one segment, or 'a/sa/b' as a namespace would forge another workload's path.
    for (const part of [namespace, serviceAccount]) {
      if (part.includes('/')) throw invalid(id, `namespace and service account must be single path segments, got ${JSON.stringify(part)}`);
    }
    return SpiffeId.parse(id);
  }

  /** The trust domain's own ID (no path), used as the mesh-wide token audience. */
  static forTrustDomain(trustDomain: string): SpiffeId {
    return SpiffeId.parse(`${SCHEME}${trustDomain}`);
  }

  static isValidTrustDomain(trustDomain: string): boolean {
    try {
      SpiffeId.checkTrustDomain(trustDomain, `${SCHEME}${trustDomain}`);
      return true;
    } catch {
      return false;
    }
  }

  private static checkTrustDomain(trustDomain: string, input: string): void {
    if (trustDomain === '') throw invalid(input, 'trust domain is empty');
    if (trustDomain.length > MAX_TRUST_DOMAIN_LENGTH) {
      throw invalid(input, `trust domain longer than ${MAX_TRUST_DOMAIN_LENGTH} characters`);
    }
    if (!TRUST_DOMAIN_CHARS.test(trustDomain)) {
      throw invalid(input, 'trust domain may hold only lowercase letters, digits, ".", "-" and "_" (no port, userinfo or percent-encoding)');
    }
  }

  get trustDomainId(): SpiffeId {
    return new SpiffeId(this.trustDomain, '');
  }

  memberOf(trustDomain: string): boolean {
    return this.trustDomain === trustDomain;
  }

  equals(other: SpiffeId): boolean {
    return this.#text === other.#text;
  }

  toString(): string {
    return this.#text;
  }

  toJSON(): string {
    return this.#text;
  }
}
