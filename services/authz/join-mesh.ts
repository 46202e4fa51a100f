// One call for a service to join the mesh: its certificate, auth's token keys and revocation set,
// the method rules of its protos, the decision log and metrics, wired as every member needs them.
import { makeClientConstructor, type ChannelOptions, type Client, type ServerInterceptor, type ServerOptions, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { pino, type Logger } from 'pino';
import { Registry as MetricsRegistry } from 'prom-client';
import { loadRegistry, type Registry, type RegistryWorkload } from '../../certs-ca/registry.ts';
import { AuthConnection, MEMBER_AUTH_GRANTS, MESH_RECONNECT_OPTIONS, linkToAuth, notReadyReason } from './auth-connection.ts';
import { createMeshClient } from './client.ts';
import { TwokeyError } from './errors.ts';
import type { FederationPolicy } from './federation.ts';
import { HealthServer } from './health-server.ts';
import type { JwksKeySet } from './jwks.ts';
import { MethodCatalog } from './method-catalog.ts';
import { PartnerBundles } from './partner-bundles.ts';
import type { RevocationHolder } from './revocation-set.ts';
import { SVID_FILES, SvidSource, certificatesIn } from './svid-source.ts';
import { createMeshServer, type MeshServer } from './server.ts';
import { registerCertificateMetrics, registerPartnerBundleMetrics } from './workload-metrics.ts';
import type { CallLimits } from './call-limits.ts';

export interface JoinMeshOptions {
  /**
   * The registry file (YAML): the trust domain, the grants OID, the token issuer (`auth.issuer`),
   * auth's identity, the callers metrics name, and `protoRoots`, the team's protos (relative to
   * the file), whose method rules this server enforces.
   */
  registry: string;
  /** The workload certificate directory (`twokey ca issue`): svid.pem, svid.key, bundle.pem; re-read on change. */
  svidDir: string;
  /** auth's mesh address, host:port (`twokey serve auth`'s TWOKEY_LISTEN). */
  authAddress: string;
  /** auth's workload name in the registry (default "auth"); the connection checks its SPIFFE ID. */
  authWorkload?: string;
  /** Further proto roots, besides the registry's protoRoots. */
  protoRoots?: readonly string[];
  /**
   * Where decision lines and refusals go: a pino logger. Default: JSON lines on stdout, named
   * after this workload. `false`: none.
   */
  logger?: Logger | false;
  /**
   * A plaintext listener for grpc.health.v1 (Kubernetes probes) and GET /metrics (Prometheus), e.g.
   * "127.0.0.1:8081". It reports SERVING only while token keys and a fresh revocation set are held.
   */
  healthListen?: string;
  /** Oldest revocation set decisions may rely on (default 30 s); past it calls are refused UNAVAILABLE. */
  revocationMaxStalenessMs?: number;
  /** How long joining waits for auth when it is unreachable (default 10 s), then rejects. */
  startTimeoutMs?: number;
  /** Further interceptors, run after authorization for allowed calls only. */
  interceptors?: ServerInterceptor[];
  serverOptions?: Omit<ServerOptions, 'interceptors'>;
  /** Load limits of the member's server (CALL_LIMIT_DEFAULTS for those not given; see createMeshServer). */
  limits?: Partial<CallLimits>;
  /** Log would-be denials and let calls through (rollouts only). */
  dryRun?: boolean;
}

/** A client of a member's service: grpc-js's generic client, methods by their proto names. */
export type MeshServiceClient = Client & Record<string, (...args: any[]) => any>;

/** A joined member: add services, listen, make clients of other members. */
export interface MeshMember {
  /** This workload's registry entry. */
  readonly workload: RegistryWorkload;
  readonly registry: Registry;
  /** The methods and rules of twokey's protos and the team's (registry protoRoots). */
  readonly catalog: MethodCatalog;
  readonly svid: SvidSource;
  readonly logger: Logger | undefined;
  /** This process's Prometheus metrics (decisions, refusals, certificate, keys, revocation set). */
  readonly metrics: MetricsRegistry;
  readonly keys: JwksKeySet;
  readonly revocation: RevocationHolder;
  readonly auth: AuthConnection;
  readonly meshServer: MeshServer;
  readonly health: HealthServer;
  /** Serves a service of the catalog (`pkg.Service`) with its handlers. */
  addService(service: string, handlers: UntypedServiceImplementation): void;
  /** Binds the mTLS listener (port 0: an ephemeral one) and reports SERVING; resolves to the port. */
  listen(address: string): Promise<number>;
  /** A client of `service` at `address`, which must present the certificate of registry workload `workload`. */
  client(service: string, workload: string, address: string, channelOptions?: ChannelOptions): MeshServiceClient;
  /** Why calls are refused UNAVAILABLE now (no keys, stale revocation set), or null when serving. */
  notReadyReason(): string | null;
  close(): Promise<void>;
}

/**
 * Joins the mesh: opens the certificate directory, checks this workload is in the registry, fetches
 * auth's token keys and waits for the first revocation set, then builds the mesh server with the
 * catalog of the registry's protos, the decision log and metrics. Rejects with a TwokeyError naming
 * the cause when anything a member needs is missing (auth refusing GetJwks or WatchRevocations
 * because the certificate does not grant them, say): it never serves unable to verify tokens.
 */
export async function joinMesh(options: JoinMeshOptions): Promise<MeshMember> {
  const registry = loadRegistry(options.registry);
  const closers: (() => unknown)[] = [];
  const close = async (): Promise<void> => {
    for (const fn of closers.splice(0).reverse()) await fn();
  };
  const metrics = new MetricsRegistry();
  try {
    let log: Logger | undefined;
    const svid = await SvidSource.open(options.svidDir, {
      trustDomain: registry.trustDomain,
      grantsOid: registry.grantsOid,
      onRejected: (err) => log?.warn({ event: 'svid.rejected', err: err.message }, 'new certificate files rejected; keeping the current ones'),
      onRotated: (m) => log?.info({ event: 'svid.rotated', serial: m.svid.serialHex, not_after: m.svid.notAfter }, 'workload certificate reloaded'),
    });
    closers.push(() => svid.close());
    const own = svid.svid.spiffeId;
    const workload = registry.workloads.find((w) => w.spiffeId.equals(own));
    if (workload === undefined) throw new TwokeyError('ERR_CONFIG_INVALID', `this workload's certificate names ${own}, which the registry ${options.registry} does not list`);
    // JSON lines on stdout, as every twokey service writes them.
    const logger = options.logger === false ? undefined : (options.logger ?? pino({ base: { service: workload.name, pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }));
    log = logger;
    if (options.logger === undefined && logger !== undefined) closers.unshift(() => new Promise<void>((resolve) => logger.flush(() => resolve())));
    registerCertificateMetrics(metrics, svid);
    const authName = options.authWorkload ?? 'auth';
    const authEntry = registry.workloads.find((w) => w.name === authName);
    if (authEntry === undefined) throw new TwokeyError('ERR_CONFIG_INVALID', `the registry ${options.registry} names no workload ${JSON.stringify(authName)} (auth's entry)`);
    const missing = MEMBER_AUTH_GRANTS.filter((g) => !svid.svid.grants.allows(g));
    if (missing.length > 0) logger?.warn({ event: 'mesh.grants_missing', missing }, `this certificate does not grant ${missing.join(', ')}: auth will refuse them`);
    const catalog = MethodCatalog.load({ extraRoots: [...registry.protoRoots, ...(options.protoRoots ?? [])] });
    const auth = new AuthConnection({ svid, address: options.authAddress, authId: authEntry.spiffeId, channelOptions: MESH_RECONNECT_OPTIONS });
    closers.push(() => auth.close());
    const health = new HealthServer([], { metrics });
    closers.push(() => health.close());
    const { keys, revocation } = await linkToAuth({
      auth,
      svid,
      logger,
      metrics,
      health,
      required: true,
      ...(options.startTimeoutMs === undefined ? {} : { startTimeoutMs: options.startTimeoutMs }),
      ...(options.revocationMaxStalenessMs === undefined ? {} : { revocationMaxStalenessMs: options.revocationMaxStalenessMs }),
      onClose: (fn) => closers.push(fn),
    });
    // Partner trust domains (the registry's federation section): their bundles watched at the
    // refresh hint, their workloads capped by the ceilings.
    let federation: { policy: FederationPolicy; bundles: PartnerBundles } | undefined;
    if (registry.federation !== undefined) {
      const bundles = new PartnerBundles({
        policy: registry.federation,
        // Our roots: a partner bundle that lists one of them is refused.
        own: () => ({ trustDomain: svid.svid.spiffeId.trustDomain, roots: certificatesIn(svid.material.bundlePem, SVID_FILES.bundle) }),
        onAccepted: (td, bundle, changed) => {
          if (changed) logger?.info({ event: 'federation.bundle_updated', trust_domain: td, sequence: bundle.sequence, roots: bundle.x509Authorities.length }, 'partner trust bundle updated');
        },
        onRefused: (td, err) => logger?.warn({ event: 'federation.bundle_refused', trust_domain: td, err: err.message }, 'partner trust bundle not refreshed; keeping the last good one'),
      });
      closers.push(() => bundles.close());
      registerPartnerBundleMetrics(metrics, bundles);
      await bundles.start();
      federation = { policy: registry.federation, bundles };
    }
    const meshServer = createMeshServer({
      ...(federation === undefined ? {} : { federation }),
      svid,
      keys,
      revocation,
      issuer: registry.auth.issuer,
      rules: catalog,
      metrics: { registry: metrics, knownCallers: registry.workloads.map((w) => w.spiffeId.toString()) },
      ...(logger === undefined ? {} : { logger }),
      ...(options.interceptors ? { interceptors: options.interceptors } : {}),
      // Clients are asked to reconnect about every 5 minutes (as the example services do), so a
      // replica added behind a name gets its share of calls; serverOptions may change it.
      serverOptions: { 'grpc.max_connection_age_ms': 5 * 60_000, ...options.serverOptions },
      dryRun: options.dryRun === true,
      ...(options.limits === undefined ? {} : { limits: options.limits }),
    });
    closers.push(() => meshServer.close());
    if (options.healthListen !== undefined) await health.listen(options.healthListen);
    const service = (name: string): ServiceDefinition => {
      const definition = catalog.definition[name];
      if (definition === undefined || 'format' in definition) {
        throw new TwokeyError('ERR_CONFIG_INVALID', `no service ${JSON.stringify(name)} in the protos of ${catalog.roots.join(', ')}: name the proto root in the registry's protoRoots`);
      }
      return definition as ServiceDefinition;
    };
    return {
      workload,
      registry,
      catalog,
      svid,
      logger,
      metrics,
      keys,
      revocation,
      auth,
      meshServer,
      health,
      addService: (name, handlers) => meshServer.server.addService(service(name), handlers),
      listen: async (address) => {
        const port = await meshServer.listen(address);
        health.setAll('SERVING');
        logger?.info({ event: 'service.serving', spiffe_id: own.toString(), mesh_port: port }, `${workload.name} serving`);
        return port;
      },
      client: (name, peer, address, channelOptions) => {
        const entry = registry.workloads.find((w) => w.name === peer);
        if (entry === undefined) throw new TwokeyError('ERR_CONFIG_INVALID', `the registry names no workload ${JSON.stringify(peer)}`);
        const Ctor = makeClientConstructor(service(name), name);
        // The catalog of the team's protos says which of its methods are safe to retry.
        const client = createMeshClient(Ctor, address, { svid, serverId: entry.spiffeId, channelOptions: { ...MESH_RECONNECT_OPTIONS, ...channelOptions }, retry: { catalog } }) as MeshServiceClient;
        closers.push(() => client.close());
        return client;
      },
      notReadyReason: () => notReadyReason(keys, revocation),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
