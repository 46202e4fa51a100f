// For the cost breakdown: twokey's whole allowed-call decision run by a handler wrapper instead of a
// server interceptor (peer, rule, grant, token from the cache, decide(), decision line, context).
// Unary only, no stream expiry, no dry run: a measurement of the alternative, not an adapter to ship.
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { ServedCall, endCall, requestIdFrom, runInCall, traceFrom } from '../services/authz/call-context.ts';
import { decide, decidePeer, type DecisionInput } from '../services/authz/decision.ts';
import { DecisionLog } from '../services/authz/decision-log.ts';
import { denialMessage } from '../services/authz/interceptor.ts';
import type { MethodCatalog } from '../services/authz/method-catalog.ts';
import { PeerIdentityCache } from '../services/authz/peer-identity.ts';
import type { TokenAuthenticator } from '../services/authz/token-authenticator.ts';
import { stripIdentityMetadata } from '../services/authz/identity-metadata.ts';

export interface WrappedAuthzOptions {
  trustDomain: string;
  rules: MethodCatalog;
  tokens: TokenAuthenticator;
  logger?: Logger;
}

/** Wraps each unary handler of a service with the decision; every other call kind is refused. */
export function wrapWithAuthz(
  service: grpc.ServiceDefinition,
  handlers: grpc.UntypedServiceImplementation,
  options: WrappedAuthzOptions,
): grpc.UntypedServiceImplementation {
  const peers = new PeerIdentityCache();
  const log = options.logger === undefined ? undefined : new DecisionLog(options.logger);
  const out: grpc.UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(handlers)) {
    const path = service[name]!.path;
    const rule = options.rules.ruleOf(path);
    const unary = handler as grpc.handleUnaryCall<unknown, unknown>;
    out[name] = ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      const started = process.hrtime.bigint();
      const decisionId = randomUUID();
      const metadata = call.metadata;
      const requestId = requestIdFrom(metadata, decisionId);
      // grpc-js keeps its own call (with the HTTP/2 stream) on the handler's call object.
      const peer = peers.fromCall((call as unknown as { call: Parameters<PeerIdentityCache['fromCall']>[0] }).call);
      const input: DecisionInput = { peer, method: path, rule, now: Date.now(), trustDomain: options.trustDomain };
      const finish = (input: DecisionInput): void => {
        const decision = decide(input);
        log?.write({ decisionId, method: path, peer: peer.ok ? peer.identity : undefined, decision, enforced: !decision.allow, latencyUs: Number(process.hrtime.bigint() - started) / 1000, requestId });
        if (!decision.allow) return callback({ code: decision.code, details: denialMessage(decision, decisionId) });
        const token = input.token !== undefined && input.token.ok ? input.token : undefined;
        const ctx = new ServedCall(decisionId, path, peer.ok ? peer.identity : undefined, decision.token, token?.token.kind === 'user' ? token.raw : undefined, requestId, traceFrom(metadata));
        (call as { metadata: grpc.Metadata }).metadata = stripIdentityMetadata(metadata, { keepAuthorization: false });
        runInCall(ctx, () =>
          unary(call, (err, value) => {
            endCall(ctx);
            callback(err, value);
          }),
        );
      };
      if (decidePeer(input) !== null) return finish(input);
      const token = options.tokens.fromMetadata(metadata);
      if (token instanceof Promise) void token.then((t) => finish({ ...input, token: t, now: Date.now() }));
      else finish({ ...input, token });
    }) as grpc.UntypedHandleCall;
  }
  return out;
}
