// Adapters from async handler functions to grpc-js handlers: one place turns errors into statuses.
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { refuse, refusalStatus } from '../authz/refusal.ts';
import { isExampleError } from './example-errors.ts';

/**
 * The status for an error thrown by a handler (see refuse()): TwokeyErrors (and the examples' own) keep their message and
 * get the decision id, and a refusal gets its own line under the same decision id, so the log
 * shows how every call ended; others are hidden.
 */
export function statusFor(err: unknown, logger: Logger): grpc.StatusObject {
  if (isExampleError(err)) return refusalStatus(err.code, err.grpcStatus, err.message, logger);
  return refuse(err, logger);
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
