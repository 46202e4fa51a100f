// A client channel replaced by a fresh one when the certificate it connected with is no longer the one to present.
import { connectivityState as ConnectivityState, status, type ChannelInterface, type Metadata, type StatusObject } from '@grpc/grpc-js';
import { CONNECTION_ENDING_TRAILER } from './final-denial.ts';

type Call = ReturnType<ChannelInterface['createCall']>;
type Listener = Parameters<Call['start']>[1];
type CreateCall = Parameters<ChannelInterface['createCall']>;
type MessageContext = Parameters<Call['sendMessageWithContext']>[0];

/** One underlying channel and the calls started on it that have not ended yet. */
export interface Generation {
  readonly channel: ChannelInterface;
  /** The credentials' version it was opened with. */
  readonly version: unknown;
  active: number;
  retired: boolean;
}

/**
 * A grpc-js channel (give it to a Client as `channelOverride`) whose connections are renewed:
 * `renew()` sends every later call over a new underlying channel, opened when the next call
 * comes, while the calls already running on the old one finish there; the old one is closed
 * when its last call ends. It renews by itself when `version()` (the workload certificate, for a
 * mesh client) differs from what the current channel was opened with, because open connections
 * keep presenting the certificate they were opened with; the check is one call and a comparison
 * per call. It also renews (through `onFinalDenial`) when a server refuses the certificate for
 * good, with the connection-ending trailer, and closes the connection: round_robin would
 * otherwise reconnect at once, with the refused certificate, and keep that connection after the
 * rotation.
 *
 * `open` must return a channel that shares no connection with earlier ones (a local subchannel
 * pool): grpc-js's global pool hands a new channel with equal credentials the old connection.
 */
export class RenewableChannel implements ChannelInterface {
  readonly #open: () => ChannelInterface;
  readonly #onFinalDenial: () => void;
  readonly #version: () => unknown;
  #current: Generation | undefined;
  /** Retired generations with calls still running. */
  readonly #draining = new Set<Generation>();
  #closed = false;
  #target: string | undefined;

  /** `onFinalDenial` is called when a call on the current channel is refused for good (default: renew this channel). */
  constructor(open: () => ChannelInterface, opts: { version?: () => unknown; onFinalDenial?: () => void } = {}) {
    this.#open = open;
    this.#version = opts.version ?? (() => undefined);
    this.#onFinalDenial = opts.onFinalDenial ?? (() => this.renew());
  }

  /** Later calls go over a new channel; the current one closes once its calls have ended. */
  renew(): void {
    const gen = this.#current;
    if (gen === undefined || this.#closed) return;
    this.#current = undefined;
    gen.retired = true;
    if (gen.active === 0) gen.channel.close();
    else this.#draining.add(gen);
  }

  /** How many underlying channels are open (the current one and those still draining): for tests. */
  get openChannels(): number {
    return this.#draining.size + (this.#current === undefined || this.#closed ? 0 : 1);
  }

  createCall(method: CreateCall[0], deadline: CreateCall[1], host: CreateCall[2], parentCall: CreateCall[3], propagateFlags: CreateCall[4]): Call {
    let gen = this.#current;
    if (gen !== undefined && gen.version !== this.#version()) this.renew();
    gen = this.#current ?? this.#generation();
    return new CountedCall(gen.channel.createCall(method, deadline, host, parentCall, propagateFlags), gen, this);
  }

  /** A call on `gen` started (CountedCall). */
  started(gen: Generation): void {
    gen.active += 1;
  }

  /** A call on `gen` ended with `callStatus` (CountedCall). */
  ended(gen: Generation, callStatus: StatusObject): void {
    gen.active -= 1;
    if (gen === this.#current && callStatus.code === status.UNAUTHENTICATED && callStatus.metadata.get(CONNECTION_ENDING_TRAILER).length > 0) {
      this.#onFinalDenial();
    }
    if (gen.retired && gen.active === 0) {
      this.#draining.delete(gen);
      gen.channel.close();
    }
  }

  #generation(): Generation {
    const gen: Generation = { version: this.#version(), channel: this.#open(), active: 0, retired: false };
    this.#target ??= gen.channel.getTarget();
    this.#current = gen;
    // After close(), grpc-js's own closed channel answers (it throws "Channel has been shut down").
    if (this.#closed) gen.channel.close();
    return gen;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#current?.channel.close();
    for (const gen of this.#draining) gen.channel.close();
    this.#draining.clear();
  }

  getTarget(): string {
    return this.#target ?? this.#generation().channel.getTarget();
  }

  getConnectivityState(tryToConnect: boolean): ConnectivityState {
    const gen = this.#current ?? (tryToConnect || this.#closed ? this.#generation() : undefined);
    return gen === undefined ? ConnectivityState.IDLE : gen.channel.getConnectivityState(tryToConnect);
  }

  /** Watches the current channel; a renewal closes it, which calls `callback` so the caller looks again. */
  watchConnectivityState(...args: Parameters<ChannelInterface['watchConnectivityState']>): void {
    (this.#current ?? this.#generation()).channel.watchConnectivityState(...args);
  }

  getChannelzRef(): ReturnType<ChannelInterface['getChannelzRef']> {
    return (this.#current ?? this.#generation()).channel.getChannelzRef();
  }
}

/**
 * A call on one generation, counted from start to status, and otherwise grpc-js's own: one object
 * per call, which is also the listener it passes down (no property is added to grpc-js's call).
 */
class CountedCall implements Call, Listener {
  readonly #call: Call;
  readonly #gen: Generation;
  readonly #owner: RenewableChannel;
  #listener: Listener | undefined;

  constructor(call: Call, gen: Generation, owner: RenewableChannel) {
    this.#call = call;
    this.#gen = gen;
    this.#owner = owner;
  }

  start(metadata: Metadata, listener: Listener): void {
    this.#listener = listener;
    this.#owner.started(this.#gen);
    this.#call.start(metadata, this);
  }

  onReceiveMetadata(metadata: Metadata): void {
    this.#listener!.onReceiveMetadata(metadata);
  }

  onReceiveMessage(message: unknown): void {
    this.#listener!.onReceiveMessage(message);
  }

  onReceiveStatus(callStatus: StatusObject): void {
    this.#owner.ended(this.#gen, callStatus);
    this.#listener!.onReceiveStatus(callStatus);
  }

  cancelWithStatus(code: status, details: string): void {
    this.#call.cancelWithStatus(code, details);
  }

  getPeer(): string {
    return this.#call.getPeer();
  }

  sendMessageWithContext(context: MessageContext, message: Buffer): void {
    this.#call.sendMessageWithContext(context, message);
  }

  startRead(): void {
    this.#call.startRead();
  }

  halfClose(): void {
    this.#call.halfClose();
  }

  getCallNumber(): number {
    return this.#call.getCallNumber();
  }

  setCredentials(credentials: Parameters<Call['setCredentials']>[0]): void {
    this.#call.setCredentials(credentials);
  }

  getAuthContext(): ReturnType<Call['getAuthContext']> {
    return this.#call.getAuthContext();
  }
}
