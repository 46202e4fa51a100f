// One call to reach a mesh service over mTLS, checking the server's SPIFFE ID instead of a hostname.
import { isIP } from 'node:net';
import type { PeerCertificate } from 'node:tls';
import { Channel, experimental, type ChannelCredentials, type ChannelOptions, type Client, type ClientOptions, type Interceptor } from '@grpc/grpc-js';
import { isTwokeyError } from './errors.ts';
import { MethodCatalog } from './method-catalog.ts';
import { createPropagationInterceptor } from './propagation.ts';
import { RenewableChannel } from './renewable-channel.ts';
import { DEFAULT_RETRY_BUDGET, keyedCallRouting, meshServiceConfig, type RetryBudget } from './retry-policy.ts';
import type { SvidSource } from './svid-source.ts';
import { SpiffeId } from './spiffe-id.ts';
import { parseSvid } from './svid.ts';

type ClientConstructor<C extends Client> = new (address: string, credentials: ChannelCredentials, options?: ClientOptions) => C;

export interface MeshClientOptions {
  /** This workload's credentials (its certificate is the client certificate; its bundle the trust roots). */
  svid: SvidSource;
  /** The SPIFFE ID the server must present. */
  serverId: SpiffeId | string;
  /** Forward the served call's user token, request id and traceparent (default true). */
  propagate?: boolean;
  interceptors?: Interceptor[];
  channelOptions?: ChannelOptions;
  /**
   * Balancing and retries (see retry-policy.ts): calls go round-robin over every address the target
   * resolves to, and a call the protos mark safe to repeat is retried once on UNAVAILABLE within
   * the budget. `catalog` says which methods are safe (default: twokey's proto/). A
   * `grpc.service_config` in channelOptions replaces all of it.
   */
  retry?: { catalog?: MethodCatalog; budget?: RetryBudget };
}

/**
 * Verifies the server by the one URI SAN of its certificate (parsed strictly from DER), after TLS
 * verified the chain against the bundle. Hostnames play no part: the mesh names workloads, not hosts.
 */
export function spiffeServerCheck(expected: SpiffeId, grantsOid?: string): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    if (cert?.raw === undefined) return new Error('twokey: server presented no certificate');
    try {
      const svid = parseSvid(cert.raw, grantsOid === undefined ? {} : { grantsOid });
      if (!svid.spiffeId.equals(expected)) return new Error(`twokey: server is ${svid.spiffeId}, expected ${expected}`);
      return undefined;
    } catch (err) {
      return new Error(`twokey: server certificate is not a valid SVID: ${isTwokeyError(err) ? err.message : String(err)}`);
    }
  };
}

export function meshChannelCredentials(svid: SvidSource, serverId: SpiffeId): ChannelCredentials {
  return experimental.createCertificateProviderChannelCredentials(svid, svid, {
    checkServerIdentity: spiffeServerCheck(serverId, svid.grantsOid),
  });
}

export function createMeshClient<C extends Client>(ctor: ClientConstructor<C>, address: string, options: MeshClientOptions): C {
  const serverId = typeof options.serverId === 'string' ? SpiffeId.parse(options.serverId) : options.serverId;
  const interceptors = [...(options.propagate === false ? [] : [createPropagationInterceptor()]), ...(options.interceptors ?? [])];
  const catalog = options.retry?.catalog ?? MethodCatalog.default();
  const budget = options.retry?.budget ?? DEFAULT_RETRY_BUDGET;
  const channelOptions: ChannelOptions = {
    // channelz tracks every call and socket even when nobody serves it (see MESH_SERVER_DEFAULTS).
    'grpc.enable_channelz': 0,
    'grpc.service_config': meshServiceConfig(catalog, budget),
    // The balancing and retry settings are this client's, never a DNS TXT record's.
    'grpc.service_config_disable_resolution': 1,
    // A replica that went away makes the balancer ask DNS again; 30 s (the default) is long for a rollout.
    'grpc.dns_min_time_between_resolutions_ms': 5000,
    // round_robin reconnects a lost replica in the background with exponential backoff (grpc-js: up
    // to 120 s), failing calls fast meanwhile: capped, a restarted service is back in use within 2 s.
    'grpc.initial_reconnect_backoff_ms': 500,
    'grpc.max_reconnect_backoff_ms': 2000,
    // A retried call's request is kept until the answer begins; a larger one is never retried.
    'grpc.per_rpc_retry_buffer_size': options.channelOptions?.['grpc.max_send_message_length'] ?? 4 * 1024 * 1024,
    ...options.channelOptions,
  };
  // TLS SNI may not carry an IP address (RFC 6066); the server is checked by SPIFFE ID anyway,
  // so a dialled IP sends the trust domain as the server name instead.
  if (isIP(hostOf(address)) !== 0) channelOptions['grpc.ssl_target_name_override'] ??= serverId.trustDomain;
  // Every TLS connection, to each address the target resolves to, is checked for the SPIFFE ID.
  const credentials = meshChannelCredentials(options.svid, serverId);
  // Connections present the certificate they were opened with. So every channel of this client is
  // renewed (later calls go over new connections, running ones finish on the old) when the
  // certificate rotates, and when a server refuses it for good (see renewable-channel.ts).
  // A local subchannel pool: a new channel must not be handed the old channel's connections.
  const channels: RenewableChannel[] = [];
  let closed = false;
  const svid = options.svid;
  const renewAll = (): void => channels.forEach((c) => c.renew());
  const renewable = (serviceConfig?: string): RenewableChannel => {
    const opts: ChannelOptions = { ...channelOptions, 'grpc.use_local_subchannel_pool': 1, ...(serviceConfig === undefined ? {} : { 'grpc.service_config': serviceConfig }) };
    const channel = new RenewableChannel(() => new Channel(address, credentials, opts), { version: () => svid.material, onFinalDenial: renewAll });
    if (closed) channel.close();
    channels.push(channel);
    return channel;
  };
  const clientOptions: ClientOptions = { ...channelOptions, interceptors, channelOverride: renewable() };
  // A caller's own service config decides retries alone: no second channel beside it.
  if (options.channelOptions?.['grpc.service_config'] === undefined) clientOptions.callInvocationTransformer = keyedCallRouting(catalog, budget, renewable);
  const client = new ctor(address, credentials, clientOptions);
  const close = client.close.bind(client);
  client.close = () => {
    closed = true;
    for (const channel of channels) channel.close();
    close();
  };
  return client;
}

/** The host of a target, or of the first address of a list (`ipv4:127.0.0.1:1,127.0.0.1:2`). */
function hostOf(address: string): string {
  const target = address.replace(/^(dns|ipv4|ipv6):(\/\/[^/]*\/)?/, '').split(',')[0]!;
  const bracketed = /^\[([^\]]+)\]/.exec(target);
  if (bracketed) return bracketed[1]!;
  const colons = target.split(':').length - 1;
  return colons === 1 ? target.slice(0, target.indexOf(':')) : target;
}
