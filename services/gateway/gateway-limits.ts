// The gateway's load limits: what one connection, one user, one source address and all clients together may hold.
import { Gauge, type Registry } from 'prom-client';
import { HeldCounter, RateLimiter, envLimit, positiveLimit, type Claim, claimAll, releaseAll } from '../authz/admission.ts';
import { ShedMetrics } from '../authz/shed-metrics.ts';
import { envDurationMs, type Env } from '../mesh-runtime/env.ts';

export interface GatewayLimits {
  /** HTTP/2 streams one client connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams: number;
  maxInFlightPerConnection: number;
  maxInFlightPerUser: number;
  maxInFlight: number;
  /** Request bytes held (received, not yet answered) per connection, per user and in total. */
  maxBufferedBytesPerConnection: number;
  maxBufferedBytesPerUser: number;
  maxBufferedBytes: number;
  /** Logins one source address may have in flight, and start per minute (a burst of as many). */
  maxLoginsInFlightPerSource: number;
  loginsPerMinutePerSource: number;
  /** A stream must have sent its whole request within this long of its headers. */
  requestTimeoutMs: number;
}

/**
 * Defaults: one user's share (32 calls, 16 MiB: four 4 MiB uploads at once) is a small part of the
 * whole (512 calls, 128 MiB), so one user's flood leaves the rest for everyone else; the gateway's
 * total stays under one peer's share at the services behind it (CALL_LIMIT_DEFAULTS.maxInFlightPerPeer, 1000).
 */
export const GATEWAY_LIMIT_DEFAULTS: GatewayLimits = {
  maxConcurrentStreams: 100,
  maxInFlightPerConnection: 64,
  maxInFlightPerUser: 32,
  maxInFlight: 512,
  maxBufferedBytesPerConnection: 32 * 1024 * 1024,
  maxBufferedBytesPerUser: 16 * 1024 * 1024,
  maxBufferedBytes: 128 * 1024 * 1024,
  maxLoginsInFlightPerSource: 4,
  loginsPerMinutePerSource: 30,
  requestTimeoutMs: 10_000,
};

/**
 * The cancels (RST_STREAM) the gateway sends to one upstream service: a burst, then a rate per
 * second. A Node server (nghttp2) closes a connection with GOAWAY INTERNAL_ERROR once its client
 * has reset more than 1000 streams plus 33 a second (http2 `streamResetBurst`/`streamResetRate`,
 * its rapid-reset protection), and the gateway's connection carries every user's calls: half of
 * that, counted for all the upstream's replicas together, leaves room for the resets grpc-js sends
 * itself (deadlines). Past it a cancelled call is left to finish, holding its share until it does.
 */
export const UPSTREAM_CANCEL_BUDGET = { burst: 500, perSecond: 16 } as const;

/**
 * Process settings for the gateway, so that its memory returns after a flood: a fixed malloc mmap
 * threshold (glibc otherwise raises it after the first large free, and the request buffers of a
 * flood of uploads then stay in the heap, fragmented, long after they are freed), and a small V8
 * young generation (it otherwise grows to its maximum under a flood of short calls and stays).
 * Set by the local mesh and the manifests; values already in the environment win.
 */
export const GATEWAY_PROCESS_ENV: Readonly<Record<string, string>> = {
  MALLOC_MMAP_THRESHOLD_: '131072',
  NODE_OPTIONS: '--max-semi-space-size=4',
};

/** Each limit's environment variable. */
export const GATEWAY_LIMIT_ENV: Readonly<Record<keyof GatewayLimits, string>> = {
  maxConcurrentStreams: 'TWOKEY_GATEWAY_MAX_CONCURRENT_STREAMS',
  maxInFlightPerConnection: 'TWOKEY_GATEWAY_MAX_IN_FLIGHT_PER_CONNECTION',
  maxInFlightPerUser: 'TWOKEY_GATEWAY_MAX_IN_FLIGHT_PER_USER',
  maxInFlight: 'TWOKEY_GATEWAY_MAX_IN_FLIGHT',
  maxBufferedBytesPerConnection: 'TWOKEY_GATEWAY_MAX_BUFFERED_BYTES_PER_CONNECTION',
  maxBufferedBytesPerUser: 'TWOKEY_GATEWAY_MAX_BUFFERED_BYTES_PER_USER',
  maxBufferedBytes: 'TWOKEY_GATEWAY_MAX_BUFFERED_BYTES',
  maxLoginsInFlightPerSource: 'TWOKEY_GATEWAY_MAX_LOGINS_IN_FLIGHT_PER_SOURCE',
  loginsPerMinutePerSource: 'TWOKEY_GATEWAY_LOGINS_PER_MINUTE_PER_SOURCE',
  requestTimeoutMs: 'TWOKEY_GATEWAY_REQUEST_TIMEOUT',
};

/** The limits from the environment; a value that is not a positive integer (or a positive duration) fails the start. */
export function gatewayLimitsFromEnv(env: Env): GatewayLimits {
  const limits = { ...GATEWAY_LIMIT_DEFAULTS };
  for (const key of Object.keys(GATEWAY_LIMIT_DEFAULTS) as (keyof GatewayLimits)[]) {
    if (key === 'requestTimeoutMs') continue;
    limits[key] = envLimit(env, GATEWAY_LIMIT_ENV[key], GATEWAY_LIMIT_DEFAULTS[key]);
  }
  limits.requestTimeoutMs = positiveLimit(GATEWAY_LIMIT_ENV.requestTimeoutMs, envDurationMs(env, GATEWAY_LIMIT_ENV.requestTimeoutMs, '10s'));
  return limits;
}

/** The names of what the gateway sheds, in metrics (twokey_calls_shed_total{limit}) and log lines. */
export const GATEWAY_SHED_NAMES = [
  'in_flight_total',
  'in_flight_per_connection',
  'in_flight_per_user',
  'buffered_bytes_total',
  'buffered_bytes_per_connection',
  'buffered_bytes_per_user',
  'logins_in_flight_per_source',
  'login_rate_per_source',
  'request_timeout',
] as const;
export type GatewayShedName = (typeof GATEWAY_SHED_NAMES)[number];

const WHAT: Record<GatewayShedName, string> = {
  in_flight_total: 'calls in flight at the gateway',
  in_flight_per_connection: 'calls in flight on this connection',
  in_flight_per_user: 'calls in flight for this user',
  buffered_bytes_total: 'request bytes held at the gateway',
  buffered_bytes_per_connection: 'request bytes held for this connection',
  buffered_bytes_per_user: 'request bytes held for this user',
  logins_in_flight_per_source: 'logins in flight from this address',
  login_rate_per_source: 'logins from this address in the last minute',
  request_timeout: '',
};

export interface GatewayShed {
  readonly limit: GatewayShedName;
  readonly reason: string;
}

/**
 * The gateway's counters. A call claims the total and its connection when its headers arrive, a
 * login its source's share (before auth hashes anything), a user's call that user's share once the
 * token verified (before anything is forwarded), and each request message its bytes; all is given
 * back when the call ends, however it ends.
 */
export class GatewayAdmission {
  readonly limits: GatewayLimits;
  readonly #calls: HeldCounter;
  readonly #callsPerConnection: HeldCounter;
  readonly #callsPerUser: HeldCounter;
  readonly #bytes: HeldCounter;
  readonly #bytesPerConnection: HeldCounter;
  readonly #bytesPerUser: HeldCounter;
  readonly #loginsPerSource: HeldCounter;
  readonly #loginRate: RateLimiter;
  readonly #metrics: ShedMetrics;

  constructor(limits: GatewayLimits, registry: Registry, now: () => number = Date.now) {
    for (const key of Object.keys(GATEWAY_LIMIT_DEFAULTS) as (keyof GatewayLimits)[]) positiveLimit(GATEWAY_LIMIT_ENV[key], limits[key]);
    this.limits = limits;
    this.#calls = new HeldCounter('in_flight_total', limits.maxInFlight);
    this.#callsPerConnection = new HeldCounter('in_flight_per_connection', limits.maxInFlightPerConnection);
    this.#callsPerUser = new HeldCounter('in_flight_per_user', limits.maxInFlightPerUser);
    this.#bytes = new HeldCounter('buffered_bytes_total', limits.maxBufferedBytes);
    this.#bytesPerConnection = new HeldCounter('buffered_bytes_per_connection', limits.maxBufferedBytesPerConnection);
    this.#bytesPerUser = new HeldCounter('buffered_bytes_per_user', limits.maxBufferedBytesPerUser);
    this.#loginsPerSource = new HeldCounter('logins_in_flight_per_source', limits.maxLoginsInFlightPerSource);
    this.#loginRate = new RateLimiter({ perSecond: limits.loginsPerMinutePerSource / 60, burst: limits.loginsPerMinutePerSource, now });
    this.#metrics = new ShedMetrics(registry, GATEWAY_SHED_NAMES);
    // Read on scrape from the counters themselves: nothing more per call.
    const calls = this.#calls;
    const bytes = this.#bytes;
    new Gauge({
      name: 'twokey_gateway_in_flight',
      help: 'What the gateway holds now: calls admitted and not yet ended, and their request bytes.',
      labelNames: ['what'] as const,
      registers: [registry],
      collect() {
        this.set({ what: 'calls' }, calls.held(''));
        this.set({ what: 'request_bytes' }, bytes.held(''));
      },
    });
  }

  /** Calls admitted and not yet ended. */
  callsInFlight(): number {
    return this.#calls.held('');
  }

  /** The claims of a call on `connection` (the total and the connection's share). */
  callClaims(connection: string): Claim[] {
    return [
      [this.#calls, ''],
      [this.#callsPerConnection, connection],
    ];
  }

  userClaim(subject: string): Claim {
    return [this.#callsPerUser, subject];
  }

  loginClaim(source: string): Claim {
    return [this.#loginsPerSource, source];
  }

  byteClaims(connection: string, subject: string | undefined): Claim[] {
    const claims: Claim[] = [
      [this.#bytes, ''],
      [this.#bytesPerConnection, connection],
    ];
    if (subject !== undefined) claims.push([this.#bytesPerUser, subject]);
    return claims;
  }

  /** Claims all or nothing; the shed (counted) when a limit refuses. */
  claim(claims: readonly Claim[], amount = 1): GatewayShed | undefined {
    const refused = claimAll(claims, amount);
    return refused === undefined ? undefined : this.shed(refused.name as GatewayShedName, refused.limit);
  }

  release(claims: readonly Claim[], amount = 1): void {
    releaseAll(claims, amount);
  }

  /** Whether `source` may start another login now (counts it when it may). */
  loginRate(source: string): GatewayShed | undefined {
    return this.#loginRate.take(source) ? undefined : this.shed('login_rate_per_source', this.limits.loginsPerMinutePerSource);
  }

  shed(limit: GatewayShedName, max: number): GatewayShed {
    this.#metrics.shed(limit);
    if (limit === 'request_timeout') return { limit, reason: `request not received within ${max} ms of its headers` };
    return { limit, reason: `overloaded: too many ${WHAT[limit]} (limit ${max}, ${limit}); retry later` };
  }
}
