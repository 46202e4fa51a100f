// What the auth service needs from the registry, in one value: issuer, lifetimes, scopes, delegation.
import type { Registry } from '../../certs-ca/registry.ts';
import type { FederationPolicy } from '../authz/federation.ts';
import { SpiffeId } from '../authz/spiffe-id.ts';
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
  /** Extra scopes by role name. */
  roleScopes: Readonly<Record<string, readonly string[]>>;
  userTokenTtlMs: number;
  delegatedTokenTtlMs: number;
  serviceTokenTtlMs: number;
  maxDelegationDepth: number;
  /** Keyed by SPIFFE ID. */
  workloads: ReadonlyMap<string, WorkloadPolicy>;
  /** Partner trust domains: their workloads get what their ceiling allows, nothing more. */
  federation?: FederationPolicy | undefined;
}

/**
 * What auth may issue the workload with this SPIFFE ID: ours from the registry's workloads, a
 * partner's from the one ceiling covering it (service scopes, and delegation only where the
 * ceiling names it as an actor for those scopes); undefined for any other.
 */
export function workloadPolicy(policy: AuthPolicy, spiffeId: string): WorkloadPolicy | undefined {
  const own = policy.workloads.get(spiffeId);
  if (own !== undefined || policy.federation === undefined) return own;
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(spiffeId);
  } catch {
    return undefined;
  }
  if (id.trustDomain === policy.federation.ownTrustDomain) return undefined;
  const ceiling = policy.federation.ceilingFor(id);
  if (ceiling === undefined) return undefined;
  return {
    spiffeId,
    serviceScopes: ceiling.serviceScopes.length > 0 ? ceiling.serviceScopes : undefined,
    delegation: ceiling.delegation === undefined ? undefined : { ...ceiling.delegation },
  };
}

/** The auth settings of a loaded registry. */
export function authPolicyFromRegistry(registry: Registry): AuthPolicy {
  const workloads = new Map<string, WorkloadPolicy>();
  for (const w of registry.workloads) {
    const id = w.spiffeId.toString();
    workloads.set(id, {
      spiffeId: id,
      serviceScopes: w.serviceScopes.length > 0 ? w.serviceScopes : undefined,
      delegation:
        w.delegation.scopes.length > 0
          ? {
              scopes: w.delegation.scopes,
              audiences: w.delegation.audiences.map((a) => a.toString()),
              withoutSubjectToken: w.delegation.withoutSubjectToken,
            }
          : undefined,
    });
  }
  return {
    issuer: registry.auth.issuer,
    trustDomainId: SpiffeId.forTrustDomain(registry.trustDomain).toString(),
    userScopes: registry.auth.userScopes,
    roleScopes: registry.auth.roleScopes,
    userTokenTtlMs: registry.auth.userTokenTtl * 1000,
    delegatedTokenTtlMs: registry.auth.delegatedTokenTtl * 1000,
    serviceTokenTtlMs: registry.auth.serviceTokenTtl * 1000,
    maxDelegationDepth: registry.auth.maxDelegationDepth,
    workloads,
    federation: registry.federation,
  };
}

/** The scopes of a user token: every user's, plus those of the user's roles the registry defines. */
export function userScopesFor(policy: AuthPolicy, roles: readonly string[]): string[] {
  const scopes = new Set(policy.userScopes);
  // Own keys only: a role named like an Object.prototype member must not reach a function.
  for (const role of roles) for (const scope of Object.hasOwn(policy.roleScopes, role) ? policy.roleScopes[role]! : []) scopes.add(scope);
  return [...scopes];
}
