// The roots of each trust domain we accept, kept apart: a chain is verified only against the bundle its own SPIFFE ID names.
import { X509Certificate, createHash } from 'node:crypto';
import { TwokeyError } from './errors.ts';
import { chainsToBundle } from './svid-source.ts';
import type { SpiffeId } from './spiffe-id.ts';

/**
 * An immutable map from trust domain to its roots. A TLS stack is handed every root at once
 * (allRootsPem) and so would accept a partner-signed certificate naming our trust domain; the
 * chain is therefore verified again here against the one bundle of the trust domain the leaf's
 * SPIFFE ID names, never against another's and never against the union.
 */
export class TrustBundleSet {
  readonly ownTrustDomain: string;
  readonly #bundles: ReadonlyMap<string, readonly X509Certificate[]>;

  private constructor(ownTrustDomain: string, bundles: ReadonlyMap<string, readonly X509Certificate[]>) {
    this.ownTrustDomain = ownTrustDomain;
    this.#bundles = bundles;
  }

  /** Our own roots; partners' are added with withBundle(). */
  static of(ownTrustDomain: string, ownRoots: readonly X509Certificate[]): TrustBundleSet {
    return new TrustBundleSet(ownTrustDomain, new Map()).withBundle(ownTrustDomain, ownRoots);
  }

  /**
   * A new set where `trustDomain`'s roots are replaced (or added); every root must be a CA, and
   * none may be a root another trust domain here already holds (ERR_BUNDLE_INVALID).
   */
  withBundle(trustDomain: string, roots: readonly X509Certificate[]): TrustBundleSet {
    for (const root of roots) {
      if (!root.ca) throw new TwokeyError('ERR_CONFIG_INVALID', `trust bundle of ${trustDomain} holds a certificate that is not a CA (${root.subject})`);
    }
    const shared = sharedRootError(trustDomain, roots, this.#bundles, this.ownTrustDomain);
    if (shared !== null) throw shared;
    const next = new Map(this.#bundles);
    next.set(trustDomain, Object.freeze([...roots]));
    return new TrustBundleSet(this.ownTrustDomain, next);
  }

  get trustDomains(): string[] {
    return [...this.#bundles.keys()];
  }

  bundleOf(trustDomain: string): readonly X509Certificate[] | undefined {
    return this.#bundles.get(trustDomain);
  }

  /** Every root of every trust domain, for the TLS handshake only (which then cannot tell them apart). */
  allRootsPem(): string {
    const seen = new Set<string>();
    let pem = '';
    for (const roots of this.#bundles.values()) {
      for (const root of roots) {
        if (seen.has(root.fingerprint256)) continue;
        seen.add(root.fingerprint256);
        pem += root.toString();
      }
    }
    return pem;
  }

  /**
   * Null when the chain (leaf first) verifies against the bundle of the trust domain `spiffeId`
   * names; otherwise the error to deny with: ERR_PEER_TRUST_DOMAIN when we hold no bundle for that
   * trust domain or the chain leads to another trust domain's roots, ERR_PEER_CERT_INVALID when
   * it leads to no root at all (a CA removed from the bundle: the connection must end).
   */
  verify(chain: readonly X509Certificate[], spiffeId: SpiffeId): TwokeyError | null {
    const trustDomain = spiffeId.trustDomain;
    const roots = this.#bundles.get(trustDomain);
    if (roots === undefined) {
      return new TwokeyError('ERR_PEER_TRUST_DOMAIN', `peer ${spiffeId} names trust domain "${trustDomain}", which is neither ours nor a federated partner's`);
    }
    if (chainsToBundle(chain, roots)) return null;
    for (const [other, otherRoots] of this.#bundles) {
      if (other !== trustDomain && chainsToBundle(chain, otherRoots)) {
        return new TwokeyError(
          'ERR_PEER_TRUST_DOMAIN',
          `peer certificate names ${spiffeId} but was issued under trust domain "${other}"'s bundle: only "${trustDomain}"'s own bundle may vouch for it`,
        );
      }
    }
    return new TwokeyError('ERR_PEER_CERT_INVALID', `peer certificate of ${spiffeId} does not chain to the bundle of trust domain "${trustDomain}" (its CA is not, or no longer, trusted)`);
  }
}

/** A root's authority: its public key (SPKI, SHA-256). Chains are checked by issuer name and signature, so a certificate re-wrapping a CA's key under its name vouches for everything that CA signed. */
export function rootKeyId(root: X509Certificate): string {
  return createHash('sha256').update(root.publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
}

/**
 * Null when none of `trustDomain`'s roots is held by another trust domain in `held`; otherwise
 * the ERR_BUNDLE_INVALID to refuse the bundle with. One root vouches for one trust domain only:
 * a partner listing our root would make every certificate our CA signs for the partner's name
 * (and our CA signs whatever SPIFFE ID it is asked to) acceptable as the partner's workload;
 * listing another partner's root would let that partner speak for it.
 */
export function sharedRootError(
  trustDomain: string,
  roots: readonly X509Certificate[],
  held: Iterable<readonly [string, readonly X509Certificate[]]>,
  ownTrustDomain: string,
): TwokeyError | null {
  const wanted = new Map(roots.map((r) => [rootKeyId(r), r] as const));
  for (const [holder, holderRoots] of held) {
    if (holder === trustDomain) continue;
    for (const other of holderRoots) {
      const root = wanted.get(rootKeyId(other));
      if (root === undefined) continue;
      const whose = holder === ownTrustDomain ? `our own trust domain "${holder}"` : `trust domain "${holder}"`;
      return new TwokeyError(
        'ERR_BUNDLE_INVALID',
        `trust bundle of "${trustDomain}" refused: it holds the root ${root.subject.replace(/\n/g, ', ')} (key sha256 ${rootKeyId(root).slice(0, 16)}), which is already a root of ${whose}; one root may vouch for one trust domain only`,
      );
    }
  }
  return null;
}
