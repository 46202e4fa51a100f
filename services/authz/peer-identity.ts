// The caller's workload identity, parsed from its certificate once per connection, not once per call.
import { X509Certificate, createHash } from 'node:crypto';
import { TLSSocket, type DetailedPeerCertificate } from 'node:tls';
import type { ServerInterceptingCallInterface } from '@grpc/grpc-js';
import { TwokeyError, isTwokeyError } from './errors.ts';
import { parseSvid } from './svid.ts';
import type { PeerResult } from './types.ts';
import { chainsToBundle } from './svid-source.ts';

export interface PeerIdentityCacheOptions {
  grantsOid?: string;
  /** Bound on the by-certificate cache used when the connection's socket is not reachable. */
  maxCertificates?: number;
}

interface SocketEntry {
  result: PeerResult;
  /** The trust bundle generation the connection's chain was last checked against. */
  generation: number;
}

/**
 * Resolves the peer of a server call to a PeerResult. grpc-js's getAuthContext() converts the
 * whole certificate to a JS object on every call (~17 us); instead the TLS socket of the
 * connection is the cache key, so the DER is read and parsed once per connection. Validity dates
 * are kept with the identity and compared with the clock on every call by decide(). When the
 * trust bundle changes (a CA retired), each open connection's chain is checked again against the
 * new bundle at its next call, so a connection cannot outlive the trust in its issuer either.
 */
export class PeerIdentityCache {
  readonly #grantsOid: string | undefined;
  readonly #bySocket = new WeakMap<TLSSocket, SocketEntry>();
  #bundle: readonly X509Certificate[] | undefined;
  #generation = 0;
  readonly #byCertificate = new Map<string, PeerResult>();
  readonly #chainKeys = new WeakMap<readonly X509Certificate[], string>();
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
    let entry = this.#bySocket.get(socket);
    if (entry === undefined) {
      entry = { result: this.#fromSocket(socket), generation: this.#generation };
      this.#bySocket.set(socket, entry);
    } else if (entry.generation !== this.#generation) {
      entry.generation = this.#generation;
      if (entry.result.ok && this.#bundle !== undefined && !this.#trusted(peerChain(socket))) {
        entry.result = { ok: false, error: new TwokeyError('ERR_PEER_CERT_INVALID', 'peer certificate no longer chains to the trust bundle (its CA was removed)') };
      }
    }
    return entry.result;
  }

  /** The trust bundle now in force; open connections are re-checked against it at their next call. */
  setTrustBundle(bundle: readonly X509Certificate[]): void {
    this.#bundle = bundle;
    this.#generation += 1;
    // Results found without a socket were checked against the old bundle only: look again.
    this.#byCertificate.clear();
  }

  /** Certificates parsed so far, and calls that had to use getAuthContext() (for operators and tests). */
  get stats(): { parses: number; socketless: number } {
    return { parses: this.#parses, socketless: this.#socketless };
  }

  /**
   * The peer named by a certificate chain someone else received: a proxy in front of a server in
   * another language forwards its client's certificate (leaf first, then any intermediates). The
   * chain is verified here against the trust bundle this cache holds, as the TLS handshake would
   * have; then the leaf is parsed as a call's peer is. Refused while no bundle is held. Results are
   * kept per chain (bounded) and dropped when the bundle changes.
   */
  fromChain(chain: readonly X509Certificate[]): PeerResult {
    const leaf = chain[0];
    if (leaf === undefined) return missing();
    // Hashing the chain costs more than the decision: its key is kept per chain object, which the
    // caller keeps for as long as it sees the same certificate (per connection, per forwarded PEM).
    let key = this.#chainKeys.get(chain);
    if (key === undefined) {
      key = createHash('sha256').update(chain.map((c) => c.fingerprint256).join(',')).digest('base64url');
      this.#chainKeys.set(chain, key);
    }
    const cached = this.#byCertificate.get(key);
    if (cached !== undefined) return cached;
    let result: PeerResult;
    if (this.#bundle === undefined) {
      result = { ok: false, error: new TwokeyError('ERR_PEER_CERT_INVALID', 'no trust bundle is held yet to verify the forwarded certificate against') };
    } else if (!this.#trusted(chain)) {
      result = { ok: false, error: new TwokeyError('ERR_PEER_CERT_INVALID', 'peer certificate does not chain to the trust bundle') };
    } else {
      result = this.fromDer(Buffer.from(leaf.raw));
    }
    this.#remember(key, result);
    return result;
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
    let result = this.fromDer(raw);
    // TLS checked the chain against the bundle of the handshake, which may since have lost a CA.
    // Only the leaf is at hand here, so it must be issued by a bundle CA itself (as twokey's CA
    // issues them); a leaf needing intermediates is refused on this path rather than trusted.
    if (result.ok && this.#bundle !== undefined && !this.#trusted([new X509Certificate(raw)])) {
      result = { ok: false, error: new TwokeyError('ERR_PEER_CERT_INVALID', 'peer certificate does not chain to the current trust bundle (checked without its intermediates)') };
    }
    this.#remember(key, result);
    return result;
  }

  /**
   * Whether a chain (leaf first) is issued by the trust bundle held now: the one place every path
   * (an open connection re-checked, a certificate without its socket, a forwarded certificate)
   * decides trust in an issuer.
   */
  #trusted(chain: readonly X509Certificate[]): boolean {
    return this.#bundle !== undefined && chainsToBundle(chain, this.#bundle);
  }

  #remember(key: string, result: PeerResult): void {
    if (this.#byCertificate.size >= this.#maxCertificates) this.#byCertificate.delete(this.#byCertificate.keys().next().value as string);
    this.#byCertificate.set(key, result);
  }
}

/** The peer's chain as the TLS handshake received it: leaf first, then its issuers. */
function peerChain(socket: TLSSocket): X509Certificate[] {
  const chain: X509Certificate[] = [];
  let cert: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (cert?.raw !== undefined && chain.length < 8) {
    chain.push(new X509Certificate(cert.raw));
    if (cert.issuerCertificate === undefined || cert.issuerCertificate === cert) break;
    cert = cert.issuerCertificate;
  }
  return chain;
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
