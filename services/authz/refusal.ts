// Refusals inside handlers (step 5, the resource check, or a refused request): the status to
// answer with, logged and counted under the decision id of the call, like the interceptor's denials.
import { Metadata, status, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { ServedCall, countRefusal, currentCall, type CallContext } from './call-context.ts';
import { grpcStatusOf, isTwokeyError } from './errors.ts';
import { authorizeOwner } from './resource.ts';

/**
 * The gRPC status for an error a handler refuses a call with, to pass to its callback
 * (`callback(refuse(err))`) or `call.emit('error', ...)`. A TwokeyError keeps its message and code
 * and gets the decision id; a refusal of the resource check writes an `authz.resource_denied` line
 * (any other a `call.refused` line) with both identities, and is counted with the decision
 * metrics. A gRPC error from an upstream call passes through; anything else is logged and answered
 * INTERNAL without its message. The lines go to `logger`, else to the mesh server's logger.
 */
export function refuse(err: unknown, logger?: Logger): StatusObject {
  const ctx = currentCall();
  const log = logger ?? (ctx instanceof ServedCall ? ctx.logger : undefined);
  if (isTwokeyError(err)) return refusalStatus(err.code, grpcStatusOf(err), err.message, logger);
  // An upstream gRPC error passes through with its code and message (they are already public).
  const upstream = err as Partial<ServiceError> | null;
  if (upstream !== null && typeof upstream?.code === 'number' && typeof upstream.details === 'string') {
    return { code: upstream.code, details: upstream.details, metadata: new Metadata() };
  }
  log?.error({ err, decision_id: ctx?.decisionId }, 'handler failed');
  return { code: status.INTERNAL, details: `internal error${suffix(ctx)}`, metadata: new Metadata() };
}

/**
 * refuse() for a refusal of the caller's own error codes (not twokey's): the status `grpcCode`
 * with `message` and the decision id, logged and counted under `errorCode`.
 */
export function refusalStatus(errorCode: string, grpcCode: status, message: string, logger?: Logger): StatusObject {
  const ctx = currentCall();
  const log = logger ?? (ctx instanceof ServedCall ? ctx.logger : undefined);
  if (ctx !== undefined) logRefusal(ctx, log, errorCode, grpcCode, message);
  return { code: grpcCode, details: `${message}${suffix(ctx)}`, metadata: new Metadata() };
}

/**
 * Step 5 in one line of a handler: null when the call's user owns the resource (with the
 * permission's scope) or holds `<permission>:any`; otherwise the PERMISSION_DENIED status, logged
 * and counted as refuse() does. Pass `owner: undefined` for a resource that does not exist: the
 * answer is the same, so a caller without access cannot learn whether it exists.
 */
export function checkOwner(permission: string, owner: string | undefined, logger?: Logger): StatusObject | null {
  try {
    authorizeOwner(currentCall()?.token, permission, owner);
    return null;
  } catch (err) {
    return refuse(err, logger);
  }
}

function logRefusal(ctx: CallContext, logger: Logger | undefined, errorCode: string, grpcCode: status, reason: string): void {
  const resource = errorCode === 'ERR_RESOURCE_FORBIDDEN' || errorCode === 'ERR_RESOURCE_NOT_FOUND';
  countRefusal(ctx, errorCode);
  logger?.warn(
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

function suffix(ctx: CallContext | undefined): string {
  return ctx === undefined ? '' : ` (decision ${ctx.decisionId})`;
}
