// `twokey authz envoy-config`: an Envoy (v3 API) bootstrap that puts the authorizer in front of a gRPC backend, fail-closed.
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { SVID_FILES } from '../authz/svid-source.ts';
import { SpiffeId } from '../authz/spiffe-id.ts';
import { listenAddress } from './listen-address.ts';

export interface EnvoyConfigOptions {
  /** The SPIFFE ID the proxy presents (its SVID's): named in comments only. */
  service: string;
  /** Where gRPC clients connect: host:port. */
  listen: string;
  /** The backend, plaintext HTTP/2 (in the same pod, on loopback): host:port. */
  backend: string;
  /** The proxy's workload credentials: svid.pem, svid.key, bundle.pem. */
  svidDir: string;
  /** The authorizer's mTLS address (host:port), or a local plaintext one (127.0.0.1:port, unix:/path). */
  authorizer: string;
  /** The authorizer's SPIFFE ID, which its certificate must carry (mTLS only). */
  authorizerId?: string | undefined;
  /** How long the authorizer may take before the call fails UNAVAILABLE; default 1000 ms. */
  authzTimeoutMs?: number | undefined;
  /** Envoy's admin listener (loopback); default 127.0.0.1:9901. */
  adminListen?: string | undefined;
}

function socketAddress(text: string, indent: string): string {
  if (text.startsWith('unix:')) return `${indent}pipe: { path: ${JSON.stringify(text.slice('unix:'.length))} }`;
  const a = listenAddress(text);
  return `${indent}socket_address: { address: ${JSON.stringify(a.host)}, port_value: ${a.port} }`;
}

/** STATIC for an IP address or a unix socket, STRICT_DNS for a name Envoy must resolve. */
function clusterType(address: string): 'STATIC' | 'STRICT_DNS' {
  return address.startsWith('unix:') || isIP(listenAddress(address).host) !== 0 ? 'STATIC' : 'STRICT_DNS';
}

/** The bootstrap YAML, each part with the reason it is there. */
export function renderEnvoyConfig(options: EnvoyConfigOptions): string {
  const svid = resolve(options.svidDir);
  const cert = JSON.stringify(join(svid, SVID_FILES.cert));
  const key = JSON.stringify(join(svid, SVID_FILES.key));
  const bundle = JSON.stringify(join(svid, SVID_FILES.bundle));
  /** TLS 1.3 over h2 with the proxy's own SVID, trusting the bundle: the same on both of the proxy's sides. */
  const commonTls = (indent: string): string =>
    [
      'tls_params: { tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3 }',
      'alpn_protocols: [h2]',
      'tls_certificates:',
      `- certificate_chain: { filename: ${cert} }`,
      `  private_key: { filename: ${key} }`,
      'validation_context:',
      `  trusted_ca: { filename: ${bundle} }`,
    ].map((line) => indent + line).join('\n');
  const local = options.authorizer.startsWith('unix:') || listenAddress(options.authorizer).local;
  if (!local && options.authorizerId === undefined) throw new Error('--authorizer-id is required for an authorizer reached over mTLS (its certificate is checked for it)');
  const authorizerId = options.authorizerId === undefined ? undefined : SpiffeId.parse(options.authorizerId).toString();
  const timeout = `${((options.authzTimeoutMs ?? 1000) / 1000).toFixed(3)}s`;
  const admin = options.adminListen ?? '127.0.0.1:9901';
  const authorizerTls = local
    ? '    # Loopback or a unix socket in the same pod: nothing else can reach the authorizer there.'
    : `    # mTLS to the authorizer with the proxy's own workload certificate (which must grant
    # /envoy.service.auth.v3.Authorization/Check); the authorizer's must carry its SPIFFE ID.
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
${commonTls('          ')}
            match_typed_subject_alt_names:
            - san_type: URI
              matcher: { exact: ${JSON.stringify(authorizerId)} }`;
  return `# Envoy bootstrap written by \`twokey authz envoy-config\`: the twokey authorizer decides every
# call to ${options.service} before Envoy forwards it. Fail-closed: an authorizer that errs, is
# down or slower than ${timeout} answers UNAVAILABLE; nothing reaches the backend undecided.
admin:
  address:
${socketAddress(admin, '    ')}
static_resources:
  listeners:
  - name: twokey_ingress
    address:
${socketAddress(options.listen, '      ')}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          # Callers must present a certificate chaining to the bundle; the authorizer verifies it again.
          require_client_certificate: true
          common_tls_context:
${commonTls('            ')}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: twokey_ingress
          codec_type: HTTP2
          # A client-sent x-forwarded-client-cert is dropped; the backend trusts only x-twokey-* headers.
          forward_client_cert_details: SANITIZE
          route_config:
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: twokey_backend, timeout: 0s }
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service:
                envoy_grpc: { cluster_name: twokey_authorizer }
                timeout: ${timeout}
              # The client's certificate (URL-encoded PEM) in attributes.source.certificate: the
              # authorizer checks it against the bundle, reads its grants and binds tokens to it.
              include_peer_certificate: true
              # An authorizer that fails or cannot be reached is a denial, never an allow ...
              failure_mode_allow: false
              # ... answered 503, which gRPC clients read as UNAVAILABLE (Envoy's default is 403).
              status_on_error: { code: ServiceUnavailable }
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: twokey_authorizer
    type: ${clusterType(options.authorizer)}
    connect_timeout: ${timeout}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: twokey_authorizer
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
${socketAddress(options.authorizer, '              ')}
${authorizerTls}
  - name: twokey_backend
    type: ${clusterType(options.backend)}
    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: twokey_backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
${socketAddress(options.backend, '              ')}
`;
}
