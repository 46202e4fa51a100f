// The example system's gRPC service definitions and client constructors, from twokey's proto/.
import * as grpc from '@grpc/grpc-js';
import { MethodCatalog } from '../authz/method-catalog.ts';

interface Packages {
  twokey: {
    auth: { v1: { Auth: grpc.ServiceClientConstructor } };
    images: { v1: { ImageStore: grpc.ServiceClientConstructor } };
    tagging: { v1: { Tagging: grpc.ServiceClientConstructor } };
  };
}

const packages = grpc.loadPackageDefinition(MethodCatalog.default().definition) as unknown as Packages;

export const AuthClient = packages.twokey.auth.v1.Auth;
export const ImageStoreClient = packages.twokey.images.v1.ImageStore;
export const TaggingClient = packages.twokey.tagging.v1.Tagging;

/** Calls a unary method by name on a proto client, as a promise. */
export function unary<Res>(
  client: grpc.Client,
  method: string,
  request: unknown,
  metadata: grpc.Metadata = new grpc.Metadata(),
  timeoutMs = 10_000,
): Promise<Res> {
  const fn = (client as unknown as Record<string, Function>)[method];
  if (typeof fn !== 'function') return Promise.reject(new Error(`no method ${method} on this client`));
  return new Promise<Res>((resolve, reject) => {
    fn.call(client, request, metadata, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: Res) =>
      err ? reject(err) : resolve(res),
    );
  });
}

export function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}
