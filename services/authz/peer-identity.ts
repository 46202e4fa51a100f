// The caller's workload identity, parsed from its certificate once per connection, not once per call.
import { createHash } from 'node:crypto';
import { TLSSocket } from 'node:tls';
import type { ServerInterceptingCallInterface } from '@grpc/grpc-js';
import { TwokeyError, isTwokeyError } from './errors.ts';
import { parseSvid } from './svid.ts';
import type { PeerResult } from './decision.ts';

export interface PeerIdentityCacheOptions {
  grantsOid?: string;
  /** Bound on the by-certificate cache used when the connection's socket is not reachable. */
  maxCertificates?: number;
}

/**
 * Resolves the peer of a server call to a PeerResult. grpc-js's getAuthContext() converts the
 * whole certificate to a JS object on every call (~17 us); instead the TLS socket of the
 * connection is the cache key, so the DER is read and parsed once per connection. Validity dates
 * are kept with the identity and compared with the clock on every call by decide().
 */
export class PeerIdentityCache {
  readonly #grantsOid: string | undefined;
  readonly #bySocket = new WeakMap<TLSSocket, PeerResult>();
  readonly #byCertificate = new Map<string, PeerResult>();
  readonly #maxCertificates: number;
  #parses = 0;
  #socketless = 0;

  constructor(options: PeerIdentityCacheOptions = {}) {
    this.#grantsOid = options.grantsOid;
    this.#maxCertificates = options.maxCertificates ?? 1024;
  }

  /** The peer of a call; must be given the call as grpc-js hands it to the first interceptor. */
  fromCall(call: ServerInterceptingCallInterface): PeerResult {
    const socket = tlsSocketOf(call);
    if (socket === undefined) return this.#fromAuthContext(call);
    const cached = this.#bySocket.get(socket);
    if (cached !== undefined) return cached;
    const result = this.#fromSocket(socket);
    this.#bySocket.set(socket, result);
    return result;
  }

  /** Certificates parsed so far, and calls that had to use getAuthContext() (for operators and tests). */
  get stats(): { parses: number; socketless: number } {
    return { parses: this.#parses, socketless: this.#socketless };
  }

  /** Parses a DER certificate the way a call's peer is parsed (also used offline). */
  fromDer(der: Buffer): PeerResult {
    this.#parses += 1;
    try {
      return { ok: true, identity: parseSvid(der, this.#grantsOid === undefined ? {} : { grantsOid: this.#grantsOid }) };
    } catch (err) {
      return { ok: false, error: isTwokeyError(err) ? err : new TwokeyError('ERR_PEER_CERT_INVALID', 'invalid peer certificate', { cause: err }) };
    }
  }

  #fromSocket(socket: TLSSocket): PeerResult {
    // Only TLS 1.2 can renegotiate; a renegotiated client certificate would bypass this cache.
    socket.disableRenegotiation();
    if (!socket.authorized) {
      return { ok: false, error: new TwokeyError('ERR_PEER_CERT_INVALID', `peer certificate not verified: ${socket.authorizationError ?? 'unknown reason'}`) };
    }
    const cert = socket.getPeerX509Certificate();
    if (cert === undefined) return missing();
    return this.fromDer(Buffer.from(cert.raw));
  }

  #fromAuthContext(call: ServerInterceptingCallInterface): PeerResult {
    this.#socketless += 1;
    const raw = call.getAuthContext().sslPeerCertificate?.raw;
    if (raw === undefined) return missing();
    const key = createHash('sha256').update(raw).digest('base64url');
    const cached = this.#byCertificate.get(key);
    if (cached !== undefined) return cached;
    const result = this.fromDer(raw);
    if (this.#byCertificate.size >= this.#maxCertificates) this.#byCertificate.delete(this.#byCertificate.keys().next().value as string);
    this.#byCertificate.set(key, result);
    return result;
  }
}

function missing(): PeerResult {
  return { ok: false, error: new TwokeyError('ERR_PEER_CERT_MISSING', 'no verified client certificate on this connection') };
}

/**
 * The TLS socket under a server call. grpc-js keeps the HTTP/2 stream on the call it hands the
 * first interceptor (BaseServerInterceptingCall); it is not public API, so every step is checked
 * and anything unexpected falls back to the public getAuthContext().
 */
function tlsSocketOf(call: ServerInterceptingCallInterface): TLSSocket | undefined {
  const socket = (call as unknown as { stream?: { session?: { socket?: unknown } } }).stream?.session?.socket;
  return socket instanceof TLSSocket ? socket : undefined;
}
