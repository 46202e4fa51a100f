// The signing keys over standard HTTPS (RFC 7517 JWK Set plus discovery metadata), so ordinary
// OIDC and JOSE tooling can verify twokey tokens without speaking gRPC.
import { createServer, type Server } from 'node:https';
import type { JsonWebKeySet } from './signing-keys.ts';

export interface JwksHttpsOptions {
  issuer: string;
  jwks: () => JsonWebKeySet;
  tls: { cert: string | Buffer; key: string | Buffer };
}

export function createJwksHttpsServer(opts: JwksHttpsOptions): Server {
  const discovery = JSON.stringify({
    issuer: opts.issuer,
    jwks_uri: `${opts.issuer}/.well-known/jwks.json`,
    id_token_signing_alg_values_supported: ['ES256'],
    token_endpoint_auth_methods_supported: ['tls_client_auth'],
    grant_types_supported: ['urn:ietf:params:oauth:grant-type:token-exchange'],
  });
  return createServer({ cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2' }, (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    let body: string;
    let type: string;
    if (path === '/.well-known/jwks.json') {
      body = JSON.stringify(opts.jwks());
      type = 'application/jwk-set+json';
    } else if (path === '/.well-known/openid-configuration' || path === '/.well-known/oauth-authorization-server') {
      body = discovery;
      type = 'application/json';
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    // Short caching: a rotation shows up within a minute, and verifiers refetch on unknown kids.
    res.writeHead(200, { 'content-type': type, 'cache-control': 'public, max-age=60', 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
}
