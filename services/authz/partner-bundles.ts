// Partners' SPIFFE bundles, fetched from their bundle endpoints at the refresh hint, the last good one kept.
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { request } from 'node:https';
import type { PeerCertificate } from 'node:tls';
import { TwokeyError } from './errors.ts';
import type { BundleSource, FederationPolicy, PartnerPolicy } from './federation.ts';
import { MAX_BUNDLE_BYTES, SpiffeBundle } from './spiffe-bundle.ts';
import { parseSvid } from './svid.ts';
import { sharedRootError } from './trust-bundle-set.ts';

/** SPIFFE Trust Domain and Bundle §6.2: without a hint, refresh every five minutes. */
export const DEFAULT_REFRESH_MS = 5 * 60_000;

export interface PartnerBundlesOptions {
  policy: FederationPolicy;
  /** Epoch ms. */
  clock?: () => number;
  /** Floor and cap on the interval a partner's hint may set (default 1 s and 1 h). */
  minRefreshMs?: number;
  maxRefreshMs?: number;
  /** How soon to try again after a failed fetch (default: min(refresh interval, 30 s)). */
  retryMs?: number;
  fetchTimeoutMs?: number;
  maxBytes?: number;
  /**
   * Our own trust domain and its current roots. A partner bundle holding one of them, or a root
   * another partner's last good bundle holds, is refused (the last good one stays).
   */
  own?: () => { trustDomain: string; roots: readonly X509Certificate[] };
  /** A partner's bundle was accepted (changed: its roots differ from the last good ones). */
  onAccepted?: (trustDomain: string, bundle: SpiffeBundle, changed: boolean) => void;
  /** A fetch or a bundle was refused; the last good bundle stays. */
  onRefused?: (trustDomain: string, err: TwokeyError) => void;
}

/** What an operator (and the staleness metric) reads about one partner's bundle. */
export interface PartnerBundleStatus {
  readonly trustDomain: string;
  readonly sequence: number | undefined;
  /** Epoch ms of the last successful refresh (0: never). */
  readonly lastRefreshMs: number;
  readonly failures: number;
  readonly lastError: string | undefined;
}

/**
 * One partner's bundle: the last good one, and the watch that refreshes it. A refused update
 * (unreachable, garbage, oversized, private keys, a sequence going backwards, the same sequence
 * with other contents) leaves the last good bundle in force and is reported.
 */
class PartnerBundle {
  readonly partner: PartnerPolicy;
  current: SpiffeBundle | undefined;
  lastRefreshMs = 0;
  failures = 0;
  lastError: string | undefined;

  constructor(partner: PartnerPolicy) {
    this.partner = partner;
  }

  /** Takes a candidate if it may follow the current bundle; returns whether the roots changed. */
  accept(candidate: SpiffeBundle, now: number): boolean {
    const current = this.current;
    if (current !== undefined && current.sequence !== undefined) {
      if (candidate.sequence === undefined || candidate.sequence < current.sequence) {
        throw new TwokeyError(
          'ERR_BUNDLE_INVALID',
          `SPIFFE bundle of trust domain "${this.partner.trustDomain}" refused: spiffe_sequence ${candidate.sequence ?? '(none)'} goes back from ${current.sequence}`,
        );
      }
      if (candidate.sequence === current.sequence && !candidate.sameAuthorities(current)) {
        throw new TwokeyError(
          'ERR_BUNDLE_INVALID',
          `SPIFFE bundle of trust domain "${this.partner.trustDomain}" refused: other roots under the same spiffe_sequence ${current.sequence}`,
        );
      }
    }
    const changed = current === undefined || !candidate.sameAuthorities(current);
    this.current = candidate;
    this.lastRefreshMs = now;
    this.lastError = undefined;
    return changed;
  }
}

/**
 * The bundles of every federated partner, each from its own source, never merged. start() loads
 * the files and makes the first fetch of each endpoint; then each partner is refreshed at its
 * bundle's refresh hint (default 5 minutes, bounded), and again sooner after a failure.
 */
export class PartnerBundles {
  readonly #opts: PartnerBundlesOptions;
  readonly #clock: () => number;
  readonly #partners: PartnerBundle[];
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #listeners = new Set<() => void>();
  #closed = false;

  constructor(opts: PartnerBundlesOptions) {
    this.#opts = opts;
    this.#clock = opts.clock ?? Date.now;
    this.#partners = opts.policy.partners.map((p) => new PartnerBundle(p));
  }

  /** Loads each partner's bundle once; a partner whose source fails now is retried later, its peers refused meanwhile. */
  async start(): Promise<void> {
    await Promise.all(this.#partners.map((p) => this.#refresh(p)));
  }

  /** Each partner's last good roots (partners without one are absent: their peers are refused). */
  bundles(): Map<string, readonly X509Certificate[]> {
    const out = new Map<string, readonly X509Certificate[]>();
    for (const p of this.#partners) if (p.current !== undefined) out.set(p.partner.trustDomain, p.current.x509Authorities);
    return out;
  }

  status(): PartnerBundleStatus[] {
    return this.#partners.map((p) => ({
      trustDomain: p.partner.trustDomain,
      sequence: p.current?.sequence,
      lastRefreshMs: p.lastRefreshMs,
      failures: p.failures,
      lastError: p.lastError,
    }));
  }

  /** Called after any partner's roots changed; returns the unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Refreshes every partner now (tests, and an operator's nudge); resolves when all have answered. */
  async refreshNow(): Promise<void> {
    await Promise.all(this.#partners.map((p) => this.#refresh(p)));
  }

  close(): void {
    this.#closed = true;
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
  }

  async #refresh(p: PartnerBundle): Promise<void> {
    const td = p.partner.trustDomain;
    const existing = this.#timers.get(td);
    if (existing !== undefined) clearTimeout(existing);
    this.#timers.delete(td);
    let ok = false;
    try {
      const candidate = await this.#load(p);
      this.#refuseShared(p, candidate);
      const changed = p.accept(candidate, this.#clock());
      ok = true;
      this.#opts.onAccepted?.(td, candidate, changed);
      if (changed) for (const listener of this.#listeners) listener();
    } catch (err) {
      const error = err instanceof TwokeyError ? err : new TwokeyError('ERR_BUNDLE_INVALID', `SPIFFE bundle of trust domain "${td}" not refreshed: ${(err as Error).message}`, { cause: err });
      p.failures += 1;
      p.lastError = error.message;
      this.#opts.onRefused?.(td, error);
    }
    if (this.#closed) return;
    const interval = this.#interval(p);
    const delay = ok ? interval : Math.min(interval, this.#opts.retryMs ?? 30_000);
    const timer = setTimeout(() => void this.#refresh(p), delay);
    timer.unref();
    this.#timers.set(td, timer);
  }

  #interval(p: PartnerBundle): number {
    const hint = p.current?.refreshHintSeconds;
    const wanted = hint === undefined || hint === 0 ? DEFAULT_REFRESH_MS : hint * 1000;
    return Math.min(Math.max(wanted, this.#opts.minRefreshMs ?? 1000), this.#opts.maxRefreshMs ?? 3_600_000);
  }

  async #load(p: PartnerBundle): Promise<SpiffeBundle> {
    const source: BundleSource = p.partner.bundle;
    const td = p.partner.trustDomain;
    if (source.kind === 'file') return SpiffeBundle.parse(await readBounded(source.path, this.#maxBytes), td);
    // The initial bundle of an endpoint source is read once, before the first fetch: for
    // https_spiffe it is what authenticates the endpoint (SPIFFE Federation §5.2.2).
    if (p.current === undefined && source.initialFile !== undefined) {
      const initial = SpiffeBundle.parse(await readBounded(source.initialFile, this.#maxBytes), td);
      this.#refuseShared(p, initial);
      p.accept(initial, this.#clock());
      for (const listener of this.#listeners) listener();
    }
    const body = await fetchBundle(source, p.current, {
      timeoutMs: this.#opts.fetchTimeoutMs ?? 5000,
      maxBytes: this.#maxBytes,
      ca: source.kind === 'https_web' && source.caFile !== undefined ? await readFile(source.caFile) : undefined,
    });
    return SpiffeBundle.parse(body, td);
  }

  /** Throws when the candidate holds one of our roots or a root another partner's bundle holds. */
  #refuseShared(p: PartnerBundle, candidate: SpiffeBundle): void {
    const held: Array<readonly [string, readonly X509Certificate[]]> = [];
    const own = this.#opts.own?.();
    if (own !== undefined) held.push([own.trustDomain, own.roots]);
    for (const other of this.#partners) if (other !== p && other.current !== undefined) held.push([other.partner.trustDomain, other.current.x509Authorities]);
    const err = sharedRootError(p.partner.trustDomain, candidate.x509Authorities, held, own?.trustDomain ?? '');
    if (err !== null) throw err;
  }

  get #maxBytes(): number {
    return this.#opts.maxBytes ?? MAX_BUNDLE_BYTES;
  }
}

async function readBounded(path: string, maxBytes: number): Promise<Buffer> {
  const bytes = await readFile(path);
  if (bytes.length > maxBytes) throw new TwokeyError('ERR_BUNDLE_INVALID', `bundle file ${path} holds ${bytes.length} bytes, more than the ${maxBytes} allowed`);
  return bytes;
}

/**
 * GET of a bundle endpoint over HTTPS. https_web: the server's certificate is verified for the
 * URL's host name against the public roots (or `ca`); https_spiffe: against the partner's own
 * last good bundle, and it must be the X.509-SVID of the configured endpoint SPIFFE ID (the host
 * name plays no part). Redirects are not followed; a body over `maxBytes` is cut off and refused.
 */
function fetchBundle(
  source: Exclude<BundleSource, { kind: 'file' }>,
  current: SpiffeBundle | undefined,
  opts: { timeoutMs: number; maxBytes: number; ca: Buffer | undefined },
): Promise<Buffer> {
  const url = new URL(source.url);
  let tls: { ca?: string | Buffer; checkServerIdentity?: (host: string, cert: PeerCertificate) => Error | undefined };
  if (source.kind === 'https_spiffe') {
    if (current === undefined) {
      return Promise.reject(new TwokeyError('ERR_BUNDLE_INVALID', `no bundle of ${source.endpointSpiffeId.trustDomain} yet to authenticate its https_spiffe endpoint with`));
    }
    tls = {
      ca: current.toPem(),
      checkServerIdentity: (_host, cert) => {
        try {
          const svid = parseSvid(cert.raw);
          if (!svid.spiffeId.equals(source.endpointSpiffeId)) return new Error(`the bundle endpoint presented ${svid.spiffeId}, not ${source.endpointSpiffeId}`);
          return undefined;
        } catch (err) {
          return new Error(`the bundle endpoint's certificate is not an X.509-SVID: ${(err as Error).message}`);
        }
      },
    };
  } else {
    tls = opts.ca === undefined ? {} : { ca: opts.ca };
  }
  return new Promise<Buffer>((resolve, reject) => {
    const fail = (why: string, cause?: unknown): void =>
      reject(new TwokeyError('ERR_BUNDLE_INVALID', `bundle endpoint ${source.url} (${source.kind}): ${why}`, cause === undefined ? undefined : { cause }));
    const req = request(url, { method: 'GET', headers: { accept: 'application/json' }, timeout: opts.timeoutMs, rejectUnauthorized: true, agent: false, ...tls }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return fail(`answered HTTP ${res.statusCode}${res.statusCode !== undefined && res.statusCode >= 300 && res.statusCode < 400 ? ' (redirects are not followed)' : ''}`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > opts.maxBytes) {
          req.destroy();
          return fail(`body larger than ${opts.maxBytes} bytes`);
        }
        chunks.push(chunk);
      });
      res.on('end', () => (res.complete ? resolve(Buffer.concat(chunks)) : fail('the answer was cut off')));
      res.on('error', (err) => fail(err.message, err));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${opts.timeoutMs} ms`)));
    // The idle timeout alone would let an endpoint trickle a byte at a time: the whole exchange is bounded too.
    const deadline = setTimeout(() => req.destroy(new Error(`no complete answer within ${opts.timeoutMs} ms`)), opts.timeoutMs);
    deadline.unref();
    req.on('close', () => clearTimeout(deadline));
    req.on('error', (err) => fail(`unreachable: ${err.message}`, err));
    req.end();
  });
}
