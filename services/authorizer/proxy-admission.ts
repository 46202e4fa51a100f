// Which proxies may forward calls to the authorizer: a certificate granting Envoy's Check, decided like any call.
import { decidePeer } from '../authz/decision.ts';
import type { Decision, PeerResult, RevocationView } from '../authz/types.ts';
import type { RuleSource } from '../authz/interceptor.ts';
import type { MethodRule } from '../authz/method-catalog.ts';
import { packagePath } from '../authz/package-root.ts';

/** The method Envoy's ext_authz filter calls; nginx's GET /check is the same question over HTTP/1.1. */
export const CHECK_METHOD = '/envoy.service.auth.v3.Authorization/Check';

/**
 * Envoy's protos as the authorizer serves them (envoy/service/auth/v3/external_auth.proto and what
 * it imports, copied unchanged from Envoy's API). Also the proto root to name when the CA issues a
 * proxy's certificate granting CHECK_METHOD (`twokey ca issue --proto-root`).
 */
export const AUTHORIZER_PROTO_ROOT = packagePath('services', 'authorizer', 'proto');

// The data of Check is in its message (the forwarded certificate and headers), decided separately;
// the call itself needs only the proxy's certificate and its grant.
const CERTIFICATE_ONLY: MethodRule = { certificateOnly: true };

/** The rule of the authorizer's own mesh listener: Check is certificate-only, nothing else exists. */
export const ADMISSION_RULES: RuleSource = {
  ruleOf: (path) => (path === CHECK_METHOD ? CERTIFICATE_ONLY : undefined),
};

/**
 * Whether the proxy on a connection may forward certificates: the same peer, rule and grant checks
 * a mesh server runs before a certificate-only method (trust domain, validity, revocation of its
 * certificate, and the grant of CHECK_METHOD).
 */
export function admitProxy(peer: PeerResult, now: number, trustDomain: string, revocation: RevocationView | undefined): Decision {
  // decidePeer settles a certificate-only method: a denial, or an allow.
  return decidePeer({ peer, method: CHECK_METHOD, rule: CERTIFICATE_ONLY, now, trustDomain, revocation })!;
}
