// The signing keys over standard HTTPS (RFC 7517 JWK Set plus discovery metadata), so ordinary
// OIDC and JOSE tooling can verify twokey tokens without speaking gRPC.
import { createServer, type Server } from 'node:https';
import { serveBundle, type PublishedBundle } from './bundle-endpoint.ts';
import type { JsonWebKeySet } from './signing-keys.ts';

export interface JwksHttpsOptions {
  issuer: string;
  /** May read a shared database: a failure answers 503, never a partial set. */
  jwks: () => JsonWebKeySet | Promise<JsonWebKeySet>;
  tls: { cert: string | Buffer; key: string | Buffer };
  /** Our trust domain's SPIFFE bundle, served at /.well-known/spiffe-bundle (https_spiffe: this server presents auth's SVID). */
  bundle?: PublishedBundle;
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
    if (opts.bundle !== undefined && serveBundle(req, res, opts.bundle)) return;
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    if (path === '/.well-known/jwks.json') {
      Promise.resolve()
        .then(() => opts.jwks())
        .then(
          (set) => send(JSON.stringify(set), 'application/jwk-set+json'),
          () => res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1' }).end('keys unavailable; retry\n'),
        );
      return;
    }
    if (path === '/.well-known/openid-configuration' || path === '/.well-known/oauth-authorization-server') {
      send(discovery, 'application/json');
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    function send(text: string, contentType: string): void {
      // Short caching: a rotation shows up within a minute, and verifiers refetch on unknown kids.
      res.writeHead(200, { 'content-type': contentType, 'cache-control': 'public, max-age=60', 'content-length': Buffer.byteLength(text) });
      res.end(req.method === 'HEAD' ? undefined : text);
    }
  });
}
