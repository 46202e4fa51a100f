// Scenario E's system under test: the real example mesh, started the way `npm start` starts it
// (scripts/local-mesh), with one user logged in and one small image stored, so that the load
// generator can call gateway -> image-store GetImage through the gateway's public TLS listener.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import type * as grpc from '@grpc/grpc-js';
import { ImageStoreClient, bearer, unary } from '../services/mesh-runtime/protos.ts';
import { jpegWithoutExif } from '../scripts/fixtures/gps-jpeg.ts';
import { gatewayClient } from '../scripts/local-mesh/clients.ts';
import { startLocalMesh, type LocalMesh } from '../scripts/local-mesh/local-mesh.ts';
import { ProcStats, type StatsSource } from './proc-stats.ts';
import type { WireTarget } from './wire-client.ts';

export const GET_IMAGE_METHOD = '/twokey.images.v1.ImageStore/GetImage';

export interface MeshPath {
  target: WireTarget;
  /** The serialized GetImageRequest for the stored image. */
  message: Buffer;
  /** alice's access token, from a real login through the gateway. */
  token: string;
  imageBytes: number;
  /** The processes on the call's path: the gateway, then the image store. */
  servers: StatsSource[];
  pids: { gateway: number; imageStore: number };
  stop(): Promise<void>;
}

/**
 * `profileDir`: profile every service's CPU (cpu-profiler.mjs), writing CPU.<pid>.cpuprofile there on exit.
 * `extraEnv`: for every service, e.g. TWOKEY_DATABASE_URL to run the mesh on PostgreSQL.
 */
export async function startMeshPath(stateDir: string, profileDir?: string, extraEnv: Record<string, string> = {}): Promise<MeshPath> {
  // The cleaner's nightly sweep must not run while the benchmark measures.
  // The services write their logs as in production (asynchronously), not line by line before each
  // answer as `npm start` does for the demo's sake.
  const env: Record<string, string> = {
    TWOKEY_LOG_SYNC: '0',
    // One token on one connection, offered faster than a busy machine answers: the gateway's
    // per-user and per-connection limits would shed it. They are still checked on every call.
    TWOKEY_GATEWAY_MAX_CONCURRENT_STREAMS: '1000',
    TWOKEY_GATEWAY_MAX_IN_FLIGHT_PER_CONNECTION: '100000',
    TWOKEY_GATEWAY_MAX_IN_FLIGHT_PER_USER: '100000',
    TWOKEY_GATEWAY_MAX_IN_FLIGHT: '100000',
    ...extraEnv,
  };
  if (profileDir !== undefined) {
    Object.assign(env, { NODE_OPTIONS: `--import=${fileURLToPath(new URL('./cpu-profiler.mjs', import.meta.url))}`, TWOKEY_BENCH_PROFILE_DIR: profileDir });
  }
  const mesh: LocalMesh = await startLocalMesh({ stateDir, cleanerInterval: '24h', env });
  try {
    const auth = gatewayClient(mesh.endpoints, 'auth');
    const images = gatewayClient(mesh.endpoints, 'image-store');
    const login = await unary<{ access_token: string }>(auth, 'Login', { username: 'alice', password: mesh.users['alice'] });
    const content = jpegWithoutExif();
    const image = await unary<{ id: string }>(
      images,
      'CreateImage',
      { name: 'bench.jpg', content_type: 'image/jpeg', content, tags: [] },
      bearer(login.access_token),
    );
    for (const client of [auth, images] as grpc.Client[]) client.close();
    const pid = (name: 'gateway' | 'image-store'): number => {
      const value = mesh.pid(name);
      if (value === undefined) throw new Error(`${name} is not running`);
      return value;
    };
    const port = Number(mesh.endpoints.gateway.address.split(':').pop());
    return {
      target: { port, ca: fs.readFileSync(mesh.endpoints.gateway.caFile, 'utf8') },
      message: ImageStoreClient.service.GetImage!.requestSerialize({ id: image.id, without_content: false }),
      token: login.access_token,
      imageBytes: content.length,
      servers: [new ProcStats('gateway', pid('gateway')), new ProcStats('image-store', pid('image-store'))],
      pids: { gateway: pid('gateway'), imageStore: pid('image-store') },
      stop: () => mesh.stop(),
    };
  } catch (err) {
    await mesh.stop();
    throw err;
  }
}

