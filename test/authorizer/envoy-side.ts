// Envoy's side of ext_authz, played with Envoy's own protos (as @grpc/grpc-js-xds ships them): a CheckRequest as the filter fills it.
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

const require = createRequire(import.meta.url);
/** Envoy's API protos and their dependencies, as the xds package vendors them. */
export const ENVOY_DEPS = join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');

export type CheckClient = grpc.Client & {
  Check(req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: EnvoyCheckResponse) => void): void;
};

export interface EnvoyCheckResponse {
  status: { code: number; message: string } | null;
  denied_response?: { status: { code: string }; headers: { header: { key: string; value: string } }[]; body: string } | null;
  ok_response?: { headers: { header: { key: string; value: string }; append_action: string }[]; headers_to_remove: string[] } | null;
  http_response: 'ok_response' | 'denied_response' | undefined;
}

let ctor: grpc.ServiceClientConstructor | undefined;
export function checkClientCtor(): grpc.ServiceClientConstructor {
  if (ctor === undefined) {
    const def = loadSync('envoy/service/auth/v3/external_auth.proto', {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
      includeDirs: ['envoy-api', 'googleapis', 'xds', 'protoc-gen-validate'].map((d) => join(ENVOY_DEPS, d)),
    });
    ctor = (grpc.loadPackageDefinition(def) as any).envoy.service.auth.v3.Authorization as grpc.ServiceClientConstructor;
  }
  return ctor;
}

export interface EnvoyCall {
  /** The downstream client's certificate PEM (include_peer_certificate); undefined: it presented none. */
  certificatePem?: string | undefined;
  /** The URI SAN Envoy reports as the source principal. */
  principal?: string | undefined;
  path: string;
  /** Request headers as the client sent them (lower-case names). */
  headers?: Record<string, string>;
  /** The proxy's own SPIFFE ID (destination.principal). */
  destination: string;
}

/**
 * The CheckRequest Envoy's ext_authz HTTP filter sends for a gRPC call: the source peer with the
 * URL-encoded PEM certificate and URI SAN principal, the destination, and the HTTP request with
 * its pseudo-headers in the header map, the path, host, scheme and protocol.
 */
export function envoyCheckRequest(call: EnvoyCall): object {
  const headers: Record<string, string> = {
    ':authority': 'notes.example:8443',
    ':method': 'POST',
    ':path': call.path,
    ':scheme': 'https',
    'content-type': 'application/grpc',
    te: 'trailers',
    'user-agent': 'grpc-node-js/1.14',
    'x-request-id': randomUUID(),
    'x-forwarded-proto': 'https',
    ...call.headers,
  };
  return {
    attributes: {
      source: {
        address: { socket_address: { address: '127.0.0.1', port_value: 50000 } },
        principal: call.principal ?? '',
        certificate: call.certificatePem === undefined ? '' : encodeURIComponent(call.certificatePem),
      },
      destination: {
        address: { socket_address: { address: '127.0.0.1', port_value: 8443 } },
        principal: call.destination,
      },
      request: {
        time: { seconds: String(Math.floor(Date.now() / 1000)), nanos: 0 },
        http: {
          id: '1234567890',
          method: 'POST',
          headers,
          path: call.path,
          host: headers[':authority'],
          scheme: 'https',
          protocol: 'HTTP/2',
          size: '-1',
        },
      },
    },
  };
}

export function check(client: CheckClient, request: object, timeoutMs = 5000): Promise<{ res?: EnvoyCheckResponse; err?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    client.Check(request, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => resolve(err ? { err } : { res }));
  });
}

/** The HTTP status Envoy answers with for a CheckResponse (403 when a denial names none). */
export const HTTP_STATUS_NAMES: Record<string, number> = { Unauthorized: 401, Forbidden: 403, ServiceUnavailable: 503, InternalServerError: 500, TooManyRequests: 429 };
