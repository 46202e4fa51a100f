// What every example service does at startup: read its configuration and the registry, load its
// workload certificate, start the health listener, and build mesh servers and clients.
import type { Client, ChannelOptions } from '@grpc/grpc-js';
import { Registry as MetricsRegistry } from 'prom-client';
import { loadRegistry, type Registry, type RegistryWorkload } from '../../certs-ca/registry.ts';
import { envLimit } from '../authz/admission.ts';
import { CALL_LIMIT_DEFAULTS, type CallLimits } from '../authz/call-limits.ts';
import { AuthConnection, MESH_RECONNECT_OPTIONS, createRevocationHolder, linkToAuth, type AuthLink } from '../authz/auth-connection.ts';
import { createMeshClient } from '../authz/client.ts';
import { TwokeyError } from '../authz/errors.ts';
import { PartnerBundles } from '../authz/partner-bundles.ts';
import type { RevocationHolder } from '../authz/revocation-set.ts';
import { SVID_FILES, SvidSource, certificatesIn } from '../authz/svid-source.ts';
import { MethodCatalog } from '../authz/method-catalog.ts';
import { createMeshServer, type MeshServer } from '../authz/server.ts';
import type { VerificationKeys } from '../authz/token-verifier.ts';
import { registerCertificateMetrics, registerPartnerBundleMetrics } from '../authz/workload-metrics.ts';
import { CachedToken } from './cached-token.ts';
import { HandlerEntries } from './handler-entries.ts';
import { readCommonConfig, envDurationMs, envTarget, type CommonConfig, type Env } from './env.ts';
import { HealthServer } from '../authz/health-server.ts';
import { createLogger, flushLogger, type Logger } from './logger.ts';

/** Room for the image store's 4 MiB content limit plus the rest of the message. */
export const MAX_MESSAGE_BYTES = 8 * 1024 * 1024;
const CHANNEL_OPTIONS: ChannelOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  ...MESH_RECONNECT_OPTIONS,
};

/** How long a client connection to a mesh server lasts before the server asks it to reconnect (±10%). */
const MAX_CONNECTION_AGE_MS = 5 * 60_000;

type ClientCtor<C extends Client> = new (address: string, credentials: import('@grpc/grpc-js').ChannelCredentials, options?: import('@grpc/grpc-js').ClientOptions) => C;

/**
 * A mesh server's load limits from the environment (each a positive integer; CALL_LIMIT_DEFAULTS
 * otherwise): TWOKEY_MAX_CONCURRENT_STREAMS, TWOKEY_MAX_IN_FLIGHT_PER_PEER,
 * TWOKEY_MAX_IN_FLIGHT_PER_USER, TWOKEY_MAX_IN_FLIGHT. Anything else is ERR_CONFIG_INVALID.
 */
export function meshCallLimits(env: Env): CallLimits {
  return {
    maxConcurrentStreams: envLimit(env, 'TWOKEY_MAX_CONCURRENT_STREAMS', CALL_LIMIT_DEFAULTS.maxConcurrentStreams),
    maxInFlightPerPeer: envLimit(env, 'TWOKEY_MAX_IN_FLIGHT_PER_PEER', CALL_LIMIT_DEFAULTS.maxInFlightPerPeer),
    maxInFlightPerUser: envLimit(env, 'TWOKEY_MAX_IN_FLIGHT_PER_USER', CALL_LIMIT_DEFAULTS.maxInFlightPerUser),
    maxInFlight: envLimit(env, 'TWOKEY_MAX_IN_FLIGHT', CALL_LIMIT_DEFAULTS.maxInFlight),
  };
}

export class MeshRuntime {
  readonly name: string;
  readonly env: Env;
  readonly config: CommonConfig;
  readonly registry: Registry;
  readonly workload: RegistryWorkload;
  readonly logger: Logger;
  readonly svid: SvidSource;
  readonly health: HealthServer;
  /** This process's Prometheus metrics, served at GET /metrics on the health listener. */
  readonly metrics: MetricsRegistry;
  readonly #closers: (() => Promise<void> | void)[] = [];
  #auth: AuthConnection | undefined;
  #partnerBundles: PartnerBundles | undefined;

  private constructor(
    name: string,
    env: Env,
    config: CommonConfig,
    registry: Registry,
    logger: Logger,
    svid: SvidSource,
    health: HealthServer,
    metrics: MetricsRegistry,
  ) {
    this.name = name;
    this.env = env;
    this.config = config;
    this.registry = registry;
    this.workload = registry.workloads.find((w) => w.spiffeId.equals(svid.svid.spiffeId))!;
    this.logger = logger;
    this.svid = svid;
    this.health = health;
    this.metrics = metrics;
  }

  /** Fails with a message naming the problem when the config, registry or certificate is unusable. */
  static async start(name: string, env: Env, healthServices: readonly string[]): Promise<MeshRuntime> {
    const config = readCommonConfig(env);
    // A bad limit fails the start before anything is opened.
    meshCallLimits(env);
    const logger = createLogger(name, { level: config.logLevel, sync: config.logSync });
    const registry = loadRegistry(config.registryPath);
    const svid = await SvidSource.open(config.svidDir, {
      trustDomain: registry.trustDomain,
      grantsOid: registry.grantsOid,
      onRejected: (err) => logger.warn({ event: 'svid.rejected', err: err.message }, 'new certificate files rejected; keeping the current ones'),
      onRotated: (m) => logger.info({ event: 'svid.rotated', serial: m.svid.serialHex, not_after: m.svid.notAfter }, 'workload certificate reloaded'),
    });
    const own = svid.svid.spiffeId;
    if (!registry.workloads.some((w) => w.spiffeId.equals(own))) {
      svid.close();
      throw new TwokeyError('ERR_CONFIG_INVALID', `this workload's certificate names ${own}, which the registry ${config.registryPath} does not list`);
    }
    const metrics = new MetricsRegistry();
    registerCertificateMetrics(metrics, svid);
    const health = new HealthServer(healthServices, { metrics });
    const runtime = new MeshRuntime(name, env, config, registry, logger, svid, health, metrics);
    runtime.onClose(() => svid.close());
    await health.listen(config.healthListen);
    runtime.onClose(() => health.close());
    logger.info({ event: 'service.starting', spiffe_id: own.toString(), serial: svid.svid.serialHex, health: config.healthListen }, `${name} starting`);
    return runtime;
  }

  /** The SPIFFE ID of a workload the registry names. */
  workloadId(name: string): string {
    const w = this.registry.workloads.find((x) => x.name === name);
    if (w === undefined) throw new TwokeyError('ERR_CONFIG_INVALID', `the registry names no workload ${JSON.stringify(name)}`);
    return w.spiffeId.toString();
  }

  /**
   * An mTLS client for a peer service, dialled at the target in `addressEnv` (see parseTarget):
   * calls are spread over every replica it names or resolves to, and safe ones retried once.
   */
  client<C extends Client>(ctor: ClientCtor<C>, peerName: string, addressEnv: string, defaultAddress: string, propagate = true): C {
    const address = envTarget(this.env, addressEnv, defaultAddress);
    const client = createMeshClient(ctor, address, { svid: this.svid, serverId: this.workloadId(peerName), propagate, channelOptions: CHANNEL_OPTIONS });
    this.onClose(() => client.close());
    return client;
  }

  /** One mTLS connection to auth per process; it never forwards a caller's token. */
  authConnection(): AuthConnection {
    if (this.#auth === undefined) {
      const auth = new AuthConnection({
        svid: this.svid,
        address: envTarget(this.env, 'TWOKEY_AUTH_ADDR', 'auth:8443'),
        authId: this.workloadId('auth'),
        channelOptions: CHANNEL_OPTIONS,
      });
      this.#auth = auth;
      this.onClose(() => auth.close());
    }
    return this.#auth;
  }

  /** The grpc-js client of auth (authConnection().client), for unary(). */
  authClient(): Client {
    return this.authConnection().client;
  }

  /** This workload's own service token (audience: the trust domain), reused until it nears expiry. */
  serviceToken(): CachedToken {
    const auth = this.authConnection();
    return new CachedToken(() => auth.getServiceToken(''));
  }

  /**
   * Auth's keys and the revocation set this process enforces, wired as joinMesh wires them
   * (linkToAuth): auth refusing GetJwks or WatchRevocations fails the start naming the grant; auth
   * unreachable for 5 s, the process starts and refuses calls UNAVAILABLE until auth answers. The
   * staleness bound comes from TWOKEY_REVOCATION_MAX_STALENESS (default 30s); health reports
   * NOT_SERVING while no keys or no fresh set are held.
   */
  async linkToAuth(): Promise<AuthLink> {
    return linkToAuth({
      auth: this.authConnection(),
      svid: this.svid,
      logger: this.logger,
      metrics: this.metrics,
      health: this.health,
      startTimeoutMs: 5000,
      required: false,
      revocationMaxStalenessMs: envDurationMs(this.env, 'TWOKEY_REVOCATION_MAX_STALENESS', '30s'),
      onClose: (fn) => this.onClose(fn),
    });
  }

  /** A mesh member serving calls: linkToAuth(), then the mesh server enforcing its set. */
  async joinMesh(): Promise<AuthLink & { mesh: MeshServer }> {
    const link = await this.linkToAuth();
    // Partner trust domains' bundles (none without a federation section in the registry).
    await this.partnerBundles();
    return { ...link, mesh: this.meshServer(link.keys, link.revocation) };
  }

  /** A revocation holder for a set fed from elsewhere (auth holds its own), with this process's bound and metrics. */
  revocationHolder(keys: VerificationKeys): RevocationHolder {
    return createRevocationHolder(keys, { maxStalenessMs: envDurationMs(this.env, 'TWOKEY_REVOCATION_MAX_STALENESS', '30s'), metrics: this.metrics });
  }

  /**
   * The registry's partner trust domains' bundles, loaded once (files read, endpoints fetched) and
   * then watched at each bundle's refresh hint; undefined when the registry federates with none.
   */
  async partnerBundles(): Promise<PartnerBundles | undefined> {
    const policy = this.registry.federation;
    if (policy === undefined) return undefined;
    if (this.#partnerBundles !== undefined) return this.#partnerBundles;
    const log = this.logger;
    const bundles = new PartnerBundles({
      policy,
      // Our roots: a partner bundle that lists one of them is refused.
      own: () => ({ trustDomain: this.svid.svid.spiffeId.trustDomain, roots: certificatesIn(this.svid.material.bundlePem, SVID_FILES.bundle) }),
      minRefreshMs: envDurationMs(this.env, 'TWOKEY_PARTNER_BUNDLE_MIN_REFRESH', '1s'),
      retryMs: envDurationMs(this.env, 'TWOKEY_PARTNER_BUNDLE_RETRY', '30s'),
      onAccepted: (td, bundle, changed) => {
        if (changed) log.info({ event: 'federation.bundle_updated', trust_domain: td, sequence: bundle.sequence, roots: bundle.x509Authorities.length }, 'partner trust bundle updated');
      },
      onRefused: (td, err) => log.warn({ event: 'federation.bundle_refused', trust_domain: td, err: err.message }, 'partner trust bundle not refreshed; keeping the last good one'),
    });
    this.#partnerBundles = bundles;
    registerPartnerBundleMetrics(this.metrics, bundles);
    this.onClose(() => bundles.close());
    await bundles.start();
    return bundles;
  }

  /**
   * A mesh server: mTLS with client certificates required, and the decision on every call. With a
   * federation section in the registry it also accepts partners' workloads within their ceilings
   * (partnerBundles() must have been awaited first).
   */
  meshServer(keys: VerificationKeys, revocation?: RevocationHolder): MeshServer {
    const federation = this.registry.federation;
    const partners = this.#partnerBundles;
    if (federation !== undefined && partners === undefined) {
      throw new TwokeyError('ERR_CONFIG_INVALID', 'the registry federates with partner trust domains: await partnerBundles() before meshServer()');
    }
    const mesh = createMeshServer({
      ...(federation === undefined || partners === undefined ? {} : { federation: { policy: federation, bundles: partners } }),
      svid: this.svid,
      keys,
      ...(revocation === undefined ? {} : { revocation }),
      issuer: this.registry.auth.issuer,
      // The registry's protoRoots (a team's own services) besides twokey's protos, as joinMesh loads them.
      ...(this.registry.protoRoots.length > 0 ? { rules: MethodCatalog.load({ extraRoots: this.registry.protoRoots }) } : {}),
      logger: this.logger,
      dryRun: this.config.dryRun,
      // Callers the registry names get a label each; any other certificate counts as "other".
      metrics: { registry: this.metrics, knownCallers: this.registry.workloads.map((w) => w.spiffeId.toString()) },
      serverOptions: {
        'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
        // Each client connection is asked to move on (GOAWAY; calls in flight and open streams run
        // to their end) after about 5 minutes, so clients ask DNS again and a replica added since,
        // which no connection drop would reveal, gets its share of calls.
        'grpc.max_connection_age_ms': MAX_CONNECTION_AGE_MS,
      },
      limits: meshCallLimits(this.env),
    });
    new HandlerEntries(this.metrics, this.registry.workloads.map((w) => w.spiffeId.toString())).attach(mesh.server);
    this.onClose(() => mesh.close());
    return mesh;
  }

  onClose(fn: () => Promise<void> | void): void {
    this.#closers.push(fn);
  }

  /** Marks the process serving: health probes start to pass. */
  serving(details: Record<string, unknown>): void {
    this.health.setAll('SERVING');
    this.logger.info({ event: 'service.serving', ...details }, `${this.name} serving`);
  }

  /** Stops in reverse order of start. */
  async close(): Promise<void> {
    this.health.setAll('NOT_SERVING');
    for (const fn of this.#closers.reverse()) {
      try {
        await fn();
      } catch (err) {
        this.logger.warn({ err: (err as Error).message }, 'error while stopping');
      }
    }
    this.logger.info({ event: 'service.stopped' }, `${this.name} stopped`);
    await flushLogger(this.logger);
  }
}
