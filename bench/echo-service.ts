// The benchmark's Echo service definition and handler, shared by the plain and twokey servers so
// the handler work is identical in every scenario.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(here, '..');
/** Where the bench proto lives, as an extra root beside the project's proto/. */
export const BENCH_PROTO_ROOT = path.join(here, 'proto');
export const PROJECT_PROTO_ROOT = path.join(REPO_ROOT, 'proto');
export const ECHO_PROTO_FILE = 'twokey/bench/v1/bench.proto';
export const ECHO_METHOD = '/twokey.bench.v1.Echo/Echo';
export const OTHER_METHOD = '/twokey.bench.v1.Echo/Other';

export function loadEchoService(): grpc.ServiceDefinition {
  const definition = protoLoader.loadSync(ECHO_PROTO_FILE, {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [BENCH_PROTO_ROOT, PROJECT_PROTO_ROOT],
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    twokey: { bench: { v1: { Echo: grpc.ServiceClientConstructor } } };
  };
  return loaded.twokey.bench.v1.Echo.service;
}

interface EchoMessage {
  payload: Buffer;
}

/** Echo replies with the request's payload: same message size both ways. */
export const echoHandlers: grpc.UntypedServiceImplementation = {
  Echo(call: grpc.ServerUnaryCall<EchoMessage, EchoMessage>, callback: grpc.sendUnaryData<EchoMessage>) {
    callback(null, { payload: call.request.payload });
  },
  Other(call: grpc.ServerUnaryCall<EchoMessage, EchoMessage>, callback: grpc.sendUnaryData<EchoMessage>) {
    callback(null, { payload: call.request.payload });
  },
};

/** The serialized EchoRequest the load process sends, framed by the wire client. */
export function encodeEchoRequest(payloadBytes: number): Buffer {
  const service = loadEchoService();
  const payload = Buffer.alloc(payloadBytes, 0x5a);
  return service.Echo!.requestSerialize({ payload });
}
