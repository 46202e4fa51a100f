// One call to reach a mesh service over mTLS, checking the server's SPIFFE ID instead of a hostname.
import { isIP } from 'node:net';
import type { PeerCertificate } from 'node:tls';
import { experimental, type ChannelCredentials, type ChannelOptions, type Client, type Interceptor } from '@grpc/grpc-js';
import { isTwokeyError } from './errors.ts';
import { createPropagationInterceptor } from './propagation.ts';
import type { SvidSource } from './svid-source.ts';
import { SpiffeId } from './spiffe-id.ts';
import { parseSvid } from './svid.ts';

type ClientConstructor<C extends Client> = new (address: string, credentials: ChannelCredentials, options?: ChannelOptions & { interceptors?: Interceptor[] }) => C;

export interface MeshClientOptions {
  /** This workload's credentials (its certificate is the client certificate; its bundle the trust roots). */
  svid: SvidSource;
  /** The SPIFFE ID the server must present. */
  serverId: SpiffeId | string;
  /** Forward the served call's user token, request id and traceparent (default true). */
  propagate?: boolean;
  interceptors?: Interceptor[];
  channelOptions?: ChannelOptions;
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
  // channelz tracks every call and socket even when nobody serves it (see MESH_SERVER_DEFAULTS).
  const channelOptions: ChannelOptions = { 'grpc.enable_channelz': 0, ...options.channelOptions };
  // TLS SNI may not carry an IP address (RFC 6066); the server is checked by SPIFFE ID anyway,
  // so a dialled IP sends the trust domain as the server name instead.
  if (isIP(hostOf(address)) !== 0) channelOptions['grpc.ssl_target_name_override'] ??= serverId.trustDomain;
  return new ctor(address, meshChannelCredentials(options.svid, serverId), { ...channelOptions, interceptors });
}

function hostOf(address: string): string {
  const target = address.replace(/^(dns|ipv4|ipv6):(\/\/[^/]*\/)?/, '');
  const bracketed = /^\[([^\]]+)\]/.exec(target);
  if (bracketed) return bracketed[1]!;
  const colons = target.split(':').length - 1;
  return colons === 1 ? target.slice(0, target.indexOf(':')) : target;
}
