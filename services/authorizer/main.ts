// The authorizer process: the library's decision for servers in any language, behind Envoy (ext_authz) or nginx (auth_request).
import { delimiter } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { DecisionLog } from '../authz/decision-log.ts';
import { DecisionMetrics, registerTokenCacheMetrics } from '../authz/decision-metrics.ts';
import { TwokeyError } from '../authz/errors.ts';
import { JwksKeySet } from '../authz/jwks.ts';
import { MethodCatalog } from '../authz/method-catalog.ts';
import { PeerIdentityCache } from '../authz/peer-identity.ts';
import { SVID_FILES, certificatesIn } from '../authz/rotation.ts';
import { MESH_SERVER_DEFAULTS, createMeshServer } from '../authz/server.ts';
import { SpiffeId } from '../authz/spiffe-id.ts';
import { TokenAuthenticator } from '../authz/token-authenticator.ts';
import { TokenCache } from '../authz/token-cache.ts';
import { TokenVerifier } from '../authz/token-verifier.ts';
import { envFlag, type Env } from '../mesh-runtime/env.ts';
import { MAX_MESSAGE_BYTES, MeshRuntime } from '../mesh-runtime/mesh-service.ts';
import type { RunningService } from '../mesh-runtime/serve-command.ts';
import { authorizationService, checkHandler } from './envoy-check.ts';
import { ForwardedDecisions } from './forwarded-decision.ts';
import { listenAddress } from './listen-address.ts';
import { NginxEndpoint } from './nginx-endpoint.ts';
import { ADMISSION_RULES, CHECK_METHOD } from './proxy-admission.ts';
import { RegistryPeers } from './registry-peers.ts';

export const AUTHORIZER_HEALTH_SERVICE = 'envoy.service.auth.v3.Authorization';

/** The authorizer's settings, from the environment (`twokey authz serve` sets them from its flags). */
export interface AuthorizerConfig {
  /** The SPIFFE ID the proxy presents to its callers: the protected service, audience of tokens for it. */
  service: SpiffeId;
  /** Further proto roots: the protected service's protos, with their (twokey.authz.v1.rule) options. */
  protoRoots: string[];
  /** Envoy's Check over mTLS (the proxy's certificate must grant it); undefined: off. */
  grpcListen: string | undefined;
  /** nginx's GET /check over mTLS; undefined: off. */
  httpListen: string | undefined;
  /** nginx's GET /check in plaintext, loopback or unix socket only; undefined: off. */
  localHttpListen: string | undefined;
  /** Envoy's Check in plaintext, loopback or unix socket only (a same-pod sidecar, Istio); undefined: off. */
  localGrpcListen: string | undefined;
  /** Istio mode: a call forwarded with only a principal takes its grants from the registry. */
  istio: boolean;
}

const OFF = 'off';

function optionalAddress(env: Env, name: string, fallback: string): string | undefined {
  const value = env[name] ?? fallback;
  return value === OFF || value === '' ? undefined : value;
}

export function readAuthorizerConfig(env: Env): AuthorizerConfig {
  const service = env['TWOKEY_AUTHZ_SERVICE'];
  if (service === undefined || service === '') {
    throw new TwokeyError('ERR_CONFIG_INVALID', 'TWOKEY_AUTHZ_SERVICE must name the SPIFFE ID of the service the proxy fronts (the audience of tokens for it)');
  }
  const config: AuthorizerConfig = {
    service: SpiffeId.parse(service),
    protoRoots: (env['TWOKEY_AUTHZ_PROTO_ROOTS'] ?? '').split(delimiter).filter((r) => r !== ''),
    grpcListen: optionalAddress(env, 'TWOKEY_LISTEN', '0.0.0.0:8443'),
    httpListen: optionalAddress(env, 'TWOKEY_AUTHZ_HTTP_LISTEN', '0.0.0.0:8182'),
    localHttpListen: optionalAddress(env, 'TWOKEY_AUTHZ_LOCAL_HTTP_LISTEN', OFF),
    localGrpcListen: optionalAddress(env, 'TWOKEY_AUTHZ_LOCAL_GRPC_LISTEN', OFF),
    istio: envFlag(env, 'TWOKEY_AUTHZ_ISTIO'),
  };
  for (const [name, value] of [['TWOKEY_LISTEN', config.grpcListen], ['TWOKEY_AUTHZ_HTTP_LISTEN', config.httpListen], ['TWOKEY_AUTHZ_LOCAL_HTTP_LISTEN', config.localHttpListen], ['TWOKEY_AUTHZ_LOCAL_GRPC_LISTEN', config.localGrpcListen]] as const) {
    if (value !== undefined) listenAddress(value);
    if (value !== undefined && name.includes('LOCAL') && !listenAddress(value).local) {
      throw new TwokeyError('ERR_CONFIG_INVALID', `${name}: ${value} is not loopback or a unix socket; a plaintext listener anyone else can reach would accept any forwarded certificate`);
    }
  }
  if ([config.grpcListen, config.httpListen, config.localHttpListen, config.localGrpcListen].every((l) => l === undefined)) {
    throw new TwokeyError('ERR_CONFIG_INVALID', 'every listener is off: nothing could ask this authorizer');
  }
  return config;
}

export async function serve(env: Env): Promise<RunningService> {
  const config = readAuthorizerConfig(env);
  const runtime = await MeshRuntime.start('authorizer', env, [AUTHORIZER_HEALTH_SERVICE]);
  try {
    const trustDomain = runtime.registry.trustDomain;
    if (!config.service.memberOf(trustDomain)) {
      throw new TwokeyError('ERR_CONFIG_INVALID', `TWOKEY_AUTHZ_SERVICE ${config.service} is not in the trust domain ${trustDomain}`);
    }
    const catalog = MethodCatalog.load({ extraRoots: config.protoRoots });
    const keys = await runtime.authKeys();
    const revocation = runtime.revocationHolder(keys);
    await runtime.watchRevocations(revocation);

    // Tokens for the fronted service, verified as its own mesh server would verify them.
    const cache = new TokenCache({ maxEntries: 10_000 });
    if (keys instanceof JwksKeySet) keys.addChangeListener(() => cache.clear());
    registerTokenCacheMetrics(runtime.metrics, cache);
    const verifier = new TokenVerifier({
      keys,
      issuer: runtime.registry.auth.issuer,
      audiences: [config.service.trustDomainId.toString(), config.service.toString()],
      delegatedAudience: config.service.toString(),
    });
    const tokens = new TokenAuthenticator({ verifier, cache });

    // Forwarded certificates are verified against the bundle this workload's own TLS uses.
    const svid = runtime.svid;
    const grantsOid = runtime.registry.grantsOid;
    const forwardedPeers = new PeerIdentityCache({ grantsOid });
    const proxyPeers = new PeerIdentityCache({ grantsOid });
    const setBundle = (pem: Buffer): void => {
      const bundle = certificatesIn(pem, SVID_FILES.bundle);
      forwardedPeers.setTrustBundle(bundle);
      proxyPeers.setTrustBundle(bundle);
    };
    setBundle(svid.material.bundlePem);
    const onBundle = (update: { caCertificate: Buffer } | null): void => {
      if (update !== null) setBundle(update.caCertificate);
    };
    svid.addCaCertificateListener(onBundle);
    runtime.onClose(() => svid.removeCaCertificateListener(onBundle));

    const log = new DecisionLog(runtime.logger);
    const decisions = new ForwardedDecisions({
      trustDomain,
      rules: catalog,
      tokens,
      peers: forwardedPeers,
      log,
      metrics: new DecisionMetrics({
        registry: runtime.metrics,
        knownCallers: runtime.registry.workloads.map((w) => w.spiffeId.toString()),
        knownMethods: [...catalog.methods().map((m) => m.path), CHECK_METHOD],
      }),
      revocation,
      registryPeers: config.istio ? new RegistryPeers(runtime.registry.workloads) : undefined,
    });

    const bound: Record<string, string | number> = {};
    const envoyService = authorizationService();
    const handlers = { Check: checkHandler(decisions) };
    if (config.grpcListen !== undefined) {
      // Built as every mesh server is (the same bounds apply); the proxy's certificate must grant Check.
      const mesh = createMeshServer({
        svid,
        keys,
        revocation,
        issuer: runtime.registry.auth.issuer,
        rules: ADMISSION_RULES,
        logger: runtime.logger,
        serverOptions: { 'grpc.max_receive_message_length': MAX_MESSAGE_BYTES },
      });
      mesh.server.addService(envoyService, handlers);
      bound['grpc'] = await mesh.listen(config.grpcListen);
      runtime.onClose(() => mesh.close());
    }
    if (config.localGrpcListen !== undefined) {
      // Reachable from this machine (or pod) only: the sidecar beside the authorizer is the proxy.
      const local = new grpc.Server({ ...MESH_SERVER_DEFAULTS, 'grpc.max_receive_message_length': MAX_MESSAGE_BYTES });
      local.addService(envoyService, handlers);
      const address = config.localGrpcListen;
      bound['local_grpc'] = await new Promise<number>((resolve, reject) =>
        local.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(new TwokeyError('ERR_CONFIG_INVALID', `cannot listen on ${address}: ${err.message}`)) : resolve(port))),
      );
      runtime.onClose(() => new Promise<void>((resolve) => local.tryShutdown(() => resolve())));
    }
    if (config.httpListen !== undefined) {
      const endpoint = new NginxEndpoint({ decisions, tls: { svid, peers: proxyPeers, trustDomain, revocation, log } });
      bound['http'] = await endpoint.listen(config.httpListen);
      runtime.onClose(() => endpoint.close());
    }
    if (config.localHttpListen !== undefined) {
      const endpoint = new NginxEndpoint({ decisions });
      bound['local_http'] = await endpoint.listen(config.localHttpListen);
      runtime.onClose(() => endpoint.close());
    }
    runtime.serving({ service: config.service.toString(), istio: config.istio, ports: bound, proto_roots: config.protoRoots });
    return { close: () => runtime.close() };
  } catch (err) {
    await runtime.close();
    throw err;
  }
}
