// What every mesh member takes from auth over mTLS: token keys (GetJwks), the revocation set
// (WatchRevocations), user logins and service tokens, through one typed client.
import { Metadata, loadPackageDefinition, status, type ChannelOptions, type Client, type ClientReadableStream, type ServiceClientConstructor, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import type { Logger } from 'pino';
import type { Registry as MetricsRegistry } from 'prom-client';
import { createMeshClient } from './client.ts';
import { TwokeyError } from './errors.ts';
import { JwksKeySet } from './jwks.ts';
import { DEFAULT_PROTO_ROOT, PROTO_LOADER_OPTIONS } from './method-catalog.ts';
import { RevocationHolder } from './revocation-set.ts';
import type { SvidSource } from './svid-source.ts';
import { SpiffeId } from './spiffe-id.ts';
import type { VerificationKeys } from './token-verifier.ts';
import { registerJwksMetrics, registerRevocationMetrics } from './workload-metrics.ts';

/** The methods of auth a member's certificate must grant: without them it cannot verify a token. */
export const MEMBER_AUTH_GRANTS = ['/twokey.auth.v1.Auth/GetJwks', '/twokey.auth.v1.Auth/WatchRevocations'] as const;

/** `twokey.auth.v1.Auth`'s client constructor, from the auth proto that ships with the package. */
export const AuthServiceClient: ServiceClientConstructor = (() => {
  const definition = loadSync('twokey/auth/v1/auth.proto', { ...PROTO_LOADER_OPTIONS, includeDirs: [DEFAULT_PROTO_ROOT] });
  return (loadPackageDefinition(definition) as unknown as { twokey: { auth: { v1: { Auth: ServiceClientConstructor } } } }).twokey.auth.v1.Auth;
})();

/** A token auth issued (LoginResponse, GetServiceTokenResponse, ExchangeTokenResponse). */
export interface IssuedToken {
  access_token: string;
  token_type: string;
  /** Seconds, as a decimal string (int64). */
  expires_in: string;
  scope: string;
}

// grpc-js backs off up to 120 s between reconnects by default; inside a mesh a peer that comes
// back (auth after a restart, say) must be reachable again within seconds, or key refreshes and
// token requests keep failing long after it is healthy.
export const MESH_RECONNECT_OPTIONS: ChannelOptions = {
  'grpc.initial_reconnect_backoff_ms': 250,
  'grpc.max_reconnect_backoff_ms': 2000,
};

/** Statuses that no retry mends: the registry entry, the certificate or the address is wrong. */
const PERMANENT = new Set<number>([status.PERMISSION_DENIED, status.UNAUTHENTICATED, status.UNIMPLEMENTED, status.INVALID_ARGUMENT, status.FAILED_PRECONDITION]);

export interface AuthConnectionOptions {
  svid: SvidSource;
  /** auth's mesh address, host:port. */
  address: string;
  /** The SPIFFE ID auth must present (its registry entry's). */
  authId: SpiffeId | string;
  channelOptions?: ChannelOptions;
}

/** One mTLS client to auth; it never forwards a served call's user token. */
export class AuthConnection {
  readonly address: string;
  readonly authId: string;
  /** The grpc-js client, for methods this class does not wrap. */
  readonly client: Client;

  constructor(options: AuthConnectionOptions) {
    this.address = options.address;
    this.authId = options.authId.toString();
    this.client = createMeshClient(AuthServiceClient, options.address, {
      svid: options.svid,
      serverId: options.authId,
      propagate: false,
      channelOptions: { ...MESH_RECONNECT_OPTIONS, ...options.channelOptions },
    });
  }

  /** Auth's JWK Set JSON (GetJwks). */
  async getJwks(timeoutMs = 5000): Promise<string> {
    return (await this.unary<{ jwks_json: string }>('GetJwks', {}, timeoutMs)).jwks_json;
  }

  /** A user token for `username` (Login): the certificate must grant Auth/Login. */
  login(username: string, password: string, timeoutMs = 10_000): Promise<IssuedToken> {
    return this.unary<IssuedToken>('Login', { username, password }, timeoutMs);
  }

  /** This workload's own service token (audience: the trust domain when ''). */
  getServiceToken(audience = '', timeoutMs = 10_000): Promise<IssuedToken> {
    return this.unary<IssuedToken>('GetServiceToken', { audience }, timeoutMs);
  }

  /** The stream of signed revocation sets (WatchRevocations): the current set at once, then every change and heartbeat. */
  watchRevocations(): ClientReadableStream<{ set_jws: string }> {
    return (this.client as unknown as { WatchRevocations(req: object): ClientReadableStream<{ set_jws: string }> }).WatchRevocations({});
  }

  /** Calls a unary method of Auth by name. */
  unary<Res>(method: string, request: object, timeoutMs = 10_000, metadata = new Metadata()): Promise<Res> {
    const fn = (this.client as unknown as Record<string, Function>)[method];
    if (typeof fn !== 'function') return Promise.reject(new TwokeyError('ERR_CONFIG_INVALID', `auth has no method ${method}`));
    return new Promise<Res>((resolve, reject) => {
      fn.call(this.client, request, metadata, { deadline: Date.now() + timeoutMs }, (err: ServiceError | null, res: Res) => (err ? reject(err) : resolve(res)));
    });
  }

  close(): void {
    this.client.close();
  }

  /** "auth spiffe://... at host:port", for messages. */
  describe(): string {
    return `auth (${this.authId} at ${this.address})`;
  }
}

/**
 * Why auth refused or could not answer `method`, with what to do about a missing grant: a refusal
 * is a configuration error (ERR_CONFIG_INVALID), anything else `transientCode`.
 */
export function authFailure(auth: AuthConnection, svid: SvidSource, method: string, what: string, err: unknown, transientCode: 'ERR_JWKS_UNAVAILABLE' | 'ERR_REVOCATION_STALE' = 'ERR_JWKS_UNAVAILABLE'): TwokeyError {
  const e = err as Partial<ServiceError> | null;
  const code = typeof e?.code === 'number' ? `${status[e.code] ?? e.code}: ` : '';
  const detail = e?.details ?? (err as Error)?.message ?? String(err);
  const path = `/twokey.auth.v1.Auth/${method}`;
  const hint = svid.svid.grants.allows(path)
    ? ''
    : `; every member's certificate must grant ${path}: add it to the grants of ${svid.svid.spiffeId}'s registry entry and reissue its certificate`;
  return new TwokeyError(isPermanent(err) ? 'ERR_CONFIG_INVALID' : transientCode, `cannot ${what} from ${auth.describe()}: ${code}${detail}${hint}`, { cause: err });
}

export function isPermanent(err: unknown): boolean {
  const code = (err as Partial<ServiceError> | null)?.code;
  return typeof code === 'number' && PERMANENT.has(code);
}

export interface AuthKeysOptions {
  logger?: Logger | undefined;
  metrics?: MetricsRegistry | undefined;
  /**
   * How long to keep retrying while auth is unreachable at start. Reached, start() rejects
   * (`required`) or goes on without keys, every token refused UNAVAILABLE until a fetch succeeds.
   * A refusal by auth (a missing grant, a certificate auth does not accept) rejects at once.
   */
  startTimeoutMs?: number;
  required?: boolean;
}

/**
 * The mesh's token keys from auth's GetJwks, refreshed every minute and on an unknown kid; the
 * first fetch happens here. Auth refusing the fetch is a configuration error and rejects, naming
 * the cause: a member never serves unable to verify tokens without saying why.
 */
export async function openAuthKeys(auth: AuthConnection, svid: SvidSource, options: AuthKeysOptions = {}): Promise<JwksKeySet> {
  const keys = new JwksKeySet({
    fetch: () => auth.getJwks(5000),
    cooldownMs: 5000,
    refreshIntervalMs: 60_000,
    onFetchError: (err) => options.logger?.warn({ event: 'jwks.fetch_failed', err: err.message }, 'JWKS fetch failed; keeping the last good keys'),
  });
  const deadline = Date.now() + (options.startTimeoutMs ?? 10_000);
  for (let backoffMs = 250; ; backoffMs = Math.min(backoffMs * 2, 2000)) {
    try {
      await keys.refresh();
      break;
    } catch (err) {
      const cause = (err as TwokeyError).cause ?? err;
      const failure = authFailure(auth, svid, 'GetJwks', 'fetch the token keys', cause);
      if (isPermanent(cause)) throw failure;
      if (Date.now() + backoffMs > deadline) {
        if (options.required !== false) throw failure;
        options.logger?.warn({ event: 'jwks.none_yet', err: failure.message }, 'no token keys from auth yet; tokens are refused UNAVAILABLE until they arrive');
        break;
      }
      await new Promise((r) => setTimeout(r, backoffMs));
    }
  }
  await keys.start();
  if (options.metrics !== undefined) registerJwksMetrics(options.metrics, keys);
  return keys;
}

/**
 * The revocation set this process enforces: an empty holder with the staleness bound (default
 * 30 s: a set older than that decides nothing, and every call is refused UNAVAILABLE). Each set
 * names the keys auth publishes, so a rotation reaches `keys` with the next set.
 */
export function createRevocationHolder(keys: VerificationKeys, options: { maxStalenessMs?: number; metrics?: MetricsRegistry | undefined } = {}): RevocationHolder {
  const holder = new RevocationHolder({ keys, maxStalenessMs: options.maxStalenessMs ?? 30_000 });
  if (keys instanceof JwksKeySet) holder.onUpdate((set) => void keys.expectKids(set.publishedKids));
  if (options.metrics !== undefined) registerRevocationMetrics(options.metrics, holder);
  return holder;
}

export interface WatchRevocationsOptions {
  logger?: Logger | undefined;
  /** How long the returned promise waits for the first set while auth is unreachable. */
  firstSetWaitMs?: number;
  /** Reject when no set arrived within the wait (instead of resolving and refusing calls UNAVAILABLE). */
  required?: boolean;
  /** The SvidSource whose grants a refusal's message checks. */
  svid: SvidSource;
}

/** A running WatchRevocations feed: stop() ends it. */
export interface RevocationFeed {
  /** Resolves once the first set is held (see WatchRevocationsOptions). */
  readonly ready: Promise<void>;
  stop(): void;
}

/**
 * Keeps `holder` fed from auth's WatchRevocations, reconnecting with backoff (250 ms doubling to
 * 2 s) whenever the stream ends. Sets are accepted in arrival order; a refused one is logged and
 * the last good set stays (it ages towards the staleness bound, which is the fail-closed path).
 * Auth refusing the stream before the first set (a missing grant) rejects `ready`, naming it.
 */
export function watchRevocations(auth: AuthConnection, holder: RevocationHolder, options: WatchRevocationsOptions): RevocationFeed {
  const log = options.logger;
  let stopped = false;
  let backoffMs = 250;
  let stream: ClientReadableStream<{ set_jws: string }> | undefined;
  let accepting: Promise<unknown> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  let settle: ((err?: Error) => void) | undefined;
  const ready = new Promise<void>((resolve, reject) => {
    if (holder.current !== null) return resolve();
    let wait: NodeJS.Timeout | undefined;
    const stopListening = holder.onUpdate(() => settle?.());
    settle = (err) => {
      settle = undefined;
      clearTimeout(wait);
      stopListening();
      if (err === undefined) resolve();
      else reject(err);
    };
    wait = setTimeout(() => {
      const why = `no revocation set from ${auth.describe()} within ${options.firstSetWaitMs ?? 10_000} ms`;
      if (options.required === true) return settle?.(new TwokeyError('ERR_REVOCATION_STALE', why));
      log?.warn({ event: 'revocation.none_yet', waited_ms: options.firstSetWaitMs ?? 10_000 }, `${why}; calls are refused UNAVAILABLE until one arrives`);
      settle?.();
    }, options.firstSetWaitMs ?? 10_000);
    wait.unref();
  });
  const connect = (): void => {
    if (stopped) return;
    const current = auth.watchRevocations();
    stream = current;
    current.on('data', (msg: { set_jws: string }) => {
      backoffMs = 250;
      accepting = accepting.then(() =>
        holder.accept(msg.set_jws).catch((err: Error) => log?.warn({ event: 'revocation.set_refused', err: err.message }, 'revocation set refused; keeping the last good one')),
      );
    });
    current.on('error', (err: ServiceError) => {
      if (stopped || err.code === status.CANCELLED) return;
      const failure = authFailure(auth, options.svid, 'WatchRevocations', 'watch the revocation set', err, 'ERR_REVOCATION_STALE');
      if (isPermanent(err) && settle !== undefined) settle(failure);
      else log?.warn({ event: 'revocation.watch_failed', err: failure.message }, 'revocation stream failed; reconnecting');
    });
    current.on('close', () => {
      if (stopped || stream !== current) return;
      timer = setTimeout(connect, backoffMs);
      timer.unref();
      backoffMs = Math.min(backoffMs * 2, 2000);
    });
  };
  connect();
  return {
    ready,
    stop: () => {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      stream?.cancel();
    },
  };
}

/** Why this process cannot decide calls now (no keys, no fresh revocation set), or null when it can. */
export function notReadyReason(keys: JwksKeySet, holder: RevocationHolder, clock: () => number = Date.now): string | null {
  if (keys.kids.length === 0) return 'no token keys from auth';
  const view = holder.view();
  if (view.set === null) return 'no revocation set from auth yet';
  const age = clock() - view.set.issuedAtMs;
  if (age > view.maxStalenessMs) return `the revocation set is ${Math.round(age / 1000)} s old (bound ${Math.round(view.maxStalenessMs / 1000)} s): auth unreachable`;
  return null;
}

/** What watchReadiness needs of a health server (mesh-runtime's HealthServer fits). */
export interface DependencyWatcher {
  watchDependency(probe: () => Promise<void>, opts?: { intervalMs?: number; onChange?: (err: Error | null) => void }): void;
}

/**
 * Reports NOT_SERVING while the process cannot decide calls (notReadyReason), and logs why each
 * time that changes: a member without keys or a fresh revocation set must not look healthy.
 */
export function watchReadiness(health: DependencyWatcher, logger: Logger | undefined, keys: JwksKeySet, holder: RevocationHolder): void {
  health.watchDependency(
    async () => {
      const why = notReadyReason(keys, holder);
      if (why !== null) throw new Error(why);
    },
    {
      intervalMs: 500,
      onChange: (err) =>
        err === null
          ? logger?.info({ event: 'mesh.ready' }, 'token keys and a fresh revocation set held: serving')
          : logger?.error({ event: 'mesh.not_ready', reason: err.message }, `not serving: ${err.message}; calls are refused UNAVAILABLE`),
    },
  );
}

/** A member's link to auth: the token keys and the revocation set it enforces, kept fresh. */
export interface AuthLink {
  readonly auth: AuthConnection;
  readonly keys: JwksKeySet;
  readonly revocation: RevocationHolder;
}

export interface LinkToAuthOptions {
  auth: AuthConnection;
  svid: SvidSource;
  logger?: Logger | undefined;
  metrics?: MetricsRegistry | undefined;
  /** Reports NOT_SERVING while no keys or no fresh set are held (watchReadiness). */
  health?: DependencyWatcher | undefined;
  /** How long auth may be unreachable at start (default 10 s). */
  startTimeoutMs?: number;
  /** Past startTimeoutMs without auth: reject (true, joinMesh) or start refusing UNAVAILABLE until auth answers (false). */
  required: boolean;
  /** Default 30 s. */
  revocationMaxStalenessMs?: number;
  /** Registers what stops the link (the refresh timer, the WatchRevocations stream). */
  onClose: (fn: () => void) => void;
}

/**
 * Everything a member takes from auth, wired the one way every member (joinMesh and the example
 * services alike) takes it: the keys (openAuthKeys), the revocation holder fed by WatchRevocations
 * (waiting for the first set), and readiness. Auth refusing either rejects, naming the grant.
 */
export async function linkToAuth(options: LinkToAuthOptions): Promise<AuthLink> {
  const { auth, svid, logger, metrics } = options;
  const startTimeoutMs = options.startTimeoutMs ?? 10_000;
  const keys = await openAuthKeys(auth, svid, { logger, metrics, startTimeoutMs, required: options.required });
  options.onClose(() => keys.close());
  const revocation = createRevocationHolder(keys, { maxStalenessMs: options.revocationMaxStalenessMs ?? 30_000, metrics });
  const feed = watchRevocations(auth, revocation, { logger, firstSetWaitMs: startTimeoutMs, required: options.required, svid });
  options.onClose(() => feed.stop());
  await feed.ready;
  if (options.health !== undefined) watchReadiness(options.health, logger, keys, revocation);
  return { auth, keys, revocation };
}
