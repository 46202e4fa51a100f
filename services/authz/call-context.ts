// What a handler knows about the call it serves, reachable anywhere below it without passing it along.
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomFillSync } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { TwokeyError } from './errors.ts';
import type { PeerIdentity, VerifiedToken } from './types.ts';

/** W3C Trace Context (traceparent, version 00). */
export interface TraceContext {
  readonly traceId: string;
  /** The span of the call being served; outgoing calls get children of it. */
  readonly spanId: string;
  readonly flags: string;
}

export interface CallContext {
  readonly decisionId: string;
  readonly method: string;
  readonly peer: PeerIdentity | undefined;
  /** The verified token of the call; undefined for certificate-only methods. */
  readonly token: VerifiedToken | undefined;
  /**
   * The verified user token's string, forwarded on outgoing calls so user context survives every
   * hop. Only user tokens: delegated and service tokens are bound to the caller's certificate and
   * would mean nothing (and be refused) anywhere else.
   */
  readonly forwardToken: string | undefined;
  readonly requestId: string;
  readonly trace: TraceContext;
}

/** Counts refusals inside handlers (DecisionMetrics satisfies it). */
export interface RefusalCounter {
  recordRefusal(method: string, peer: PeerIdentity | undefined, errorCode: string): void;
}

const storage = new AsyncLocalStorage<CallContext>();

/** The context of the call being served; throws outside a call (fail closed, never a default). */
export function callContext(): CallContext {
  const ctx = storage.getStore();
  if (ctx === undefined) throw new TwokeyError('ERR_CONFIG_INVALID', 'callContext() used outside a call served by a mesh server');
  return ctx;
}

/** The context of the call being served, if any. */
export function currentCall(): CallContext | undefined {
  return storage.getStore();
}

export function runInCall<T>(ctx: CallContext, fn: () => T): T {
  return storage.run(ctx, fn);
}

/**
 * The context of a call a mesh server admitted. Work a handler leaves behind (timers, unawaited
 * promises) keeps the call's context after the call has ended; it must not keep acting for the user
 * with the call's token, so the call records its end here, on the one object every such piece of
 * work holds (a field, not a WeakSet entry per call).
 */
export class ServedCall implements CallContext {
  readonly decisionId: string;
  readonly method: string;
  readonly peer: PeerIdentity | undefined;
  readonly token: VerifiedToken | undefined;
  readonly forwardToken: string | undefined;
  readonly requestId: string;
  readonly trace: TraceContext;
  /** Where a refusal inside the handler is counted, beside the decision that admitted the call. */
  readonly metrics: RefusalCounter | undefined;
  /** The server's decision logger: a refusal inside the handler is logged there (refuse()). */
  readonly logger: Logger | undefined;
  #ended = false;

  constructor(
    decisionId: string,
    method: string,
    peer: PeerIdentity | undefined,
    token: VerifiedToken | undefined,
    forwardToken: string | undefined,
    requestId: string,
    trace: TraceContext,
    metrics?: RefusalCounter,
    logger?: Logger,
  ) {
    this.decisionId = decisionId;
    this.method = method;
    this.peer = peer;
    this.token = token;
    this.forwardToken = forwardToken;
    this.requestId = requestId;
    this.trace = trace;
    this.metrics = metrics;
    this.logger = logger;
  }

  /** Marks the call finished (status sent or cancelled); it never becomes active again. */
  end(): void {
    this.#ended = true;
  }

  get ended(): boolean {
    return this.#ended;
  }
}

/** Counts a refusal inside the handler of the call being served, when it keeps metrics. */
export function countRefusal(ctx: CallContext, errorCode: string): void {
  if (ctx instanceof ServedCall) ctx.metrics?.recordRefusal(ctx.method, ctx.peer, errorCode);
}

/** Marks the call finished (status sent or cancelled). */
export function endCall(ctx: ServedCall): void {
  ctx.end();
}

/** Whether the call is still being served, i.e. its token may be forwarded. */
export function isCallActive(ctx: CallContext): boolean {
  return !(ctx instanceof ServedCall && ctx.ended);
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Continues the caller's trace when its traceparent is well-formed, otherwise starts a new one. */
export function traceFrom(metadata: Metadata): TraceContext {
  const values = metadata.get('traceparent');
  const match = values.length === 1 && typeof values[0] === 'string' ? TRACEPARENT.exec(values[0]) : null;
  if (match !== null && !/^0+$/.test(match[1]!) && !/^0+$/.test(match[2]!)) {
    return { traceId: match[1]!, spanId: newSpanId(), flags: match[3]! };
  }
  return { traceId: randomHex(16), spanId: newSpanId(), flags: '01' };
}

export function newSpanId(): string {
  return randomHex(8);
}

// Trace and span ids are needed on every call; one randomFillSync per 4 KiB of ids instead of a
// randomBytes call per id keeps them off the per-call cost.
const POOL = Buffer.alloc(4096);
let poolOffset = POOL.length;

function randomHex(bytes: number): string {
  if (poolOffset + bytes > POOL.length) {
    randomFillSync(POOL);
    poolOffset = 0;
  }
  const hex = POOL.toString('hex', poolOffset, poolOffset + bytes);
  poolOffset += bytes;
  return hex;
}

export function traceparentOf(trace: TraceContext, spanId: string): string {
  return `00-${trace.traceId}-${spanId}-${trace.flags}`;
}

/**
 * The caller's x-request-id when well-formed (it is a correlation id, not identity), else
 * `fallback` (the decision id: already unique, so a call without one costs no new id).
 */
export function requestIdFrom(metadata: Metadata, fallback: string): string {
  const values = metadata.get('x-request-id');
  if (values.length === 1 && typeof values[0] === 'string' && REQUEST_ID.test(values[0])) return values[0];
  return fallback;
}
