// The gateway's admission of one public call: load limits, the user token, the request deadline, and cancelling what it forwarded.
import { randomUUID } from 'node:crypto';
import {
  status,
  Metadata,
  type ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServerMethodDefinition,
} from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Claim } from '../authz/admission.ts';
import { revocationFailure } from '../authz/decision.ts';
import type { RevocationView, TokenResult, VerifiedToken } from '../authz/types.ts';
import { grpcStatusOf, isTwokeyError, logDetail, TwokeyError } from '../authz/errors.ts';
import { ForwardingCall, type CallListener } from '../authz/forwarding-call.ts';
import type { LineFolder } from '../authz/log-folding.ts';
import type { TokenAuthenticator } from '../authz/token-authenticator.ts';
import type { GatewayMetrics } from './gateway-metrics.ts';
import type { GatewayAdmission, GatewayShed } from './gateway-limits.ts';
import type { PublicRoute } from './public-routes.ts';
import { loginSource } from './login-source.ts';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The client's IP from grpc-js's peer string ("1.2.3.4:5678", "[::1]:5678", optionally "ipv4:"-prefixed). */
export function clientAddress(peer: string): string {
  const match = /^(?:ipv[46]:)?\[?([0-9a-fA-F:.]+?)\]?:\d+$/.exec(peer);
  return match?.[1] ?? 'unknown';
}

/** The HTTP/2 stream under grpc-js's call, when this grpc-js exposes it (a field it does not type). */
interface DataSource {
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  off(event: 'data', listener: (chunk: Buffer) => void): unknown;
  once(event: 'finish', listener: () => void): unknown;
  close(code: number): void;
  readonly closed: boolean;
  readonly destroyed: boolean;
  readonly writableFinished: boolean;
}

function dataSourceOf(call: ServerInterceptingCallInterface): DataSource | undefined {
  const stream = (call as unknown as { stream?: Partial<DataSource> }).stream;
  return typeof stream?.on === 'function' && typeof stream.off === 'function' && typeof stream.once === 'function' && typeof stream.close === 'function'
    ? (stream as DataSource)
    : undefined;
}

/** RST_STREAM's NO_ERROR: "the response is complete; stop sending" (RFC 9113 8.1). */
const NO_ERROR = 0;

/** What the handler forwards with: known only for an admitted call. */
export class AdmittedCall {
  readonly route: PublicRoute;
  readonly client: string;
  readonly requestId: string;
  readonly startedMs: number;
  readonly subject: string | undefined;
  readonly jti: string | undefined;
  /** The metadata sent upstream: the request id, and the token or the client's address. */
  readonly outgoing: Metadata;
  cancelled = false;
  /**
   * Whether the client's stream is already gone (reset or closed) though grpc-js has not reported
   * the cancel yet: a request and its RST_STREAM read in one go reach the handler first.
   */
  streamGone: () => boolean = () => false;
  /** Cancels the upstream call once one was started. */
  cancelUpstream: (() => void) | undefined;
  /** Whether the upstream call has ended (answered, failed or cancelled). */
  upstreamDone = false;
  /** Called once when the upstream call ends: a cancelled call left to finish gives back its share then. */
  onUpstreamDone: (() => void) | undefined;

  constructor(route: PublicRoute, client: string, requestId: string, startedMs: number, subject: string | undefined, jti: string | undefined, outgoing: Metadata) {
    this.route = route;
    this.client = client;
    this.requestId = requestId;
    this.startedMs = startedMs;
    this.subject = subject;
    this.jti = jti;
    this.outgoing = outgoing;
  }

  /** The upstream call ended, however it ended. */
  upstreamEnded(): void {
    this.upstreamDone = true;
    const done = this.onUpstreamDone;
    this.onUpstreamDone = undefined;
    done?.();
  }
}

export interface GatewayCallSettings {
  readonly routes: ReadonlyMap<string, PublicRoute>;
  readonly tokens: TokenAuthenticator;
  readonly revocations: { view(): RevocationView };
  readonly admission: GatewayAdmission;
  readonly metrics: GatewayMetrics;
  readonly log: Logger;
  /** Folds deny and shed lines per client address and reason. */
  readonly folder: LineFolder;
  /** The admitted call of each metadata object handed to a handler. */
  readonly admitted: WeakMap<Metadata, AdmittedCall>;
  /**
   * The upstream metadata of each verified token (the token cache hands out one object per token),
   * built once: setting an 800-byte token value validates it character by character on every call.
   */
  readonly forwardedToken: WeakMap<VerifiedToken, { readonly raw: string; readonly metadata: Metadata }>;
  /**
   * The cancels (RST_STREAM) the gateway may send to each upstream (keyed by its name): the
   * server there closes the whole connection, every user's calls on it, past its rapid-reset limit.
   */
  readonly upstreamCancels: { take(upstream: string): boolean };
  readonly now: () => number;
}

/** The interceptor: each public call is admitted (or refused at once) before its handler sees it. */
export function gatewayInterceptor(settings: GatewayCallSettings): ServerInterceptor {
  return (method, call) => new GatewayCall(settings, method, call) as unknown as ServerInterceptingCall;
}

/**
 * Stands between grpc-js's call and the handler, as AuthorizedCall does in the mesh: the handler
 * gets the metadata (and so asks for the request body) only once the call is admitted, so nothing
 * beyond HTTP/2's flow-control window is read for a call that is refused.
 */
class GatewayCall extends ForwardingCall implements CallListener {
  readonly #s: GatewayCallSettings;
  readonly #route: PublicRoute | undefined;
  #listener: CallListener | undefined;
  #connection = '';
  #client = '';
  #requestId = '';
  /** Whether the x-request-id was the client's: a denial then names it without repeating it. */
  #requestIdSent = false;
  #startedMs = 0;
  #claims: Claim[] | undefined;
  #byteClaims: Claim[] | undefined;
  #bytes = 0;
  #timer: NodeJS.Timeout | undefined;
  #admitted: AdmittedCall | undefined;
  #ended = false;
  /** Where request bytes are counted as they arrive; without it, each message once complete. */
  readonly #data: DataSource | undefined;
  #onData: ((chunk: Buffer) => void) | undefined;

  constructor(settings: GatewayCallSettings, method: ServerMethodDefinition<unknown, unknown>, call: ServerInterceptingCallInterface) {
    super(call);
    this.#s = settings;
    this.#route = settings.routes.get(method.path);
    this.#data = dataSourceOf(call);
  }

  start(listener: CallListener): void {
    this.#listener = listener;
    this.next.start(this);
  }

  sendStatus(callStatus: Parameters<ServerInterceptingCallInterface['sendStatus']>[0]): void {
    this.#end();
    this.next.sendStatus(callStatus);
  }

  onReceiveMetadata(metadata: Metadata): void {
    const s = this.#s;
    const route = this.#route;
    // Only registered public routes reach here; anything else grpc-js answers UNIMPLEMENTED itself.
    if (route === undefined) return this.#listener!.onReceiveMetadata(new Metadata());
    this.#startedMs = s.now();
    this.#connection = this.next.getPeer();
    this.#client = clientAddress(this.#connection);
    const requestIdIn = metadata.get('x-request-id')[0];
    this.#requestIdSent = typeof requestIdIn === 'string' && REQUEST_ID.test(requestIdIn);
    this.#requestId = this.#requestIdSent ? (requestIdIn as string) : randomUUID();
    const claims = s.admission.callClaims(this.#connection);
    const shed = s.admission.claim(claims);
    if (shed !== undefined) return this.#shed(shed);
    this.#claims = claims;
    // A stream that never sends its whole request is ended, so it cannot hold its share forever.
    this.#timer = setTimeout(() => this.#timedOut(), s.admission.limits.requestTimeoutMs);
    if (!route.needsUserToken) return this.#admitLogin();
    let token: TokenResult | Promise<TokenResult>;
    try {
      token = s.tokens.fromMetadata(metadata);
    } catch (err) {
      return this.#tokenFailed(err);
    }
    if (token instanceof Promise) token.then((t) => this.#authenticated(t), (err: unknown) => this.#tokenFailed(err));
    else this.#authenticated(token);
  }

  onReceiveMessage(message: unknown): void {
    if (this.#ended) return;
    if (this.#onData === undefined && !this.#claimBytes(Buffer.isBuffer(message) ? message.length : 0)) return;
    this.#listener!.onReceiveMessage(message);
  }

  /** Counts `size` more request bytes held for this call; false (and the call shed) when a limit refuses them. */
  #claimBytes(size: number): boolean {
    const claims = (this.#byteClaims ??= this.#s.admission.byteClaims(this.#connection, this.#admitted?.subject));
    const shed = this.#s.admission.claim(claims, size);
    if (shed !== undefined) {
      this.#shed(shed, this.#admitted?.subject);
      return false;
    }
    this.#bytes += size;
    return true;
  }

  onReceiveHalfClose(): void {
    if (this.#ended) return;
    this.#clearTimer();
    this.#listener!.onReceiveHalfClose();
  }

  onCancel(): void {
    const admitted = this.#admitted;
    if (admitted !== undefined) {
      admitted.cancelled = true;
      const cancelUpstream = admitted.cancelUpstream;
      if (cancelUpstream === undefined || admitted.upstreamDone) {
        this.#s.metrics.cancelled(admitted.route.path, cancelUpstream === undefined ? 'before_forward' : 'upstream');
      } else if (this.#s.upstreamCancels.take(admitted.route.upstream)) {
        // The client is gone: the call it started upstream is cancelled too, not left to run.
        cancelUpstream();
        this.#s.metrics.cancelled(admitted.route.path, 'upstream');
      } else {
        // Past the upstream's cancel budget a reset would have the upstream server close the
        // gateway's connection, failing everyone's calls on it. The call is left to finish (within
        // its upstream deadline) and keeps holding its share of the limits until it does, so a
        // flood of cancels costs the canceller its own share, not other users their calls.
        this.#s.metrics.cancelled(admitted.route.path, 'left_to_finish');
        this.#clearTimer();
        admitted.onUpstreamDone = () => this.#end();
        this.#listener?.onCancel();
        return;
      }
    } else if (this.#claims !== undefined && !this.#ended) {
      // Cancelled while its token was being verified: nothing was or will be forwarded.
      this.#s.metrics.cancelled(this.#route!.path, 'before_forward');
    }
    this.#end();
    this.#listener?.onCancel();
  }

  #admitLogin(): void {
    const s = this.#s;
    // Before auth hashes anything: a source's logins in flight, then its rate.
    const source = loginSource(this.#client);
    const claim = s.admission.loginClaim(source);
    const shed = s.admission.claim([claim]) ?? s.admission.loginRate(source);
    if (shed !== undefined) {
      if (shed.limit === 'login_rate_per_source') s.admission.release([claim]);
      return this.#shed(shed);
    }
    this.#claims!.push(claim);
    const outgoing = this.#outgoing();
    // Auth throttles guesses per source; it trusts this header from the gateway's certificate only.
    outgoing.set('x-forwarded-for', source);
    this.#admit(undefined, undefined, outgoing);
  }

  #authenticated(result: TokenResult): void {
    if (this.#ended) return;
    const s = this.#s;
    if (!result.ok) return this.#deny(grpcStatusOf(result.error), result.error.message, result.error.code, logDetail(result.error));
    const token = result.token;
    if (token.kind !== 'user') return this.#deny(status.UNAUTHENTICATED, `the gateway accepts only user tokens, not a ${token.kind} token`, 'ERR_TOKEN_INVALID');
    const now = s.now();
    if (now >= token.validUntilMs) return this.#deny(status.UNAUTHENTICATED, 'token expired', 'ERR_TOKEN_EXPIRED');
    const revoked = revocationFailure(token, s.revocations.view(), now);
    if (revoked !== null) return this.#deny(grpcStatusOf(revoked), `revocation check failed: ${revoked.message}`, revoked.code);
    // One user's share, before anything is forwarded or read.
    const claim = s.admission.userClaim(token.subject);
    const shed = s.admission.claim([claim]);
    if (shed !== undefined) return this.#shed(shed, token.subject);
    this.#claims!.push(claim);
    let base = s.forwardedToken.get(token);
    if (base === undefined || base.raw !== result.raw) {
      const metadata = new Metadata();
      metadata.set('authorization', `Bearer ${result.raw}`);
      s.forwardedToken.set(token, (base = { raw: result.raw, metadata }));
    }
    // A copy per call (no value is validated again), with this call's request id.
    const outgoing = base.metadata.clone();
    outgoing.set('x-request-id', this.#requestId);
    this.#admit(token.subject, token.jti, outgoing);
  }

  #tokenFailed(err: unknown): void {
    if (this.#ended) return;
    const e = isTwokeyError(err) ? err : new TwokeyError('ERR_TOKEN_INVALID', 'token verification failed');
    this.#deny(grpcStatusOf(e), e.message, e.code);
  }

  /** Nothing the client sent is forwarded except the request body: fresh metadata only. */
  #outgoing(): Metadata {
    const outgoing = new Metadata();
    outgoing.set('x-request-id', this.#requestId);
    return outgoing;
  }

  #admit(subject: string | undefined, jti: string | undefined, outgoing: Metadata): void {
    const admitted = new AdmittedCall(this.#route!, this.#client, this.#requestId, this.#startedMs, subject, jti, outgoing);
    this.#admitted = admitted;

    const data = this.#data;
    if (data !== undefined) admitted.streamGone = () => data.closed || data.destroyed;
    // Bytes count from the first chunk grpc-js reads (it reads only once the handler asks), so a
    // request still arriving is held to the byte limits too, not only a complete one.
    if (this.#data !== undefined) {
      this.#onData = (chunk) => {
        if (!this.#ended) this.#claimBytes(chunk.length);
      };
      this.#data.on('data', this.#onData);
    }
    // The handler sees an empty metadata object: it reads nothing the client sent, only the admission.
    const handed = new Metadata();
    this.#s.admitted.set(handed, admitted);
    this.#listener!.onReceiveMetadata(handed);
  }

  /** A denial names the request for the log, but never reflects a value the caller chose. */
  #details(reason: string): string {
    return `twokey gateway: ${reason} (${this.#requestIdSent ? 'the x-request-id sent' : `request ${this.#requestId}`})`;
  }

  /** `logged` may name what the caller sent (sanitized); the status carries `reason` only. */
  #deny(code: status, reason: string, errorCode: string, logged = reason): void {
    const s = this.#s;
    const path = this.#route!.path;
    s.metrics.denied(path, errorCode);
    this.sendStatus({ code, details: this.#details(reason) });
    this.#releaseStream();
    const client = this.#client;
    if (s.folder.admit(`${client}|${errorCode}`, () => ({ event: 'gateway.deny', client, error_code: errorCode, grpc_code: code, reason }))) {
      s.log.warn({ event: 'gateway.deny', method: path, client, request_id: this.#requestId, grpc_code: code, error_code: errorCode, reason: logged }, 'gateway deny');
    }
  }

  #shed(shed: GatewayShed, subject?: string): void {
    const s = this.#s;
    const path = this.#route!.path;
    const code = shed.limit === 'request_timeout' ? status.DEADLINE_EXCEEDED : status.RESOURCE_EXHAUSTED;
    const errorCode = shed.limit === 'request_timeout' ? 'ERR_REQUEST_TIMEOUT' : 'ERR_OVERLOADED';
    s.metrics.denied(path, errorCode);
    this.sendStatus({ code, details: this.#details(shed.reason) });
    this.#releaseStream();
    const client = this.#client;
    if (s.folder.admit(`${client}|${shed.limit}`, () => ({ event: 'gateway.shed', client, limit: shed.limit, grpc_code: code, reason: shed.reason }))) {
      s.log.warn({ event: 'gateway.shed', method: path, client, request_id: this.#requestId, subject, limit: shed.limit, grpc_code: code, error_code: errorCode, reason: shed.reason }, 'gateway shed');
    }
  }

  /**
   * After refusing a call whose client may still be sending (or may never send) its body, the
   * stream is reset with NO_ERROR once the status is written, as grpc-go does: grpc-js would leave
   * it half-open, holding one of the connection's streams until the client ends it.
   */
  #releaseStream(): void {
    const stream = this.#data;
    if (stream === undefined || stream.closed) return;
    const reset = (): void => {
      if (!stream.closed) stream.close(NO_ERROR);
    };
    if (stream.writableFinished) reset();
    else stream.once('finish', reset);
  }

  #timedOut(): void {
    this.#timer = undefined;
    if (this.#ended) return;
    this.#shed(this.#s.admission.shed('request_timeout', this.#s.admission.limits.requestTimeoutMs), this.#admitted?.subject);
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Gives back everything the call holds; once, whichever way it ends. */
  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#clearTimer();
    if (this.#onData !== undefined) this.#data!.off('data', this.#onData);
    const admission = this.#s.admission;
    if (this.#claims !== undefined) admission.release(this.#claims);
    if (this.#byteClaims !== undefined) admission.release(this.#byteClaims, this.#bytes);
    this.#claims = undefined;
    this.#byteClaims = undefined;
  }
}
