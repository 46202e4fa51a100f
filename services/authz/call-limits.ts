// A mesh server's load limits: streams per connection, calls in flight per peer identity, per user and in total.
import type { Registry } from 'prom-client';
import { HeldCounter, positiveLimit } from './admission.ts';
import { ShedMetrics } from './shed-metrics.ts';

export interface CallLimits {
  /** HTTP/2 streams one connection may have open at once (advertised as SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams: number;
  /** Calls (streams included) one peer SPIFFE ID may have in flight, over all its connections. */
  maxInFlightPerPeer: number;
  /** Calls one token subject may have in flight, whichever workload presents its tokens. */
  maxInFlightPerUser: number;
  /** Calls in flight on this server in total. */
  maxInFlight: number;
}

/**
 * Defaults sized for the example's gateway, which carries every end user's calls as one peer: its
 * own total (512) fits under one peer's share here. A user's share (256) leaves room for a service
 * working with its own token (tagging, the cleaner) while one user cannot take a peer's whole share.
 */
export const CALL_LIMIT_DEFAULTS: CallLimits = {
  maxConcurrentStreams: 1000,
  maxInFlightPerPeer: 1000,
  maxInFlightPerUser: 256,
  maxInFlight: 2000,
};

/** The limit names in metrics and log lines. */
export const CALL_LIMIT_NAMES = ['in_flight_total', 'in_flight_per_peer', 'in_flight_per_user'] as const;

/** Defaults filled in and every value checked: ERR_CONFIG_INVALID for 0, a negative or a non-integer value. */
export function callLimits(given: Partial<CallLimits> | undefined): CallLimits {
  const limits = { ...CALL_LIMIT_DEFAULTS, ...given };
  for (const key of Object.keys(CALL_LIMIT_DEFAULTS) as (keyof CallLimits)[]) positiveLimit(`limits.${key}`, limits[key]);
  return limits;
}

/** Why a call was shed: the limit's name and its value, for the status and the log. */
export interface Shed {
  readonly limit: (typeof CALL_LIMIT_NAMES)[number];
  readonly max: number;
  readonly reason: string;
}

/**
 * The counters a mesh server's calls are admitted against. A call claims the total and its peer
 * before its token is verified (so a flood costs no signature checks), and its user once the
 * decision names one; everything it claimed is given back when it ends.
 */
export class CallAdmission {
  readonly limits: CallLimits;
  readonly #total: HeldCounter;
  readonly #peer: HeldCounter;
  readonly #user: HeldCounter;
  readonly #metrics: ShedMetrics | undefined;

  constructor(limits: CallLimits, registry?: Registry) {
    this.limits = limits;
    this.#total = new HeldCounter('in_flight_total', limits.maxInFlight);
    this.#peer = new HeldCounter('in_flight_per_peer', limits.maxInFlightPerPeer);
    this.#user = new HeldCounter('in_flight_per_user', limits.maxInFlightPerUser);
    this.#metrics = registry === undefined ? undefined : new ShedMetrics(registry, CALL_LIMIT_NAMES);
  }

  /** Claims the total and the peer's share; the limit reached when it cannot. `peer` '' is a call with no verified peer. */
  admitPeer(peer: string): Shed | undefined {
    if (!this.#total.tryAdd('')) return this.#shed('in_flight_total', this.#total.limit, 'calls in flight on this server');
    if (!this.#peer.tryAdd(peer)) {
      this.#total.remove('');
      return this.#shed('in_flight_per_peer', this.#peer.limit, 'calls in flight for this peer');
    }
    return undefined;
  }

  releasePeer(peer: string): void {
    this.#peer.remove(peer);
    this.#total.remove('');
  }

  admitUser(subject: string): Shed | undefined {
    if (!this.#user.tryAdd(subject)) return this.#shed('in_flight_per_user', this.#user.limit, 'calls in flight for this user');
    return undefined;
  }

  releaseUser(subject: string): void {
    this.#user.remove(subject);
  }

  #shed(limit: Shed['limit'], max: number, what: string): Shed {
    this.#metrics?.shed(limit);
    return { limit, max, reason: `overloaded: too many ${what} (limit ${max}, ${limit}); retry later` };
  }
}
