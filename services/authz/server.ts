// One call to make a grpc-js server a mesh member: mTLS with required client certificates, authorization on every method.
import { Server, ServerCredentials, experimental, type ServerInterceptor, type ServerOptions } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { positiveLimit } from './admission.ts';
import { CallAdmission, callLimits, type CallLimits } from './call-limits.ts';
import { DecisionLog } from './decision-log.ts';
import { DecisionMetrics, registerTokenCacheMetrics } from './decision-metrics.ts';
import { TwokeyError } from './errors.ts';
import type { FederationPolicy } from './federation.ts';
import type { PartnerBundles } from './partner-bundles.ts';
import { TrustBundleSet } from './trust-bundle-set.ts';
import { createAuthzHandle, type RevocationSource, type RuleSource } from './interceptor.ts';
import { JwksKeySet } from './jwks.ts';
import type { FoldingPolicy } from './log-folding.ts';
import { MethodCatalog } from './method-catalog.ts';
import { PeerIdentityCache } from './peer-identity.ts';
import { refuseRepeatedAuthorization } from './repeated-headers.ts';
import { SVID_FILES, certificatesIn, type SvidSource } from './svid-source.ts';
import { TokenAuthenticator } from './token-authenticator.ts';
import { TokenCache } from './token-cache.ts';
import { TokenVerifier, type VerificationKeys } from './token-verifier.ts';

export interface MeshServerOptions {
  /** This workload's certificate, key and trust bundle (reloaded on change). */
  svid: SvidSource;
  /** The verification keys for tokens: a JwksKeySet fed from auth, or fixed keys. */
  keys: VerificationKeys;
  /** Expected token issuer (registry auth.issuer). */
  issuer: string;
  /** Method rules; defaults to the catalog of twokey's proto/. */
  rules?: RuleSource;
  /** Where decision lines go; none are written without it. */
  logger?: Logger;
  dryRun?: boolean;
  clock?: () => number;
  /** Further interceptors; they run after authorization, for allowed calls only. */
  interceptors?: ServerInterceptor[];
  serverOptions?: Omit<ServerOptions, 'interceptors'>;
  tokenCacheSize?: number;
  /**
   * Where decision, token cache and open stream metrics are registered (a prom-client Registry;
   * one mesh server per registry); none are kept without it. `knownCallers` are the SPIFFE IDs
   * that get a caller label of their own (the registry's workloads); other callers share one.
   */
  metrics?: { registry: Registry; knownCallers: Iterable<string> };
  /** The held revocation set (a RevocationHolder fed by auth's WatchRevocations); absent, not enforced. */
  revocation?: RevocationSource;
  /**
   * Partner trust domains (the registry's federation section) and their watched bundles. The TLS
   * context then trusts every partner's roots too; each peer's chain is verified again against its
   * own trust domain's bundle, and its grants are capped by the partner's ceiling.
   */
  federation?: { policy: FederationPolicy; bundles: PartnerBundles };
  /**
   * Load limits (CALL_LIMIT_DEFAULTS for those not given): streams per connection, calls in flight
   * per peer identity, per user and in total; excess calls are refused at once RESOURCE_EXHAUSTED
   * and counted in twokey_calls_shed_total. A value that is not a positive integer is refused
   * (ERR_CONFIG_INVALID) here, at start.
   */
  limits?: Partial<CallLimits>;
  /** How denial lines are folded per peer and reason (DEFAULT_FOLDING when absent). */
  logFolding?: FoldingPolicy;
}

export interface MeshServer {
  /** The grpc-js server: add services to it as usual (server.addService(definition, impl)). */
  readonly server: Server;
  readonly tokens: TokenAuthenticator;
  readonly peers: PeerIdentityCache;
  /** Binds the mTLS listener; resolves to the bound port (use port 0 for an ephemeral one). */
  listen(address: string): Promise<number>;
  /** Graceful shutdown, forced after `graceMs`. */
  close(graceMs?: number): Promise<void>;
}

/**
 * The server credentials of a mesh member: client certificates required and verified against the
 * trust bundle. The same SvidSource is passed as both providers; grpc-js 1.14's
 * createCertificateProviderServerCredentials declares (ca, identity) but hands them to a
 * constructor taking (identity, ca), so two distinct providers would be swapped.
 */
export function meshServerCredentials(svid: SvidSource | FederatedTrust): ServerCredentials {
  return experimental.createCertificateProviderServerCredentials(svid, svid, true);
}

type CaListener = experimental.CaCertificateUpdateListener;

/**
 * The certificate provider of a federated server: this workload's identity from its SvidSource,
 * and as CA list every trust domain's roots (ours and each partner's last good bundle), updated
 * whenever either changes. It keeps the per-trust-domain TrustBundleSet that peers are verified
 * against: the TLS stack cannot tell the roots apart, the peer cache can.
 */
export class FederatedTrust implements experimental.CertificateProvider {
  readonly #svid: SvidSource;
  readonly #bundles: PartnerBundles;
  readonly #caListeners = new Set<CaListener>();
  readonly #changeListeners = new Set<(set: TrustBundleSet) => void>();
  #set: TrustBundleSet;
  readonly #unsubscribe: () => void;
  readonly #onOwn = (update: { caCertificate: Buffer } | null): void => {
    if (update !== null) this.#rebuild();
  };

  constructor(svid: SvidSource, bundles: PartnerBundles) {
    this.#svid = svid;
    this.#bundles = bundles;
    this.#set = this.#build();
    this.#unsubscribe = bundles.onChange(() => this.#rebuild());
    svid.addCaCertificateListener(this.#onOwn);
  }

  get trustBundles(): TrustBundleSet {
    return this.#set;
  }

  /** Called with the new set whenever ours or a partner's roots change. */
  onChange(listener: (set: TrustBundleSet) => void): () => void {
    this.#changeListeners.add(listener);
    return () => this.#changeListeners.delete(listener);
  }

  close(): void {
    this.#unsubscribe();
    this.#svid.removeCaCertificateListener(this.#onOwn);
  }

  #build(): TrustBundleSet {
    const own = this.#svid.svid.spiffeId.trustDomain;
    let set = TrustBundleSet.of(own, certificatesIn(this.#svid.material.bundlePem, SVID_FILES.bundle));
    for (const [td, roots] of this.#bundles.bundles()) {
      // A partner bundle sharing a root with ours or another's (PartnerBundles without `own`, or
      // our roots changed after it was accepted) is left out: its peers are refused, not vouched for twice.
      try {
        set = set.withBundle(td, roots);
      } catch (err) {
        if (!(err instanceof TwokeyError && err.code === 'ERR_BUNDLE_INVALID')) throw err;
      }
    }
    return set;
  }

  #rebuild(): void {
    this.#set = this.#build();
    for (const listener of this.#caListeners) this.#deliverCa(listener);
    for (const listener of this.#changeListeners) listener(this.#set);
  }

  addCaCertificateListener(listener: CaListener): void {
    this.#caListeners.add(listener);
    this.#deliverCa(listener);
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.#caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.#svid.addIdentityCertificateListener(listener);
  }

  removeIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.#svid.removeIdentityCertificateListener(listener);
  }

  #deliverCa(listener: CaListener): void {
    const update = { caCertificate: Buffer.from(this.#set.allRootsPem()) };
    // Asynchronously, as SvidSource does: grpc-js registers its watcher after adding the listener.
    process.nextTick(() => {
      if (this.#caListeners.has(listener)) listener(update);
    });
  }
}

/**
 * Bounds on what a connection may hold. grpc-js otherwise keeps an idle connection for about
 * 24 days, so a peer could pin sockets (and the certificate they were opened with) indefinitely;
 * a closed idle connection costs a well-behaved client only a transparent reconnect.
 */
export const MESH_SERVER_DEFAULTS: Omit<ServerOptions, 'interceptors'> = {
  'grpc.max_connection_idle_ms': 5 * 60_000,
  // channelz (grpc-js's introspection service, on by default) counts every call and socket even
  // when no channelz service is served; twokey serves none, and the tracking was about 4% of a
  // small call's server CPU in the profile of B. serverOptions may turn it back on.
  'grpc.enable_channelz': 0,
};

export function createMeshServer(options: MeshServerOptions): MeshServer {
  // Configuration first: a bad limit fails the start, before anything listens.
  const limits = callLimits(options.limits);
  const serverOptions = { ...MESH_SERVER_DEFAULTS, 'grpc.max_concurrent_streams': limits.maxConcurrentStreams, ...options.serverOptions };
  positiveLimit("serverOptions['grpc.max_concurrent_streams']", serverOptions['grpc.max_concurrent_streams']);
  const own = options.svid.svid.spiffeId;
  const trustDomain = own.trustDomain;
  const clock = options.clock ?? Date.now;
  const cache = new TokenCache({ maxEntries: options.tokenCacheSize ?? 10_000 });
  // A retired signing key must stop vouching for tokens verified with it.
  if (options.keys instanceof JwksKeySet) options.keys.addChangeListener(() => cache.clear());
  const verifier = new TokenVerifier({
    keys: options.keys,
    issuer: options.issuer,
    audiences: [own.trustDomainId.toString(), own.toString()],
    delegatedAudience: own.toString(),
    clock,
  });
  const tokens = new TokenAuthenticator({ verifier, cache, clock });
  const peers = new PeerIdentityCache(options.svid.grantsOid === undefined ? {} : { grantsOid: options.svid.grantsOid });
  const rules = options.rules ?? MethodCatalog.default();
  let metrics: DecisionMetrics | undefined;
  if (options.metrics !== undefined) {
    const catalog = rules instanceof MethodCatalog ? rules : MethodCatalog.default();
    metrics = new DecisionMetrics({
      registry: options.metrics.registry,
      knownCallers: options.metrics.knownCallers,
      knownMethods: catalog.methods().map((m) => m.path),
    });
    registerTokenCacheMetrics(options.metrics.registry, cache);
  }
  const authz = createAuthzHandle({
    trustDomain,
    rules,
    tokens,
    peers,
    ...(options.logger
      ? { log: new DecisionLog(options.logger, { ...(options.logFolding ? { folding: options.logFolding } : {}), ...(options.clock ? { clock: options.clock } : {}) }) }
      : {}),
    admission: new CallAdmission(limits, options.metrics?.registry),
    ...(metrics ? { metrics } : {}),
    clock,
    dryRun: options.dryRun === true,
    ...(options.revocation ? { revocation: options.revocation } : {}),
    ...(options.federation ? { federation: options.federation.policy } : {}),
  });
  // The bundle TLS verifies new connections with also re-checks open ones when it changes: their
  // next calls, and their open streams at once (a CA removed from the bundle ends them now, with
  // the status a new call on the same connection gets).
  const onBundle = (update: { caCertificate: Buffer } | null): void => {
    if (update === null) return;
    peers.setTrustBundle(certificatesIn(update.caCertificate, SVID_FILES.bundle));
    authz.recheckOpenStreams();
  };
  let trust: FederatedTrust | undefined;
  if (options.federation === undefined) {
    options.svid.addCaCertificateListener(onBundle);
  } else {
    // Every trust domain's roots, each kept apart: a partner's CA rotation reaches the TLS context
    // and the peer cache without a restart, and open streams from certificates no longer trusted end.
    const federated = new FederatedTrust(options.svid, options.federation.bundles);
    trust = federated;
    peers.setTrustBundles(federated.trustBundles);
    federated.onChange((set) => {
      peers.setTrustBundles(set);
      authz.recheckOpenStreams();
    });
  }
  // Authorization must see grpc-js's own call first (the peer is read from it), so it leads.
  const server = refuseRepeatedAuthorization(
    new Server({ ...serverOptions, interceptors: [authz.interceptor, ...(options.interceptors ?? [])] }),
  );
  const credentials = meshServerCredentials(trust ?? options.svid);
  return {
    server,
    tokens,
    peers,
    listen: (address) =>
      new Promise((resolve, reject) => {
        server.bindAsync(address, credentials, (err, port) => {
          if (err) reject(new TwokeyError('ERR_CONFIG_INVALID', `cannot listen on ${address}: ${err.message}`, { cause: err }));
          else resolve(port);
        });
      }),
    close: (graceMs = 2000) =>
      new Promise<void>((resolve) => {
        options.svid.removeCaCertificateListener(onBundle);
        trust?.close();
        const done = (): void => {
          authz.close();
          resolve();
        };
        const force = setTimeout(() => {
          server.forceShutdown();
          done();
        }, graceMs);
        force.unref();
        server.tryShutdown(() => {
          clearTimeout(force);
          done();
        });
      }),
  };
}
