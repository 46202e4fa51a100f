// The workload CA: a root key on disk that signs X.509-SVIDs carrying method grants, after
// checking every request against its policy (trust domain, grants in proto/, lifetimes).
import { randomBytes, X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { TwokeyError } from '../services/authz/errors.ts';
import { GrantSet } from '../services/authz/grant.ts';
import { MethodCatalog } from '../services/authz/method-catalog.ts';
import { SpiffeId } from '../services/authz/spiffe-id.ts';
import { parseSvid, type Svid } from '../services/authz/svid.ts';
import { makeCaConfig, parseCaConfig, serializeCaConfig, type CaConfig } from './ca-config.ts';
import { buildCertificate, keyIdentifier, prepareCertificate, randomSerial } from './certificate-builder.ts';
import { verifiedCsrPublicKey } from './csr.ts';
import { formatDuration, parseDuration } from './duration.ts';
import { checkDnsName, checkIpAddress } from './host-names.ts';
import type { Registry } from './registry.ts';
import { replaceFolders } from './staged-folders.ts';
import { caSubject, rootSpec, svidSpec } from './svid-profile.ts';
import { checkWorkloadKey, generateP256, type KeyPair } from './workload-key.ts';

/** File names inside a CA directory. */
export const CA_FILES = { key: 'ca.key', cert: 'ca.pem', config: 'config.json' } as const;
/** File names inside a workload directory (the contract every service reads). */
export const WORKLOAD_FILES = { chain: 'svid.pem', key: 'svid.key', bundle: 'bundle.pem' } as const;

export const DEFAULT_CA_TTL_SECONDS = 5 * 365 * 86400;
export const DEFAULT_WORKLOAD_TTL_SECONDS = 86400;
// Tolerates clock skew between the CA and the workloads that check notBefore.
const BACKDATE_SECONDS = 60;
/**
 * Largest workload certificate (DER bytes) the CA signs. A TLS 1.3 server's session ticket embeds
 * the client certificate and a ticket holds at most 65,535 bytes, so Node fails every mutual-TLS
 * connection with a bigger client certificate (`tlsv1 alert internal error`; measured here: 64,983
 * bytes worked, 65,182 failed). The rest of the ticket grows with the SNI name and ALPN, hence the
 * margin; OpenSSL's own cap on a certificate message (100 KiB) is further still.
 */
export const MAX_CERTIFICATE_DER_BYTES = 60_000;

/** Sources of time, randomness and keys, injectable so tests control them. */
export interface CaEnvironment {
  clock?: () => Date;
  random?: (n: number) => Buffer;
  generateKeyPair?: () => KeyPair;
}

export interface CaInitOptions extends CaEnvironment {
  dir: string;
  trustDomain: string;
  grantsOid?: string;
  /** Longest workload certificate lifetime: seconds or a duration string; default 7d. */
  maxTtl?: number | string;
  /** Lifetime of the CA certificate itself; default 5 years. */
  caTtl?: number | string;
  /** Catalog that grants are checked against; default: twokey's own proto/. */
  catalog?: MethodCatalog;
}

export interface CaOpenOptions extends CaEnvironment {
  catalog?: MethodCatalog;
}

export interface IssueRequest {
  spiffeId: string | SpiffeId;
  grants: readonly string[] | GrantSet;
  /** Seconds or a duration string; default min(24h, the CA's maximum). */
  ttl?: number | string;
  dns?: readonly string[];
  ip?: readonly string[];
  /** Further proto roots whose methods grants may also name (services other teams own). */
  extraProtoRoots?: readonly string[];
}

export interface SignedCertificate {
  /** The leaf alone. */
  certPem: string;
  /** Leaf then intermediates: what svid.pem holds. */
  chainPem: string;
  /** The trust bundle: the CA certificate. */
  bundlePem: string;
  /** The certificate as the authorization layer parses it. */
  svid: Svid;
}

export interface IssuedWorkload extends SignedCertificate {
  /** PKCS#8 PEM private key. */
  keyPem: string;
}

export interface IssuedRegistryWorkload {
  name: string;
  dir: string;
  issued: IssuedWorkload;
}

export class CertificateAuthority {
  readonly #dir: string | undefined;
  readonly config: CaConfig;
  readonly certificate: X509Certificate;
  readonly #key: KeyObject;
  readonly #keyId: Buffer;
  readonly #subject: ReturnType<typeof caSubject>;
  readonly #clock: () => Date;
  readonly #random: (n: number) => Buffer;
  readonly #generateKeyPair: () => KeyPair;
  readonly #catalog: MethodCatalog | undefined;
  readonly #catalogs = new Map<string, MethodCatalog>();

  private constructor(dir: string | undefined, config: CaConfig, certificate: X509Certificate, key: KeyObject, env: CaOpenOptions) {
    this.#dir = dir;
    this.config = config;
    this.certificate = certificate;
    this.#key = key;
    this.#keyId = keyIdentifier(certificate.publicKey);
    this.#subject = caSubject(config.trustDomain);
    this.#clock = env.clock ?? (() => new Date());
    this.#random = env.random ?? randomBytes;
    this.#generateKeyPair = env.generateKeyPair ?? generateP256;
    this.#catalog = env.catalog;
  }

  /** The CA's directory; an in-memory CA has none and throws. */
  get dir(): string {
    if (this.#dir === undefined) throw new TwokeyError('ERR_CA_POLICY', 'an in-memory CA has no directory');
    return this.#dir;
  }

  get trustDomain(): string {
    return this.config.trustDomain;
  }

  get grantsOid(): string {
    return this.config.grantsOid;
  }

  get maxTtlSeconds(): number {
    return this.config.maxTtlSeconds;
  }

  /**
   * Creates a new CA in `dir` (created 0700 if missing): a P-256 root key (ca.key, 0600), a
   * self-signed root certificate (ca.pem) and config.json. Refuses to overwrite an existing CA.
   */
  static init(opts: CaInitOptions): CertificateAuthority {
    const plan = rootPlan(opts);
    mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
    for (const file of Object.values(CA_FILES)) {
      if (existsSync(join(opts.dir, file))) {
        throw new TwokeyError('ERR_CA_POLICY', `refusing to overwrite the existing CA in ${opts.dir} (${file} exists)`);
      }
    }
    const root = makeRoot(plan, opts);
    // The key file is created exclusively with 0600 before any byte is written, so it is never
    // readable by others and a concurrent init cannot clobber it.
    const keyPem = root.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    writeExclusive(join(opts.dir, CA_FILES.key), keyPem, 0o600);
    writeExclusive(join(opts.dir, CA_FILES.cert), root.certPem, 0o644);
    writeExclusive(join(opts.dir, CA_FILES.config), serializeCaConfig(plan.config), 0o644);
    return CertificateAuthority.open(opts.dir, opts);
  }

  /**
   * A CA whose key exists only in this process and is never written anywhere: for tests and
   * throwaway meshes. It has no directory; everything else is what `init` makes.
   */
  static inMemory(opts: Omit<CaInitOptions, 'dir'>): CertificateAuthority {
    const plan = rootPlan(opts);
    const root = makeRoot(plan, opts);
    return new CertificateAuthority(undefined, plan.config, new X509Certificate(root.certPem), root.privateKey, opts);
  }

  /** Loads an existing CA, checking its key file is private and matches its certificate. */
  static open(dir: string, env: CaOpenOptions = {}): CertificateAuthority {
    const read = (file: string): string => {
      try {
        return readFileSync(join(dir, file), 'utf8');
      } catch (err) {
        throw new TwokeyError('ERR_CA_POLICY', `cannot open CA in ${dir}: ${(err as Error).message}`, { cause: err });
      }
    };
    const config = parseCaConfig(read(CA_FILES.config), join(dir, CA_FILES.config));
    const keyPath = join(dir, CA_FILES.key);
    const keyText = read(CA_FILES.key);
    if (process.platform !== 'win32' && (statSync(keyPath).mode & 0o077) !== 0) {
      throw new TwokeyError(
        'ERR_CA_POLICY',
        `${keyPath} is accessible by group or others (mode ${(statSync(keyPath).mode & 0o777).toString(8)}); run chmod 600`,
      );
    }
    const certificate = new X509Certificate(read(CA_FILES.cert));
    const key = createPrivateKey(keyText);
    if (!certificate.checkPrivateKey(key)) throw new TwokeyError('ERR_CA_POLICY', `${keyPath} does not match ${join(dir, CA_FILES.cert)}`);
    if (!certificate.ca) throw new TwokeyError('ERR_CA_POLICY', `${join(dir, CA_FILES.cert)} is not a CA certificate`);
    return new CertificateAuthority(dir, config, certificate, key, env);
  }

  /** The trust bundle every workload verifies peers against. */
  bundlePem(): string {
    return this.certificate.toString();
  }

  /** Issues a workload certificate and a fresh P-256 key. */
  issue(req: IssueRequest): IssuedWorkload {
    const keys = this.#generateKeyPair();
    const signed = this.#sign(req, keys.publicKey);
    return { ...signed, keyPem: keys.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
  }

  /**
   * Signs a CSR from a workload that keeps its own key. The CSR's signature must verify; its
   * names and extensions are ignored: identity and grants come only from `req`.
   */
  signCsr(req: IssueRequest & { csr: string | Buffer }): SignedCertificate {
    return this.#sign(req, verifiedCsrPublicKey(req.csr));
  }

  /**
   * Issues every workload of a registry. All certificates are issued (so all are checked) before
   * any file is written: a registry with one bad entry changes nothing on disk. The folders are
   * then written all or none (replaceFolders): a failure while writing leaves every existing
   * folder as it was, never some workloads on new certificates and others on old ones.
   */
  issueRegistry(registry: Registry, outRoot: string, opts: { extraProtoRoots?: readonly string[] } = {}): IssuedRegistryWorkload[] {
    if (registry.trustDomain !== this.trustDomain) {
      throw new TwokeyError('ERR_CA_POLICY', `registry trust domain ${registry.trustDomain} is not this CA's trust domain ${this.trustDomain}`);
    }
    // Services read the grants under the registry's OID; certificates under another would grant nothing.
    if (registry.grantsOid !== this.grantsOid) {
      throw new TwokeyError('ERR_CA_POLICY', `registry grantsOid ${registry.grantsOid} is not this CA's grants OID ${this.grantsOid}`);
    }
    const issued = registry.workloads.map((w) => {
      try {
        return {
          name: w.name,
          dir: join(outRoot, w.name),
          issued: this.issue({ spiffeId: w.spiffeId, grants: w.grants, ttl: w.ttl, dns: w.dns, ip: w.ip, extraProtoRoots: opts.extraProtoRoots }),
        };
      } catch (err) {
        if (err instanceof TwokeyError) throw new TwokeyError(err.code, `workload ${w.name}: ${err.message}`, { cause: err });
        throw err;
      }
    });
    const byName = new Map(issued.map((w) => [w.name, w.issued]));
    replaceFolders(outRoot, [...byName.keys()], (name, dir) => this.writeWorkload(dir, byName.get(name)!));
    return issued;
  }

  /** Writes svid.pem, svid.key (0600) and bundle.pem, each replaced atomically. */
  writeWorkload(outDir: string, issued: IssuedWorkload): void {
    mkdirSync(outDir, { recursive: true, mode: 0o700 });
    // Key first: a watcher that sees the new certificate can already load the matching key.
    writeAtomic(join(outDir, WORKLOAD_FILES.key), issued.keyPem, 0o600);
    writeAtomic(join(outDir, WORKLOAD_FILES.chain), issued.chainPem, 0o644);
    writeAtomic(join(outDir, WORKLOAD_FILES.bundle), issued.bundlePem, 0o644);
  }

  #sign(req: IssueRequest, publicKey: KeyObject): SignedCertificate {
    // Re-parsed even when already typed: the policy checks must not trust the caller's object.
    const spiffeId = SpiffeId.parse(req.spiffeId.toString());
    if (!spiffeId.memberOf(this.trustDomain)) {
      throw new TwokeyError('ERR_CA_POLICY', `SPIFFE ID ${spiffeId} is not in this CA's trust domain ${this.trustDomain}`);
    }
    if (spiffeId.path === '') throw new TwokeyError('ERR_CA_POLICY', `SPIFFE ID ${spiffeId} names the trust domain, not a workload (it needs a path)`);
    const grants = GrantSet.parse(Array.isArray(req.grants) ? req.grants : (req.grants as GrantSet).toStrings());
    const catalog = this.#catalogFor(req.extraProtoRoots);
    for (const grant of grants.grants) catalog.requireGrant(grant);
    checkWorkloadKey(publicKey, 'ERR_CA_POLICY');

    const ttl = req.ttl === undefined ? Math.min(DEFAULT_WORKLOAD_TTL_SECONDS, this.maxTtlSeconds) : parseDuration(req.ttl, 'TTL');
    if (ttl > this.maxTtlSeconds) {
      throw new TwokeyError('ERR_CA_POLICY', `TTL ${formatDuration(ttl)} exceeds the CA's maximum TTL ${formatDuration(this.maxTtlSeconds)}`);
    }
    const now = wholeSeconds(this.#clock());
    const notAfter = new Date(now.getTime() + ttl * 1000);
    const caNotAfter = new Date(this.certificate.validTo);
    if (notAfter.getTime() > caNotAfter.getTime()) {
      throw new TwokeyError('ERR_CA_POLICY', `TTL ${formatDuration(ttl)} would outlive the CA certificate, which expires ${caNotAfter.toISOString()}`);
    }
    if (now.getTime() < new Date(this.certificate.validFrom).getTime()) {
      throw new TwokeyError('ERR_CA_POLICY', `the CA certificate is not valid yet (from ${this.certificate.validFrom})`);
    }
    const dns = (req.dns ?? []).map((d, i) => checkDnsName(d, `dns[${i}]`));
    const ip = (req.ip ?? []).map((a, i) => checkIpAddress(a, `ip[${i}]`));

    const unsigned = prepareCertificate(
      svidSpec({
        spiffeId,
        grants: grants.toStrings(),
        grantsOid: this.grantsOid,
        dns,
        ip,
        publicKey,
        issuer: this.#subject,
        issuerKeyId: this.#keyId,
        serial: randomSerial(this.#random),
        notBefore: new Date(now.getTime() - BACKDATE_SECONDS * 1000),
        notAfter,
      }),
      this.#key,
    );
    if (unsigned.maxDerBytes > MAX_CERTIFICATE_DER_BYTES) {
      const count = (n: number) => n.toLocaleString('en');
      throw new TwokeyError(
        'ERR_CA_POLICY',
        `certificate for ${spiffeId} would be ${count(unsigned.maxDerBytes)} bytes, over the limit of ${count(MAX_CERTIFICATE_DER_BYTES)} bytes: ` +
          `too many grants (${count(grants.grants.length)}) or names (${count(1 + dns.length + ip.length)} SANs) for a TLS session ticket to carry it`,
      );
    }
    const cert = unsigned.sign();
    // Validate before handing out, with the same parser peers will use.
    const svid = parseSvid(cert.der, { grantsOid: this.grantsOid });
    if (!new X509Certificate(cert.der).verify(this.certificate.publicKey)) {
      throw new TwokeyError('ERR_CA_POLICY', 'issued certificate failed its own signature check');
    }
    return { certPem: cert.pem, chainPem: cert.pem, bundlePem: this.bundlePem(), svid };
  }

  #catalogFor(extraRoots: readonly string[] | undefined): MethodCatalog {
    const base = this.#catalog ?? MethodCatalog.default();
    if (extraRoots === undefined || extraRoots.length === 0) return base;
    const key = JSON.stringify(extraRoots);
    let catalog = this.#catalogs.get(key);
    if (catalog === undefined) {
      catalog = MethodCatalog.load({ roots: base.roots, extraRoots });
      this.#catalogs.set(key, catalog);
    }
    return catalog;
  }
}

interface RootPlan {
  config: CaConfig;
  caTtlSeconds: number;
}

/** Checks the settings of a new CA before anything is generated or written. */
function rootPlan(opts: Omit<CaInitOptions, 'dir'>): RootPlan {
  const config = makeCaConfig({
    trustDomain: opts.trustDomain,
    grantsOid: opts.grantsOid,
    maxTtlSeconds: opts.maxTtl === undefined ? undefined : parseDuration(opts.maxTtl, 'max TTL'),
  });
  const caTtlSeconds = opts.caTtl === undefined ? DEFAULT_CA_TTL_SECONDS : parseDuration(opts.caTtl, 'CA TTL');
  if (caTtlSeconds < config.maxTtlSeconds) {
    throw new TwokeyError('ERR_CA_POLICY', `CA TTL ${formatDuration(caTtlSeconds)} is shorter than the max workload TTL ${formatDuration(config.maxTtlSeconds)}`);
  }
  return { config, caTtlSeconds };
}

/** A fresh root key and its self-signed CA certificate. */
function makeRoot(plan: RootPlan, env: CaEnvironment): { privateKey: KeyObject; certPem: string } {
  const clock = env.clock ?? (() => new Date());
  const random = env.random ?? randomBytes;
  const { privateKey, publicKey } = (env.generateKeyPair ?? generateP256)();
  const now = wholeSeconds(clock());
  const cert = buildCertificate(
    rootSpec({
      trustDomain: plan.config.trustDomain,
      publicKey,
      serial: randomSerial(random),
      notBefore: new Date(now.getTime() - BACKDATE_SECONDS * 1000),
      notAfter: new Date(now.getTime() + plan.caTtlSeconds * 1000),
    }),
    privateKey,
  );
  return { privateKey, certPem: cert.pem };
}

function wholeSeconds(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}

function writeExclusive(path: string, data: string, mode: number): void {
  let fd: number;
  try {
    fd = openSync(path, 'wx', mode);
  } catch (err) {
    throw new TwokeyError('ERR_CA_POLICY', `refusing to overwrite ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    writeSync(fd, data);
  } finally {
    closeSync(fd);
  }
  chmodSync(path, mode);
}

function writeAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  // A stale temporary file (or a planted symlink) is removed, not written through: 'wx' creates
  // a new file with `mode` from the first byte, so a key is never readable by others.
  rmSync(tmp, { force: true });
  try {
    writeFileSync(tmp, data, { mode, flag: 'wx' });
    chmodSync(tmp, mode);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}
