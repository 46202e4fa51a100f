// Port assignment for a local mesh: fixed offsets from TWOKEY_PORT_BASE, or free loopback ports.
import { createServer } from 'node:net';
import { TwokeyError } from '../../services/authz/errors.ts';

export interface MeshPorts {
  gatewayPublic: number;
  authMesh: number;
  authJwks: number;
  imageStoreMesh: number;
  taggingMesh: number;
  health: Record<string, number>;
}

export const SERVICE_NAMES = ['auth', 'image-store', 'tagging', 'gateway', 'cleaner'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** The gRPC services each one serves on its mesh listener (what its main module registers). */
export const SERVED_SERVICES: Readonly<Record<ServiceName, readonly string[]>> = {
  auth: ['twokey.auth.v1.Auth'],
  'image-store': ['twokey.images.v1.ImageStore'],
  tagging: ['twokey.tagging.v1.Tagging'],
  gateway: [],
  cleaner: [],
};

/** A port the OS says is free right now on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Free ports that are all different: the OS may hand a just-released port out again, so ports
 * picked one after another before anything binds them could repeat.
 */
export function freePortSource(): () => Promise<number> {
  const taken = new Set<number>();
  return async () => {
    for (;;) {
      const port = await freePort();
      if (!taken.has(port)) {
        taken.add(port);
        return port;
      }
    }
  };
}

/** `next`: where free ports come from, shared with any other ports picked before services bind them. */
export async function assignPorts(base: number | undefined, next: () => Promise<number> = freePortSource()): Promise<MeshPorts> {
  if (base !== undefined) {
    if (!Number.isInteger(base) || base < 1024 || base > 65535 - 20) {
      throw new TwokeyError('ERR_CONFIG_INVALID', `TWOKEY_PORT_BASE must be an integer from 1024 to ${65535 - 20}, not ${base}`);
    }
    const health: Record<string, number> = {};
    SERVICE_NAMES.forEach((name, i) => (health[name] = base + 10 + i));
    return { gatewayPublic: base, authMesh: base + 1, authJwks: base + 2, imageStoreMesh: base + 3, taggingMesh: base + 4, health };
  }
  const health: Record<string, number> = {};
  for (const name of SERVICE_NAMES) health[name] = await next();
  return { gatewayPublic: await next(), authMesh: await next(), authJwks: await next(), imageStoreMesh: await next(), taggingMesh: await next(), health };
}

export function parsePortBase(text: string | undefined): number | undefined {
  if (text === undefined || text === '') return undefined;
  if (!/^\d{1,5}$/.test(text)) throw new TwokeyError('ERR_CONFIG_INVALID', `TWOKEY_PORT_BASE must be a port number, not ${JSON.stringify(text)}`);
  return Number(text);
}
