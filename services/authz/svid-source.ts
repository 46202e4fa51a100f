// A workload's certificate files, reloaded on change and validated before grpc-js may use them.
import { X509Certificate, createHash, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { experimental } from '@grpc/grpc-js';
import { TwokeyError } from './errors.ts';
import { parseSvid, type Svid } from './svid.ts';

type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

export const SVID_FILES = { cert: 'svid.pem', key: 'svid.key', bundle: 'bundle.pem' } as const;

/** One validated set of workload credentials. */
export interface SvidMaterial {
  readonly svid: Svid;
  /** Leaf first, then intermediates. */
  readonly chainPem: Buffer;
  readonly keyPem: Buffer;
  readonly bundlePem: Buffer;
}

export interface SvidSourceOptions {
  /** Reject material whose SPIFFE ID is outside this trust domain. */
  trustDomain: string;
  grantsOid?: string;
  /** Epoch ms. */
  clock?: () => number;
  /** How often the files are re-read; 0 disables watching. */
  pollIntervalMs?: number;
  /** Called when changed files fail validation (the current material stays in use). */
  onRejected?: (err: TwokeyError) => void;
  /** Called after new material was published. */
  onRotated?: (material: SvidMaterial) => void;
}

function bad(why: string, cause?: unknown): TwokeyError {
  return new TwokeyError('ERR_CONFIG_INVALID', `workload certificate files rejected: ${why}`, { cause });
}

/**
 * Whether the leaf (chain[0]) chains to a bundle CA through the given intermediates, each link
 * checked by issuer name and signature (validity dates are the caller's to check).
 */
export function chainsToBundle(chain: readonly X509Certificate[], bundle: readonly X509Certificate[]): boolean {
  let current: X509Certificate | undefined = chain[0];
  for (let depth = 0; current !== undefined && depth <= 4; depth++) {
    const link: X509Certificate = current;
    if (bundle.some((ca) => ca.ca && link.checkIssued(ca) && link.verify(ca.publicKey))) return true;
    current = chain.slice(1).find((c) => c.ca && link.checkIssued(c) && link.verify(c.publicKey));
  }
  return false;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Every PEM certificate in a file, in order; throws naming the file when there is none. */
export function certificatesIn(pem: Buffer, what: string): X509Certificate[] {
  const blocks = pem.toString('utf8').match(PEM_CERT) ?? [];
  if (blocks.length === 0) throw bad(`${what} holds no PEM certificate`);
  try {
    return blocks.map((b) => new X509Certificate(b));
  } catch (err) {
    throw bad(`${what} holds an unreadable certificate`, err);
  }
}

/**
 * Checks everything a peer would check, and more, so that a half-written or wrong file never
 * reaches a TLS context: the key matches the leaf, the leaf is a valid SVID of our trust domain,
 * current at `now`, and chains to the bundle.
 */
export function validateSvidMaterial(
  files: { chainPem: Buffer; keyPem: Buffer; bundlePem: Buffer },
  opts: { trustDomain: string; grantsOid?: string | undefined; now: number },
): SvidMaterial {
  const chain = certificatesIn(files.chainPem, SVID_FILES.cert);
  const bundle = certificatesIn(files.bundlePem, SVID_FILES.bundle);
  const leaf = chain[0]!;
  let key: KeyObject;
  try {
    key = createPrivateKey(files.keyPem);
  } catch (err) {
    throw bad(`${SVID_FILES.key} is not a readable private key`, err);
  }
  if (!leaf.checkPrivateKey(key)) throw bad(`${SVID_FILES.key} does not match the certificate in ${SVID_FILES.cert}`);
  let svid: Svid;
  try {
    svid = parseSvid(Buffer.from(leaf.raw), opts.grantsOid === undefined ? {} : { grantsOid: opts.grantsOid });
  } catch (err) {
    throw bad(`${SVID_FILES.cert}: ${(err as Error).message}`, err);
  }
  if (!svid.spiffeId.memberOf(opts.trustDomain)) throw bad(`${svid.spiffeId} is not in trust domain "${opts.trustDomain}"`);
  if (opts.now < svid.notBefore.getTime()) throw bad(`certificate not valid before ${svid.notBefore.toISOString()}`);
  if (opts.now >= svid.notAfter.getTime()) throw bad(`certificate expired at ${svid.notAfter.toISOString()}`);
  for (const ca of bundle) if (!ca.ca) throw bad(`${SVID_FILES.bundle} holds a certificate that is not a CA (${ca.subject})`);
  if (!chainsToBundle(chain, bundle)) throw bad(`${SVID_FILES.cert} does not chain to a CA in ${SVID_FILES.bundle}`);
  return { svid, chainPem: files.chainPem, keyPem: files.keyPem, bundlePem: files.bundlePem };
}

/**
 * The workload's credentials from a directory (svid.pem, svid.key, bundle.pem), as a grpc-js
 * certificate provider for both the identity and the trust bundle. Files are polled; a change is
 * validated and only then published, so new connections use the new certificate and a bad file
 * leaves the old one in place. Listeners are always called asynchronously: grpc-js registers its
 * watcher after adding the listener and would miss a synchronous first update.
 */
export class SvidSource implements experimental.CertificateProvider {
  /** The directory polled for changes; undefined for credentials held in memory. */
  readonly dir: string | undefined;
  readonly #opts: SvidSourceOptions;
  readonly #clock: () => number;
  #material: SvidMaterial;
  #raw: string;
  readonly #caListeners = new Set<CaListener>();
  readonly #identityListeners = new Set<IdentityListener>();
  #timer: NodeJS.Timeout | null = null;
  #polling = false;

  private constructor(dir: string | undefined, opts: SvidSourceOptions, material: SvidMaterial, raw: string) {
    this.dir = dir;
    this.#opts = opts;
    this.#clock = opts.clock ?? Date.now;
    this.#material = material;
    this.#raw = raw;
  }

  /** Loads and validates the files now; throws TwokeyError when they are not usable. */
  static async open(dir: string, opts: SvidSourceOptions): Promise<SvidSource> {
    const files = await readSvidFiles(dir);
    const material = validateSvidMaterial(files, { trustDomain: opts.trustDomain, grantsOid: opts.grantsOid, now: (opts.clock ?? Date.now)() });
    const source = new SvidSource(dir, opts, material, fingerprint(files));
    const interval = opts.pollIntervalMs ?? 1000;
    if (interval > 0) {
      source.#timer = setInterval(() => void source.poll(), interval);
      source.#timer.unref();
    }
    return source;
  }

  /**
   * Credentials handed over in memory (tests, or a workload that receives them from an agent
   * rather than files), validated like files are; nothing is polled.
   */
  static fromMaterial(files: { chainPem: Buffer | string; keyPem: Buffer | string; bundlePem: Buffer | string }, opts: SvidSourceOptions): SvidSource {
    const bytes = { chainPem: Buffer.from(files.chainPem), keyPem: Buffer.from(files.keyPem), bundlePem: Buffer.from(files.bundlePem) };
    const material = validateSvidMaterial(bytes, { trustDomain: opts.trustDomain, grantsOid: opts.grantsOid, now: (opts.clock ?? Date.now)() });
    return new SvidSource(undefined, opts, material, fingerprint(bytes));
  }

  get material(): SvidMaterial {
    return this.#material;
  }

  get grantsOid(): string | undefined {
    return this.#opts.grantsOid;
  }

  get svid(): Svid {
    return this.#material.svid;
  }

  /** Re-reads the files; publishes them if they changed and validate. Returns whether it rotated. */
  async poll(): Promise<boolean> {
    const dir = this.dir;
    if (this.#polling || dir === undefined) return false;
    this.#polling = true;
    try {
      let files;
      try {
        files = await readSvidFiles(dir);
      } catch (err) {
        this.#opts.onRejected?.(err as TwokeyError);
        return false;
      }
      const raw = fingerprint(files);
      if (raw === this.#raw) return false;
      let material: SvidMaterial;
      try {
        material = validateSvidMaterial(files, { trustDomain: this.#opts.trustDomain, grantsOid: this.#opts.grantsOid, now: this.#clock() });
      } catch (err) {
        // Files may be mid-write; the next poll sees them again because #raw is unchanged.
        this.#opts.onRejected?.(err as TwokeyError);
        return false;
      }
      if (!material.svid.spiffeId.equals(this.#material.svid.spiffeId)) {
        // Identity is fixed for the life of a process: audiences and bindings were derived from it.
        this.#opts.onRejected?.(bad(`new certificate names ${material.svid.spiffeId}, not ${this.#material.svid.spiffeId}`));
        return false;
      }
      this.#raw = raw;
      this.#material = material;
      for (const listener of this.#identityListeners) this.#deliverIdentity(listener);
      for (const listener of this.#caListeners) this.#deliverCa(listener);
      this.#opts.onRotated?.(material);
      return true;
    } finally {
      this.#polling = false;
    }
  }

  close(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  addCaCertificateListener(listener: CaListener): void {
    this.#caListeners.add(listener);
    this.#deliverCa(listener);
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.#caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.add(listener);
    this.#deliverIdentity(listener);
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.delete(listener);
  }

  #deliverCa(listener: CaListener): void {
    const update = { caCertificate: this.#material.bundlePem };
    process.nextTick(() => {
      if (this.#caListeners.has(listener)) listener(update);
    });
  }

  #deliverIdentity(listener: IdentityListener): void {
    const update = { certificate: this.#material.chainPem, privateKey: this.#material.keyPem };
    process.nextTick(() => {
      if (this.#identityListeners.has(listener)) listener(update);
    });
  }
}

async function readSvidFiles(dir: string): Promise<{ chainPem: Buffer; keyPem: Buffer; bundlePem: Buffer }> {
  try {
    const [chainPem, keyPem, bundlePem] = await Promise.all([
      readFile(join(dir, SVID_FILES.cert)),
      readFile(join(dir, SVID_FILES.key)),
      readFile(join(dir, SVID_FILES.bundle)),
    ]);
    return { chainPem, keyPem, bundlePem };
  } catch (err) {
    throw bad(`cannot read ${dir}: ${(err as Error).message}`, err);
  }
}

function fingerprint(files: { chainPem: Buffer; keyPem: Buffer; bundlePem: Buffer }): string {
  const hash = createHash('sha256');
  for (const part of [files.chainPem, files.keyPem, files.bundlePem]) hash.update(`${part.length}:`).update(part);
  return hash.digest('base64url');
}
