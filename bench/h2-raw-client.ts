// A lean HTTP/2 client for the load generator: it writes pre-encoded gRPC requests straight onto a
// TLS socket, batching the frames of one event-loop turn into one write, and reads back only
// frame headers. node:http2's client spends more CPU per call than a grpc-js server does, so with
// it a 2-core machine would measure the load generator instead of the server.
//
// Responses are classified by shape, never decoded (HPACK state is only needed to read header
// values): a stream that carried a response message is 'message', a trailers-only stream (how
// every gRPC denial arrives) is 'trailers-only'. Exact status codes are checked separately,
// before measuring, with node:http2 (wire-client.ts).
import tls from 'node:tls';
import type { WireTarget } from './wire-client.ts';

export type RawOutcome = 'message' | 'trailers-only' | 'reset';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8 } as const;
const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
const MAX_WINDOW = 2 ** 31 - 1;
const DEFAULT_WINDOW = 65535;
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
const SETTINGS_ENABLE_PUSH = 0x2;

function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const header = Buffer.allocUnsafe(9);
  header.writeUIntBE(length, 0, 3);
  header.writeUInt8(type, 3);
  header.writeUInt8(flags, 4);
  header.writeUInt32BE(streamId, 5);
  return header;
}

/** HPACK integer with an N-bit prefix (RFC 7541 §5.1), first byte OR-ed with `pattern`. */
function hpackInteger(value: number, prefixBits: number, pattern: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [pattern | value];
  const out = [pattern | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

function hpackString(text: string): Buffer {
  const bytes = Buffer.from(text, 'latin1');
  return Buffer.concat([Buffer.from(hpackInteger(bytes.length, 7, 0)), bytes]);
}

// RFC 7541 Appendix A: the static-table indexes of the names this client sends.
const STATIC_NAME_INDEX: Record<string, number> = { ':authority': 1, ':path': 4, 'content-type': 31, authorization: 23 };
const DYNAMIC_TABLE_LIMIT = 4096;

/**
 * The request side of HPACK for one connection. Repeated fields are inserted into the dynamic table
 * once and sent as one-byte indexes afterwards, as any HTTP/2 client does; fields marked not
 * indexable (per-call tokens) are sent as literals.
 */
class HpackEncoder {
  readonly #inserted: string[] = [];
  #tableSize = 0;

  field(name: string, value: string, indexable: boolean): Buffer {
    const key = `${name}\0${value}`;
    const at = this.#inserted.lastIndexOf(key);
    if (at >= 0) return Buffer.from(hpackInteger(62 + (this.#inserted.length - 1 - at), 7, 0x80));
    const entrySize = name.length + value.length + 32;
    const insert = indexable && this.#tableSize + entrySize <= DYNAMIC_TABLE_LIMIT;
    const nameIndex = STATIC_NAME_INDEX[name];
    // 0x40: literal with incremental indexing (6-bit prefix); 0x00: without indexing (4-bit prefix).
    const prefix = insert ? hpackInteger(nameIndex ?? 0, 6, 0x40) : hpackInteger(nameIndex ?? 0, 4, 0x00);
    if (insert) {
      this.#inserted.push(key);
      this.#tableSize += entrySize;
    }
    const parts: Buffer[] = [Buffer.from(prefix)];
    if (nameIndex === undefined) parts.push(hpackString(name));
    parts.push(hpackString(value));
    return Buffer.concat(parts);
  }
}

interface PendingStream {
  gotMessage: boolean;
  done: (outcome: RawOutcome) => void;
}

export class RawH2Connection {
  readonly #socket: tls.TLSSocket;
  readonly #encoder = new HpackEncoder();
  readonly #authority: string;
  readonly #streams = new Map<number, PendingStream>();
  #nextStreamId = 1;
  #outbox: Buffer[] = [];
  #flushScheduled = false;
  #inbox: Buffer = Buffer.alloc(0);
  #sendWindow = DEFAULT_WINDOW;
  #blockedData: Buffer[] = [];
  #unacknowledgedBytes = 0;
  #failed = false;
  // Header blocks already encoded, by path + token: once every field is indexed a block never changes.
  readonly #blockCache = new Map<string, Buffer>();

  private constructor(socket: tls.TLSSocket, port: number) {
    this.#socket = socket;
    this.#authority = `127.0.0.1:${port}`;
    socket.on('data', (chunk: Buffer) => this.#receive(chunk));
    socket.on('error', () => this.#fail());
    socket.on('close', () => this.#fail());
  }

  static open(target: WireTarget): Promise<RawH2Connection> {
    return new Promise((resolve, reject) => {
      const socket = tls.connect({
        host: '127.0.0.1',
        port: target.port,
        cert: target.cert,
        key: target.key,
        ca: target.ca,
        ALPNProtocols: ['h2'],
      });
      socket.setNoDelay(true);
      const onError = (err: Error): void => reject(err);
      socket.once('error', onError);
      socket.once('secureConnect', () => {
        socket.off('error', onError);
        if (socket.alpnProtocol !== 'h2') {
          socket.destroy();
          reject(new Error(`server did not negotiate h2 (ALPN: ${String(socket.alpnProtocol)})`));
          return;
        }
        const connection = new RawH2Connection(socket, target.port);
        const settings = Buffer.alloc(12);
        settings.writeUInt16BE(SETTINGS_ENABLE_PUSH, 0);
        settings.writeUInt32BE(0, 2);
        settings.writeUInt16BE(SETTINGS_INITIAL_WINDOW_SIZE, 6);
        settings.writeUInt32BE(MAX_WINDOW, 8);
        const connectionWindow = Buffer.alloc(4);
        connectionWindow.writeUInt32BE(MAX_WINDOW - DEFAULT_WINDOW, 0);
        socket.write(
          Buffer.concat([
            PREFACE,
            frameHeader(settings.length, FRAME.SETTINGS, 0, 0),
            settings,
            frameHeader(4, FRAME.WINDOW_UPDATE, 0, 0),
            connectionWindow,
          ]),
        );
        resolve(connection);
      });
    });
  }

  get inFlight(): number {
    return this.#streams.size;
  }

  /** One unary call with an already framed gRPC message; `done` is called exactly once. */
  call(path: string, framedMessage: Buffer, token: string | undefined, tokenIndexable: boolean, done: (outcome: RawOutcome) => void): void {
    if (this.#failed) {
      queueMicrotask(() => done('reset'));
      return;
    }
    const streamId = this.#nextStreamId;
    this.#nextStreamId += 2;
    this.#streams.set(streamId, { gotMessage: false, done });
    const block = this.#headerBlock(path, token, tokenIndexable);
    this.#outbox.push(frameHeader(block.length, FRAME.HEADERS, FLAG.END_HEADERS, streamId), block);
    const data = Buffer.concat([frameHeader(framedMessage.length, FRAME.DATA, FLAG.END_STREAM, streamId), framedMessage]);
    if (this.#blockedData.length > 0 || this.#sendWindow < framedMessage.length) {
      this.#blockedData.push(data);
    } else {
      this.#sendWindow -= framedMessage.length;
      this.#outbox.push(data);
    }
    this.#scheduleFlush();
  }

  #headerBlock(path: string, token: string | undefined, tokenIndexable: boolean): Buffer {
    const cacheKey = tokenIndexable || token === undefined ? `${path}\0${token ?? ''}` : undefined;
    if (cacheKey !== undefined) {
      const cached = this.#blockCache.get(cacheKey);
      if (cached !== undefined) return cached;
    }
    const fields = [
      Buffer.from([0x83, 0x87]), // :method POST, :scheme https (static table 3 and 7)
      this.#encoder.field(':path', path, true),
      this.#encoder.field(':authority', this.#authority, true),
      this.#encoder.field('content-type', 'application/grpc', true),
      this.#encoder.field('te', 'trailers', true),
    ];
    if (token !== undefined) fields.push(this.#encoder.field('authorization', `Bearer ${token}`, tokenIndexable));
    const block = Buffer.concat(fields);
    // Cache only the steady state: the first block of a connection carries the table insertions.
    if (cacheKey !== undefined && this.#blockCache.has(`${cacheKey}\0seen`)) this.#blockCache.set(cacheKey, block);
    else if (cacheKey !== undefined) this.#blockCache.set(`${cacheKey}\0seen`, block);
    return block;
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    process.nextTick(() => {
      this.#flushScheduled = false;
      if (this.#outbox.length === 0 || this.#failed) return;
      const out = this.#outbox.length === 1 ? this.#outbox[0]! : Buffer.concat(this.#outbox);
      this.#outbox = [];
      this.#socket.write(out);
    });
  }

  #receive(chunk: Buffer): void {
    this.#inbox = this.#inbox.length === 0 ? chunk : Buffer.concat([this.#inbox, chunk]);
    let offset = 0;
    while (this.#inbox.length - offset >= 9) {
      const length = this.#inbox.readUIntBE(offset, 3);
      if (this.#inbox.length - offset < 9 + length) break;
      const type = this.#inbox[offset + 3]!;
      const flags = this.#inbox[offset + 4]!;
      const streamId = this.#inbox.readUInt32BE(offset + 5) & 0x7fffffff;
      const payloadAt = offset + 9;
      offset = payloadAt + length;
      this.#onFrame(type, flags, streamId, length, payloadAt);
    }
    this.#inbox = offset === this.#inbox.length ? Buffer.alloc(0) : this.#inbox.subarray(offset);
  }

  #onFrame(type: number, flags: number, streamId: number, length: number, payloadAt: number): void {
    switch (type) {
      case FRAME.DATA: {
        const stream = this.#streams.get(streamId);
        if (stream !== undefined && length > 0) stream.gotMessage = true;
        this.#unacknowledgedBytes += length;
        // The connection window was opened to 2^31-1 at the start; top it up long before it runs out.
        if (this.#unacknowledgedBytes > 1 << 28) {
          const increment = Buffer.alloc(4);
          increment.writeUInt32BE(this.#unacknowledgedBytes, 0);
          this.#outbox.push(frameHeader(4, FRAME.WINDOW_UPDATE, 0, 0), increment);
          this.#unacknowledgedBytes = 0;
          this.#scheduleFlush();
        }
        if ((flags & FLAG.END_STREAM) !== 0) this.#finish(streamId, stream?.gotMessage ? 'message' : 'trailers-only');
        return;
      }
      case FRAME.HEADERS:
        if ((flags & FLAG.END_STREAM) !== 0) {
          const stream = this.#streams.get(streamId);
          this.#finish(streamId, stream?.gotMessage ? 'message' : 'trailers-only');
        }
        return;
      case FRAME.RST_STREAM:
        this.#finish(streamId, 'reset');
        return;
      case FRAME.SETTINGS:
        if ((flags & FLAG.ACK) === 0) {
          this.#outbox.push(frameHeader(0, FRAME.SETTINGS, FLAG.ACK, 0));
          this.#scheduleFlush();
        }
        return;
      case FRAME.PING:
        if ((flags & FLAG.ACK) === 0) {
          this.#outbox.push(frameHeader(8, FRAME.PING, FLAG.ACK, 0), Buffer.from(this.#inbox.subarray(payloadAt, payloadAt + 8)));
          this.#scheduleFlush();
        }
        return;
      case FRAME.GOAWAY:
        this.#fail();
        return;
      case FRAME.WINDOW_UPDATE:
        if (streamId === 0) {
          this.#sendWindow += this.#inbox.readUInt32BE(payloadAt) & 0x7fffffff;
          this.#releaseBlocked();
        }
        return;
      default:
        return;
    }
  }

  #releaseBlocked(): void {
    while (this.#blockedData.length > 0) {
      const data = this.#blockedData[0]!;
      const size = data.length - 9;
      if (this.#sendWindow < size) break;
      this.#sendWindow -= size;
      this.#outbox.push(data);
      this.#blockedData.shift();
    }
    this.#scheduleFlush();
  }

  #finish(streamId: number, outcome: RawOutcome): void {
    const stream = this.#streams.get(streamId);
    if (stream === undefined) return;
    this.#streams.delete(streamId);
    stream.done(outcome);
  }

  #fail(): void {
    if (this.#failed) return;
    this.#failed = true;
    const pending = [...this.#streams.values()];
    this.#streams.clear();
    for (const stream of pending) stream.done('reset');
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#failed = true;
      const goaway = Buffer.alloc(8);
      this.#socket.end(Buffer.concat([frameHeader(8, FRAME.GOAWAY, 0, 0), goaway]));
      this.#socket.once('close', () => resolve());
      setTimeout(() => {
        this.#socket.destroy();
        resolve();
      }, 2000).unref();
    });
  }
}
