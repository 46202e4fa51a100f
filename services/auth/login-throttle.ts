// Failed-login limiting per (username, source), per source, and per username for everyone, persisted so a restart does not reset it.
import { TwokeyError } from '../authz/errors.ts';

/**
 * The policy (NIST SP 800-63B 5.2.2: rate-limit failed attempts, at most 100 consecutive ones per
 * account). Guessing from one address is slowed first: a few failures are free, then each further
 * attempt waits a delay that doubles. Only many failures lock a username for everyone, so a
 * stranger cannot lock a user out with a handful of guesses.
 */
export interface ThrottlePolicy {
  /** How long failures count for the delays (per username and source, per source). */
  windowMs: number;
  /** Failures of one username from one source before delays begin. */
  freePerPair: number;
  /** Failures from one source (over all usernames) before delays begin. */
  freePerSource: number;
  /** The first delay; each further failure doubles it, up to maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Failures of one username, from anywhere, with no successful login between, that lock it for everyone. */
  lockAfter: number;
  /** How long those failures count: the lock lasts until fewer than lockAfter remain in it. */
  lockWindowMs: number;
}

// 5 free guesses per username and address, then 1 s, 2 s, 4 s ... (at most 15 min) between them;
// 20 free per address over all usernames, then the same; a username locked for everyone only at
// 100 failures in 24 h with no success between (the most NIST SP 800-63B allows).
export const DEFAULT_THROTTLE: ThrottlePolicy = {
  windowMs: 15 * 60_000,
  freePerPair: 5,
  freePerSource: 20,
  baseDelayMs: 1000,
  maxDelayMs: 15 * 60_000,
  lockAfter: 100,
  lockWindowMs: 24 * 3_600_000,
};

export type ThrottleVerdict = { allowed: true } | { allowed: false; reason: string; retryAfterMs: number };

/** Failure times (epoch ms) of the three counters an attempt is checked against. */
export interface FailureTimes {
  /** This username from this source. */
  pair: readonly number[];
  /** This source, any username. */
  source: readonly number[];
  /** This username, any source. */
  account: readonly number[];
}

/** Pure: with `n` failures, the wait after the latest before another attempt (0: none). */
export function delayAfter(policy: ThrottlePolicy, failures: number, free: number): number {
  if (failures < free) return 0;
  return Math.min(policy.baseDelayMs * 2 ** Math.min(failures - free, 40), policy.maxDelayMs);
}

/** Pure: may another attempt be made now, given the failures recorded? */
export function decideThrottle(policy: ThrottlePolicy, now: number, failures: FailureTimes): ThrottleVerdict {
  const account = failures.account.filter((at) => at > now - policy.lockWindowMs).sort((a, b) => a - b);
  if (account.length >= policy.lockAfter) {
    const retryAfterMs = account[account.length - policy.lockAfter]! + policy.lockWindowMs - now;
    return { allowed: false, reason: `this username is locked after ${policy.lockAfter} failed logins`, retryAfterMs };
  }
  const delayed = (times: readonly number[], free: number, what: string): ThrottleVerdict | undefined => {
    const recent = times.filter((at) => at > now - policy.windowMs);
    const delay = delayAfter(policy, recent.length, free);
    if (delay === 0) return undefined;
    const until = Math.max(...recent) + delay;
    return until > now ? { allowed: false, reason: `too many failed logins ${what}`, retryAfterMs: until - now } : undefined;
  };
  return (
    delayed(failures.pair, policy.freePerPair, 'for this username from this address') ??
    delayed(failures.source, policy.freePerSource, 'from this address') ?? { allowed: true }
  );
}

/** Where failed logins are recorded: shared by every auth replica on PostgreSQL. */
export interface FailureRecords {
  /** Failure times of `key` after `sinceMs`. */
  since(key: string, sinceMs: number): Promise<number[]>;
  /** Records one failure under each key and drops failures at or before `pruneBeforeMs`, in one transaction. */
  record(keys: readonly string[], nowMs: number, pruneBeforeMs: number): Promise<void>;
  /** Removes every failure of `key` and of the keys that begin with `key|`; returns how many there were. */
  clear(key: string): Promise<number>;
}

const accountKey = (username: string): string => `user:${username}`;
// Under the account's key, so clearing the account clears its pairs too.
const pairKey = (username: string, source: string): string => `user:${username}|${source}`;
const sourceKey = (source: string): string => `source:${source}`;

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

  /** Recorded failures, plus each attempt in flight that began before `ticket`, counted as one now. */
  async #failures(key: string, sinceMs: number, now: number, ticket: number): Promise<number[]> {
    const recorded = await this.#records.since(key, sinceMs);
    let pending = 0;
    for (const t of this.#inFlight.get(key) ?? []) if (t < ticket) pending++;
    return pending === 0 ? recorded : [...recorded, ...Array<number>(pending).fill(now)];
  }

  async #check(username: string, source: string, ticket: number): Promise<void> {
    const now = this.#now();
    const p = this.#policy;
    const [pair, src, account] = await Promise.all([
      this.#failures(pairKey(username, source), now - p.windowMs, now, ticket),
      this.#failures(sourceKey(source), now - p.windowMs, now, ticket),
      this.#failures(accountKey(username), now - p.lockWindowMs, now, ticket),
    ]);
    const verdict = decideThrottle(p, now, { pair, source: src, account });
    if (!verdict.allowed) {
      throw new TwokeyError('ERR_LOGIN_THROTTLED', `${verdict.reason}; retry in ${Math.ceil(verdict.retryAfterMs / 1000)} s`);
    }
  }

  /** Throws ERR_LOGIN_THROTTLED when the username, the source or the pair is over its limit. */
  check(username: string, source: string): Promise<void> {
    return this.#check(username, source, Infinity);
  }

  #keys(username: string, source: string): string[] {
    return [pairKey(username, source), sourceKey(source), accountKey(username)];
  }

  /**
   * `check`, then counts the attempt as a failure until `end` is called with the returned ticket
   * (always, in a finally). The attempt is counted before the (asynchronous) check, so concurrent
   * attempts see each other in the order they began. When the check refuses, the attempt is ended.
   */
  async begin(username: string, source: string): Promise<number> {
    const ticket = ++this.#tickets;
    for (const key of this.#keys(username, source)) {
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
    for (const key of this.#keys(username, source)) {
      const set = this.#inFlight.get(key);
      set?.delete(ticket);
      if (set?.size === 0) this.#inFlight.delete(key);
    }
  }

  async recordFailure(username: string, source: string): Promise<void> {
    const now = this.#now();
    const p = this.#policy;
    await this.#records.record(this.#keys(username, source), now, now - Math.max(p.windowMs, p.lockWindowMs));
  }

  /** A successful login ends the username's run of failures, from every source (not the source's own count). */
  async recordSuccess(username: string): Promise<void> {
    await this.#records.clear(accountKey(username));
  }

  /**
   * An operator's unlock: clears the username's recorded failures (from every source), as a
   * successful login would, and returns how many there were. A source's failures stay: they stop guessing across usernames.
   */
  async unlock(username: string): Promise<number> {
    const failures = (await this.#records.since(accountKey(username), 0)).length;
    await this.#records.clear(accountKey(username));
    return failures;
  }
}
