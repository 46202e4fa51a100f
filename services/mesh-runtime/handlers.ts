// Adapters from async handler functions to grpc-js handlers: one place turns errors into statuses.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { currentCall } from '../authz/call-context.ts';
import { grpcStatusOf, isTwokeyError } from '../authz/errors.ts';

/** The status for an error thrown by a handler: TwokeyErrors keep their message; others are hidden. */
export function statusFor(err: unknown, logger: Logger): grpc.StatusObject {
  if (isTwokeyError(err)) {
    return { code: grpcStatusOf(err), details: `${err.message}${suffix()}`, metadata: new grpc.Metadata() };
  }
  // An upstream gRPC error passes through with its code and message (they are already public).
  const upstream = err as Partial<grpc.ServiceError> | null;
  if (upstream !== null && typeof upstream?.code === 'number' && typeof upstream.details === 'string') {
    return { code: upstream.code, details: upstream.details, metadata: new grpc.Metadata() };
  }
  logger.error({ err, decision_id: currentCall()?.decisionId }, 'handler failed');
  return { code: grpc.status.INTERNAL, details: `internal error${suffix()}`, metadata: new grpc.Metadata() };
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
