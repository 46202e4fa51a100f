// nginx's auth_request endpoint: GET /check over HTTP/1.1 keep-alive, from a proxy that authenticated itself.
import { X509Certificate, randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { TLSSocket } from 'node:tls';
import type { DecisionLog } from '../authz/decision-log.ts';
import type { RevocationSource } from '../authz/interceptor.ts';
import { TwokeyError } from '../authz/errors.ts';
import type { PeerIdentityCache } from '../authz/peer-identity.ts';
import type { SvidSource } from '../authz/svid-source.ts';
import { REASON_HEADER } from './backend-headers.ts';
import { certificatesFromEscapedPem, metadataFrom, type ForwardedCall } from './forwarded-call.ts';
import type { ForwardedDecisions } from './forwarded-decision.ts';
import { headerSafe, httpStatusOf } from './http-status.ts';
import { CHECK_METHOD, admitProxy } from './proxy-admission.ts';
import { listenAddress, type ListenAddress } from './listen-address.ts';

/** The headers the generated nginx config sets on the auth subrequest (replacing any client copy). */
export const NGINX_REQUEST_HEADERS = {
  method: 'x-original-uri',
  certificate: 'x-client-cert',
  verify: 'x-client-verify',
} as const;

export const CHECK_PATH = '/check';

// nginx keeps idle upstream connections up to keepalive_timeout (60 s by default): this side must
// keep them longer, or nginx sends a check on a connection being closed.
const KEEP_ALIVE_MS = 75_000;

export interface NginxEndpointOptions {
  decisions: ForwardedDecisions;
  /**
   * mTLS (the proxy presents its workload certificate, which must grant CHECK_METHOD): the
   * authorizer's own SVID source and the cache that checks the proxy's certificate. Absent: a
   * plaintext listener, accepted only on loopback or a unix socket.
   */
  tls?: { svid: SvidSource; peers: PeerIdentityCache; trustDomain: string; revocation?: RevocationSource | undefined; log?: DecisionLog | undefined; clock?: () => number };
}

/** The auth_request endpoint; `listen` resolves to the bound port (0 for a unix socket). */
export class NginxEndpoint {
  readonly #server: HttpServer;
  readonly #options: NginxEndpointOptions;
  readonly #chains = new WeakMap<TLSSocket, X509Certificate[]>();
  #unwatch: (() => void) | undefined;

  constructor(options: NginxEndpointOptions) {
    this.#options = options;
    const handler = (req: IncomingMessage, res: ServerResponse): void => void this.#handle(req, res);
    const tls = options.tls;
    if (tls === undefined) {
      this.#server = createHttpServer(handler);
    } else {
      const m = tls.svid.material;
      const server = createHttpsServer(
        { cert: m.chainPem, key: m.keyPem, ca: m.bundlePem, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' },
        handler,
      );
      // A rotated certificate or bundle applies to new connections; a retired CA is also caught per
      // request, since the proxy's chain is checked against the bundle the cache holds now.
      const reload = (): void => {
        const now = tls.svid.material;
        server.setSecureContext({ cert: now.chainPem, key: now.keyPem, ca: now.bundlePem, minVersion: 'TLSv1.3' });
      };
      const onIdentity = (update: { certificate: Buffer; privateKey: Buffer } | null): void => {
        if (update !== null) reload();
      };
      const onBundle = (update: { caCertificate: Buffer } | null): void => {
        if (update !== null) reload();
      };
      tls.svid.addIdentityCertificateListener(onIdentity);
      tls.svid.addCaCertificateListener(onBundle);
      this.#unwatch = () => {
        tls.svid.removeIdentityCertificateListener(onIdentity);
        tls.svid.removeCaCertificateListener(onBundle);
      };
      this.#server = server;
    }
    this.#server.keepAliveTimeout = KEEP_ALIVE_MS;
    this.#server.headersTimeout = KEEP_ALIVE_MS + 1000;
    this.#server.requestTimeout = 10_000;
  }

  listen(address: string): Promise<number> {
    const where: ListenAddress = listenAddress(address);
    if (this.#options.tls === undefined && !where.local) {
      return Promise.reject(new TwokeyError('ERR_CONFIG_INVALID', `a plaintext check endpoint must listen on loopback or a unix socket, not ${address}: anyone who can reach it could forward any certificate (use mTLS)`));
    }
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      const done = (): void => {
        this.#server.off('error', reject);
        const bound = this.#server.address();
        resolve(typeof bound === 'object' && bound !== null ? bound.port : 0);
      };
      if (where.path !== undefined) this.#server.listen(where.path, done);
      else this.#server.listen(where.port, where.host, done);
    });
  }

  close(): Promise<void> {
    this.#unwatch?.();
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = req.url ?? '';
      if (url !== CHECK_PATH) return void res.writeHead(404, { 'content-length': '0' }).end();
      const refused = this.#refuseProxy(req);
      if (refused !== undefined) return deny(res, refused.status, refused.message);
      const forwarded = forwardedFrom(req);
      const result = await this.#options.decisions.decide(forwarded);
      if (result.decision.allow && result.headers !== undefined) {
        res.writeHead(200, { ...result.headers, 'content-length': '0' }).end();
      } else {
        deny(res, httpStatusOf(result.decision.code), result.message);
      }
    } catch {
      // Fail closed: nginx reads a 500 as an error of the auth subrequest, never as an allow.
      if (!res.headersSent) deny(res, 500, 'twokey: authorization failed internally');
      else res.destroy();
    }
  }

  /** Undefined when the connection is one a proxy may forward on; else the refusal. */
  #refuseProxy(req: IncomingMessage): { status: number; message: string } | undefined {
    const tls = this.#options.tls;
    const socket = req.socket;
    if (tls === undefined) {
      // Plaintext is accepted from this machine only (the bind address already limits it).
      const remote = socket.remoteAddress;
      if (remote === undefined || isLoopback(remote) || socket.remoteFamily === undefined) return undefined;
      return { status: 403, message: 'twokey: forwarded calls are accepted on this listener from loopback only' };
    }
    if (!(socket instanceof TLSSocket)) return { status: 403, message: 'twokey: forwarded calls need mTLS' };
    let chain = this.#chains.get(socket);
    if (chain === undefined) {
      const leaf = socket.getPeerX509Certificate();
      chain = leaf === undefined ? [] : [leaf];
      this.#chains.set(socket, chain);
    }
    const peer = chain.length === 0 ? { ok: false as const, error: new TwokeyError('ERR_PEER_CERT_MISSING', 'the proxy presented no certificate') } : tls.peers.fromChain(chain);
    const admitted = admitProxy(peer, (tls.clock ?? Date.now)(), tls.trustDomain, tls.revocation?.view());
    if (admitted.allow) return undefined;
    const decisionId = randomUUID();
    tls.log?.write({ decisionId, method: CHECK_METHOD, peer: peer.ok ? peer.identity : undefined, decision: admitted, enforced: true, latencyUs: 0 });
    return { status: 403, message: `twokey: this proxy may not forward calls: ${admitted.reason} (decision ${decisionId})` };
  }
}

function isLoopback(address: string): boolean {
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}

function deny(res: ServerResponse, status: number, message: string): void {
  res.writeHead(status, { [REASON_HEADER]: headerSafe(message), 'content-length': '0' }).end();
}

/** The call nginx holds, from the headers the generated config sets on the auth subrequest. */
export function forwardedFrom(req: IncomingMessage): ForwardedCall {
  const all = (name: string): string[] => req.headersDistinct[name] ?? [];
  const one = (name: string): string | undefined | TwokeyError => {
    const values = all(name);
    if (values.length > 1) return new TwokeyError('ERR_PEER_CERT_INVALID', `the proxy sent ${name} twice`);
    return values[0];
  };
  const method = one(NGINX_REQUEST_HEADERS.method);
  const cert = one(NGINX_REQUEST_HEADERS.certificate);
  const verify = one(NGINX_REQUEST_HEADERS.verify);
  let certificates: ForwardedCall['certificates'];
  if (cert instanceof TwokeyError) certificates = cert;
  else if (verify instanceof TwokeyError) certificates = verify;
  else if (cert !== undefined && cert !== '' && verify !== 'SUCCESS') {
    // nginx verified the chain at the handshake; a certificate it did not accept is not a peer.
    certificates = new TwokeyError('ERR_PEER_CERT_INVALID', 'the proxy did not verify the client certificate', { untrusted: { verify: verify ?? '(none)' } });
  } else certificates = certificatesFromEscapedPem(cert);
  return {
    method: typeof method === 'string' ? method : '',
    certificates,
    principal: undefined,
    metadata: metadataFrom(all),
    // Read by the Envoy answer only: nginx's config clears the headers the backend must not trust.
    headerNames: [],
  };
}
