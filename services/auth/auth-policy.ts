// What the auth service needs from the registry, in one value: issuer, lifetimes, scopes, delegation.
import type { DelegationRules } from './delegation-policy.ts';

export interface WorkloadPolicy {
  spiffeId: string;
  serviceScopes: readonly string[] | undefined;
  delegation: DelegationRules | undefined;
}

export interface AuthPolicy {
  issuer: string;
  trustDomainId: string;
  userScopes: readonly string[];
  userTokenTtlMs: number;
  delegatedTokenTtlMs: number;
  serviceTokenTtlMs: number;
  maxDelegationDepth: number;
  /** Keyed by SPIFFE ID. */
  workloads: ReadonlyMap<string, WorkloadPolicy>;
}
