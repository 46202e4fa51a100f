// Outgoing calls made while serving a call carry its user token, request id and trace, and nothing else about identity.
import { InterceptingCall, type Interceptor, type Requester } from '@grpc/grpc-js';
import { currentCall, isCallActive, newSpanId, traceparentOf } from './call-context.ts';
import { stripIdentityMetadata } from './identity-metadata.ts';

// Shared by every outgoing call: it reads all it needs from the call's metadata and context.
const PROPAGATING: Requester = {
  start(metadata, listener, next) {
    const out = stripIdentityMetadata(metadata, { keepAuthorization: true });
    const ctx = currentCall();
    if (ctx !== undefined) {
      if (out.get('authorization').length === 0 && ctx.forwardToken !== undefined && isCallActive(ctx)) {
        out.set('authorization', `Bearer ${ctx.forwardToken}`);
      }
      out.set('x-request-id', ctx.requestId);
      out.set('traceparent', traceparentOf(ctx.trace, newSpanId()));
    }
    next(out, listener);
  },
};

/**
 * A client interceptor for mesh clients. Inside a served call it adds the call's verified user
 * token (unless the code set its own, e.g. a service or delegated token; and only until the served
 * call ends), its x-request-id and a child traceparent. Identity-claiming keys are removed whatever
 * the calling code put there.
 */
export function createPropagationInterceptor(): Interceptor {
  return (options, nextCall) => new InterceptingCall(nextCall(options), PROPAGATING);
}
