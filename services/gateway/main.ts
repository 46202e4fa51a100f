// The gateway process: the only door for end users. Public TLS (no client certificate), the user
// token verified before anything is forwarded, identity-like metadata dropped, and calls relayed
// into the mesh over mTLS with the gateway's own certificate and the user's token.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { isTwokeyError, grpcStatusOf, logDetail, TwokeyError } from '../authz/errors.ts';
import { refuseRepeatedAuthorization } from '../authz/repeated-headers.ts';
import { registerTokenCacheMetrics } from '../authz/decision-metrics.ts';
import { TokenAuthenticator } from '../authz/token-authenticator.ts';
import { revocationFailure } from '../authz/decision.ts';
import { TokenVerifier } from '../authz/token-verifier.ts';
import { SpiffeId } from '../authz/spiffe-id.ts';
import { envAddress, envString, type Env } from '../mesh-runtime/env.ts';
import { MAX_MESSAGE_BYTES, MeshRuntime } from '../mesh-runtime/mesh-runtime.ts';
import type { RunningService } from '../mesh-runtime/running-service.ts';
import { GatewayMetrics } from './gateway-metrics.ts';
import { PUBLIC_ROUTES, rawDefinition, type PublicRoute } from './public-routes.ts';

const ADDRESS_ENV: Record<PublicRoute['upstream'], [string, string]> = {
  auth: ['TWOKEY_AUTH_ADDR', 'auth:8443'],
  'image-store': ['TWOKEY_IMAGE_STORE_ADDR', 'image-store:8443'],
  tagging: ['TWOKEY_TAGGING_ADDR', 'tagging:8443'],
};
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const UPSTREAM_TIMEOUT_MS = 30_000;

/** The client's IP from grpc-js's peer string ("1.2.3.4:5678", "[::1]:5678", optionally "ipv4:"-prefixed). */
function clientAddress(peer: string): string {
  const match = /^(?:ipv[46]:)?\[?([0-9a-fA-F:.]+?)\]?:\d+$/.exec(peer);
  return match?.[1] ?? 'unknown';
}

export async function serve(env: Env): Promise<RunningService> {
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
    // Two authorization fields are refused as UNAUTHENTICATED, not judged on the first.
    const server = refuseRepeatedAuthorization(new grpc.Server({ 'grpc.max_receive_message_length': MAX_MESSAGE_BYTES, 'grpc.enable_channelz': 0 }));

    for (const route of PUBLIC_ROUTES) {
      const definition = rawDefinition(route.path);
      const handler: grpc.handleUnaryCall<Buffer, Buffer> = (call, callback) => {
        const started = Date.now();
        const client = clientAddress(call.getPeer());
        const requestIdIn = call.metadata.get('x-request-id')[0];
        const requestIdSent = typeof requestIdIn === 'string' && REQUEST_ID.test(requestIdIn);
        const requestId = requestIdSent ? requestIdIn : randomUUID();
        // A denial names the request for the log, but never reflects a value the caller chose.
        const requestRef = requestIdSent ? 'the x-request-id sent' : `request ${requestId}`;
        // `logged` may name what the caller sent (sanitized); the status carries `reason` only.
        const deny = (code: grpc.status, reason: string, errorCode: string, logged = reason): void => {
          log.warn({ event: 'gateway.deny', method: route.path, client, request_id: requestId, grpc_code: code, error_code: errorCode, reason: logged }, 'gateway deny');
          metrics.denied(route.path, errorCode);
          callback({ code, details: `twokey gateway: ${reason} (${requestRef})` });
        };
        // Nothing the client sent is forwarded except the request body: fresh metadata only.
        const outgoing = new grpc.Metadata();
        outgoing.set('x-request-id', requestId);
        const forward = (subject: string | undefined, jti: string | undefined): void => {
          const upstream = upstreams.get(route.upstream)!;
          const callDeadline = call.getDeadline();
          const deadline = Math.min(Date.now() + UPSTREAM_TIMEOUT_MS, callDeadline instanceof Date ? callDeadline.getTime() : Number(callDeadline) || Infinity);
          upstream.makeUnaryRequest(route.path, (b: Buffer) => b, (b: Buffer) => b, call.request, outgoing, { deadline }, (err, res) => {
            const code = err?.code ?? grpc.status.OK;
            log.info({ event: 'gateway.forward', method: route.path, client, request_id: requestId, subject, jti, upstream: route.upstream, grpc_code: code, latency_ms: Date.now() - started }, 'gateway forward');
            metrics.forwarded(route.path);
            if (err) callback({ code: err.code, details: err.details, metadata: new grpc.Metadata() });
            else callback(null, res!);
          });
        };
        if (!route.needsUserToken) {
          outgoing.set('x-forwarded-for', client);
          forward(undefined, undefined);
          return;
        }
        Promise.resolve(tokens.fromMetadata(call.metadata)).then(
          (result) => {
            if (!result.ok) return deny(grpcStatusOf(result.error), result.error.message, result.error.code, logDetail(result.error));
            const token = result.token;
            if (token.kind !== 'user') {
              return deny(grpc.status.UNAUTHENTICATED, `the gateway accepts only user tokens, not a ${token.kind} token`, 'ERR_TOKEN_INVALID');
            }
            if (Date.now() >= token.validUntilMs) return deny(grpc.status.UNAUTHENTICATED, 'token expired', 'ERR_TOKEN_EXPIRED');
            const revoked = revocationFailure(token, revocations.view(), Date.now());
            if (revoked !== null) return deny(grpcStatusOf(revoked), `revocation check failed: ${revoked.message}`, revoked.code);
            outgoing.set('authorization', `Bearer ${result.raw}`);
            forward(token.subject, token.jti);
          },
          (err: unknown) => {
            const e = isTwokeyError(err) ? err : new TwokeyError('ERR_TOKEN_INVALID', 'token verification failed');
            deny(grpcStatusOf(e), e.message, e.code);
          },
        );
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
