// The authorization library's public surface: what a service imports to become a mesh member.
export { TwokeyError, isTwokeyError, grpcStatusOf, type ErrorCode } from './errors.ts';
export { SpiffeId } from './spiffe-id.ts';
export { GrantSet, MethodGrant } from './grant.ts';
export { parseSvid, type Svid } from './svid.ts';
export { MethodCatalog, type MethodRule } from './method-catalog.ts';
export {
  decide,
  decidePeer,
  CHECKS,
  type Decision,
  type DecisionInput,
  type CheckName,
  type CheckResult,
  type PeerIdentity,
  type PeerResult,
  type TokenKind,
  type TokenResult,
  type VerifiedToken,
} from './decision.ts';
export { TokenVerifier, type TokenVerifierOptions, type VerificationKeys } from './token-verifier.ts';
export { JwksKeySet, StaticKeys, importJwks, type JwksFetcher, type JwksKeySetOptions } from './jwks.ts';
export { TokenCache } from './token-cache.ts';
export { TokenAuthenticator, bearerToken } from './token-authenticator.ts';
export { PeerIdentityCache } from './peer-identity.ts';
export { authorizeOwner, holdsAny } from './resource.ts';
export { DecisionLog, decisionFields, type DecisionEvent } from './decision-log.ts';
export { callContext, currentCall, type CallContext, type TraceContext } from './call-context.ts';
export { createAuthzInterceptor, denialMessage, type AuthzInterceptorOptions, type RuleSource } from './interceptor.ts';
export { createPropagationInterceptor } from './propagation.ts';
export { isIdentityClaiming, stripIdentityMetadata } from './identity-metadata.ts';
export { refuseRepeatedAuthorization } from './repeated-headers.ts';
export { SvidSource, validateSvidMaterial, SVID_FILES, type SvidMaterial, type SvidSourceOptions } from './rotation.ts';
export { createMeshServer, meshServerCredentials, type MeshServer, type MeshServerOptions } from './server.ts';
export { createMeshClient, meshChannelCredentials, spiffeServerCheck, type MeshClientOptions } from './client.ts';
export { DEFAULT_RETRY_BUDGET, meshServiceConfig, type RetryBudget } from './retry-policy.ts';
