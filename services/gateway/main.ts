// The gateway process: the only door for end users. Public TLS (no client certificate), load limits
// and the user token checked before anything is forwarded, identity-like metadata dropped, and calls
// relayed into the mesh over mTLS with the gateway's own certificate and the user's token.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { TwokeyError } from '../authz/errors.ts';
import { LineFolder } from '../authz/log-folding.ts';
import { refuseRepeatedAuthorization } from '../authz/repeated-headers.ts';
import { registerTokenCacheMetrics } from '../authz/decision-metrics.ts';
import { TokenAuthenticator } from '../authz/token-authenticator.ts';
import { TokenVerifier } from '../authz/token-verifier.ts';
import { SpiffeId } from '../authz/spiffe-id.ts';
import { envAddress, envString, type Env } from '../mesh-runtime/env.ts';
import { MAX_MESSAGE_BYTES, MeshRuntime } from '../mesh-runtime/mesh-runtime.ts';
import type { RunningService } from '../mesh-runtime/running-service.ts';
import { AdmittedCall, gatewayInterceptor } from './gateway-call.ts';
import { GatewayAdmission, UPSTREAM_CANCEL_BUDGET, gatewayLimitsFromEnv } from './gateway-limits.ts';
import { RateLimiter } from '../authz/admission.ts';
import { GatewayMetrics } from './gateway-metrics.ts';
import { registerHeapMetrics } from '../mesh-runtime/heap-metrics.ts';
import { PUBLIC_ROUTES, rawDefinition, type PublicRoute } from './public-routes.ts';

const ADDRESS_ENV: Record<PublicRoute['upstream'], [string, string]> = {
  auth: ['TWOKEY_AUTH_ADDR', 'auth:8443'],
  'image-store': ['TWOKEY_IMAGE_STORE_ADDR', 'image-store:8443'],
  tagging: ['TWOKEY_TAGGING_ADDR', 'tagging:8443'],
};
const UPSTREAM_TIMEOUT_MS = 30_000;
const passthrough = (b: Buffer): Buffer => b;

export async function serve(env: Env): Promise<RunningService> {
  // Configuration first: a limit that is not a positive integer fails the start.
  const limits = gatewayLimitsFromEnv(env);
  const runtime = await MeshRuntime.start('gateway', env, []);
  try {
    const log = runtime.logger;
    const trustDomainId = SpiffeId.forTrustDomain(runtime.registry.trustDomain).toString();
    // A revoked user token is refused here already, not first at the next hop.
    const { keys, revocation: revocations } = await runtime.linkToAuth();
    // The gateway accepts only tokens minted for the whole mesh: user tokens.
    const tokens = new TokenAuthenticator({
      verifier: new TokenVerifier({ keys, issuer: runtime.registry.auth.issuer, audiences: [trustDomainId] }),
    });
    // A retired signing key must stop vouching for tokens verified with it.
    keys.addChangeListener(() => tokens.cache.clear());
    registerTokenCacheMetrics(runtime.metrics, tokens.cache);
    const metrics = new GatewayMetrics(runtime.metrics);
    const upstreams = new Map<string, grpc.Client>();
    for (const name of new Set(PUBLIC_ROUTES.map((r) => r.upstream))) {
      const [envName, fallback] = ADDRESS_ENV[name];
      upstreams.set(name, runtime.client(grpc.Client, name, envName, fallback, false));
    }

    const tlsDir = envString(env, 'TWOKEY_PUBLIC_TLS_DIR', '/var/run/twokey/public-tls');
    let certChain: Buffer;
    let privateKey: Buffer;
    try {
      certChain = readFileSync(join(tlsDir, 'tls.crt'));
      privateKey = readFileSync(join(tlsDir, 'tls.key'));
    } catch (err) {
      throw new TwokeyError('ERR_CONFIG_INVALID', `cannot read the public TLS certificate from TWOKEY_PUBLIC_TLS_DIR ${tlsDir}: ${(err as Error).message}`);
    }
    const credentials = grpc.ServerCredentials.createSsl(null, [{ cert_chain: certChain, private_key: privateKey }], false);

    const admission = new GatewayAdmission(limits, runtime.metrics);
    // Whether a flood left memory behind is read from the heap after a full collection (on SIGUSR2
    // when an operator wants it now) and the admitted calls still referenced, not from RSS (docs/limits.md).
    runtime.onClose(registerHeapMetrics(runtime.metrics, { signal: 'SIGUSR2', retained: { constructor: AdmittedCall, inUse: () => admission.callsInFlight() } }));
    const folder = new LineFolder((summary) =>
      log.warn({ ...summary.fields, event: 'gateway.folded', folded: summary.folded, window_start: new Date(summary.fromMs).toISOString(), window_ms: summary.toMs - summary.fromMs }, `${summary.folded} more lines like this were folded`),
    );
    runtime.onClose(() => folder.close());
    const admitted = new WeakMap<grpc.Metadata, AdmittedCall>();
    // Calls are admitted (limits, token, request deadline) before a handler sees them.
    const server = refuseRepeatedAuthorization(
      new grpc.Server({
        'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
        'grpc.max_concurrent_streams': limits.maxConcurrentStreams,
        'grpc.enable_channelz': 0,
        interceptors: [
          gatewayInterceptor({
            routes: new Map(PUBLIC_ROUTES.map((r) => [r.path, r])),
            tokens,
            revocations,
            admission,
            metrics,
            log,
            folder,
            admitted,
            forwardedToken: new WeakMap(),
            upstreamCancels: new RateLimiter(UPSTREAM_CANCEL_BUDGET),
            now: Date.now,
          }),
        ],
      }),
    );

    for (const route of PUBLIC_ROUTES) {
      const definition = rawDefinition(route.path);
      const upstream = upstreams.get(route.upstream)!;
      const handler: grpc.handleUnaryCall<Buffer, Buffer> = (call, callback) => {
        const a = admitted.get(call.metadata);
        if (a === undefined) return callback({ code: grpc.status.INTERNAL, details: 'twokey gateway: call not admitted' });
        // A client that is already gone gets nothing started for it.
        if (a.cancelled) return;
        if (a.streamGone()) {
          a.cancelled = true;
          metrics.cancelled(route.path, 'before_forward');
          return;
        }
        const callDeadline = call.getDeadline();
        const deadline = Math.min(Date.now() + UPSTREAM_TIMEOUT_MS, callDeadline instanceof Date ? callDeadline.getTime() : Number(callDeadline) || Infinity);
        const forwarded = upstream.makeUnaryRequest(route.path, passthrough, passthrough, call.request, a.outgoing, { deadline }, (err, res) => {
          a.upstreamEnded();
          const code = err?.code ?? grpc.status.OK;
          log.info({ event: 'gateway.forward', method: route.path, client: a.client, request_id: a.requestId, subject: a.subject, jti: a.jti, upstream: route.upstream, grpc_code: code, latency_ms: Date.now() - a.startedMs, ...(a.cancelled ? { cancelled: true } : {}) }, 'gateway forward');
          metrics.forwarded(route.path);
          if (err) callback({ code: err.code, details: err.details, metadata: new grpc.Metadata() });
          else callback(null, res!);
        });
        a.cancelUpstream = () => forwarded.cancel();
      };
      server.register(route.path, handler, definition.responseSerialize, definition.requestDeserialize, 'unary');
    }

    const listen = envAddress(env, 'TWOKEY_PUBLIC_LISTEN', '0.0.0.0:9443');
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(listen, credentials, (err, bound) => (err ? reject(new TwokeyError('ERR_CONFIG_INVALID', `cannot listen on ${listen}: ${err.message}`)) : resolve(bound))),
    );
    runtime.onClose(
      () =>
        new Promise<void>((resolve) => {
          const force = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, 2000);
          server.tryShutdown(() => {
            clearTimeout(force);
            resolve();
          });
        }),
    );
    runtime.serving({ public_port: port });
    return runtime;
  } catch (err) {
    await runtime.close();
    throw err;
  }
}
