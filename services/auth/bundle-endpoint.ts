// Our trust domain's SPIFFE bundle endpoint (SPIFFE Federation §5): the JWK Set partners fetch to trust our CA.
import type { X509Certificate } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { SpiffeBundle } from '../authz/spiffe-bundle.ts';

/** Where partners fetch it, on auth's HTTPS listener (and at / on `twokey bundle serve`). */
export const BUNDLE_PATH = '/.well-known/spiffe-bundle';

/**
 * Our bundle as published: the sequence number grows whenever the roots change (a CA added for
 * rotation, or the old one removed) and starts at the current Unix time, so a restarted publisher
 * never goes backwards for a partner that kept the last number.
 */
export class PublishedBundle {
  readonly #trustDomain: string;
  readonly #refreshHintSeconds: number;
  readonly #clock: () => number;
  #bundle: SpiffeBundle;

  constructor(trustDomain: string, roots: readonly X509Certificate[], opts: { refreshHintSeconds?: number; clock?: () => number } = {}) {
    this.#trustDomain = trustDomain;
    this.#refreshHintSeconds = opts.refreshHintSeconds ?? 300;
    this.#clock = opts.clock ?? Date.now;
    this.#bundle = SpiffeBundle.fromCertificates(trustDomain, roots, { sequence: Math.floor(this.#clock() / 1000), refreshHintSeconds: this.#refreshHintSeconds });
  }

  get current(): SpiffeBundle {
    return this.#bundle;
  }

  /** Publishes new roots; the same roots change nothing. */
  update(roots: readonly X509Certificate[]): void {
    const next = SpiffeBundle.fromCertificates(this.#trustDomain, roots, { sequence: this.#bundle.sequence, refreshHintSeconds: this.#refreshHintSeconds });
    if (next.sameAuthorities(this.#bundle)) return;
    const sequence = Math.max((this.#bundle.sequence ?? 0) + 1, Math.floor(this.#clock() / 1000));
    this.#bundle = SpiffeBundle.fromCertificates(this.#trustDomain, roots, { sequence, refreshHintSeconds: this.#refreshHintSeconds });
  }
}

/** Answers GET and HEAD of `paths` with the bundle; false when the request is not for it. */
export function serveBundle(req: IncomingMessage, res: ServerResponse, bundle: PublishedBundle, paths: readonly string[] = [BUNDLE_PATH]): boolean {
  const path = (req.url ?? '').split('?')[0]!;
  if (!paths.includes(path)) return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
    return true;
  }
  const text = JSON.stringify(bundle.current.toJSON());
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-cache', 'content-length': Buffer.byteLength(text) });
  res.end(req.method === 'HEAD' ? undefined : text);
  return true;
}

/**
 * A server for the bundle alone (`twokey bundle serve`): https_spiffe when `tls` is a workload's
 * SVID and key (partners check its SPIFFE ID against our bundle), https_web when it is a public
 * certificate for the endpoint's host name.
 */
export function createBundleServer(bundle: PublishedBundle, tls: { cert: string | Buffer; key: string | Buffer }): Server {
  return createServer({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' }, (req, res) => {
    if (!serveBundle(req, res, bundle, ['/', BUNDLE_PATH])) res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });
}
