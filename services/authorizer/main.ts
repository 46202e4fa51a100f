// The authorizer process: the library's decision for servers in any language, behind Envoy (ext_authz) or nginx (auth_request).
import { delimiter } from 'node:path';
import { TwokeyError } from '../authz/errors.ts';
import { MethodCatalog } from '../authz/method-catalog.ts';
import { SpiffeId } from '../authz/spiffe-id.ts';
import { envFlag, type Env } from '../mesh-runtime/env.ts';
import { MeshRuntime, meshCallLimits } from '../mesh-runtime/mesh-runtime.ts';
import type { RunningService } from '../mesh-runtime/running-service.ts';
import { createAuthorizer } from './authorizer.ts';
import { listenAddress } from './listen-address.ts';

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
    // The backend's protos: those the flag names, and the registry's protoRoots (a team's own services).
    const catalog = MethodCatalog.load({ extraRoots: [...runtime.registry.protoRoots, ...config.protoRoots] });
    // Auth's keys and revocation set, followed as every mesh member follows them.
    const { keys, revocation } = await runtime.linkToAuth();
    // Partner trust domains' bundles, watched as every mesh server watches them (none without a federation section).
    const partners = config.istio ? undefined : await runtime.partnerBundles();
    const authorizer = createAuthorizer({
      ...(partners === undefined || runtime.registry.federation === undefined ? {} : { federation: { policy: runtime.registry.federation, bundles: partners } }),
      svid: runtime.svid,
      keys,
      issuer: runtime.registry.auth.issuer,
      service: config.service,
      rules: catalog,
      logger: runtime.logger,
      metrics: { registry: runtime.metrics, knownCallers: runtime.registry.workloads.map((w) => w.spiffeId.toString()) },
      revocation,
      istioWorkloads: config.istio ? runtime.registry.workloads : undefined,
      // The same TWOKEY_MAX_* limits as every mesh server's.
      limits: meshCallLimits(runtime.env),
    });
    runtime.onClose(() => authorizer.close());
    const bound: Record<string, number> = {};
    if (config.grpcListen !== undefined) bound['grpc'] = await authorizer.listenGrpc(config.grpcListen);
    if (config.localGrpcListen !== undefined) bound['local_grpc'] = await authorizer.listenLocalGrpc(config.localGrpcListen);
    if (config.httpListen !== undefined) bound['http'] = await authorizer.listenHttp(config.httpListen);
    if (config.localHttpListen !== undefined) bound['local_http'] = await authorizer.listenLocalHttp(config.localHttpListen);
    runtime.serving({ service: config.service.toString(), istio: config.istio, ports: bound, proto_roots: config.protoRoots });
    return { close: () => runtime.close() };
  } catch (err) {
    await runtime.close();
    throw err;
  }
}
