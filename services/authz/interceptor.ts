// The grpc-js server interceptor: a thin adapter that feeds decide() and lets only allowed calls through.
import { randomUUID } from 'node:crypto';
import { ServerInterceptingCall, status, type ServerInterceptor } from '@grpc/grpc-js';
import { endCall, runInCall, requestIdFrom, traceFrom, type CallContext } from './call-context.ts';
import { decide, decidePeer, type Decision, type DecisionInput, type MethodRule } from './decision.ts';
import type { DecisionLog } from './decision-log.ts';
import { stripIdentityMetadata } from './identity-metadata.ts';
import { PeerIdentityCache } from './peer-identity.ts';
import type { TokenAuthenticator } from './token-authenticator.ts';

/** Where the interceptor learns each method's declared rule (a MethodCatalog fits). */
export interface RuleSource {
  ruleOf(path: string): MethodRule | undefined;
}

export interface AuthzInterceptorOptions {
  trustDomain: string;
  rules: RuleSource;
  tokens: TokenAuthenticator;
  peers?: PeerIdentityCache;
  log?: DecisionLog;
  /** Epoch ms. */
  clock?: () => number;
  newDecisionId?: () => string;
  /** Log would-be denials and let the call through (rollouts only). */
  dryRun?: boolean;
}

/** The status details of a denial: the failed check, its reason and the decision id; never a token. */
export function denialMessage(decision: Decision, decisionId: string): string {
  return `twokey: ${decision.reason} (decision ${decisionId})`;
}

/**
 * Authorizes every call, unary and streaming alike, before its handler starts: the handler's
 * listener only sees the request metadata (and so only begins reading messages) once the decision
 * allows the call. Handlers then run inside the call context (callContext()).
 */
export function createAuthzInterceptor(options: AuthzInterceptorOptions): ServerInterceptor {
  const peers = options.peers ?? new PeerIdentityCache();
  const clock = options.clock ?? Date.now;
  const newId = options.newDecisionId ?? randomUUID;
  const dryRun = options.dryRun === true;

  return (methodDescriptor, call) => {
    // The peer is read here because `call` is still grpc-js's own call (see PeerIdentityCache).
    const peer = peers.fromCall(call);
    let ctx: CallContext | undefined;
    const intercepting: ServerInterceptingCall = new ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            const started = process.hrtime.bigint();
            const decisionId = newId();
            const method = methodDescriptor.path;
            const finish = (decision: Decision): void => {
              const enforced = !decision.allow && !dryRun;
              const requestId = requestIdFrom(metadata);
              options.log?.write({
                decisionId,
                method,
                peer: peer.ok ? peer.identity : undefined,
                decision,
                enforced,
                latencyUs: Number(process.hrtime.bigint() - started) / 1000,
                requestId,
              });
              if (enforced) {
                intercepting.sendStatus({ code: decision.code, details: denialMessage(decision, decisionId) });
                return;
              }
              const token = decision.token;
              ctx = {
                decisionId,
                method,
                peer: peer.ok ? peer.identity : undefined,
                token,
                forwardToken: token?.kind === 'user' ? tokenString(input.token) : undefined,
                requestId,
                trace: traceFrom(metadata),
              };
              const clean = stripIdentityMetadata(metadata, { keepAuthorization: false });
              runInCall(ctx, () => nextMetadata(clean));
            };
            const fail = (err: unknown): void => {
              // Fail closed: an unexpected error is a denial, never a pass.
              intercepting.sendStatus({ code: status.INTERNAL, details: `twokey: authorization failed internally (decision ${decisionId})` });
              options.log?.write({
                decisionId,
                method,
                peer: peer.ok ? peer.identity : undefined,
                decision: internalDenial(err),
                enforced: true,
                latencyUs: Number(process.hrtime.bigint() - started) / 1000,
              });
            };
            const input: { -readonly [K in keyof DecisionInput]: DecisionInput[K] } = {
              peer,
              method,
              rule: options.rules.ruleOf(method),
              now: clock(),
              trustDomain: options.trustDomain,
              token: undefined,
            };
            try {
              const settled = decidePeer(input);
              if (settled !== null) return finish(settled);
              const token = options.tokens.fromMetadata(metadata);
              if (!(token instanceof Promise)) {
                input.token = token;
                return finish(decide(input));
              }
              token.then((result) => {
                input.token = result;
                input.now = clock();
                finish(decide(input));
              }).catch(fail);
            } catch (err) {
              fail(err);
            }
          },
          // Messages and half-close reach the handler only after an allowing decision set ctx.
          onReceiveMessage: (message, nextMessage) => {
            if (ctx !== undefined) runInCall(ctx, () => nextMessage(message));
          },
          onReceiveHalfClose: (nextHalfClose) => {
            if (ctx !== undefined) runInCall(ctx, nextHalfClose);
          },
          onCancel: () => {
            if (ctx !== undefined) endCall(ctx);
          },
        });
      },
      sendStatus: (callStatus, nextStatus) => {
        if (ctx !== undefined) endCall(ctx);
        nextStatus(callStatus);
      },
    });
    return intercepting;
  };
}

function tokenString(token: DecisionInput['token']): string | undefined {
  return token?.ok ? token.raw : undefined;
}

function internalDenial(err: unknown): Decision {
  return {
    allow: false,
    failedCheck: null,
    errorCode: null,
    code: status.INTERNAL,
    reason: `internal error during authorization: ${(err as Error)?.message ?? String(err)}`,
    checks: [],
    token: undefined,
  };
}
