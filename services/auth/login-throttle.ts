// Failed-login limiting per username and per source, persisted so a restart does not reset it.
import { inTransaction, type SqliteStatement as Statement } from '../mesh-runtime/durable-database.ts';
import { TwokeyError } from '../authz/errors.ts';
import type { AuthDatabase } from './database.ts';

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

export class LoginThrottle {
  readonly #db: AuthDatabase;
  readonly #policy: ThrottlePolicy;
  readonly #now: () => number;
  /**
   * Attempts between `begin` and `end`, per key. Password hashing is slow, so without these a burst
   * of concurrent guesses would all pass the check before the first failure is recorded.
   */
  readonly #inFlight = new Map<string, number>();
  readonly #select: Statement;
  readonly #insert: Statement;
  readonly #prune: Statement;
  readonly #clear: Statement;

  constructor(db: AuthDatabase, policy: ThrottlePolicy = DEFAULT_THROTTLE, now: () => number = Date.now) {
    this.#db = db;
    this.#policy = policy;
    this.#now = now;
    this.#select = db.prepare('SELECT at_ms FROM login_failures WHERE key = ? AND at_ms > ?');
    this.#insert = db.prepare('INSERT INTO login_failures (key, at_ms) VALUES (?, ?)');
    this.#prune = db.prepare('DELETE FROM login_failures WHERE at_ms <= ?');
    this.#clear = db.prepare('DELETE FROM login_failures WHERE key = ?');
  }

  /** Recorded failures in the window, plus each attempt still in flight counted as one now. */
  #failures(key: string, now: number): number[] {
    const rows = this.#select.all(key, now - this.#policy.windowMs) as unknown as { at_ms: number }[];
    const pending = this.#inFlight.get(key) ?? 0;
    return [...rows.map((r) => r.at_ms), ...Array<number>(pending).fill(now)];
  }

  /** Throws ERR_LOGIN_THROTTLED when either the username or the source is over its limit. */
  check(username: string, source: string): void {
    const now = this.#now();
    const verdict = decideThrottle(this.#policy, now, this.#failures(`user:${username}`, now), this.#failures(`source:${source}`, now));
    if (!verdict.allowed) {
      throw new TwokeyError('ERR_LOGIN_THROTTLED', `${verdict.reason}; retry in ${Math.ceil(verdict.retryAfterMs / 1000)} s`);
    }
  }

  /** `check`, then counts the attempt as a failure until `end` is called (always, in a finally). */
  begin(username: string, source: string): void {
    this.check(username, source);
    for (const key of [`user:${username}`, `source:${source}`]) this.#inFlight.set(key, (this.#inFlight.get(key) ?? 0) + 1);
  }

  end(username: string, source: string): void {
    for (const key of [`user:${username}`, `source:${source}`]) {
      const left = (this.#inFlight.get(key) ?? 0) - 1;
      if (left > 0) this.#inFlight.set(key, left);
      else this.#inFlight.delete(key);
    }
  }

  recordFailure(username: string, source: string): void {
    const now = this.#now();
    inTransaction(this.#db, () => {
      this.#insert.run(`user:${username}`, now);
      this.#insert.run(`source:${source}`, now);
      this.#prune.run(now - this.#policy.windowMs);
    });
  }

  /** A successful login clears the username's failures (not the source's). */
  recordSuccess(username: string): void {
    this.#clear.run(`user:${username}`);
  }

  /**
   * An operator's unlock: clears the username's recorded failures, as a successful login would,
   * and returns how many there were. A source's failures stay: they stop guessing across usernames.
   */
  unlock(username: string): number {
    return Number(this.#clear.run(`user:${username}`).changes);
  }
}
