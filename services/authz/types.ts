// The value types of an authorization decision, shared by the decision, the verifiers, the log and handlers.
import type { status } from '@grpc/grpc-js';
import type { ErrorCode, TwokeyError } from './errors.ts';
import type { FederationPolicy } from './federation.ts';
import type { GrantSet } from './grant.ts';
import type { MethodRule } from './method-catalog.ts';
import type { SpiffeId } from './spiffe-id.ts';

/** The caller's workload identity, as read from its verified certificate (an Svid satisfies it). */
export interface PeerIdentity {
  readonly spiffeId: SpiffeId;
  readonly serialHex: string;
  readonly grants: GrantSet;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** base64url SHA-256 of the certificate DER (x5t#S256). */
  readonly thumbprint: string;
  /**
   * Where the grants came from: the certificate (always, for a peer read from TLS or a forwarded
   * certificate), or the registry entry of a SPIFFE ID a proxy vouched for without a certificate
   * (an authorizer behind Istio). Such a peer has no thumbprint: tokens bind to it by SPIFFE ID only.
   */
  readonly grantsFrom?: 'certificate' | 'registry' | undefined;
  /**
   * The trust domain whose own bundle the chain was verified against (TrustBundleSet.verify), set
   * where the TLS stack held several trust domains' roots. With federation configured, decide()
   * refuses a peer unless this is the trust domain its SPIFFE ID names.
   */
  readonly verifiedTrustDomain?: string | undefined;
}

export type TokenKind = 'user' | 'delegated' | 'service';

/** A token whose signature and claims verified. Built only by the token verifier. */
export interface VerifiedToken {
  readonly kind: TokenKind;
  readonly subject: string;
  readonly issuer: string;
  readonly audience: string;
  readonly jti: string;
  readonly scopes: ReadonlySet<string>;
  /** Actor SPIFFE IDs, the presenting actor first (act.sub, then act.act.sub, ...). Empty unless delegated. */
  readonly actorChain: readonly string[];
  /** cnf.x5t#S256: the certificate the token is bound to, when bound. */
  readonly boundThumbprint: string | undefined;
  readonly clientId: string | undefined;
  /** Epoch ms from which the token is usable and until which it is, both with the leeway applied. */
  readonly validFromMs: number;
  readonly validUntilMs: number;
  /** The kid of the key that signed it, and its iat (epoch seconds): what revocation matches on. */
  readonly kid?: string | undefined;
  readonly issuedAtSeconds?: number | undefined;
}

export type PeerResult =
  | { readonly ok: true; readonly identity: PeerIdentity }
  | { readonly ok: false; readonly error: TwokeyError };

export type TokenResult =
  | { readonly ok: true; readonly token: VerifiedToken; readonly raw: string }
  | { readonly ok: false; readonly error: TwokeyError };

/** The checks of DESIGN.md in the order they run; the first failure decides. */
export const CHECKS = ['peer', 'rule', 'grant', 'token', 'revocation', 'binding', 'scope'] as const;
export type CheckName = (typeof CHECKS)[number];
export type CheckOutcome = 'pass' | 'fail' | 'skip';

export interface CheckResult {
  readonly check: CheckName;
  readonly outcome: CheckOutcome;
  readonly detail: string;
}

export interface DecisionInput {
  readonly peer: PeerResult;
  /** Absent when the caller has not read the token yet (see decidePeer). */
  readonly token?: TokenResult | undefined;
  readonly method: string;
  readonly rule: MethodRule | undefined;
  /**
   * False when the server's method catalog does not define the method at all (its proto was not
   * given to the server), as opposed to defining it without a rule; the denial is the same.
   */
  readonly methodKnown?: boolean | undefined;
  /** Epoch ms. */
  readonly now: number;
  readonly trustDomain: string;
  /** Absent: this server does not enforce revocation. */
  readonly revocation?: RevocationView | undefined;
  /** The partner trust domains this server federates with; absent, only our own is accepted. */
  readonly federation?: FederationPolicy | undefined;
}

/** The ceiling a partner peer's decision applied, named in the decision log. */
export interface AppliedCeiling {
  readonly trustDomain: string;
  readonly workloads: string;
}

export interface Decision {
  readonly allow: boolean;
  /** The first failing check, or null when allowed. */
  readonly failedCheck: CheckName | null;
  readonly errorCode: ErrorCode | null;
  /** The gRPC status the call ends with when denied (OK when allowed). */
  readonly code: status;
  readonly reason: string;
  readonly checks: readonly CheckResult[];
  /**
   * The verified token, when one was read and verified (for the handler and the log). For a
   * partner peer its scopes are already cut down to the ceiling's.
   */
  readonly token: VerifiedToken | undefined;
  /** Set when the peer is a federated partner's workload: its trust domain and the ceiling applied. */
  readonly ceiling?: AppliedCeiling | undefined;
}

/** What the set revokes. Times are epoch seconds. */
export interface RevocationEntries {
  /** Subject (username or SPIFFE ID) -> disabled since: tokens issued at or before it are refused. */
  readonly disabledSubjects: ReadonlyMap<string, number>;
  /** Token id -> the token's exp, after which the entry is dropped. */
  readonly jtis: ReadonlyMap<string, number>;
  /** Upper-case hex certificate serial (no leading zeros) -> the certificate's notAfter. */
  readonly serials: ReadonlyMap<string, number>;
  /** Withdrawn signing key ids: every token they signed is refused. */
  readonly kids: ReadonlySet<string>;
}

/** A verified (or freshly built) revocation set. */
export interface RevocationSet extends RevocationEntries {
  /** Increases with every change of entries; a heartbeat re-signs the same seq with a later issuedAt. */
  readonly seq: number;
  /** Epoch ms at which auth signed it: how fresh the holder's knowledge is. */
  readonly issuedAtMs: number;
  /** SHA-256 of the entries' canonical form: equal seq must mean equal content. */
  readonly digest: string;
  /** The kid that signed it, once verified. */
  readonly signedBy?: string | undefined;
  /**
   * The kids auth published in its JWK Set when it signed this set (not part of the entries or
   * their digest: a rotation changes them without a new seq). A holder that misses one refetches
   * the JWK Set at once, so a rotated-in key is held before tokens signed with it arrive.
   */
  readonly publishedKids?: readonly string[] | undefined;
}

/**
 * What the server knows of revocations, for servers that enforce them. `set` is null until the
 * first verified set arrives; a set older than maxStalenessMs (by its iat) is as good as none.
 */
export interface RevocationView {
  readonly set: RevocationSet | null;
  readonly maxStalenessMs: number;
  /** Epoch ms the server started waiting for a set (start, for "stale since"). */
  readonly sinceMs: number;
}
