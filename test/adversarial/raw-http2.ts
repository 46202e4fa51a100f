// gRPC calls written by hand over HTTP/2 with a client certificate: paths and header values grpc-js would never send.
import { connect as h2connect, constants as h2, type ClientHttp2Session, type SecureClientSessionOptions } from 'node:http2';
import { readFileSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';

export interface RawOutcome {
  /** HTTP status of the response, or 0 when the stream was reset or the session failed. */
  httpStatus: number;
  /** grpc-status from headers or trailers, or undefined when there was none. */
  grpcStatus: number | undefined;
  grpcMessage: string;
  error?: string;
}

/** A gRPC message frame: uncompressed flag, 4-byte length, then the protobuf bytes. */
export function grpcFrame(message: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/** Probe's Ping { text } as protobuf: field 1, wire type 2. */
export function pingMessage(text: string): Buffer {
  const bytes = Buffer.from(text);
  return Buffer.concat([Buffer.from([0x0a, bytes.length]), bytes]);
}

export class RawGrpcClient {
  readonly #session: ClientHttp2Session;

  private constructor(session: ClientHttp2Session) {
    this.#session = session;
  }

  /** An HTTP/2 session presenting the credentials in `dir` (svid.pem, svid.key, bundle.pem). */
  static connect(port: number, dir: string, servername: string): Promise<RawGrpcClient> {
    return RawGrpcClient.connectTls(port, { ca: readFileSync(join(dir, 'bundle.pem')), cert: readFileSync(join(dir, 'svid.pem')), key: readFileSync(join(dir, 'svid.key')) }, servername);
  }

  /**
   * An HTTP/2 session with the given TLS material (no cert and key: server-authenticated TLS only,
   * as an end user reaches the gateway). A header given as an array goes out as that many fields,
   * even for one Node's client would send once (strictSingleValueFields off), such as authorization.
   */
  static async connectTls(port: number, tls: { ca: Buffer; cert?: Buffer; key?: Buffer }, servername: string): Promise<RawGrpcClient> {
    // strictSingleValueFields is Node 24's, not yet in @types/node.
    const options: SecureClientSessionOptions & { strictSingleValueFields: boolean } = { ...tls, servername, checkServerIdentity: () => undefined, strictSingleValueFields: false };
    const session = h2connect(`https://127.0.0.1:${port}`, options);
    await new Promise<void>((resolve, reject) => {
      session.once('connect', () => resolve());
      session.once('error', reject);
    });
    session.on('error', () => undefined);
    return new RawGrpcClient(session);
  }

  call(path: string, headers: Record<string, string | string[]>, body: Buffer = grpcFrame(pingMessage('raw'))): Promise<RawOutcome> {
    return new Promise((resolve) => {
      const out: RawOutcome = { httpStatus: 0, grpcStatus: undefined, grpcMessage: '' };
      const take = (h: Record<string, unknown>) => {
        if (h[':status'] !== undefined) out.httpStatus = Number(h[':status']);
        if (h['grpc-status'] !== undefined) out.grpcStatus = Number(h['grpc-status']);
        if (h['grpc-message'] !== undefined) out.grpcMessage = decodeURIComponent(String(h['grpc-message']));
      };
      let req;
      try {
        req = this.#session.request({
          [h2.HTTP2_HEADER_METHOD]: 'POST',
          [h2.HTTP2_HEADER_PATH]: path,
          'content-type': 'application/grpc',
          te: 'trailers',
          ...headers,
        });
      } catch (err) {
        resolve({ ...out, error: (err as Error).message });
        return;
      }
      req.on('response', take);
      req.on('trailers', take);
      req.on('data', () => undefined);
      req.on('error', (err) => (out.error = err.message));
      req.on('close', () => resolve(out));
      req.setTimeout(5000, () => req.close(h2.NGHTTP2_CANCEL));
      req.end(body);
    });
  }

  close(): void {
    this.#session.close();
  }
}

/**
 * Sends one gRPC request as hand-encoded HTTP/2 frames, so header fields may repeat (Node's own
 * client refuses a second `authorization`). Literal header fields without indexing, no Huffman.
 * Resolves once the server answered with any frame on the stream or closed the connection, with how
 * it answered: `refusal` names the RST_STREAM or GOAWAY error code (RFC 9113 section 7), or
 * "HEADERS" for a response on the stream (whose status a caller must then not mistake for a refusal).
 */
export interface RawFramesOutcome {
  answered: boolean;
  /** The first answer on stream 1: "RST_STREAM <code>", "GOAWAY <code>" or "HEADERS"; undefined when none came. */
  refusal: string | undefined;
}

/** HTTP/2 error codes by number (RFC 9113 section 7). */
const H2_ERRORS = ['NO_ERROR', 'PROTOCOL_ERROR', 'INTERNAL_ERROR', 'FLOW_CONTROL_ERROR', 'SETTINGS_TIMEOUT', 'STREAM_CLOSED', 'FRAME_SIZE_ERROR', 'REFUSED_STREAM', 'CANCEL', 'COMPRESSION_ERROR', 'CONNECT_ERROR', 'ENHANCE_YOUR_CALM', 'INADEQUATE_SECURITY', 'HTTP_1_1_REQUIRED'];
const h2Error = (code: number) => H2_ERRORS[code] ?? `0x${code.toString(16)}`;

export function rawFramesCall(port: number, dir: string, servername: string, fields: Array<[string, string]>, body: Buffer): Promise<RawFramesOutcome> {
  const literal = (name: string, value: string) => {
    const n = Buffer.from(name, 'latin1');
    const v = Buffer.from(value, 'latin1');
    return Buffer.concat([Buffer.from([0x00]), hpackLength(n.length), n, hpackLength(v.length), v]);
  };
  const frame = (type: number, flags: number, stream: number, payload: Buffer) => {
    const head = Buffer.alloc(9);
    head.writeUIntBE(payload.length, 0, 3);
    head[3] = type;
    head[4] = flags;
    head.writeUInt32BE(stream, 5);
    return Buffer.concat([head, payload]);
  };
  const block = Buffer.concat(fields.map(([n, v]) => literal(n, v)));
  // A header block larger than the default 16 KB frame goes out as HEADERS plus CONTINUATION frames.
  const chunks: Buffer[] = [];
  for (let at = 0; at < block.length; at += 16_384) chunks.push(block.subarray(at, at + 16_384));
  const headerFrames = chunks.map((chunk, i) => frame(i === 0 ? 0x1 : 0x9, i === chunks.length - 1 ? 0x4 : 0, 1, chunk));
  return new Promise((resolve) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      servername,
      ALPNProtocols: ['h2'],
      ca: readFileSync(join(dir, 'bundle.pem')),
      cert: readFileSync(join(dir, 'svid.pem')),
      key: readFileSync(join(dir, 'svid.key')),
      checkServerIdentity: () => undefined,
    });
    let answered = false;
    let refusal: string | undefined;
    let buffered = Buffer.alloc(0);
    const done = () => {
      socket.destroy();
      resolve({ answered, refusal });
    };
    socket.on('secureConnect', () => {
      socket.write(
        Buffer.concat([
          Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
          frame(0x4, 0, 0, Buffer.alloc(0)), // SETTINGS
          ...headerFrames, // HEADERS (+ CONTINUATION), END_HEADERS on the last
          frame(0x0, 0x1, 1, body), // DATA, END_STREAM
        ]),
      );
    });
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      // Frames on stream 1 (HEADERS or RST_STREAM) mean the server answered the request.
      for (let at = 0; at + 9 <= buffered.length; ) {
        const length = buffered.readUIntBE(at, 3);
        const type = buffered[at + 3]!;
        const stream = buffered.readUInt32BE(at + 5) & 0x7fffffff;
        // HEADERS or RST_STREAM on the stream, or GOAWAY for the connection: the server has answered.
        if ((stream === 1 && (type === 0x1 || type === 0x3)) || type === 0x7) {
          if (at + 9 + length > buffered.length) break;
          answered = true;
          const payload = buffered.subarray(at + 9, at + 9 + length);
          refusal ??= type === 0x1 ? 'HEADERS' : type === 0x3 ? `RST_STREAM ${h2Error(payload.readUInt32BE(0))}` : `GOAWAY ${h2Error(payload.readUInt32BE(4))}`;
        }
        if (type === 0x4 && (buffered[at + 4]! & 0x1) === 0) socket.write(frame(0x4, 0x1, 0, Buffer.alloc(0)));
        at += 9 + length;
      }
      if (answered) setTimeout(done, 200);
    });
    socket.on('error', done);
    socket.setTimeout(5000, done);
  });
}

function hpackLength(n: number): Buffer {
  // 7-bit prefix integer (RFC 7541 section 5.1), Huffman bit clear.
  if (n < 127) return Buffer.from([n]);
  const out = [127];
  let rest = n - 127;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}
