// The part of a server call wrapper that only passes through to grpc-js's call beneath it.
import type { Metadata, ServerInterceptingCallInterface } from '@grpc/grpc-js';

/** The listener grpc-js's call reports inbound events to (not exported by name). */
export type CallListener = Parameters<ServerInterceptingCallInterface['start']>[0];

/**
 * The call interface's methods that a wrapper standing between grpc-js's call and the handler
 * (the mesh's AuthorizedCall, the gateway's GatewayCall) passes on unchanged. A plain base class,
 * not grpc-js's ServerInterceptingCall: no per-call closures or queues on this hot path. Subclasses
 * decide start and sendStatus, and what reaches the handler's listener.
 */
export abstract class ForwardingCall implements ServerInterceptingCallInterface {
  protected readonly next: ServerInterceptingCallInterface;

  constructor(next: ServerInterceptingCallInterface) {
    this.next = next;
  }

  abstract start(listener: CallListener): void;
  abstract sendStatus(callStatus: Parameters<ServerInterceptingCallInterface['sendStatus']>[0]): void;

  sendMetadata(metadata: Metadata): void {
    this.next.sendMetadata(metadata);
  }

  sendMessage(message: unknown, callback: () => void): void {
    this.next.sendMessage(message, callback);
  }

  startRead(): void {
    this.next.startRead();
  }

  getPeer(): string {
    return this.next.getPeer();
  }

  getDeadline(): ReturnType<ServerInterceptingCallInterface['getDeadline']> {
    return this.next.getDeadline();
  }

  getHost(): string {
    return this.next.getHost();
  }

  getAuthContext(): ReturnType<ServerInterceptingCallInterface['getAuthContext']> {
    return this.next.getAuthContext();
  }

  getConnectionInfo(): ReturnType<ServerInterceptingCallInterface['getConnectionInfo']> {
    return this.next.getConnectionInfo();
  }

  getMetricsRecorder(): ReturnType<ServerInterceptingCallInterface['getMetricsRecorder']> {
    return this.next.getMetricsRecorder();
  }
}
