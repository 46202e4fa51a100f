// A small unary gRPC client over node:http2 that reads each call's exact status code and message:
// the load generator checks with it, before measuring, that a scenario's calls end the way the
// scenario says (allowed, or denied with the expected code), since the fast client
// (h2-raw-client.ts) sees only the shape of a response.
import http2 from 'node:http2';

/** What the load process needs to reach one server over mTLS. */
export interface WireTarget {
  port: number;
  /** PEM: client certificate chain and key (absent for a public TLS listener), and the CA bundle the server certificate must chain to. */
  cert?: string | undefined;
  key?: string | undefined;
  ca: string;
}

/** A call's outcome: the gRPC status code (-1 when the transport failed first) and its message. */
export interface CallOutcome {
  code: number;
  message: string;
}

/** gRPC length-prefixed message framing: 1 byte compressed flag, 4 bytes big-endian length. */
export function frameMessage(message: Uint8Array): Buffer {
  const framed = Buffer.allocUnsafe(5 + message.length);
  framed.writeUInt8(0, 0);
  framed.writeUInt32BE(message.length, 1);
  framed.set(message, 5);
  return framed;
}

export class WireConnection {
  readonly #session: http2.ClientHttp2Session;
  #failed: Error | undefined;

  private constructor(session: http2.ClientHttp2Session) {
    this.#session = session;
    session.on('error', (err) => {
      this.#failed = err;
    });
    session.on('goaway', () => {
      this.#failed ??= new Error('server sent GOAWAY');
    });
  }

  /** Opens one HTTP/2 connection and waits for the TLS handshake to finish. */
  static open(target: WireTarget): Promise<WireConnection> {
    return new Promise((resolve, reject) => {
      const session = http2.connect(`https://127.0.0.1:${target.port}`, {
        cert: target.cert,
        key: target.key,
        ca: target.ca,
        settings: { enablePush: false },
      });
      const onError = (err: Error): void => reject(err);
      session.once('error', onError);
      session.once('connect', () => {
        session.off('error', onError);
        resolve(new WireConnection(session));
      });
    });
  }

  /**
   * One unary call. `headers` are sent as they are (HPACK indexes a repeated header, as any
   * gRPC client's would). Calls `done` exactly once with the status.
   */
  call(path: string, body: Buffer, headers: http2.OutgoingHttpHeaders, done: (outcome: CallOutcome) => void): void {
    if (this.#failed !== undefined) {
      queueMicrotask(() => done({ code: -1, message: this.#failed!.message }));
      return;
    }
    const outcome: CallOutcome = { code: -1, message: 'no status received' };
    let stream: http2.ClientHttp2Stream;
    try {
      stream = this.#session.request({
        ':method': 'POST',
        ':path': path,
        'content-type': 'application/grpc',
        te: 'trailers',
        ...headers,
      });
    } catch (err) {
      queueMicrotask(() => done({ code: -1, message: String(err) }));
      return;
    }
    const readStatus = (fields: http2.IncomingHttpHeaders): void => {
      const value = fields['grpc-status'];
      if (typeof value !== 'string') return;
      outcome.code = Number(value);
      const message = fields['grpc-message'];
      outcome.message = typeof message === 'string' ? decodeURIComponent(message) : '';
    };
    // A denial is a trailers-only response: the status arrives in the response headers.
    stream.on('response', readStatus);
    stream.on('trailers', readStatus);
    stream.on('error', (err) => {
      if (outcome.code === -1) outcome.message = err.message;
    });
    stream.on('close', () => done(outcome));
    stream.resume();
    stream.end(body);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.#session.closed || this.#session.destroyed) {
        resolve();
        return;
      }
      this.#session.close(() => resolve());
      // A peer that never acknowledges must not hold the benchmark open.
      setTimeout(() => {
        this.#session.destroy();
        resolve();
      }, 2000).unref();
    });
  }
}
