// The `twokey` package's entry point: the small surface other teams build mesh members with.
// Everything here is covered by the API report (api-report.md); the services inside this
// repository import the modules they use directly.
export { joinMesh, type JoinMeshOptions, type MeshMember, type MeshServiceClient } from './join-mesh.ts';
export { createMeshServer, type MeshServer, type MeshServerOptions } from './server.ts';
export { CALL_LIMIT_DEFAULTS, type CallLimits } from './call-limits.ts';
export { DEFAULT_FOLDING, type FoldingPolicy } from './log-folding.ts';
export { createMeshClient, type MeshClientOptions } from './client.ts';
export { DEFAULT_RETRY_BUDGET, type RetryBudget } from './retry-policy.ts';
export { callContext, type CallContext, type TraceContext } from './call-context.ts';
export { authorizeOwner, holdsAny } from './resource.ts';
export { checkOwner, refusalStatus, refuse } from './refusal.ts';
export {
  AuthConnection,
  AuthServiceClient,
  MEMBER_AUTH_GRANTS,
  createRevocationHolder,
  linkToAuth,
  openAuthKeys,
  watchRevocations,
  type AuthConnectionOptions,
  type AuthLink,
  type LinkToAuthOptions,
  type AuthKeysOptions,
  type IssuedToken,
  type RevocationFeed,
  type WatchRevocationsOptions,
} from './auth-connection.ts';
export { RevocationHolder, type RevocationHolderOptions } from './revocation-set.ts';
export type { TokenAuthenticator } from './token-authenticator.ts';
export type { PeerIdentityCache } from './peer-identity.ts';
export { SvidSource, type SvidMaterial, type SvidSourceOptions } from './svid-source.ts';
export { JwksKeySet, StaticKeys, type JwksFetcher, type JwksKeySetOptions } from './jwks.ts';
export { MethodCatalog, PROTO_LOADER_OPTIONS, type CatalogMethod, type LoadCatalogOptions, type MethodRule } from './method-catalog.ts';
export { ERROR_CODES, TwokeyError, grpcStatusOf, isTwokeyError, type ErrorCode } from './errors.ts';
export { SpiffeId } from './spiffe-id.ts';
export type { RevocationSource, RuleSource } from './interceptor.ts';
export type { PeerIdentity, RevocationSet, RevocationView, TokenKind, VerifiedToken } from './types.ts';
export type { VerificationKeys } from './token-verifier.ts';
export type { Svid } from './svid.ts';
