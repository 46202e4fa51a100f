// Prometheus metrics of a mesh server, fed by the same decision events the decision log writes.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { PeerIdentity } from './types.ts';
import type { DecisionEvent } from './decision-log.ts';
import type { TokenCache } from './token-cache.ts';

/** The caller label of a peer the registry does not name (any other certificate of the trust domain). */
export const OTHER_CALLER = 'other';
/** The caller label of a call whose peer certificate did not verify. */
export const NO_CALLER = 'none';
/** The method label of a path outside the method catalog. */
export const UNKNOWN_METHOD = 'unknown';

export type DecisionOutcome = 'allow' | 'deny' | 'dry_run_deny';

export interface DecisionMetricsOptions {
  /** Where the metrics are registered (one mesh server per registry). */
  registry: Registry;
  /** SPIFFE IDs that get a caller label of their own (the registry's workloads); others count as OTHER_CALLER. */
  knownCallers: Iterable<string>;
  /** Method paths that get a method label of their own (the catalog's); others count as UNKNOWN_METHOD. */
  knownMethods: Iterable<string>;
}

/** One label set's count; shared by every peer certificate and method that map to those labels. */
interface Cell {
  readonly labels: { method: string; caller: string; outcome: DecisionOutcome; failed_check: string };
  count: number;
}

// Decision latency runs from a few microseconds (a cached token) to tens of milliseconds (a first
// signature check on a busy machine, a JWKS refetch).
const LATENCY_BUCKETS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

const ALLOW_KEY = 'allow';

/**
 * Counts decisions by method, caller, outcome and failed check. Labels are bounded: a method
 * label is a catalog path, a caller label a known workload's SPIFFE ID, and nothing of the token
 * (subject, jti) is ever a label. The per-call cost is a cached lookup and an increment: label
 * sets are resolved once per peer certificate and method, and handed to prom-client on scrape.
 */
export class DecisionMetrics {
  readonly #knownCallers: ReadonlySet<string>;
  readonly #knownMethods: ReadonlySet<string>;
  /** Every label set seen, by its joined labels; what the counter reports on scrape. */
  readonly #cells = new Map<string, Cell>();
  readonly #byPeer = new WeakMap<PeerIdentity, Map<string, Map<string, Cell>>>();
  readonly #noPeer = new Map<string, Map<string, Cell>>();
  readonly #latency: { allow: Histogram.Internal<'outcome'>; deny: Histogram.Internal<'outcome'>; dry_run_deny: Histogram.Internal<'outcome'> };
  readonly #refusals = new Map<string, { readonly labels: { method: string; caller: string; error_code: string }; count: number }>();
  #openStreams = 0;

  constructor(options: DecisionMetricsOptions) {
    this.#knownCallers = new Set(options.knownCallers);
    this.#knownMethods = new Set(options.knownMethods);
    const cells = this.#cells;
    new Counter({
      name: 'twokey_authz_decisions_total',
      help: 'Authorization decisions, by method, caller SPIFFE ID, outcome and the check that failed (none when allowed).',
      labelNames: ['method', 'caller', 'outcome', 'failed_check'] as const,
      registers: [options.registry],
      collect() {
        this.reset();
        for (const cell of cells.values()) this.inc(cell.labels, cell.count);
      },
    });
    const latency = new Histogram({
      name: 'twokey_authz_decision_duration_seconds',
      help: 'Time from a call\'s metadata to its decision, including token verification when the token was not cached.',
      labelNames: ['outcome'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [options.registry],
    });
    this.#latency = { allow: latency.labels('allow'), deny: latency.labels('deny'), dry_run_deny: latency.labels('dry_run_deny') };
    const refusals = this.#refusals;
    new Counter({
      name: 'twokey_authz_refusals_total',
      help: 'Calls the decision allowed that the handler then refused (the resource check, or a refused request), by method, caller and error code.',
      labelNames: ['method', 'caller', 'error_code'] as const,
      registers: [options.registry],
      collect() {
        this.reset();
        for (const cell of refusals.values()) this.inc(cell.labels, cell.count);
      },
    });
    const streams = (): number => this.#openStreams;
    new Gauge({
      name: 'twokey_open_streams',
      help: 'Streaming calls admitted and not yet ended.',
      registers: [options.registry],
      collect() {
        this.set(streams());
      },
    });
  }

  /** Counts one decision; called with the event the decision log writes. */
  record(event: DecisionEvent): void {
    const decision = event.decision;
    let key: string;
    let outcome: DecisionOutcome;
    if (decision.allow) {
      key = ALLOW_KEY;
      outcome = 'allow';
    } else {
      outcome = event.enforced ? 'deny' : 'dry_run_deny';
      key = outcome + ':' + (decision.failedCheck ?? 'internal');
    }
    // Keyed by the method label, not the path: what a caller sends must not grow these maps.
    const method = this.#knownMethods.has(event.method) ? event.method : UNKNOWN_METHOD;
    const byMethod = event.peer === undefined ? this.#noPeer : this.#methodsOf(event.peer);
    let byOutcome = byMethod.get(method);
    if (byOutcome === undefined) byMethod.set(method, (byOutcome = new Map()));
    let cell = byOutcome.get(key);
    if (cell === undefined) byOutcome.set(key, (cell = this.#cell(method, event, outcome)));
    cell.count += 1;
    this.#latency[outcome].observe(event.latencyUs / 1e6);
  }

  /**
   * Counts a refusal inside the handler of an allowed call (DESIGN step 5, the resource check, or a
   * refused request); `errorCode` is a TwokeyError code, a fixed set.
   */
  recordRefusal(method: string, peer: PeerIdentity | undefined, errorCode: string): void {
    const labels = {
      method: this.#knownMethods.has(method) ? method : UNKNOWN_METHOD,
      caller: peer === undefined ? NO_CALLER : this.#callerLabel(peer.spiffeId.toString()),
      error_code: errorCode,
    };
    const joined = `${labels.method}\n${labels.caller}\n${labels.error_code}`;
    let cell = this.#refusals.get(joined);
    if (cell === undefined) this.#refusals.set(joined, (cell = { labels, count: 0 }));
    cell.count += 1;
  }

  streamOpened(): void {
    this.#openStreams += 1;
  }

  streamClosed(): void {
    this.#openStreams -= 1;
  }

  #methodsOf(peer: PeerIdentity): Map<string, Map<string, Cell>> {
    let methods = this.#byPeer.get(peer);
    if (methods === undefined) this.#byPeer.set(peer, (methods = new Map()));
    return methods;
  }

  #cell(method: string, event: DecisionEvent, outcome: DecisionOutcome): Cell {
    const labels = {
      method,
      caller: event.peer === undefined ? NO_CALLER : this.#callerLabel(event.peer.spiffeId.toString()),
      outcome,
      failed_check: event.decision.allow ? 'none' : (event.decision.failedCheck ?? 'internal'),
    };
    const joined = `${labels.method}\n${labels.caller}\n${labels.outcome}\n${labels.failed_check}`;
    let cell = this.#cells.get(joined);
    if (cell === undefined) this.#cells.set(joined, (cell = { labels, count: 0 }));
    return cell;
  }

  #callerLabel(spiffeId: string): string {
    return this.#knownCallers.has(spiffeId) ? spiffeId : OTHER_CALLER;
  }
}

/** Token cache hits and misses, read from the cache's own counts on scrape. */
export function registerTokenCacheMetrics(registry: Registry, cache: TokenCache): void {
  new Counter({
    name: 'twokey_token_cache_hits_total',
    help: 'Bearer tokens found verified in the token cache.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(cache.hits);
    },
  });
  new Counter({
    name: 'twokey_token_cache_misses_total',
    help: 'Bearer tokens not in the token cache (verified, or refused, from scratch).',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(cache.misses);
    },
  });
}
