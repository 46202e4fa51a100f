// Failed-login limiting per username and per source, persisted so a restart does not reset it.
import { TwokeyError } from '../authz/errors.ts';

export interface ThrottlePolicy {
  windowMs: number;
  maxFailuresPerUser: number;
  maxFailuresPerSource: number;
}

// Five wrong passwords lock a username for the rest of a 15-minute window; a source that is
// guessing across many usernames is stopped after twenty.
export const DEFAULT_THROTTLE: ThrottlePolicy = { windowMs: 15 * 60_000, maxFailuresPerUser: 5, maxFailuresPerSource: 20 };

export type ThrottleVerdict = { allowed: true } | { allowed: false; reason: string; retryAfterMs: number };

/** Pure: given failure times in the window, may another attempt be made? */
export function decideThrottle(
  policy: ThrottlePolicy,
  now: number,
  userFailures: readonly number[],
  sourceFailures: readonly number[],
): ThrottleVerdict {
  const check = (failures: readonly number[], max: number, what: string): ThrottleVerdict | undefined => {
    const recent = failures.filter((at) => at > now - policy.windowMs).sort((a, b) => a - b);
    if (recent.length < max) return undefined;
    const retryAfterMs = recent[recent.length - max]! + policy.windowMs - now;
    return { allowed: false, reason: `too many failed logins for this ${what}`, retryAfterMs };
  };
  return (
    check(userFailures, policy.maxFailuresPerUser, 'username') ??
    check(sourceFailures, policy.maxFailuresPerSource, 'source') ?? { allowed: true }
  );
}

/** Where failed logins are recorded: shared by every auth replica on PostgreSQL. */
export interface FailureRecords {
  /** Failure times of `key` after `sinceMs`. */
  since(key: string, sinceMs: number): Promise<number[]>;
  /** Records one failure under both keys and drops failures at or before `pruneBeforeMs`, in one transaction. */
  record(userKey: string, sourceKey: string, nowMs: number, pruneBeforeMs: number): Promise<void>;
  /** Removes every failure of `key`; returns how many there were. */
  clear(key: string): Promise<number>;
}

export class LoginThrottle {
  readonly #records: FailureRecords;
  readonly #policy: ThrottlePolicy;
  readonly #now: () => number;
  /**
   * Attempts between `begin` and `end`, per key, by ticket. Password hashing is slow, so without
   * these a burst of concurrent guesses would all pass the check before the first failure is recorded.
   */
  readonly #inFlight = new Map<string, Set<number>>();
  #tickets = 0;

  constructor(records: FailureRecords, policy: ThrottlePolicy = DEFAULT_THROTTLE, now: () => number = Date.now) {
    this.#records = records;
    this.#policy = policy;
    this.#now = now;
  }

  /** Recorded failures in the window, plus each attempt in flight that began before `ticket`, counted as one now. */
  async #failures(key: string, now: number, ticket: number): Promise<number[]> {
    const recorded = await this.#records.since(key, now - this.#policy.windowMs);
    let pending = 0;
    for (const t of this.#inFlight.get(key) ?? []) if (t < ticket) pending++;
    return [...recorded, ...Array<number>(pending).fill(now)];
  }

  async #check(username: string, source: string, ticket: number): Promise<void> {
    const now = this.#now();
    const [user, src] = await Promise.all([this.#failures(`user:${username}`, now, ticket), this.#failures(`source:${source}`, now, ticket)]);
    const verdict = decideThrottle(this.#policy, now, user, src);
    if (!verdict.allowed) {
      throw new TwokeyError('ERR_LOGIN_THROTTLED', `${verdict.reason}; retry in ${Math.ceil(verdict.retryAfterMs / 1000)} s`);
    }
  }

  /** Throws ERR_LOGIN_THROTTLED when either the username or the source is over its limit. */
  check(username: string, source: string): Promise<void> {
    return this.#check(username, source, Infinity);
  }

  /**
   * `check`, then counts the attempt as a failure until `end` is called with the returned ticket
   * (always, in a finally). The attempt is counted before the (asynchronous) check, so concurrent
   * attempts see each other in the order they began. When the check refuses, the attempt is ended.
   */
  async begin(username: string, source: string): Promise<number> {
    const ticket = ++this.#tickets;
    for (const key of [`user:${username}`, `source:${source}`]) {
      let set = this.#inFlight.get(key);
      if (set === undefined) this.#inFlight.set(key, (set = new Set()));
      set.add(ticket);
    }
    try {
      await this.#check(username, source, ticket);
    } catch (err) {
      this.end(username, source, ticket);
      throw err;
    }
    return ticket;
  }

  end(username: string, source: string, ticket: number): void {
    for (const key of [`user:${username}`, `source:${source}`]) {
      const set = this.#inFlight.get(key);
      set?.delete(ticket);
      if (set?.size === 0) this.#inFlight.delete(key);
    }
  }

  async recordFailure(username: string, source: string): Promise<void> {
    const now = this.#now();
    await this.#records.record(`user:${username}`, `source:${source}`, now, now - this.#policy.windowMs);
  }

  /** A successful login clears the username's failures (not the source's). */
  async recordSuccess(username: string): Promise<void> {
    await this.#records.clear(`user:${username}`);
  }

  /**
   * An operator's unlock: clears the username's recorded failures, as a successful login would,
   * and returns how many there were. A source's failures stay: they stop guessing across usernames.
   */
  unlock(username: string): Promise<number> {
    return this.#records.clear(`user:${username}`);
  }
}
