// Adapters from async handler functions to grpc-js handlers: one place turns errors into statuses.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { countRefusal, currentCall } from '../authz/call-context.ts';
import { grpcStatusOf, isTwokeyError } from '../authz/errors.ts';
import { isExampleError } from './example-errors.ts';

/** The status for an error thrown by a handler: TwokeyErrors (and the examples' own) keep their message; others are hidden. */
export function statusFor(err: unknown, logger: Logger): grpc.StatusObject {
  if (isTwokeyError(err) || isExampleError(err)) {
    const code = isExampleError(err) ? err.grpcStatus : grpcStatusOf(err);
    logRefusal(logger, err.code, code, err.message);
    return { code, details: `${err.message}${suffix()}`, metadata: new grpc.Metadata() };
  }
  // An upstream gRPC error passes through with its code and message (they are already public).
  const upstream = err as Partial<grpc.ServiceError> | null;
  if (upstream !== null && typeof upstream?.code === 'number' && typeof upstream.details === 'string') {
    return { code: upstream.code, details: upstream.details, metadata: new grpc.Metadata() };
  }
  logger.error({ err, decision_id: currentCall()?.decisionId }, 'handler failed');
  return { code: grpc.status.INTERNAL, details: `internal error${suffix()}`, metadata: new grpc.Metadata() };
}

/**
 * The interceptor's decision line covers checks 1-4; a refusal inside the handler (step 5, the
 * resource check, or a refused request) gets its own line under the same decision id, with both
 * identities, so the log shows how every call ended.
 */
function logRefusal(logger: Logger, errorCode: string, grpcCode: grpc.status, reason: string): void {
  const ctx = currentCall();
  if (ctx === undefined) return;
  const resource = errorCode === 'ERR_RESOURCE_FORBIDDEN' || errorCode === 'ERR_RESOURCE_NOT_FOUND';
  countRefusal(ctx, errorCode);
  logger.warn(
    {
      event: resource ? 'authz.resource_denied' : 'call.refused',
      decision_id: ctx.decisionId,
      request_id: ctx.requestId,
      method: ctx.method,
      allow: false,
      error_code: errorCode,
      grpc_code: grpcCode,
      peer_spiffe_id: ctx.peer?.spiffeId.toString(),
      peer_serial: ctx.peer?.serialHex,
      subject: ctx.token?.subject,
      token_kind: ctx.token?.kind,
      actor_chain: ctx.token?.actorChain.length ? ctx.token.actorChain : undefined,
      jti: ctx.token?.jti,
      reason,
    },
    resource ? 'resource check deny' : 'call refused',
  );
}

function suffix(): string {
  const ctx = currentCall();
  return ctx === undefined ? '' : ` (decision ${ctx.decisionId})`;
}

export function unaryHandler<Req, Res>(
  logger: Logger,
  fn: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res> | Res,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    let pending: Promise<Res>;
    try {
      pending = Promise.resolve(fn(call.request, call));
    } catch (err) {
      callback(statusFor(err, logger));
      return;
    }
    pending.then(
      (res) => callback(null, res),
      (err: unknown) => callback(statusFor(err, logger)),
    );
  };
}
