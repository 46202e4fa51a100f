// Unary calls authorized by wrapping each handler as it is registered: the same decide(), without an interceptor in the call's path.
import { randomUUID } from 'node:crypto';
import { status, type Metadata, type ServerInterceptingCallInterface, type ServerUnaryCall, type handleUnaryCall, type sendUnaryData } from '@grpc/grpc-js';
import { ServedCall, endCall, requestIdFrom, runInCall, traceFrom } from './call-context.ts';
import { decide, decidePeer, type Decision, type DecisionInput, type TokenResult } from './decision.ts';
import type { DecisionEvent } from './decision-log.ts';
import { TwokeyError } from './errors.ts';
import { endConnectionAfter } from './final-denial.ts';
import { denialMessage, internalDenial, type AuthzInterceptorOptions } from './interceptor.ts';
import { stripIdentityMetadata } from './identity-metadata.ts';
import { PeerIdentityCache } from './peer-identity.ts';

/**
 * Wraps unary handlers with the decision. grpc-js has read the request message by the time a
 * handler runs, so a denied call's message is decoded (within the server's message size limit)
 * but nothing of the handler runs; the decision, its log line, metrics, dry run and the call
 * context are those of the interceptor, which still authorizes every streaming call.
 */
export class UnaryAuthorizer {
  readonly #options: AuthzInterceptorOptions;
  readonly #peers: PeerIdentityCache;
  readonly #clock: () => number;
  readonly #newId: () => string;

  constructor(options: AuthzInterceptorOptions) {
    this.#options = options;
    this.#peers = options.peers ?? new PeerIdentityCache();
    this.#clock = options.clock ?? Date.now;
    this.#newId = options.newDecisionId ?? randomUUID;
  }

  wrap<Req, Res>(path: string, handler: handleUnaryCall<Req, Res>): handleUnaryCall<Req, Res> {
    return (call, callback) => this.#authorize(path, handler as handleUnaryCall<unknown, unknown>, call as ServerUnaryCall<unknown, unknown>, callback as sendUnaryData<unknown>);
  }

  #authorize(path: string, handler: handleUnaryCall<unknown, unknown>, call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>): void {
    const started = process.hrtime.bigint();
    const decisionId = this.#newId();
    const metadata = call.metadata;
    const requestId = requestIdFrom(metadata, decisionId);
    const o = this.#options;
    // What was decided on: the peer alone, then with the token once it is read.
    let input: DecisionInput | undefined;
    let pending: Decision | Promise<Decision>;
    let inner: ServerInterceptingCallInterface | undefined;
    // Only computing the decision is guarded here: an error in it denies the call.
    try {
      // grpc-js's own call (with the HTTP/2 stream the peer certificate is read from) is the
      // handler call's `call`; without it the peer is missing, and the decision denies.
      inner = (call as unknown as { call?: ServerInterceptingCallInterface }).call;
      input = {
        peer: inner === undefined ? { ok: false, error: missingPeer() } : this.#peers.fromCall(inner),
        method: path,
        rule: o.rules.ruleOf(path),
        now: this.#clock(),
        trustDomain: o.trustDomain,
        revocation: o.revocation?.view(),
      };
      const settled = decidePeer(input);
      if (settled !== null) pending = settled;
      else {
        const withToken = (token: TokenResult): Decision => decide((input = { ...input!, token, now: this.#clock() }));
        const token = o.tokens.fromMetadata(metadata);
        pending = token instanceof Promise ? token.then(withToken) : withToken(token);
      }
    } catch (err) {
      return this.#fail(err, path, decisionId, requestId, started, callback);
    }
    const finish = (decision: Decision): void => {
      const enforced = !decision.allow && o.dryRun !== true;
      try {
        this.#record(decision, enforced, path, input, decisionId, requestId, started);
      } catch {
        // A decision that cannot be recorded is not acted on: the call ends, and never hangs.
        return callback({ code: status.INTERNAL, details: `twokey: the decision could not be logged (decision ${decisionId})` });
      }
      if (enforced) {
        callback({ code: decision.code, details: denialMessage(decision, decisionId) });
        return endConnectionAfter(decision, inner);
      }
      // A call cancelled while its token was being verified has nobody to answer.
      if (call.cancelled) return;
      const peer = input!.peer;
      const token = input!.token;
      const forward = decision.allow && token !== undefined && token.ok && token.token.kind === 'user' ? token.raw : undefined;
      // A call dry run lets through despite a denial runs as if it carried no token.
      const ctx = new ServedCall(
        decisionId,
        path,
        peer.ok ? peer.identity : undefined,
        decision.allow ? decision.token : undefined,
        forward,
        requestId,
        traceFrom(metadata),
        o.metrics,
        // Work the handler leaves behind stops forwarding the token once the call is cancelled.
        call,
      );
      (call as { metadata: Metadata }).metadata = stripIdentityMetadata(metadata, { keepAuthorization: false });
      const answer: sendUnaryData<unknown> = (err, value, trailer, flags) => {
        endCall(ctx);
        callback(err, value, trailer, flags);
      };
      try {
        runInCall(ctx, () => handler(call, answer));
      } catch (err) {
        // After an asynchronous decision a throw would escape as an unhandled rejection and end
        // the process: answer the call instead (what the handler did before throwing stands).
        answer({ code: status.INTERNAL, details: `twokey: the handler failed: ${(err as Error)?.message ?? String(err)}` });
      }
    };
    if (!(pending instanceof Promise)) return finish(pending);
    pending.then(finish, (err: unknown) => this.#fail(err, path, decisionId, requestId, started, callback));
  }

  /** One event, written to the decision log and counted by the metrics. */
  #record(decision: Decision, enforced: boolean, path: string, input: DecisionInput | undefined, decisionId: string, requestId: string, started: bigint): void {
    const { log, metrics } = this.#options;
    if (log === undefined && metrics === undefined) return;
    const peer = input?.peer;
    const event: DecisionEvent = {
      decisionId,
      method: path,
      peer: peer !== undefined && peer.ok ? peer.identity : undefined,
      decision,
      enforced,
      latencyUs: Number(process.hrtime.bigint() - started) / 1000,
      requestId,
    };
    log?.write(event);
    metrics?.record(event);
  }

  #fail(err: unknown, path: string, decisionId: string, requestId: string, started: bigint, callback: sendUnaryData<unknown>): void {
    // Fail closed: an unexpected error is a denial, never a pass.
    callback({ code: status.INTERNAL, details: `twokey: authorization failed internally (decision ${decisionId})` });
    try {
      this.#record(internalDenial(err), true, path, undefined, decisionId, requestId, started);
    } catch {
      // The call is already ended; a log that fails too has nothing left to deny.
    }
  }
}

function missingPeer(): TwokeyError {
  return new TwokeyError('ERR_PEER_CERT_MISSING', 'the call carries no connection to read a peer certificate from');
}
