// The grpc-js server interceptor: a thin adapter that feeds decide() and lets only allowed calls through.
import { randomUUID } from 'node:crypto';
import { ServerInterceptingCall, status, type Metadata, type ServerInterceptor } from '@grpc/grpc-js';
import { endCall, runInCall, requestIdFrom, traceFrom, type CallContext } from './call-context.ts';
import { decide, decidePeer, type Decision, type DecisionInput, type MethodRule, type TokenResult } from './decision.ts';
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

// setTimeout's longest delay; a certificate valid for longer is looked at again after it.
const MAX_TIMER_MS = 2 ** 31 - 1;
const MIN_RECHECK_MS = 1000;

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
    let forwardToken: string | undefined;
    let decided: DecisionInput | undefined;
    let expiry: NodeJS.Timeout | undefined;
    const stopExpiry = (): void => {
      if (expiry !== undefined) clearTimeout(expiry);
      expiry = undefined;
    };
    /** The decision for this call: synchronous unless the token is not in the cache yet. */
    const authorize = (metadata: Metadata, method: string): Decision | Promise<Decision> => {
      const input = { peer, method, rule: options.rules.ruleOf(method), now: clock(), trustDomain: options.trustDomain };
      decided = input;
      const settled = decidePeer(input);
      if (settled !== null) return settled;
      const decideWith = (token: TokenResult): Decision => {
        forwardToken = token.ok && token.token.kind === 'user' ? token.raw : undefined;
        decided = { ...input, token, now: clock() };
        return decide(decided);
      };
      const token = options.tokens.fromMetadata(metadata);
      return token instanceof Promise ? token.then(decideWith) : decideWith(token);
    };
    const intercepting: ServerInterceptingCall = new ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            const started = process.hrtime.bigint();
            const decisionId = newId();
            const method = methodDescriptor.path;
            const finish = (decision: Decision): void => {
              const enforced = !decision.allow && !dryRun;
              const requestId = requestIdFrom(metadata, decisionId);
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
                forwardToken: decision.allow ? forwardToken : undefined,
                requestId,
                trace: traceFrom(metadata),
              };
              if (decision.allow && !dryRun && (methodDescriptor.requestStream || methodDescriptor.responseStream)) {
                armExpiry(decision, decisionId, requestId);
              }
              const clean = stripIdentityMetadata(metadata, { keepAuthorization: false });
              runInCall(ctx, () => nextMetadata(clean));
            };
            /**
             * A stream may stay open for hours; it must not outlive the token or the certificate it
             * was allowed with. When the first of them lapses, the same decision runs again with the
             * clock of that moment, and its denial ends the stream.
             */
            const armExpiry = (allowed: Decision, decisionId: string, requestId: string): void => {
              const until = Math.min(allowed.token?.validUntilMs ?? Infinity, peer.ok ? peer.identity.notAfter.getTime() : Infinity);
              if (!Number.isFinite(until)) return;
              const delay = Math.min(Math.max(until - clock(), 0), MAX_TIMER_MS);
              expiry = setTimeout(() => {
                expiry = undefined;
                const again = decide({ ...decided!, now: clock() });
                if (again.allow) {
                  // Not lapsed yet (a long certificate, or a clock that moved back): look again later.
                  expiry = setTimeout(() => armExpiry(again, decisionId, requestId), MIN_RECHECK_MS);
                  expiry.unref();
                  return;
                }
                options.log?.write({ decisionId, method: methodDescriptor.path, peer: peer.ok ? peer.identity : undefined, decision: again, enforced: true, latencyUs: 0, requestId });
                intercepting.sendStatus({ code: again.code, details: `${denialMessage(again, decisionId)}; the stream outlived it` });
              }, delay);
              expiry.unref();
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
            // Only computing the decision is guarded here: an error in it denies the call. What the
            // handler does once admitted is grpc-js's to handle, not mislogged as a decision.
            let decision: Decision | Promise<Decision>;
            try {
              decision = authorize(metadata, method);
            } catch (err) {
              return fail(err);
            }
            if (!(decision instanceof Promise)) return finish(decision);
            decision.then(finish, fail).catch(() => {
              intercepting.sendStatus({ code: status.INTERNAL, details: `twokey: internal error (decision ${decisionId})` });
            });
          },
          // Messages and half-close reach the handler only after an allowing decision set ctx.
          onReceiveMessage: (message, nextMessage) => {
            if (ctx !== undefined) runInCall(ctx, () => nextMessage(message));
          },
          onReceiveHalfClose: (nextHalfClose) => {
            if (ctx !== undefined) runInCall(ctx, nextHalfClose);
          },
          onCancel: () => {
            stopExpiry();
            if (ctx !== undefined) endCall(ctx);
          },
        });
      },
      sendStatus: (callStatus, nextStatus) => {
        stopExpiry();
        if (ctx !== undefined) endCall(ctx);
        nextStatus(callStatus);
      },
    });
    return intercepting;
  };
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
