// The authorizer, wired: forwarded-call decisions with the mesh's keys, bundle and revocation set, and the listeners proxies ask on.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Registry as MetricsRegistry } from 'prom-client';
import type { RegistryWorkload } from '../../certs-ca/registry.ts';
import type { CallLimits } from '../authz/call-limits.ts';
import { DecisionLog } from '../authz/decision-log.ts';
import { DecisionMetrics, registerTokenCacheMetrics } from '../authz/decision-metrics.ts';
import { TwokeyError } from '../authz/errors.ts';
import type { FederationPolicy } from '../authz/federation.ts';
import type { RevocationSource } from '../authz/interceptor.ts';
import { JwksKeySet } from '../authz/jwks.ts';
import type { MethodCatalog } from '../authz/method-catalog.ts';
import type { PartnerBundles } from '../authz/partner-bundles.ts';
import { SVID_FILES, certificatesIn, type SvidSource } from '../authz/svid-source.ts';
import { MESH_SERVER_DEFAULTS, createMeshServer } from '../authz/server.ts';
import type { SpiffeId } from '../authz/spiffe-id.ts';
import { TokenAuthenticator } from '../authz/token-authenticator.ts';
import { TokenCache } from '../authz/token-cache.ts';
import { TokenVerifier, type VerificationKeys } from '../authz/token-verifier.ts';
import { authorizationService, checkHandler } from './envoy-check.ts';
import { ForwardedDecisions } from './forwarded-decision.ts';
import { listenAddress } from './listen-address.ts';
import { NginxEndpoint } from './nginx-endpoint.ts';
import { ADMISSION_RULES, CHECK_METHOD } from './proxy-admission.ts';
import { RegistryPeers } from './registry-peers.ts';

// Room for a CheckRequest carrying a certificate chain and a full header list.
const MAX_CHECK_BYTES = 1024 * 1024;

export interface AuthorizerOptions {
  /** The authorizer's own workload credentials; their bundle also verifies forwarded certificates. */
  svid: SvidSource;
  /** Token verification keys (a JwksKeySet fed from auth). */
  keys: VerificationKeys;
  issuer: string;
  /** The SPIFFE ID the proxy presents to callers: the fronted service, the audience of tokens for it. */
  service: SpiffeId;
  /** Method rules: twokey's protos and the backend's. */
  rules: MethodCatalog;
  logger?: Logger | undefined;
  /** Where decision and token-cache metrics go; knownCallers get a caller label each. */
  metrics?: { registry: MetricsRegistry; knownCallers: Iterable<string> } | undefined;
  revocation?: RevocationSource | undefined;
  /** Istio mode: the registry's workloads, whose grants apply to a principal forwarded without a certificate. */
  istioWorkloads?: readonly RegistryWorkload[] | undefined;
  /** The load limits of the Check listener's mesh server (CALL_LIMIT_DEFAULTS for those not given). */
  limits?: Partial<CallLimits> | undefined;
  /**
   * Partner trust domains (the registry's federation section) and their watched bundles: the mesh
   * server's peer cache then verifies every certificate, forwarded ones included, against the
   * bundle of the trust domain it names, and partners' grants and scopes are capped by their
   * ceilings, as on every mesh server. Not with Istio mode, whose principals carry no chain.
   */
  federation?: { policy: FederationPolicy; bundles: PartnerBundles } | undefined;
  clock?: () => number;
}

export interface Authorizer {
  readonly decisions: ForwardedDecisions;
  /** Envoy's Check over mTLS, on a server built as every mesh server is; the proxy's certificate must grant Check. */
  listenGrpc(address: string): Promise<number>;
  /** Envoy's Check in plaintext, loopback or unix socket only. */
  listenLocalGrpc(address: string): Promise<number>;
  /** nginx's GET /check over mTLS. */
  listenHttp(address: string): Promise<number>;
  /** nginx's GET /check in plaintext, loopback or unix socket only. */
  listenLocalHttp(address: string): Promise<number>;
  close(): Promise<void>;
}

export function createAuthorizer(options: AuthorizerOptions): Authorizer {
  const { svid, service } = options;
  const trustDomain = svid.svid.spiffeId.trustDomain;
  if (!service.memberOf(trustDomain)) throw new TwokeyError('ERR_CONFIG_INVALID', `the fronted service ${service} is not in the trust domain ${trustDomain}`);
  const clock = options.clock ?? Date.now;
  const closers: (() => Promise<void> | void)[] = [];

  // Tokens for the fronted service, verified as its own mesh server would verify them.
  const cache = new TokenCache({ maxEntries: 10_000 });
  if (options.keys instanceof JwksKeySet) options.keys.addChangeListener(() => cache.clear());
  const verifier = new TokenVerifier({
    keys: options.keys,
    issuer: options.issuer,
    audiences: [service.trustDomainId.toString(), service.toString()],
    delegatedAudience: service.toString(),
    clock,
  });
  const tokens = new TokenAuthenticator({ verifier, cache, clock });

  // Envoy's Check is served by a mesh server, built as every mesh server is (the same bounds
  // apply, and the proxy's certificate must grant Check). Its peer cache is the one place every
  // certificate is verified here, forwarded ones and proxies' own: the bundles a mesh server
  // trusts are the ones the authorizer trusts. The decision log records each proxy's admission
  // (the Check call, certificate-only); metrics stay with the forwarded decisions, one
  // DecisionMetrics per registry.
  if (options.federation !== undefined && options.istioWorkloads !== undefined) {
    throw new TwokeyError('ERR_CONFIG_INVALID', 'federation needs forwarded certificates: it is not available in Istio mode (a principal carries no chain to verify against its trust domain\'s bundle)');
  }
  const mesh = createMeshServer({
    ...(options.federation === undefined ? {} : { federation: options.federation }),
    svid,
    keys: options.keys,
    ...(options.revocation === undefined ? {} : { revocation: options.revocation }),
    issuer: options.issuer,
    rules: ADMISSION_RULES,
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    ...(options.limits === undefined ? {} : { limits: options.limits }),
    clock,
    serverOptions: { 'grpc.max_receive_message_length': MAX_CHECK_BYTES },
  });
  closers.push(() => mesh.close());
  const peers = mesh.peers;
  // The server learns the bundle from the SVID source a tick later; forwarded certificates may come sooner.
  peers.setTrustBundle(certificatesIn(svid.material.bundlePem, SVID_FILES.bundle));

  const log = options.logger === undefined ? undefined : new DecisionLog(options.logger);
  let metrics: DecisionMetrics | undefined;
  if (options.metrics !== undefined) {
    metrics = new DecisionMetrics({
      registry: options.metrics.registry,
      knownCallers: options.metrics.knownCallers,
      knownMethods: [...options.rules.methods().map((m) => m.path), CHECK_METHOD],
    });
    registerTokenCacheMetrics(options.metrics.registry, cache);
  }
  const decisions = new ForwardedDecisions({
    trustDomain,
    rules: options.rules,
    tokens,
    peers,
    log,
    metrics,
    revocation: options.revocation,
    registryPeers: options.istioWorkloads === undefined ? undefined : new RegistryPeers(options.istioWorkloads),
    federation: options.federation?.policy,
    clock,
  });
  const envoyService = authorizationService();
  const handlers = { Check: checkHandler(decisions) };
  mesh.server.addService(envoyService, handlers);
  const local = (address: string): void => {
    if (!listenAddress(address).local) throw new TwokeyError('ERR_CONFIG_INVALID', `${address} is not loopback or a unix socket: a plaintext listener anyone else can reach would accept any forwarded certificate (use mTLS)`);
  };

  return {
    decisions,
    listenGrpc(address) {
      return mesh.listen(address);
    },
    async listenLocalGrpc(address) {
      local(address);
      const server = new grpc.Server({ ...MESH_SERVER_DEFAULTS, 'grpc.max_receive_message_length': MAX_CHECK_BYTES });
      server.addService(envoyService, handlers);
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(new TwokeyError('ERR_CONFIG_INVALID', `cannot listen on ${address}: ${err.message}`)) : resolve(p))),
      );
      closers.push(() => new Promise<void>((resolve) => server.tryShutdown(() => resolve())));
      return port;
    },
    async listenHttp(address) {
      const endpoint = new NginxEndpoint({ decisions, tls: { svid, peers, trustDomain, revocation: options.revocation, log, clock } });
      const port = await endpoint.listen(address);
      closers.push(() => endpoint.close());
      return port;
    },
    async listenLocalHttp(address) {
      local(address);
      const endpoint = new NginxEndpoint({ decisions });
      const port = await endpoint.listen(address);
      closers.push(() => endpoint.close());
      return port;
    },
    async close() {
      for (const close of closers.splice(0).reverse()) await close();
    },
  };
}
