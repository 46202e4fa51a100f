// What every example service does at startup: read its configuration and the registry, load its
// workload certificate, start the health listener, and build mesh servers and clients.
import type { Client, ChannelOptions } from '@grpc/grpc-js';
import { Registry as MetricsRegistry } from 'prom-client';
import { loadRegistry, type Registry, type RegistryWorkload } from '../../certs-ca/registry.ts';
import { createMeshClient } from '../authz/client.ts';
import { TwokeyError } from '../authz/errors.ts';
import { JwksKeySet } from '../authz/jwks.ts';
import { RevocationHolder } from '../authz/revocation-set.ts';
import { SvidSource } from '../authz/svid-source.ts';
import { createMeshServer, type MeshServer } from '../authz/server.ts';
import type { VerificationKeys } from '../authz/token-verifier.ts';
import { registerCertificateMetrics, registerJwksMetrics, registerRevocationMetrics } from '../authz/workload-metrics.ts';
import { CachedToken, type IssuedToken } from './cached-token.ts';
import { HandlerEntries } from './handler-entries.ts';
import { readCommonConfig, envDurationMs, envTarget, type CommonConfig, type Env } from './env.ts';
import { HealthServer } from './health.ts';
import { createLogger, flushLogger, type Logger } from './logger.ts';
import { AuthClient, unary } from './protos.ts';

/** Room for the image store's 4 MiB content limit plus the rest of the message. */
export const MAX_MESSAGE_BYTES = 8 * 1024 * 1024;
const CHANNEL_OPTIONS: ChannelOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  // grpc-js backs off up to 120 s between reconnects by default; inside a mesh a peer that comes
  // back (auth after a restart, say) must be reachable again within seconds, or key refreshes
  // and token requests keep failing long after it is healthy.
  'grpc.initial_reconnect_backoff_ms': 250,
  'grpc.max_reconnect_backoff_ms': 2000,
};

/** How long a client connection to a mesh server lasts before the server asks it to reconnect (±10%). */
const MAX_CONNECTION_AGE_MS = 5 * 60_000;

type ClientCtor<C extends Client> = new (address: string, credentials: import('@grpc/grpc-js').ChannelCredentials, options?: import('@grpc/grpc-js').ClientOptions) => C;

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
  #auth: Client | undefined;

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

  /** One mTLS client to auth per process; it never forwards a caller's token. */
  authClient(): Client {
    this.#auth ??= this.client(AuthClient, 'auth', 'TWOKEY_AUTH_ADDR', 'auth:8443', false);
    return this.#auth;
  }

  /** This workload's own service token (audience: the trust domain), reused until it nears expiry. */
  serviceToken(): CachedToken {
    const auth = this.authClient();
    return new CachedToken(() => unary<IssuedToken>(auth, 'GetServiceToken', { audience: '' }));
  }

  /** The mesh's token keys, fetched from auth's GetJwks over mTLS and refreshed in the background. */
  async authKeys(): Promise<JwksKeySet> {
    const auth = this.authClient();
    const keys = new JwksKeySet({
      fetch: async () => (await unary<{ jwks_json: string }>(auth, 'GetJwks', {}, undefined, 5000)).jwks_json,
      cooldownMs: 5000,
      refreshIntervalMs: 60_000,
      onFetchError: (err) => this.logger.warn({ event: 'jwks.fetch_failed', err: err.message }, 'JWKS fetch failed; keeping the last good keys'),
    });
    await keys.start();
    this.onClose(() => keys.close());
    registerJwksMetrics(this.metrics, keys);
    return keys;
  }

  /**
   * The revocation set this process enforces: an empty holder, its staleness bound from
   * TWOKEY_REVOCATION_MAX_STALENESS (default 30s). Until a set arrives every call is refused UNAVAILABLE.
   */
  revocationHolder(keys: VerificationKeys): RevocationHolder {
    const holder = new RevocationHolder({ keys, maxStalenessMs: envDurationMs(this.env, 'TWOKEY_REVOCATION_MAX_STALENESS', '30s') });
    // Each set names the keys auth publishes: a rotation reaches this process with the next set.
    if (keys instanceof JwksKeySet) holder.onUpdate((set) => void keys.expectKids(set.publishedKids));
    registerRevocationMetrics(this.metrics, holder);
    return holder;
  }

  /**
   * Keeps `holder` fed from auth's WatchRevocations, reconnecting with backoff (250 ms doubling to
   * 2 s) whenever the stream ends; resolves once the first set is held (or after `firstSetWaitMs`). Sets are accepted in arrival order; a refused one is logged and
   * the last good set stays (it ages towards the staleness bound, which is the fail-closed path).
   */
  watchRevocations(holder: RevocationHolder, firstSetWaitMs = 10_000): Promise<void> {
    const auth = this.authClient() as unknown as { WatchRevocations(req: object): import('@grpc/grpc-js').ClientReadableStream<{ set_jws: string }> };
    let closed = false;
    let backoffMs = 250;
    let stream: import('@grpc/grpc-js').ClientReadableStream<{ set_jws: string }> | undefined;
    let accepting: Promise<unknown> = Promise.resolve();
    let timer: NodeJS.Timeout | undefined;
    const connect = (): void => {
      if (closed) return;
      const current = auth.WatchRevocations({});
      stream = current;
      current.on('data', (msg: { set_jws: string }) => {
        backoffMs = 250;
        accepting = accepting.then(() =>
          holder.accept(msg.set_jws).catch((err: Error) => this.logger.warn({ event: 'revocation.set_refused', err: err.message }, 'revocation set refused; keeping the last good one')),
        );
      });
      current.on('error', () => undefined);
      current.on('close', () => {
        if (closed || stream !== current) return;
        timer = setTimeout(connect, backoffMs);
        timer.unref();
        backoffMs = Math.min(backoffMs * 2, 2000);
      });
    };
    connect();
    this.onClose(() => {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      stream?.cancel();
    });
    // Until a set arrives every call is refused UNAVAILABLE: report SERVING only once one has (or,
    // auth being unreachable, after the wait, so the process still starts and says why it refuses).
    return new Promise<void>((resolve) => {
      if (holder.current !== null) return resolve();
      const stop = holder.onUpdate(() => done());
      const wait = setTimeout(() => {
        this.logger.warn({ event: 'revocation.none_yet', waited_ms: firstSetWaitMs }, 'no revocation set from auth yet; calls are refused UNAVAILABLE until one arrives');
        done();
      }, firstSetWaitMs);
      wait.unref();
      function done(): void {
        clearTimeout(wait);
        stop();
        resolve();
      }
    });
  }

  /** A mesh server: mTLS with client certificates required, and the decision on every call. */
  meshServer(keys: VerificationKeys, revocation?: RevocationHolder): MeshServer {
    const mesh = createMeshServer({
      svid: this.svid,
      keys,
      ...(revocation === undefined ? {} : { revocation }),
      issuer: this.registry.auth.issuer,
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
