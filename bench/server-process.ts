// Entry of a benchmark server child process: serves Echo on 127.0.0.1 with an ephemeral port,
// either plain grpc-js over mTLS (the baseline) or through twokey's mesh server, then reports the
// bound port to the parent and answers its stats requests (stats-probe.ts).
import { AsyncLocalStorage } from 'node:async_hooks';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import './stats-probe.ts';
import { createMeshServer } from '../services/authz/server.ts';
import { SvidSource } from '../services/authz/svid-source.ts';
import { StaticKeys } from '../services/authz/jwks.ts';
import { MethodCatalog } from '../services/authz/method-catalog.ts';
import { RevocationHolder, buildRevocationSet } from '../services/authz/revocation-set.ts';
import { SpiffeId } from '../services/authz/spiffe-id.ts';
import { createAuthorizer } from '../services/authorizer/authorizer.ts';
import { createLogger } from '../services/mesh-runtime/logger.ts';
import { echoHandlers, loadEchoService } from './echo-service.ts';

/** How the parent describes the server it wants. */
export type ServerConfig =
  | {
      kind: 'plain';
      /** Workload certificate directory (svid.pem, svid.key, bundle.pem). */
      svidDir: string;
      /**
       * For the cost breakdown: a server interceptor that only passes everything on, optionally
       * running the handler's callbacks inside an AsyncLocalStorage context as twokey's does.
       */
      interceptor?: 'pass-through' | 'pass-through-als';
      /**
       * The alternative to an interceptor: each handler wrapped when the service is added, reading
       * the metadata and peer address and running the handler in an AsyncLocalStorage context.
       */
      wrapHandlers?: boolean;
      /** Plaintext on loopback: a backend only the proxy beside it reaches (scenario G). */
      insecure?: boolean;
    }
  | {
      /** twokey's authorizer answering nginx's auth_request over mTLS (scenario G). */
      kind: 'authorizer';
      svidDir: string;
      trustDomain: string;
      jwks: unknown;
      issuer: string;
      /** The SPIFFE ID nginx presents: the fronted service, the audience of its tokens. */
      service: string;
      protoRoots: string[];
      /** Plaintext HTTP on loopback (a proxy in the same pod) instead of mTLS. */
      local?: boolean;
    }
  | {
      kind: 'twokey';
      svidDir: string;
      trustDomain: string;
      /** The public JWK Set the verifier trusts, fixed for the run. */
      jwks: unknown;
      issuer: string;
      /** Entries in the revocation set the server holds and checks (none of them matching the bench's caller); absent: not enforced. */
      revocationEntries?: number;
      /** Proto roots beside proto/ whose methods' declared rules apply (the bench proto). */
      protoRoots: string[];
      /** Write the decision log as services do (JSON lines to stdout, which the parent discards). */
      decisionLog: boolean;
      /** Keep Prometheus metrics as services do (nothing scrapes them during the run). */
      metrics: boolean;
    };

export interface ReadyMessage {
  op: 'ready';
  port: number;
  /** Milliseconds from process start to ready: start-up, which a profile summary leaves out. */
  startupMs: number;
}

function readConfig(): ServerConfig {
  const raw = process.env.TWOKEY_BENCH_SERVER;
  if (raw === undefined) throw new Error('TWOKEY_BENCH_SERVER is not set');
  return JSON.parse(raw) as ServerConfig;
}

function bind(server: grpc.Server, credentials: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', credentials, (err, port) => (err === null ? resolve(port) : reject(err)));
  });
}

/** An interceptor shaped like twokey's (same listener callbacks) that decides nothing. */
function passThrough(withContext: boolean): grpc.ServerInterceptor {
  const storage = new AsyncLocalStorage<object>();
  return (_method, call) => {
    let ctx: object | undefined;
    const inContext = (fn: () => void): void => (withContext && ctx !== undefined ? storage.run(ctx, fn) : fn());
    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            ctx = { method: _method.path };
            inContext(() => nextMetadata(metadata));
          },
          onReceiveMessage: (message, nextMessage) => inContext(() => nextMessage(message)),
          onReceiveHalfClose: (nextHalfClose) => inContext(nextHalfClose),
        }),
      sendStatus: (status, nextStatus) => nextStatus(status),
    });
  };
}

/** Wraps every (unary) handler at addService time: what enforcing without an interceptor would cost at least. */
function wrapped(handlers: grpc.UntypedServiceImplementation): grpc.UntypedServiceImplementation {
  const storage = new AsyncLocalStorage<object>();
  const out: grpc.UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(handlers)) {
    const unary = handler as grpc.handleUnaryCall<unknown, unknown>;
    out[name] = ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      // Not getAuthContext(): it converts the peer certificate on every call, where twokey reads it once per connection.
      const ctx = { authorization: call.metadata.get('authorization')[0], peer: call.getPeer() };
      storage.run(ctx, () => unary(call, callback));
    }) as grpc.UntypedHandleCall;
  }
  return out;
}

async function startPlain(config: ServerConfig & { kind: 'plain' }): Promise<number> {
  const read = (name: string): Buffer => fs.readFileSync(path.join(config.svidDir, name));
  const credentials = config.insecure === true ? grpc.ServerCredentials.createInsecure() : grpc.ServerCredentials.createSsl(
    read('bundle.pem'),
    [{ cert_chain: read('svid.pem'), private_key: read('svid.key') }],
    true,
  );
  const server = new grpc.Server(config.interceptor === undefined ? {} : { interceptors: [passThrough(config.interceptor === 'pass-through-als')] });
  server.addService(loadEchoService(), config.wrapHandlers === true ? wrapped(echoHandlers) : echoHandlers);
  return bind(server, credentials);
}

/** The same handler behind twokey's mesh server, configured the way the example services are. */
async function startTwokey(config: ServerConfig & { kind: 'twokey' }): Promise<number> {
  const svid = await SvidSource.open(config.svidDir, { trustDomain: config.trustDomain, pollIntervalMs: 0 });
  const rules = MethodCatalog.load({ extraRoots: config.protoRoots });
  const logger = config.decisionLog ? createLogger('bench-echo', { level: 'info' }) : undefined;
  const keys = await StaticKeys.fromJwks(config.jwks);
  const revocation = config.revocationEntries === undefined ? undefined : heldRevocations(keys, config.revocationEntries);
  const mesh = createMeshServer({
    svid,
    keys,
    ...(revocation === undefined ? {} : { revocation }),
    issuer: config.issuer,
    rules,
    ...(logger ? { logger } : {}),
    ...(config.metrics ? { metrics: { registry: new Registry(), knownCallers: [] } } : {}),
    // The open loop offers 2000 calls/s with one token from one peer: on a busy machine hundreds
    // are in flight at once, which the default limits would shed. The limits are still checked on
    // every call (their cost is measured); only their values are out of the way.
    limits: { maxInFlightPerPeer: 1_000_000, maxInFlightPerUser: 1_000_000, maxInFlight: 1_000_000 },
  });
  mesh.server.addService(loadEchoService(), echoHandlers);
  return mesh.listen('127.0.0.1:0');
}

/** The authorizer configured as `twokey authz serve` configures it (decision log and metrics on), keys fixed for the run. */
async function startAuthorizer(config: ServerConfig & { kind: 'authorizer' }): Promise<number> {
  const svid = await SvidSource.open(config.svidDir, { trustDomain: config.trustDomain, pollIntervalMs: 0 });
  const authorizer = createAuthorizer({
    svid,
    keys: await StaticKeys.fromJwks(config.jwks),
    issuer: config.issuer,
    service: SpiffeId.parse(config.service),
    rules: MethodCatalog.load({ extraRoots: config.protoRoots }),
    logger: createLogger('bench-authorizer', { level: 'info' }),
    metrics: { registry: new Registry(), knownCallers: [] },
  });
  return config.local === true ? authorizer.listenLocalHttp('127.0.0.1:0') : authorizer.listenHttp('127.0.0.1:0');
}

/**
 * A holder with `entries` entries spread over the four kinds, none matching the bench's caller. The
 * set is handed over already built (its signature is checked once per set, never per call, so the
 * per-call cost measured here is the lookups), with a staleness bound longer than any run.
 */
function heldRevocations(keys: StaticKeys, entries: number): RevocationHolder {
  const quarter = Math.floor(entries / 4);
  const pad = (i: number): string => String(i).padStart(16, '0');
  const disabledSubjects = new Map<string, number>();
  const jtis = new Map<string, number>();
  const serials = new Map<string, number>();
  const kids = new Set<string>();
  const now = Math.floor(Date.now() / 1000);
  for (let i = 0; i < quarter; i++) {
    disabledSubjects.set(`user-${i}`, now);
    jtis.set(`revoked-${pad(i)}`, now + 3600);
    serials.set((0xf0000000 + i).toString(16).toUpperCase(), now + 3600);
  }
  for (let i = 0; kids.size + disabledSubjects.size + jtis.size + serials.size < entries; i++) kids.add(`withdrawn-${i}`);
  const holder = new RevocationHolder({ keys, maxStalenessMs: 24 * 3600_000 });
  holder.acceptVerified(buildRevocationSet(1, Date.now(), { disabledSubjects, jtis, serials, kids }));
  return holder;
}

const config = readConfig();
const port = config.kind === 'plain' ? await startPlain(config) : config.kind === 'authorizer' ? await startAuthorizer(config) : await startTwokey(config);
process.send!({ op: 'ready', port, startupMs: performance.now() } satisfies ReadyMessage);
// Exit through process.exit so `--cpu-prof` writes its profile when the parent stops the server.
process.on('SIGTERM', () => process.exit(0));
