// Federated partner trust domains and the ceiling on what each partner's workloads may ever be granted.
import { TwokeyError } from './errors.ts';
import { GrantSet } from './grant.ts';
import { SpiffeId } from './spiffe-id.ts';

/**
 * A SPIFFE ID pattern such as spiffe://partner.example/ns/reports/sa/*: a `*` segment matches
 * exactly one path segment, every other segment matches itself. No partial wildcards, no `**`,
 * no wildcard trust domain: a pattern names one trust domain and a fixed number of segments.
 */
export class SpiffeIdPattern {
  readonly trustDomain: string;
  readonly segments: readonly string[];
  readonly #text: string;

  private constructor(trustDomain: string, segments: readonly string[], text: string) {
    this.trustDomain = trustDomain;
    this.segments = segments;
    this.#text = text;
  }

  static parse(input: unknown): SpiffeIdPattern {
    if (typeof input !== 'string') throw new TwokeyError('ERR_SPIFFE_ID_INVALID', 'invalid SPIFFE ID pattern: not a string');
    const segments = input.replace(/^spiffe:\/\/[^/]*/, '').split('/').slice(1);
    // Each '*' stands for a segment: the rest must make a valid SPIFFE ID with a placeholder there.
    for (const s of segments) {
      if (s.includes('*') && s !== '*') {
        throw new TwokeyError('ERR_SPIFFE_ID_INVALID', `invalid SPIFFE ID pattern ${JSON.stringify(input)}: "*" must be a whole path segment`);
      }
    }
    const id = SpiffeId.parse(input.replaceAll('/*', '/x'));
    if (id.path === '') throw new TwokeyError('ERR_SPIFFE_ID_INVALID', `invalid SPIFFE ID pattern ${JSON.stringify(input)}: it needs a path (workloads, not the whole trust domain)`);
    return new SpiffeIdPattern(id.trustDomain, segments, input);
  }

  matches(id: SpiffeId): boolean {
    if (id.trustDomain !== this.trustDomain) return false;
    const segments = id.path.split('/').slice(1);
    return segments.length === this.segments.length && this.segments.every((s, i) => s === '*' || s === segments[i]);
  }

  /** Whether some SPIFFE ID matches both: overlapping ceilings would leave a workload's ceiling ambiguous. */
  overlaps(other: SpiffeIdPattern): boolean {
    return (
      this.trustDomain === other.trustDomain &&
      this.segments.length === other.segments.length &&
      this.segments.every((s, i) => s === '*' || other.segments[i] === '*' || s === other.segments[i])
    );
  }

  toString(): string {
    return this.#text;
  }

  toJSON(): string {
    return this.#text;
  }
}

/** What our auth may issue a partner workload on a user's behalf (token exchange). */
export interface CeilingDelegation {
  readonly scopes: readonly string[];
  /** Our services such a delegated token may be addressed to. */
  readonly audiences: readonly string[];
  readonly withoutSubjectToken: boolean;
}

/**
 * The most a partner's workloads matching `workloads` may ever do here: the methods (their
 * certificate's grants are intersected with these) and the scopes (of any token they present,
 * and of the tokens our auth issues them).
 */
export class Ceiling {
  readonly workloads: SpiffeIdPattern;
  readonly methods: GrantSet;
  readonly serviceScopes: readonly string[];
  readonly delegation: CeilingDelegation | undefined;
  /** Every scope the ceiling lets a token of these workloads carry here. */
  readonly scopes: ReadonlySet<string>;

  constructor(opts: { workloads: SpiffeIdPattern; methods: GrantSet; serviceScopes?: readonly string[]; delegation?: CeilingDelegation | undefined }) {
    this.workloads = opts.workloads;
    this.methods = opts.methods;
    this.serviceScopes = Object.freeze([...(opts.serviceScopes ?? [])]);
    this.delegation = opts.delegation === undefined || opts.delegation.scopes.length === 0 ? undefined : opts.delegation;
    this.scopes = new Set([...this.serviceScopes, ...(this.delegation?.scopes ?? [])]);
  }

  /** A peer's effective grants: its certificate's, cut down to this ceiling. */
  effectiveGrants(certificateGrants: GrantSet): GrantSet {
    return certificateGrants.intersect(this.methods);
  }

  toString(): string {
    return `ceiling ${this.workloads}`;
  }
}

/** Where a partner's bundle comes from: a file, or a SPIFFE bundle endpoint (SPIFFE Federation §5.2). */
export type BundleSource =
  | { readonly kind: 'file'; readonly path: string }
  | { readonly kind: 'https_web'; readonly url: string; readonly caFile?: string | undefined; readonly initialFile?: string | undefined }
  | { readonly kind: 'https_spiffe'; readonly url: string; readonly endpointSpiffeId: SpiffeId; readonly initialFile: string };

export class PartnerPolicy {
  readonly trustDomain: string;
  readonly bundle: BundleSource;
  readonly ceilings: readonly Ceiling[];

  constructor(trustDomain: string, bundle: BundleSource, ceilings: readonly Ceiling[]) {
    if (!SpiffeId.isValidTrustDomain(trustDomain)) throw new TwokeyError('ERR_CONFIG_INVALID', `invalid partner trust domain ${JSON.stringify(trustDomain)}`);
    ceilings.forEach((c, i) => {
      if (c.workloads.trustDomain !== trustDomain) {
        throw new TwokeyError('ERR_CONFIG_INVALID', `ceiling ${c.workloads} is outside the partner trust domain ${trustDomain}`);
      }
      const clash = ceilings.slice(0, i).find((o) => o.workloads.overlaps(c.workloads));
      if (clash !== undefined) {
        throw new TwokeyError('ERR_CONFIG_INVALID', `ceilings ${clash.workloads} and ${c.workloads} overlap: a workload must fall under one ceiling at most`);
      }
    });
    this.trustDomain = trustDomain;
    this.bundle = bundle;
    this.ceilings = Object.freeze([...ceilings]);
  }

  /** The one ceiling whose pattern matches this workload, if any (patterns never overlap). */
  ceilingFor(id: SpiffeId): Ceiling | undefined {
    return this.ceilings.find((c) => c.workloads.matches(id));
  }
}

/** Our trust domain and the partners we federate with. */
export class FederationPolicy {
  readonly ownTrustDomain: string;
  readonly #partners: ReadonlyMap<string, PartnerPolicy>;
  readonly #ceilings = new WeakMap<SpiffeId, Ceiling | null>();

  constructor(ownTrustDomain: string, partners: readonly PartnerPolicy[]) {
    const byDomain = new Map<string, PartnerPolicy>();
    for (const p of partners) {
      if (p.trustDomain === ownTrustDomain) throw new TwokeyError('ERR_CONFIG_INVALID', `a partner cannot have our own trust domain ${ownTrustDomain}`);
      if (byDomain.has(p.trustDomain)) throw new TwokeyError('ERR_CONFIG_INVALID', `partner trust domain ${p.trustDomain} is listed twice`);
      byDomain.set(p.trustDomain, p);
    }
    this.ownTrustDomain = ownTrustDomain;
    this.#partners = byDomain;
  }

  get partners(): PartnerPolicy[] {
    return [...this.#partners.values()];
  }

  partner(trustDomain: string): PartnerPolicy | undefined {
    return this.#partners.get(trustDomain);
  }

  /** The ceiling that applies to a partner workload; undefined for ours and for unknown ones. */
  ceilingFor(id: SpiffeId): Ceiling | undefined {
    // Asked on every call of a partner's connection, whose SpiffeId object lives as long as it does.
    let found = this.#ceilings.get(id);
    if (found === undefined) {
      found = this.#partners.get(id.trustDomain)?.ceilingFor(id) ?? null;
      this.#ceilings.set(id, found);
    }
    return found ?? undefined;
  }
}
