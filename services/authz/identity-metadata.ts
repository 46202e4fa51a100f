// Metadata keys a client could use to claim an identity: the mesh ignores them in and never sends them out.
import type { Metadata } from '@grpc/grpc-js';

// The mesh's only identities are the verified certificate and the verified token, so headers
// that proxies and other meshes use to assert one (XFCC, x-spiffe-id, x-user-id, ...) mean nothing here.
const IDENTITY_CLAIMING = /^x-(forwarded-client-cert|forwarded-user|forwarded-email|forwarded-for-user|spiffe|user|remote-user|authenticated|auth-request|client-cert|client-verify|ssl-client|identity|principal|subject|actor|jwt|twokey-)/;

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
