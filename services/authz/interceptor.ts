// The grpc-js server interceptor: a thin adapter that feeds decide() and lets only allowed calls through.
import { randomUUID } from 'node:crypto';
import {
  status,
  type Metadata,
  type ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServerMethodDefinition,
} from '@grpc/grpc-js';
import { ServedCall, endCall, runInCall, requestIdFrom, traceFrom } from './call-context.ts';
import type { CallAdmission, Shed } from './call-limits.ts';
import { decide, decidePeer, internalDenial } from './decision.ts';
import type { Decision, DecisionInput, PeerResult, TokenResult } from './types.ts';
import type { MethodRule } from './method-catalog.ts';
import type { RevocationView } from './types.ts';
import type { DecisionEvent, DecisionLog } from './decision-log.ts';
import type { DecisionMetrics } from './decision-metrics.ts';
import type { FederationPolicy } from './federation.ts';
import { denialTrailers, endConnectionAfter } from './final-denial.ts';
import { ForwardingCall, type CallListener } from './forwarding-call.ts';
import { stripIdentityMetadata } from './identity-metadata.ts';
import { OpenStreams } from './open-streams.ts';
import { PeerIdentityCache } from './peer-identity.ts';
import type { TokenAuthenticator } from './token-authenticator.ts';

/** Where the interceptor learns each method's declared rule (a MethodCatalog fits). */
export interface RuleSource {
  ruleOf(path: string): MethodRule | undefined;
  /** Whether the method is defined at all (a MethodCatalog knows); lets a denial say which case it is. */
  has?(path: string): boolean;
}

export interface AuthzInterceptorOptions {
  trustDomain: string;
  rules: RuleSource;
  tokens: TokenAuthenticator;
  peers?: PeerIdentityCache;
  log?: DecisionLog;
  /** Counts every decision the log records (the same events); none are counted without it. */
  metrics?: DecisionMetrics;
  /** Epoch ms. */
  clock?: () => number;
  newDecisionId?: () => string;
  /** Log would-be denials and let the call through (rollouts only). */
  dryRun?: boolean;
  /** The revocation set this server enforces; absent, revocation is not checked here. */
  revocation?: RevocationSource;
  /**
   * Partner trust domains whose workloads are accepted, capped by their ceilings. The peer cache
   * must then hold every trust domain's bundle (PeerIdentityCache.setTrustBundles).
   */
  federation?: FederationPolicy;
  /** Load limits calls are admitted against (in flight per peer, per user, in total); absent, none. */
  admission?: CallAdmission;
}

/** Where the interceptor reads the held revocation set, and learns that it changed (a RevocationHolder fits). */
export interface RevocationSource {
  view(): RevocationView;
  onUpdate(listener: (set: unknown, changed: boolean) => void): () => void;
}

// setTimeout's longest delay; a certificate valid for longer is looked at again after it.
const MAX_TIMER_MS = 2 ** 31 - 1;
const MIN_RECHECK_MS = 1000;
const STALE_RECHECK_MS = 1000;

/** The status details of a denial: the failed check, its reason and the decision id; never a token. */
export function denialMessage(decision: Decision, decisionId: string): string {
  return `twokey: ${decision.reason} (decision ${decisionId})`;
}

interface Settings {
  readonly trustDomain: string;
  readonly federation: FederationPolicy | undefined;
  readonly rules: RuleSource;
  readonly tokens: TokenAuthenticator;
  readonly log: DecisionLog | undefined;
  readonly metrics: DecisionMetrics | undefined;
  readonly clock: () => number;
  readonly newId: () => string;
  readonly dryRun: boolean;
  readonly revocation: RevocationSource | undefined;
  readonly peers: PeerIdentityCache;
  readonly admission: CallAdmission | undefined;
  /** Open streams, re-decided when the revocation set or the trust bundle changes. */
  readonly openStreams: OpenStreams<AuthorizedCall>;
}

/** The interceptor, and what its server drives: re-deciding open streams, and stopping. */
export interface AuthzInterceptorHandle {
  readonly interceptor: ServerInterceptor;
  /** Re-decides every open stream now (the trust bundle changed); denied ones end at once. */
  recheckOpenStreams(): void;
  /** Stops listening for revocation sets and stops the staleness timer; for a closing server. */
  close(): void;
}

/**
 * Authorizes every call, unary and streaming alike, before its handler starts: the handler's
 * listener only sees the request metadata (and so only begins reading messages) once the decision
 * allows the call. Handlers then run inside the call context (callContext()).
 */
export function createAuthzInterceptor(options: AuthzInterceptorOptions): ServerInterceptor {
  return createAuthzHandle(options).interceptor;
}

/** createAuthzInterceptor, with the controls a mesh server needs (see AuthzInterceptorHandle). */
export function createAuthzHandle(options: AuthzInterceptorOptions): AuthzInterceptorHandle {
  const peers = options.peers ?? new PeerIdentityCache();
  const clock = options.clock ?? Date.now;
  const revocation = options.revocation;
  const settings: Settings = {
    trustDomain: options.trustDomain,
    federation: options.federation,
    rules: options.rules,
    tokens: options.tokens,
    log: options.log,
    metrics: options.metrics,
    clock,
    newId: options.newDecisionId ?? randomUUID,
    dryRun: options.dryRun === true,
    revocation,
    peers,
    admission: options.admission,
    openStreams: new OpenStreams<AuthorizedCall>(
      revocation === undefined
        ? {}
        : {
            isStale: () => {
              const view = revocation.view();
              return view.set === null || clock() - view.set.issuedAtMs > view.maxStalenessMs;
            },
            staleCheckMs: STALE_RECHECK_MS,
          },
    ),
  };
  // A changed set can end open streams at once, with the status a new call would get.
  const unsubscribe = revocation?.onUpdate((_set, changed) => {
    if (changed) settings.openStreams.recheckAll();
  });
  // The peer is read here because `call` is still grpc-js's own call (see PeerIdentityCache).
  // grpc-js accepts any object with the call interface; its type names the generic class only.
  return {
    interceptor: (methodDescriptor, call) => new AuthorizedCall(settings, methodDescriptor, peers.fromCall(call), call) as unknown as ServerInterceptingCall,
    recheckOpenStreams: () => settings.openStreams.recheckAll(),
    close: () => {
      unsubscribe?.();
      settings.openStreams.close();
      settings.log?.close();
    },
  };
}

/**
 * One call's authorization, standing between grpc-js's call and the handler as both the call the
 * handler drives and the listener grpc-js reports to. It implements the call interface directly
 * rather than through grpc-js's generic ServerInterceptingCall, whose per-call closures and queues
 * cost about 18% of a small call's throughput (`npm run bench -- --breakdown`, A+i); the handler
 * asks for the first message only after it has received the metadata, which is passed on only once
 * the decision allows the call, so nothing is read for a call that is denied. Its steps are methods
 * rather than closures: this runs on every call.
 */
class AuthorizedCall extends ForwardingCall implements CallListener {
  #listener: CallListener | undefined;
  #cancelled = false;
  readonly #settings: Settings;
  readonly #method: ServerMethodDefinition<unknown, unknown>;
  #peer: PeerResult;
  #ctx: ServedCall | undefined;
  #forwardToken: string | undefined;
  #decided: DecisionInput | undefined;
  #expiry: NodeJS.Timeout | undefined;
  #decisionId = '';
  #requestId = '';
  #started = 0n;
  #metadata: Metadata | undefined;
  /** Whether this call is counted as an open stream. */
  #streamOpen = false;
  /** The peer key this call holds a share of in flight under (undefined: none held). */
  #heldPeer: string | undefined;
  /** The subject this call holds a share of in flight under (undefined: none held). */
  #heldUser: string | undefined;

  constructor(settings: Settings, method: ServerMethodDefinition<unknown, unknown>, peer: PeerResult, call: ServerInterceptingCallInterface) {
    super(call);
    this.#settings = settings;
    this.#method = method;
    this.#peer = peer;
  }

  // The call interface, as the handler drives it.

  start(listener: CallListener): void {
    this.#listener = listener;
    this.next.start(this);
  }

  sendStatus(callStatus: Parameters<ServerInterceptingCallInterface['sendStatus']>[0]): void {
    this.#release();
    this.#stopExpiry();
    if (this.#streamOpen) this.#closeStream();
    if (this.#ctx !== undefined) endCall(this.#ctx);
    this.next.sendStatus(callStatus);
  }

  // The listener interface, as grpc-js reports inbound events.

  onReceiveMetadata(metadata: Metadata): void {
    this.#started = process.hrtime.bigint();
    this.#decisionId = this.#settings.newId();
    this.#requestId = requestIdFrom(metadata, this.#decisionId);
    // Shed before the token is verified: a flood over the limit costs no signature checks.
    const admission = this.#settings.admission;
    if (admission !== undefined) {
      const peerKey = this.#peer.ok ? this.#peer.identity.spiffeId.toString() : '';
      const shed = admission.admitPeer(peerKey);
      if (shed !== undefined) return this.#shed(shed);
      this.#heldPeer = peerKey;
    }
    this.#metadata = metadata;
    // Only computing the decision is guarded here: an error in it denies the call. What the
    // handler does once admitted is grpc-js's to handle, not mislogged as a decision.
    let decision: Decision | Promise<Decision>;
    try {
      decision = this.#authorize(metadata);
    } catch (err) {
      return this.#fail(err);
    }
    if (!(decision instanceof Promise)) return this.#finish(decision);
    decision.then((d) => this.#finish(d), (err: unknown) => this.#fail(err));
  }

  // Messages and half-close reach the handler only after an allowing decision set the context
  // (it asks for them only then; this guard holds even if it asked earlier). grpc-js runs handler
  // code on a message only for request streams (a unary or server-streaming handler starts at
  // half-close), so only there does a message need the call's context: entering a context costs
  // a few percent of a small call.
  onReceiveMessage(message: unknown): void {
    const ctx = this.#ctx;
    if (ctx === undefined || this.#cancelled) return;
    if (this.#method.requestStream) runInCall(ctx, () => this.#listener!.onReceiveMessage(message));
    else this.#listener!.onReceiveMessage(message);
  }

  onReceiveHalfClose(): void {
    const ctx = this.#ctx;
    if (ctx !== undefined && !this.#cancelled) runInCall(ctx, () => this.#listener!.onReceiveHalfClose());
  }

  onCancel(): void {
    this.#cancelled = true;
    this.#release();
    this.#stopExpiry();
    if (this.#streamOpen) this.#closeStream();
    if (this.#ctx !== undefined) endCall(this.#ctx);
    this.#listener?.onCancel();
  }

  /** The decision for this call: synchronous unless the token is not in the cache yet. */
  #authorize(metadata: Metadata): Decision | Promise<Decision> {
    const s = this.#settings;
    const path = this.#method.path;
    const input: DecisionInput = {
      peer: this.#peer,
      method: path,
      rule: s.rules.ruleOf(path),
      methodKnown: s.rules.has?.(path),
      now: s.clock(),
      trustDomain: s.trustDomain,
      federation: s.federation,
      revocation: s.revocation?.view(),
    };
    this.#decided = input;
    const settled = decidePeer(input);
    if (settled !== null) return settled;
    const token = s.tokens.fromMetadata(metadata);
    return token instanceof Promise ? token.then((t) => this.#decideWith(t)) : this.#decideWith(token);
  }

  #decideWith(token: TokenResult): Decision {
    this.#forwardToken = token.ok && token.token.kind === 'user' ? token.raw : undefined;
    this.#decided = { ...this.#decided!, token, now: this.#settings.clock() };
    return decide(this.#decided);
  }

  /** Records the decision: one event, written to the decision log and counted by the metrics. */
  #log(decision: Decision, enforced: boolean): void {
    const { log, metrics } = this.#settings;
    if (log === undefined && metrics === undefined) return;
    const event: DecisionEvent = {
      decisionId: this.#decisionId,
      method: this.#method.path,
      peer: this.#peer.ok ? this.#peer.identity : undefined,
      decision,
      enforced,
      latencyUs: Number(process.hrtime.bigint() - this.#started) / 1000,
      requestId: this.#requestId,
    };
    log?.write(event);
    metrics?.record(event);
  }

  #closeStream(): void {
    this.#streamOpen = false;
    this.#settings.metrics?.streamClosed();
  }

  #finish(decision: Decision): void {
    const enforced = !decision.allow && !this.#settings.dryRun;
    try {
      this.#log(decision, enforced);
    } catch {
      // A decision that cannot be recorded is not acted on: the call ends, and never hangs.
      this.sendStatus({ code: status.INTERNAL, details: `twokey: the decision could not be logged (decision ${this.#decisionId})` });
      return;
    }
    if (enforced) {
      this.sendStatus({ code: decision.code, details: denialMessage(decision, this.#decisionId), metadata: denialTrailers(decision) });
      endConnectionAfter(decision, this.next);
      return;
    }
    // A call cancelled while its token was being verified has no handler to start.
    if (this.#cancelled) return;
    const admission = this.#settings.admission;
    const subject = decision.allow ? decision.token?.subject : undefined;
    if (admission !== undefined && subject !== undefined) {
      const shed = admission.admitUser(subject);
      if (shed !== undefined) return this.#shed(shed);
      this.#heldUser = subject;
    }
    const metadata = this.#metadata!;
    // A call dry-run lets through despite a denial runs as if it carried no token: its handler must
    // not act for a subject (owner checks, forwarding) the policy would have refused.
    const ctx = new ServedCall(
      this.#decisionId,
      this.#method.path,
      this.#peer.ok ? this.#peer.identity : undefined,
      decision.allow ? decision.token : undefined,
      decision.allow ? this.#forwardToken : undefined,
      this.#requestId,
      traceFrom(metadata),
      this.#settings.metrics,
      this.#settings.log?.logger,
    );
    this.#ctx = ctx;
    const streaming = this.#method.requestStream || this.#method.responseStream;
    if (decision.allow && !this.#settings.dryRun && streaming) {
      this.#settings.openStreams.add(this);
      this.#armExpiry(decision);
    }
    if (streaming && this.#settings.metrics !== undefined) {
      this.#streamOpen = true;
      this.#settings.metrics.streamOpened();
    }
    const clean = stripIdentityMetadata(metadata, { keepAuthorization: false });
    this.#metadata = undefined;
    // A request-streaming handler starts here; grpc-js's unary and server-streaming listeners
    // only ask for the message (the handler starts at half-close).
    if (this.#method.requestStream) runInCall(ctx, () => this.#listener!.onReceiveMetadata(clean));
    else this.#listener!.onReceiveMetadata(clean);
  }

  /** Refuses the call at once for a load limit: RESOURCE_EXHAUSTED naming the limit, logged folded per peer and limit. */
  #shed(shed: Shed): void {
    this.sendStatus({ code: status.RESOURCE_EXHAUSTED, details: `twokey: ${shed.reason} (decision ${this.#decisionId})` });
    try {
      this.#settings.log?.shed({ method: this.#method.path, peer: this.#peer.ok ? this.#peer.identity : undefined, limit: shed.limit, reason: shed.reason, requestId: this.#requestId });
    } catch {
      // The call is already ended.
    }
  }

  /** Gives back the shares of in-flight limits this call holds; once, whichever way it ends. */
  #release(): void {
    const admission = this.#settings.admission;
    if (admission === undefined) return;
    if (this.#heldPeer !== undefined) admission.releasePeer(this.#heldPeer);
    if (this.#heldUser !== undefined) admission.releaseUser(this.#heldUser);
    this.#heldPeer = undefined;
    this.#heldUser = undefined;
  }

  #fail(err: unknown): void {
    // Fail closed: an unexpected error is a denial, never a pass.
    this.sendStatus({ code: status.INTERNAL, details: `twokey: authorization failed internally (decision ${this.#decisionId})` });
    try {
      this.#log(internalDenial(err), true);
    } catch {
      // The call is already ended; a log that fails too has nothing left to deny.
    }
  }

  /**
   * A stream may stay open for hours; it must not outlive the token or the certificate it was
   * allowed with. When the first of them lapses, the same decision runs again with the clock of
   * that moment, and its denial ends the stream.
   */
  #armExpiry(allowed: Decision): void {
    const peer = this.#peer;
    const until = Math.min(allowed.token?.validUntilMs ?? Infinity, peer.ok ? peer.identity.notAfter.getTime() : Infinity);
    if (!Number.isFinite(until)) return;
    const delay = Math.min(Math.max(until - this.#settings.clock(), 0), MAX_TIMER_MS);
    this.#expiry = setTimeout(() => this.#onExpiry(), delay);
    this.#expiry.unref();
  }

  /**
   * Decides again now, with the revocation set held now and the peer as the trust bundle now
   * judges its connection (a CA removed from the bundle fails it); ends the stream when that denies.
   */
  recheck(): void {
    if (this.#cancelled || this.#decided === undefined) return;
    const s = this.#settings;
    this.#peer = s.peers.fromCall(this.next);
    this.#decided = { ...this.#decided, peer: this.#peer };
    const again = decide({ ...this.#decided, now: s.clock(), revocation: s.revocation?.view() });
    if (!again.allow) this.#endLapsed(again);
  }

  #onExpiry(): void {
    this.#expiry = undefined;
    const again = decide({ ...this.#decided!, now: this.#settings.clock(), revocation: this.#settings.revocation?.view() });
    if (again.allow) {
      // Not lapsed yet (a long certificate, or a clock that moved back): look again later.
      this.#expiry = setTimeout(() => this.#armExpiry(again), MIN_RECHECK_MS);
      this.#expiry.unref();
      return;
    }
    this.#endLapsed(again);
  }

  #endLapsed(again: Decision): void {
    this.#stopExpiry();
    this.#settings.openStreams.delete(this);
    // End the stream first: a log that throws must not keep a lapsed stream open. The client is
    // told not to repeat the call (gRFC A6 server pushback): the stream was served, and a client
    // retry policy would otherwise re-send a stream that had not yet answered as a new call, so
    // its caller would see that call's refusal instead of why its open stream ended.
    const trailers = denialTrailers(again);
    trailers.set('grpc-retry-pushback-ms', '-1');
    this.sendStatus({ code: again.code, details: `${denialMessage(again, this.#decisionId)}; the stream outlived it`, metadata: trailers });
    endConnectionAfter(again, this.next);
    try {
      this.#log(again, true);
    } catch {
      // The stream is already ended.
    }
  }

  #stopExpiry(): void {
    if (this.#expiry !== undefined) clearTimeout(this.#expiry);
    this.#expiry = undefined;
    this.#settings.openStreams.delete(this);
  }
}
