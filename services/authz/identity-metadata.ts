// Metadata keys a client could use to claim an identity: the mesh ignores them in and never sends them out.
import type { Metadata } from '@grpc/grpc-js';

// The mesh's only identities are the verified certificate and the verified token, so headers
// that proxies and other meshes use to assert one (XFCC, x-spiffe-id, x-user-id, ...) mean nothing here.
// Also those of cloud load balancers and gateways (AWS ALB, Google IAP, Azure App Service, Kong,
// nginx, Linkerd, Envoy), and second credentials beside the one bearer token: a handler ported
// from behind one of them must not find such a header and trust it.
const IDENTITY_CLAIMING =
  /^(x-(forwarded-client-cert|forwarded-user|forwarded-email|forwarded-for-user|spiffe|user|remote-user|authenticated|auth-request|client-cert|client-verify|ssl-|identity|principal|subject|actor|jwt|twokey-|access-token|id-token|auth-token|amzn-oidc-|goog-iap-|goog-authenticated-user-|ms-client-principal|consumer-|credential-identifier|client-dn|arr-clientcert|envoy-peer-metadata)|ssl-client-|l5d-client-id$|authorization-bin$|proxy-authorization$)/;

export function isIdentityClaiming(key: string): boolean {
  return IDENTITY_CLAIMING.test(key.toLowerCase());
}

/** A copy of the metadata without identity-claiming keys (and without `authorization` unless kept). */
export function stripIdentityMetadata(metadata: Metadata, opts: { keepAuthorization: boolean }): Metadata {
  const clean = metadata.clone();
  for (const key of Object.keys(clean.getMap())) {
    if (isIdentityClaiming(key) || (!opts.keepAuthorization && key === 'authorization')) clean.remove(key);
  }
  return clean;
}
