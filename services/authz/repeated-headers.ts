// Lets a grpc-js server see every value of a repeated authorization header, which Node's HTTP/2 would otherwise drop.
import type { Http2SecureServer, Http2Server, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { Server, ServerCredentials } from '@grpc/grpc-js';
import { TwokeyError } from './errors.ts';

/**
 * The one credential header the mesh reads. Node's HTTP/2 treats it as single-valued: it keeps the
 * first field of a repeated one and drops the rest without a trace, so a request with two
 * `authorization` fields would be judged on whichever came first. (Other identity-like headers are
 * not single-valued for Node, which joins their values, and the mesh strips them anyway.) HTTP/2
 * field names are lower case on the wire, and nghttp2 resets a stream with an upper-case one, so
 * `Authorization` never reaches here as a second spelling.
 */
const CREDENTIAL_HEADER = 'authorization';

/**
 * Puts every value of a repeated authorization header back into the header object grpc-js builds the
 * call's metadata from, so the metadata holds them all and the bearer-token reader refuses the
 * call as it refuses any second authorization value (UNAUTHENTICATED), before any handler runs.
 * Node hands the raw field list only to 'stream' listeners, which is why this is one.
 */
export function restoreRepeatedAuthorization(_stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, rawHeaders: string[]): void {
  let count = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i] === CREDENTIAL_HEADER) count++;
  if (count < 2) return;
  // Node types authorization as one string; grpc-js reads a list as it reads any repeated header.
  (headers as Record<string, string | string[] | undefined>)[CREDENTIAL_HEADER] = rawHeaders.filter((_, i) => i % 2 === 1 && rawHeaders[i - 1] === CREDENTIAL_HEADER);
}

interface Http2ServerFactory {
  createHttp2Server(credentials: ServerCredentials): Http2Server | Http2SecureServer;
}

/**
 * Makes `server` refuse requests that repeat the authorization header. grpc-js creates one HTTP/2
 * server per bound address in createHttp2Server (not part of its typed API) and adds its own
 * 'stream' listener there; ours is put in front of it, so grpc-js reads the corrected headers.
 * Call before bindAsync. A grpc-js without that method is refused at start rather than served
 * without the check.
 */
export function refuseRepeatedAuthorization<S extends Server>(server: S): S {
  const factory = server as unknown as Http2ServerFactory;
  const create = factory.createHttp2Server;
  if (typeof create !== 'function') {
    throw new TwokeyError('ERR_CONFIG_INVALID', 'this grpc-js has no createHttp2Server: repeated authorization headers could not be refused');
  }
  factory.createHttp2Server = function (this: Server, credentials: ServerCredentials) {
    const http2Server = create.call(this, credentials);
    http2Server.prependListener('stream', restoreRepeatedAuthorization);
    return http2Server;
  };
  return server;
}
