// Method grants carried in workload certificates: exact gRPC paths or a whole service, nothing else.
import { TwokeyError } from './errors.ts';

const MAX_GRANT_LENGTH = 512;
// '/pkg.Service/Method' with a dotted package; identifiers as protobuf allows them.
const IDENT = '[A-Za-z_][A-Za-z0-9_]*';
const GRANT_SHAPE = new RegExp(`^/(${IDENT}(?:\\.${IDENT})*)/(${IDENT}|\\*)$`);

/** One grant: '/pkg.Service/Method', or '/pkg.Service/*' for every method of that service. */
export class MethodGrant {
  /** Fully qualified service name, e.g. 'twokey.images.v1.ImageStore'. */
  readonly service: string;
  /** Method name, or '*' for the whole service. */
  readonly method: string;
  readonly text: string;

  private constructor(service: string, method: string, text: string) {
    this.service = service;
    this.method = method;
    this.text = text;
  }

  static parse(input: unknown): MethodGrant {
    if (typeof input !== 'string') throw new TwokeyError('ERR_GRANT_INVALID', `invalid grant: not a string`);
    const shown = JSON.stringify(input.length > 80 ? `${input.slice(0, 80)}...` : input);
    if (input.length > MAX_GRANT_LENGTH) {
      throw new TwokeyError('ERR_GRANT_INVALID', `invalid grant ${shown}: longer than ${MAX_GRANT_LENGTH} characters`);
    }
    const match = GRANT_SHAPE.exec(input);
    if (match === null) {
      throw new TwokeyError(
        'ERR_GRANT_INVALID',
        `invalid grant ${shown}: must be an exact gRPC path "/package.Service/Method" or "/package.Service/*"`,
      );
    }
    // A service needs a package: '/Service/Method' would be ambiguous across teams.
    if (!match[1]!.includes('.')) {
      throw new TwokeyError('ERR_GRANT_INVALID', `invalid grant ${shown}: service must be package-qualified`);
    }
    return new MethodGrant(match[1]!, match[2]!, input);
  }

  get isWildcard(): boolean {
    return this.method === '*';
  }

  toString(): string {
    return this.text;
  }
}

/**
 * The grants of one certificate, indexed so a lookup costs one or two hash probes whatever the
 * number of grants.
 */
export class GrantSet {
  readonly grants: readonly MethodGrant[];
  readonly #exact: ReadonlySet<string>;
  readonly #services: ReadonlySet<string>;

  private constructor(grants: readonly MethodGrant[]) {
    this.grants = grants;
    this.#exact = new Set(grants.filter((g) => !g.isWildcard).map((g) => g.text));
    this.#services = new Set(grants.filter((g) => g.isWildcard).map((g) => g.service));
  }

  static parse(inputs: readonly unknown[]): GrantSet {
    const grants = inputs.map((input) => MethodGrant.parse(input));
    const seen = new Set<string>();
    for (const grant of grants) {
      if (seen.has(grant.text)) throw new TwokeyError('ERR_GRANT_INVALID', `duplicate grant ${JSON.stringify(grant.text)}`);
      seen.add(grant.text);
    }
    return new GrantSet(grants);
  }

  static empty(): GrantSet {
    return new GrantSet([]);
  }

  /**
   * Whether a gRPC method path is granted. The path must itself be well-formed: case-sensitive,
   * no prefixes, and a literal '*' in the path never matches anything.
   */
  allows(methodPath: string): boolean {
    if (this.#exact.has(methodPath)) return true;
    if (this.#services.size === 0) return false;
    const match = GRANT_SHAPE.exec(methodPath);
    if (match === null || match[2] === '*') return false;
    return this.#services.has(match[1]!);
  }

  /**
   * The grants both sets hold: a method is allowed by the result exactly when both allow it. An
   * exact grant survives where the other set holds it or its whole service; a service wildcard
   * survives only where both hold it.
   */
  intersect(other: GrantSet): GrantSet {
    const kept = new Map<string, MethodGrant>();
    for (const a of this.grants) {
      for (const b of other.grants) {
        if (a.service !== b.service) continue;
        if (a.isWildcard) {
          kept.set(b.text, b);
        } else if (b.isWildcard || a.method === b.method) {
          kept.set(a.text, a);
        }
      }
    }
    return new GrantSet([...kept.values()]);
  }

  get size(): number {
    return this.grants.length;
  }

  toStrings(): string[] {
    return this.grants.map((g) => g.text);
  }
}
