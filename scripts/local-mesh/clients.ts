// Clients for a running local mesh, as the demo and the end-to-end tests use it: end users through
// the gateway's public TLS, and workloads dialling mesh services directly with their certificates.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createMeshClient } from '../../services/authz/client.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { MAX_MESSAGE_BYTES } from '../../services/mesh-runtime/mesh-runtime.ts';
import { AuthClient, ImageStoreClient, TaggingClient } from '../../services/mesh-runtime/protos.ts';
import type { Endpoints } from './local-mesh.ts';

export type ServiceClientKind = 'auth' | 'image-store' | 'tagging';

const CONSTRUCTORS: Record<ServiceClientKind, grpc.ServiceClientConstructor> = {
  auth: AuthClient,
  'image-store': ImageStoreClient,
  tagging: TaggingClient,
};

const CHANNEL_OPTIONS = { 'grpc.max_receive_message_length': MAX_MESSAGE_BYTES, 'grpc.max_send_message_length': MAX_MESSAGE_BYTES };

export function readEndpoints(stateDir: string): Endpoints {
  return JSON.parse(readFileSync(join(stateDir, 'endpoints.json'), 'utf8')) as Endpoints;
}

/** A public client of the gateway: server-authenticated TLS only, as an end user's app would be. */
export function gatewayClient(endpoints: Endpoints, service: ServiceClientKind): grpc.Client {
  const credentials = grpc.credentials.createSsl(readFileSync(endpoints.gateway.caFile));
  return new CONSTRUCTORS[service](endpoints.gateway.address, credentials, CHANNEL_OPTIONS);
}

/**
 * A client that presents `workload`'s certificate to `service`'s mesh listener, as that workload
 * would. Only for local demos and tests: it reads the workload's key from the state directory.
 */
export async function workloadClient(
  endpoints: Endpoints,
  workload: string,
  service: ServiceClientKind,
): Promise<{ client: grpc.Client; close: () => void; thumbprint: string }> {
  const svid = await SvidSource.open(join(endpoints.svidRoot, workload), { trustDomain: endpoints.trustDomain, pollIntervalMs: 0 });
  const target = endpoints.services[service]!;
  const client = createMeshClient(CONSTRUCTORS[service], target.address!, {
    svid,
    serverId: target.spiffeId,
    propagate: false,
    channelOptions: CHANNEL_OPTIONS,
  });
  return {
    client,
    thumbprint: svid.svid.thumbprint,
    close: () => {
      client.close();
      svid.close();
    },
  };
}
