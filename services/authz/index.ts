// The `twokey` package's entry point: the small surface other teams build mesh members with.
// Everything here is covered by the API report (api-report.md); the services inside this
// repository import the modules they use directly.
export { createMeshServer, type MeshServer, type MeshServerOptions } from './server.ts';
export { createMeshClient, type MeshClientOptions } from './client.ts';
export { DEFAULT_RETRY_BUDGET, type RetryBudget } from './retry-policy.ts';
export { callContext, type CallContext, type TraceContext } from './call-context.ts';
export { authorizeOwner, holdsAny } from './resource.ts';
export { SvidSource, type SvidMaterial, type SvidSourceOptions } from './svid-source.ts';
export { JwksKeySet, StaticKeys, type JwksFetcher, type JwksKeySetOptions } from './jwks.ts';
export { MethodCatalog, type CatalogMethod, type LoadCatalogOptions, type MethodRule } from './method-catalog.ts';
export { ERROR_CODES, TwokeyError, grpcStatusOf, isTwokeyError, type ErrorCode } from './errors.ts';
export { SpiffeId } from './spiffe-id.ts';
export type { RuleSource } from './interceptor.ts';
export type { PeerIdentity, TokenKind, VerifiedToken } from './types.ts';
export type { VerificationKeys } from './token-verifier.ts';
export type { Svid } from './svid.ts';
