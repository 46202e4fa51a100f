// Which public methods the gateway exposes, where each goes, and whether it needs a user token.
import type { MethodDefinition } from '@grpc/proto-loader';
import { MethodCatalog } from '../authz/method-catalog.ts';

export interface PublicRoute {
  path: string;
  /** Registry name of the service that serves it. */
  upstream: 'auth' | 'image-store' | 'tagging';
  /** Login is the one method a user calls before holding a token. */
  needsUserToken: boolean;
}

// WatchImages and the workload-facing Auth methods are not public: no user holds their scopes.
export const PUBLIC_ROUTES: readonly PublicRoute[] = [
  { path: '/twokey.auth.v1.Auth/Login', upstream: 'auth', needsUserToken: false },
  ...['CreateImage', 'GetImage', 'ListImages', 'UpdateImage', 'SetTags', 'DeleteImage'].map(
    (m): PublicRoute => ({ path: `/twokey.images.v1.ImageStore/${m}`, upstream: 'image-store', needsUserToken: true }),
  ),
  { path: '/twokey.tagging.v1.Tagging/SuggestTags', upstream: 'tagging', needsUserToken: true },
];

const passthrough = (b: Buffer): Buffer => b;

/**
 * The route's method definition with messages left as bytes: the gateway forwards requests and
 * responses without decoding them, so it can neither alter nor misparse what it relays.
 */
export function rawDefinition(path: string): MethodDefinition<Buffer, Buffer> {
  const [, service, method] = /^\/([^/]+)\/([^/]+)$/.exec(path)!;
  const def = (MethodCatalog.default().definition[service!] as Record<string, MethodDefinition<object, object>> | undefined)?.[method!];
  if (def === undefined) throw new Error(`proto/ defines no method ${path}`);
  return {
    ...def,
    requestSerialize: passthrough,
    requestDeserialize: passthrough,
    responseSerialize: passthrough,
    responseDeserialize: passthrough,
  } as unknown as MethodDefinition<Buffer, Buffer>;
}
